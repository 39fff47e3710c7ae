"""Preference tuning of a decoder (DPO, IPO) on chosen/rejected pairs.

Rows are ``prompt``/``chosen``/``rejected`` text, or HH-RLHF's ``chosen``/``rejected`` whole dialogues
("\\n\\nHuman: ...\\n\\nAssistant: ..."), split at the last assistant turn into the shared prompt and two responses.
An encoded row is the chosen sequence (prompt + response) followed by the rejected one (``Encoded.split``), with
labels on the response tokens only (``instructions.tokenize``, as for SFT).

``forward`` runs the chosen and rejected sequences of a batch as one (2B, T) batch and sums each response's token
log-probs (causal_lm's forward: the vocabulary projection only where a token is scored). The reference log-probs
come, in this order, from the data (``dpo.precompute_reference``; the eval rows always), from the same model with
its LoRA adapter switched off, from a frozen copy made before training (``setup``), or, for a saved model
(``pretune eval``, ``predict``), from the model it was tuned from, whose path its config records. Its outputs are,
per pair, ``COLUMNS``: the pair's loss, the four log-probs and the two implicit rewards, so evaluation, metrics
and predict's rows read the same numbers. The loss settings (``dpo.*``) are saved in the model's config
(``pretune_settings``), so a saved model is scored as it was trained.
"""

from __future__ import annotations

import copy
import logging
import math
import weakref
from dataclasses import dataclass, replace
from typing import Any, Optional

import numpy as np

from ..config import DataConfig
from ..data import IGNORE, Encoded, Table
from ..data.encoded import cached
from ..data.readers import is_missing
from ..errors import ConfigError, DataError
from . import causal_lm
from .base import Task, TaskSpec, register
from .generation import generation_speed
from .instructions import tokenize

log = logging.getLogger("pretune")

COLUMNS = ("loss", "chosen_logps", "rejected_logps", "ref_chosen_logps", "ref_rejected_logps", "chosen_reward",
           "rejected_reward")
DEFAULTS = {"loss_type": "sigmoid", "beta": 0.1, "label_smoothing": 0.0}
ASSISTANT = "\n\nAssistant:"
# frozen reference copies of fully fine-tuned models, kept off the model so that they are neither trained nor saved
_REFERENCES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


@dataclass
class Pairs:
    """Rows read and checked: (prompt, chosen response, rejected response) text."""

    rows: list[tuple[str, str, str]]
    source: str
    where: list[str]

    @property
    def labels(self) -> list[int]:
        """One entry per row (the responses are the targets): what the seeded split counts."""
        return list(range(len(self.rows)))


def _text(value: Any, where: str, column: str) -> str:
    if is_missing(value) or not isinstance(value, str):
        raise DataError(f"{where}, column {column!r}: expected text, got "
                        f"{'nothing' if is_missing(value) else repr(value)[:40]}; fill it in or remove the row")
    return value


def split_dialogue(text: str, where: str, column: str) -> tuple[str, str]:
    """An HH-RLHF dialogue cut after its last "\\n\\nAssistant:": (prompt, response)."""
    k = text.rfind(ASSISTANT)
    if k < 0:
        raise DataError(f"{where}, column {column!r}: the dialogue has no assistant turn ({ASSISTANT.strip()!r}); "
                        "give prompt/chosen/rejected columns or remove the row")
    k += len(ASSISTANT)
    return text[:k], text[k:]


def read(table: Table, cfg: DataConfig, labelled: bool = True) -> Pairs:
    """Every row checked: responses non-empty and different. HH-RLHF rows whose two dialogues differ before the
    last assistant turn, or whose last assistant turn is empty (its harmless-base test split has 5 and 4 of them),
    are no pair to learn from; they are left out, with their number in the log.

    Raises:
        DataError: naming file, row and fix.
    """
    cols = set(table.columns)
    if not {"chosen", "rejected"} <= cols:
        have = ", ".join(repr(c) for c in table.columns) or "none"
        raise DataError(f"{table.path}: dpo needs chosen and rejected columns (and prompt, unless they are whole "
                        f"HH-RLHF dialogues); got {have}")
    rows, where, skipped = [], [], 0
    prompts = table.columns.get("prompt")
    for i, (c, r) in enumerate(zip(table.columns["chosen"], table.columns["rejected"])):
        at = table.where(i)
        c, r = _text(c, at, "chosen"), _text(r, at, "rejected")
        if prompts is not None:
            p = _text(prompts[i], at, "prompt")
        else:
            (p, c), (p_r, r) = split_dialogue(c, at, "chosen"), split_dialogue(r, at, "rejected")
            if p != p_r or not c.strip() or not r.strip():  # HH-RLHF's quirks: no pair to learn from
                skipped += 1
                continue
        for column, response in (("chosen", c), ("rejected", r)):
            if not response.strip():
                raise DataError(f"{at}, column {column!r}: empty response; fill it in or remove the row")
        if c == r:
            raise DataError(f"{at}: chosen and rejected are the same response, so there is no preference to learn; "
                            "fix the row or remove it")
        if prompts is not None and not (p[-1:].isspace() or c[:1].isspace()):
            p += " "  # words stay apart, as for prompt/completion rows
        rows.append((p, c, r))
        where.append(at)
    if skipped:
        log.info("%s: %d of %d rows left out: their chosen and rejected dialogues differ before the last assistant "
                 "turn, or one of those turns is empty", table.path, skipped, len(table))
    return Pairs(rows, table.path, where)


def spec(raw: list, table: Table, column: str, cfg: Optional[DataConfig] = None) -> TaskSpec:
    return TaskSpec("dpo", [])


def labels(raw: list, spec: TaskSpec, table: Table, column: str, cfg: Optional[DataConfig] = None) -> list:
    return list(raw)


def encode(pairs: Pairs, tokenizer, cfg: DataConfig, source: Optional[str], targets=None,
           spec: Optional[TaskSpec] = None) -> Encoded:
    """Each pair as one row: chosen (prompt + response) then rejected, labels on the response tokens; a sequence
    longer than ``data.max_length`` is cut from the prompt side (counted in the log)."""
    n = len(pairs.rows)
    texts = [p + c for p, c, _ in pairs.rows] + [p + r for p, _, r in pairs.rows]
    spans = [[(len(p), len(p) + len(c))] for p, c, _ in pairs.rows] + [[(len(p), len(p) + len(r))]
                                                                       for p, _, r in pairs.rows]
    z = cached(lambda: tokenize(texts, spans, tokenizer, cfg.max_length, False, False), source, (texts, None),
               tokenizer, ("dpo", cfg.max_length, n), cfg.cache_dir)
    lengths = np.diff(z["offsets"])
    order = np.stack([np.arange(n), np.arange(n) + n], axis=1).reshape(-1)  # chosen 0, rejected 0, chosen 1, ...
    starts = z["offsets"][order]
    gather = np.concatenate([np.arange(a, a + m) for a, m in zip(starts, lengths[order])]) if n else np.zeros(0, int)
    pair_lengths = lengths[:n] + lengths[n:]
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(pair_lengths, out=offsets[1:])
    n_cut = int(z["cut"].sum())
    if n_cut:
        log.info("%s: %d of %d sequences are longer than data.max_length=%d and were cut from the prompt side",
                 pairs.source, n_cut, 2 * n, cfg.max_length)
    enc = Encoded(z["ids"][gather], None, offsets, z["labels"][gather], token_labels=True,
                  split=lengths[:n].astype(np.int64))
    return enc


def head(spec: TaskSpec) -> dict:
    return {}


# ----------------------------------------------------------------------------- batches


def collate(enc: Encoded, rows, pad_id: int) -> dict:
    """(2B, T) right-padded: the B chosen sequences, then the B rejected ones; ``reference`` (B, 2) when the
    data holds the reference's log-probs."""
    import torch

    rows = np.asarray(rows)
    seqs = []
    for part in (0, 1):
        for i in rows:
            a, s, b = enc.offsets[i], enc.offsets[i] + enc.split[i], enc.offsets[i + 1]
            seqs.append((a, s) if part == 0 else (s, b))
    width = max(b - a for a, b in seqs)
    ids = np.full((len(seqs), width), pad_id, dtype=np.int64)
    labels = np.full((len(seqs), width), IGNORE, dtype=np.int64)
    mask = np.zeros((len(seqs), width), dtype=np.int64)
    for k, (a, b) in enumerate(seqs):
        ids[k, :b - a], labels[k, :b - a], mask[k, :b - a] = enc.ids[a:b], enc.labels[a:b], 1
    batch = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask),
             "labels": torch.from_numpy(labels)}
    if enc.reference is not None:
        batch["reference"] = torch.from_numpy(np.asarray(enc.reference[rows], dtype=np.float32))
    return batch


def sequence_logps(model, batch: dict):
    """(2B,) each sequence's summed response-token log-probs, fp32."""
    return -causal_lm.forward(model, batch).sum(dim=(1, 2))


def settings_of(model) -> dict:
    """The loss settings recorded in the model's config (``setup``), else the defaults."""
    cfg = getattr(getattr(model, "module", model), "config", None)  # DDP wraps the model as .module
    saved = (getattr(cfg, "pretune_settings", None) or {}).get("dpo", {})
    return {**DEFAULTS, **saved}


def reference_logps(model, batch: dict):
    """(B, 2) the reference's log-probs of (chosen, rejected), without gradient."""
    import torch

    if "reference" in batch:
        return batch["reference"].float()
    inner = getattr(model, "module", model)  # under DDP
    with torch.no_grad():
        if inner in _REFERENCES:
            ref = _REFERENCES[inner]
            device = batch["input_ids"].device
            if next(ref.parameters()).device != device:
                ref.to(device)
            logps = sequence_logps(ref, batch)
        elif hasattr(inner, "disable_adapter"):  # LoRA: the same weights with the adapter off
            with inner.disable_adapter():
                logps = sequence_logps(model, batch)
        else:  # a saved model: the one it was tuned from, as recorded in its config
            logps = sequence_logps(_recorded_reference(inner, batch["input_ids"].device), batch)
    return logps.reshape(2, -1).T


def _recorded_reference(model, device):
    """The model ``model`` was tuned from (``pretune_settings.dpo.reference``), loaded once and kept frozen.

    Raises:
        ConfigError: the model records none (it was not tuned with dpo by pretune fit).
    """
    path = settings_of(model).get("reference")
    if not path:
        raise ConfigError("dpo scores a model against a reference and this model records none (it was not tuned "
                          "with --task dpo by pretune fit); evaluate the tuned model, whose config names its base")
    from pathlib import Path

    from transformers import AutoModelForCausalLM

    where = Path(path)
    gguf = {"gguf_file": where.name} if where.suffix == ".gguf" else {}
    reference = AutoModelForCausalLM.from_pretrained(str(where.parent if gguf else where), **gguf).eval()
    reference.requires_grad_(False)
    _REFERENCES[model] = reference.to(device)
    return reference


def pair_loss(chosen, rejected, ref_chosen, ref_rejected, settings: dict, chosen_tokens=None,
              rejected_tokens=None):
    """(B,) the loss of each pair (trl's formulas): sigmoid, -log sigmoid(beta * delta) (with label smoothing e:
    (1 - e) of that plus e of -log sigmoid(-beta * delta)); ipo, (delta / tokens - 1 / (2 beta))^2 on the
    log-ratios averaged per response token. delta = (chosen - ref_chosen) - (rejected - ref_rejected)."""
    from torch.nn import functional as F

    beta, smoothing = float(settings["beta"]), float(settings["label_smoothing"])
    chosen_ratio, rejected_ratio = chosen - ref_chosen, rejected - ref_rejected
    if settings["loss_type"] == "ipo":
        delta = chosen_ratio / chosen_tokens.clamp(min=1) - rejected_ratio / rejected_tokens.clamp(min=1)
        return (delta - 1 / (2 * beta)) ** 2
    delta = chosen_ratio - rejected_ratio
    return -F.logsigmoid(beta * delta) * (1 - smoothing) - F.logsigmoid(-beta * delta) * smoothing


def forward(model, batch: dict):
    """(B, 7) per pair, ``COLUMNS``: its loss, the policy's and the reference's log-probs of chosen and rejected,
    and the implicit rewards beta * (policy - reference) of the two."""
    import torch

    settings = settings_of(model)
    policy = sequence_logps(model, batch).reshape(2, -1)  # (2, B): chosen, rejected
    ref = reference_logps(model, batch).T.to(policy.device)  # (2, B)
    tokens = (batch["labels"] != IGNORE).sum(dim=1).reshape(2, -1).float()
    loss = pair_loss(policy[0], policy[1], ref[0], ref[1], settings, tokens[0], tokens[1])
    rewards = float(settings["beta"]) * (policy - ref).detach()
    return torch.stack([loss, policy[0], policy[1], ref[0], ref[1], rewards[0], rewards[1]], dim=1)


def loss(outputs, targets):
    """The mean of the pairs' losses (column 0 of the outputs)."""
    return outputs[:, 0].float().mean()


def soft_loss(student, teacher, temperature: float, mask=None):
    raise ConfigError("compress.methods: distillation is not available for dpo; choose int8")


# ----------------------------------------------------------------------------- reference and scores


def setup(model, data, cfg) -> None:
    """Before training: record the loss settings (in the spec and the model's config, so they are saved) and set
    up the reference: with LoRA the adapter-off model; with ``dpo.precompute_reference`` its log-probs for every
    train row, computed now with the model as it starts; else a frozen copy. The eval rows' reference log-probs
    never change, so they are computed now in every case (a merged model is then still scored against them)."""
    # the model tuned from: a saved model is scored against it (pretune eval, predict)
    settings = {"loss_type": cfg.dpo.loss_type, "beta": cfg.dpo.beta, "label_smoothing": cfg.dpo.label_smoothing,
                "reference": str(cfg.model.path)}
    data.spec.settings["dpo"] = settings
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base.config.pretune_settings = {**(getattr(base.config, "pretune_settings", None) or {}), "dpo": settings}
    size = cfg.train.eval_batch_size
    if hasattr(model, "disable_adapter"):
        with model.disable_adapter():
            data.eval = with_reference(data.eval, model, size)
        return
    data.eval = with_reference(data.eval, model, size)
    if cfg.dpo.precompute_reference:
        data.train = with_reference(data.train, model, size)
        return
    reference = copy.deepcopy(model).eval()
    reference.requires_grad_(False)
    _REFERENCES[model] = reference


def with_reference(enc: Encoded, model, batch_size: int, pad_id: int = 0, runtime=None) -> Encoded:
    """``enc`` with ``reference``: ``model``'s log-probs of every row's chosen and rejected sequence."""
    import torch

    from ..data import eval_batches
    from ..runtime import CPU

    runtime = runtime or CPU
    was_training = model.training
    model.eval()
    out = np.zeros((len(enc), 2), dtype=np.float64)
    with torch.no_grad():
        for rows in eval_batches(enc.lengths, batch_size):
            batch = runtime.to_device(collate(enc, rows, pad_id))
            with runtime.autocast():
                out[rows] = sequence_logps(model, batch).reshape(2, -1).T.double().cpu().numpy()
    model.train(was_training)
    return replace(enc, reference=out)


def metrics(outputs: np.ndarray, enc: Encoded, spec: TaskSpec) -> dict:
    """``reward_accuracy`` (share of pairs whose chosen reward is above the rejected one), ``reward_margin``
    (mean chosen - rejected reward), mean ``chosen_logps`` and ``rejected_logps``, and ``loss``."""
    o = np.asarray(outputs, dtype=np.float64).reshape(-1, len(COLUMNS))
    if not len(o):
        return {"reward_accuracy": math.nan, "reward_margin": math.nan, "chosen_logps": math.nan,
                "rejected_logps": math.nan, "loss": math.nan}
    margin = o[:, 5] - o[:, 6]
    return {"reward_accuracy": float((margin > 0).mean()), "reward_margin": float(margin.mean()),
            "chosen_logps": float(o[:, 1].mean()), "rejected_logps": float(o[:, 2].mean()),
            "loss": float(o[:, 0].mean())}


def rows(outputs: np.ndarray, enc: Encoded, spec: TaskSpec, examples: Pairs) -> list[dict]:
    """Per pair: its loss, log-probs and rewards, and whether the chosen response is preferred."""
    o = np.asarray(outputs, dtype=np.float64).reshape(-1, len(COLUMNS))
    return [{**{k: round(float(v), 6) for k, v in zip(COLUMNS, row)}, "preferred": bool(row[5] > row[6])}
            for row in o]


TASK = register(Task(
    name="dpo", description="preference tuning of a decoder on chosen/rejected pairs (DPO, IPO)", read=read,
    spec=spec, labels=labels, encode=encode, head=head, loss=loss, soft_loss=soft_loss, metrics=metrics,
    default_metric="reward_accuracy", rows=rows, collate=collate, model_class="AutoModelForCausalLM",
    forward=forward, setup=setup, classes=False, pretrained_head=True, measure=generation_speed,
    measure_key="generation", generates=True))
