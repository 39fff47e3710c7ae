"""Causal language modelling: instruction tuning (SFT) and continued pre-training of a decoder.

Rows are chat ``messages``, Alpaca, prompt/completion or plain text (``instructions``). The loss is the
mean negative log-likelihood of the response tokens (all tokens with ``data.train_on_prompt``), computed by
``forward``: the model runs as usual but projects onto the vocabulary only at the positions that predict a
scored token (``logits_to_keep`` as a boolean mask), and the cross-entropy is taken there in fp32. Its outputs
are that per-token loss, (B, T, 1), 0 where nothing is scored, so evaluation, metrics (``loss``, ``perplexity``)
and predict's rows read the same numbers.

With ``data.packing`` a batch's examples are packed into as few ``data.max_length`` rows as they fit, positions
restarting at each example; with no attention mask, transformers reads the restarts off ``position_ids`` and
keeps attention inside each example (a block-diagonal causal mask on sdpa and eager, the variable-length
kernel with flash attention). The outputs are laid back out per example, so packed and padded batches give the
same numbers.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ..config import DataConfig
from ..data import IGNORE, Encoded, Table, collate as pad_rows
from ..errors import ConfigError
from .base import Task, TaskSpec, register
from .generation import generation_speed
from .instructions import Dialogues, encode_dialogues, read_dialogues


def read(table: Table, cfg: DataConfig, labelled: bool = True) -> Dialogues:
    """The rows of ``table`` in the format its columns say, checked (``instructions.read_dialogues``)."""
    return read_dialogues(table, cfg.text)


def spec(raw: list, table: Table, column: str, cfg: Optional[DataConfig] = None) -> TaskSpec:
    return TaskSpec("causal_lm", [])


def labels(raw: list, spec: TaskSpec, table: Table, column: str, cfg: Optional[DataConfig] = None) -> list:
    """The targets are the response tokens themselves: one placeholder per row (what the split counts)."""
    return list(raw)


def encode(rows: Dialogues, tokenizer, cfg: DataConfig, source: Optional[str], targets=None,
           spec: Optional[TaskSpec] = None) -> Encoded:
    """Token ids with the response tokens as per-token labels, whether or not ``targets`` are given: the responses
    are part of every row."""
    return encode_dialogues(rows, tokenizer, cfg.max_length, train_on_prompt=cfg.train_on_prompt,
                            chat_template=cfg.chat_template, packing=cfg.packing, cache_dir=cfg.cache_dir,
                            source=source)


def head(spec: TaskSpec) -> dict:
    return {}  # the language-model head the model was pretrained with


# ----------------------------------------------------------------------------- batches


def _bins(lengths: np.ndarray, capacity: int) -> list[list[int]]:
    """First-fit decreasing: indices into ``lengths`` grouped so that each group's total fits ``capacity``."""
    bins: list[list[int]] = []
    room: list[int] = []
    for i in np.argsort(-lengths, kind="stable"):
        n = int(lengths[i])
        k = next((b for b, r in enumerate(room) if r >= n), None)
        if k is None:
            bins.append([]), room.append(capacity)
            k = len(bins) - 1
        bins[k].append(int(i))
        room[k] -= n
    return bins


def collate(enc: Encoded, rows: np.ndarray | list[int], pad_id: int) -> dict:
    """Padded rows with per-token labels; with ``enc.pack``, the rows packed into as few ``enc.pack``-token rows as
    they fit, with ``position_ids`` restarting per example and ``unpack``: (B, T) the index of each example's
    tokens in the packed rows, flattened (-1 past its end)."""
    import torch

    if not enc.pack:
        return pad_rows(enc, rows, pad_id)
    rows = np.asarray(rows)
    lengths = enc.lengths[rows]
    bins = _bins(lengths, enc.pack)
    width = max(int(lengths[b].sum()) for b in bins)
    shape = (len(bins), width)
    ids, labels = np.full(shape, pad_id, dtype=np.int64), np.full(shape, IGNORE, dtype=np.int64)
    positions, mask = np.zeros(shape, dtype=np.int64), np.zeros(shape, dtype=np.int64)
    unpack = np.full((len(rows), int(lengths.max())), -1, dtype=np.int64)
    for r, members in enumerate(bins):
        at = 0
        for j in members:
            a, b = enc.offsets[rows[j]], enc.offsets[rows[j] + 1]
            n = b - a
            ids[r, at:at + n], labels[r, at:at + n] = enc.ids[a:b], enc.labels[a:b]
            positions[r, at:at + n], mask[r, at:at + n] = np.arange(n), 1
            unpack[j, :n] = r * width + at + np.arange(n)
            at += n
        positions[r, at:] = np.arange(width - at)  # the padding is a sequence of its own, never scored
    return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask),
            "position_ids": torch.from_numpy(positions), "labels": torch.from_numpy(labels),
            "unpack": torch.from_numpy(unpack)}


def forward(model, batch: dict):
    """(B, T, 1) each token's negative log-likelihood, fp32, where it is scored (0 elsewhere), per example.

    The vocabulary projection runs only at the positions that predict a scored token: transformers slices the
    last hidden states with ``logits_to_keep`` as a (B, T) boolean mask, giving (N, V) logits for the N scored
    tokens instead of (B, T, V).
    """
    import torch
    from torch.nn import functional as F

    labels = batch["labels"]  # (B, T): the token id where scored, IGNORE elsewhere and at each example's start
    target = labels != IGNORE
    keep = torch.zeros_like(target)
    keep[:, :-1] = target[:, 1:]  # position t predicts token t + 1
    inputs = {"input_ids": batch["input_ids"]}
    if "position_ids" in batch:  # packed: no mask, so the restarts of the positions separate the examples
        inputs["position_ids"] = batch["position_ids"]
    elif not bool(batch["attention_mask"].all()):
        inputs["attention_mask"] = batch["attention_mask"]
    logits = model(**inputs, use_cache=False, logits_to_keep=keep).logits  # (N, V)
    nll = F.cross_entropy(logits.float(), labels[target], reduction="none")  # row-major, as the mask took them
    out = torch.zeros(labels.shape, dtype=nll.dtype, device=nll.device).masked_scatter(target, nll)
    if "unpack" in batch:  # packed rows back to one row per example
        idx = batch["unpack"]
        out = torch.where(idx >= 0, out.reshape(-1)[idx.clamp(min=0)], out.new_zeros(()))
    return out.unsqueeze(-1)


def loss(outputs, targets):
    """Mean negative log-likelihood over the scored tokens (the layout of ``targets``, packed or not, only
    gives their number)."""
    return outputs.float().sum() / (targets != IGNORE).sum().clamp(min=1)


def soft_loss(student, teacher, temperature: float, mask=None):
    raise ConfigError("compress.methods: distillation is not available for causal_lm; choose int8")


# ----------------------------------------------------------------------------- scores


def metrics(outputs: np.ndarray, enc: Encoded, spec: TaskSpec) -> dict:
    """``loss`` (mean NLL per response token) and ``perplexity`` (its exponential)."""
    n = int((enc.labels != IGNORE).sum())
    mean = float(np.asarray(outputs, dtype=np.float64).sum() / max(n, 1))
    return {"loss": mean, "perplexity": float(np.exp(min(mean, 50.0)))}


def rows(outputs: np.ndarray, enc: Encoded, spec: TaskSpec, examples: Dialogues) -> list[dict]:
    """Per input row: the ``loss`` and ``perplexity`` of its response tokens and how many there are
    (``tokens``). Text is generated by ``pretune generate``."""
    out = []
    nll = np.asarray(outputs, dtype=np.float64).reshape(-1)
    for i in range(len(enc)):
        a, b = enc.offsets[i], enc.offsets[i + 1]
        n = int((enc.labels[a:b] != IGNORE).sum())
        mean = float(nll[a:b].sum() / max(n, 1))
        out.append({"loss": round(mean, 6), "perplexity": round(float(np.exp(min(mean, 50.0))), 6), "tokens": n})
    return out


TASK = register(Task(
    name="causal_lm", description="instruction tuning and language modelling of a decoder (SFT)", read=read,
    spec=spec, labels=labels, encode=encode, head=head, loss=loss, soft_loss=soft_loss, metrics=metrics,
    default_metric="loss", rows=rows, collate=collate, model_class="AutoModelForCausalLM", forward=forward,
    classes=False, pretrained_head=True, gate_metric="perplexity", measure=generation_speed, measure_key="generation",
    generates=True))
