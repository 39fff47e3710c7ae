"""Instruction data for language modelling: four row formats read and checked, rendered to text, tokenized with
the response tokens marked.

    messages               chat: a list of {role, content} (system first if any, then user and assistant in turn,
                           ending with assistant), rendered with the tokenizer's chat template (or data.chat_template)
    instruction/input/output   Alpaca: the usual Alpaca prompt, the output is the response
    prompt/completion      the completion is the response
    text                   plain text, all of it scored (continued pre-training)

The format is read off the columns (``detect_format``). A rendered example is its text and the character spans
of its responses; ``tokenize`` turns those into token ids and a per-token scored mask, appends EOS to a response
that a template did not end, and cuts examples longer than ``data.max_length`` from the prompt side.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from ..data import IGNORE, Encoded, Table
from ..data.encoded import cached
from ..data.readers import is_missing
from ..errors import ConfigError, DataError

log = logging.getLogger("pretune")

ALPACA = ("Below is an instruction that describes a task. Write a response that appropriately completes the "
          "request.\n\n### Instruction:\n{instruction}\n\n### Response:\n")
ALPACA_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further context. "
                "Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n"
                "### Input:\n{input}\n\n### Response:\n")
FORMATS = ("chat", "alpaca", "prompt_completion", "text")
ROLES = ("system", "user", "assistant")


@dataclass
class Dialogues:
    """Rows read and checked: chat rows as messages, the others as (prompt, response) text pairs."""

    format: str  # one of FORMATS
    rows: list[Any]  # chat: list of {role, content} dicts; else (prompt, response): prompt "" for text
    source: str
    where: list[str]  # "FILE, line N" of each row, for errors found when rendering

    @property
    def labels(self) -> list[int]:
        """One entry per row (the response is in the row itself): what the seeded split counts."""
        return list(range(len(self.rows)))


def detect_format(table: Table, text: str = "text") -> str:
    """The format the columns say; ``text`` is the plain-text column's name."""
    cols = set(table.columns)
    if "messages" in cols:
        return "chat"
    if {"instruction", "output"} <= cols:
        return "alpaca"
    if {"prompt", "completion"} <= cols:
        return "prompt_completion"
    if text in cols:
        return "text"
    have = ", ".join(repr(c) for c in table.columns) or "none"
    raise DataError(f"{table.path}: cannot tell the instruction format from the columns ({have}); give messages "
                    "(chat), instruction/input/output (Alpaca), prompt/completion, or text")


def _text(table: Table, i: int, column: str, value: Any, allow_empty: bool = False) -> str:
    if is_missing(value) or not isinstance(value, str):
        if allow_empty and is_missing(value):
            return ""
        raise DataError(f"{table.where(i)}, column {column!r}: expected text, got "
                        f"{'nothing' if is_missing(value) else repr(value)[:40]}; fill it in or remove the row")
    if not allow_empty and not value.strip():
        what = "response" if column in ("output", "completion") else "text"
        raise DataError(f"{table.where(i)}, column {column!r}: empty {what}; fill it in or remove the row")
    return value


def check_messages(value: Any, where: str, need_answer: bool = True) -> list[dict]:
    """A chat row checked: role/content objects, an optional system message first, then user and assistant in
    turn, ending with a non-empty assistant turn (with ``need_answer``: else it may end with the user)."""
    fix = "give a list of {role, content} objects"
    if not isinstance(value, (list, tuple, np.ndarray)) or not len(value):
        raise DataError(f"{where}, column 'messages': expected a list of role/content objects, got "
                        f"{'nothing' if is_missing(value) else repr(value)[:40]}; {fix}")
    out = []
    for k, m in enumerate(value):
        if not isinstance(m, dict) or not {"role", "content"} <= set(m) or not isinstance(m["content"], str):
            raise DataError(f"{where}, message {k + 1}: expected a {{role, content}} object with text content, got "
                            f"{repr(m)[:60]}; {fix}")
        out.append({"role": m["role"], "content": m["content"]})
    turns = out[1:] if out[0]["role"] == "system" else out
    for k, m in enumerate(turns):
        want = ("user", "assistant")[k % 2]
        if m["role"] != want:
            raise DataError(f"{where}, message {k + 1 + len(out) - len(turns)}: role {m['role']!r} where {want!r} "
                            "was due; roles must alternate user, assistant (after an optional system message)")
        if want == "assistant" and not m["content"].strip():
            raise DataError(f"{where}, message {k + 1 + len(out) - len(turns)}: empty assistant response; fill it in "
                            "or remove the row")
    if need_answer and (not turns or turns[-1]["role"] != "assistant"):
        raise DataError(f"{where}: the conversation ends without an assistant turn; end it with the response to "
                        "learn, or remove the row")
    return out


def read_dialogues(table: Table, text: str = "text") -> Dialogues:
    """Read and check every row of ``table`` in the format its columns say.

    Raises:
        DataError: naming file, row and fix for a malformed row or an empty response.
    """
    fmt = detect_format(table, text)
    where = [table.where(i) for i in range(len(table))]
    rows: list[Any] = []
    if fmt == "chat":
        rows = [check_messages(v, where[i]) for i, v in enumerate(table.columns["messages"])]
    elif fmt == "alpaca":
        inputs = table.columns.get("input", [None] * len(table))
        for i, (ins, inp, out) in enumerate(zip(table.columns["instruction"], inputs, table.columns["output"])):
            ins, inp = _text(table, i, "instruction", ins), _text(table, i, "input", inp, allow_empty=True)
            prompt = (ALPACA_INPUT if inp.strip() else ALPACA).format(instruction=ins, input=inp)
            rows.append((prompt, _text(table, i, "output", out)))
    elif fmt == "prompt_completion":
        for i, (p, c) in enumerate(zip(table.columns["prompt"], table.columns["completion"])):
            p, c = _text(table, i, "prompt", p), _text(table, i, "completion", c)
            rows.append((p if p[-1:].isspace() or c[:1].isspace() else p + " ", c))  # words stay apart
    else:
        rows = [("", _text(table, i, text, v)) for i, v in enumerate(table.columns[text])]
    return Dialogues(fmt, rows, table.path, where)


# ----------------------------------------------------------------------------- rendering


def template_of(tokenizer, configured: Optional[str], where: str) -> str:
    """The chat template to render with: ``data.chat_template`` if set, else the tokenizer's."""
    template = configured or getattr(tokenizer, "chat_template", None)
    if not template:
        raise ConfigError(f"{where}: chat rows (messages) need a chat template and the model's tokenizer has none; "
                          "set data.chat_template to a Jinja template (or use a model that ships one)")
    return template


def render_chat(messages: list[dict], tokenizer, template: str, where: str) -> tuple[str, list[tuple[int, int]]]:
    """The conversation's text and the character spans of its assistant turns (each up to the next turn, so the
    template's end-of-turn tokens are learnt too)."""
    def render(msgs, prompt):
        return tokenizer.apply_chat_template(msgs, chat_template=template, tokenize=False,
                                             add_generation_prompt=prompt)

    full = render(messages, False)
    spans = []
    for k, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        start, end = len(render(messages[:k], True)), len(render(messages[:k + 1], False))
        if not full.startswith(render(messages[:k + 1], False)) or start > end:
            raise ConfigError(f"{where}: the chat template does not render a conversation's start as a prefix of "
                              "the whole, so the assistant turns cannot be found; use another data.chat_template")
        spans.append((start, end))
    return full, spans


def render(rows: Dialogues, tokenizer, chat_template: Optional[str]) -> tuple[list[str], list[list[tuple[int, int]]]]:
    """Every row's text and the character spans of its responses."""
    if rows.format != "chat":
        return [p + r for p, r in rows.rows], [[(len(p), len(p) + len(r))] for p, r in rows.rows]
    template = template_of(tokenizer, chat_template, rows.source)
    out = [render_chat(m, tokenizer, template, rows.where[i]) for i, m in enumerate(rows.rows)]
    return [t for t, _ in out], [s for _, s in out]


# ----------------------------------------------------------------------------- tokenizing


def _scored_mask(offsets: np.ndarray, spans: list[tuple[int, int]]) -> np.ndarray:
    """(T,) tokens that start inside a response span (special tokens, whose offsets are empty, never do)."""
    start, end = offsets[:, 0], offsets[:, 1]
    mask = np.zeros(len(offsets), dtype=bool)
    for a, b in spans:
        mask |= (start >= a) & (start < b) & (end > start)
    return mask


def cut(ids: np.ndarray, scored: np.ndarray, max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """An example cut to ``max_length``: from the prompt side (left, keeping one token before the first response
    token), then, if the responses alone are too long, from their end."""
    over = len(ids) - max_length
    if over <= 0:
        return ids, scored
    first = int(np.argmax(scored)) if scored.any() else len(ids)
    left = min(over, max(0, first - 1))
    ids, scored = ids[left:], scored[left:]
    return ids[:max_length], scored[:max_length]


def tokenize(texts: list[str], spans: list[list[tuple[int, int]]], tokenizer, max_length: int, chat: bool,
             train_on_prompt: bool) -> dict[str, np.ndarray]:
    """Token ids, offsets and per-token labels (the token id where scored, IGNORE elsewhere and always at an
    example's first token, which nothing predicts), plus ``cut``: 1 for each example that was cut."""
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError("causal_lm needs a fast tokenizer (character offsets find the response tokens); "
                          "this model's tokenizer is a slow one")
    eos = tokenizer.eos_token_id
    ids_parts, label_parts, lengths, was_cut = [], [], [], []
    for start in range(0, len(texts), 1024):
        out = tokenizer(texts[start:start + 1024], add_special_tokens=not chat, return_offsets_mapping=True,
                        truncation=False, padding=False)
        for k, row in enumerate(out["input_ids"]):
            ids = np.asarray(row, dtype=np.int64)
            scored = _scored_mask(np.asarray(out["offset_mapping"][k], dtype=np.int64).reshape(-1, 2),
                                  spans[start + k])
            if not chat and eos is not None and (not len(ids) or ids[-1] != eos):  # the model learns to stop
                ids, scored = np.r_[ids, eos], np.r_[scored, True]
            n = len(ids)
            ids, scored = cut(ids, scored, max_length)
            was_cut.append(len(ids) < n)
            if train_on_prompt:
                scored = np.ones(len(ids), dtype=bool)
            labels = np.where(scored, ids, IGNORE)
            labels[:1] = IGNORE
            ids_parts.append(ids.astype(np.int32))
            label_parts.append(labels)
            lengths.append(len(ids))
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return {"ids": np.concatenate(ids_parts) if ids_parts else np.zeros(0, np.int32), "offsets": offsets,
            "labels": np.concatenate(label_parts) if label_parts else np.zeros(0, np.int64),
            "cut": np.asarray(was_cut, dtype=np.int8)}


def encode_dialogues(rows: Dialogues, tokenizer, max_length: int, *, train_on_prompt: bool = False,
                     chat_template: Optional[str] = None, packing: bool = False, cache_dir=None,
                     source: Optional[str] = None) -> Encoded:
    """``rows`` rendered and tokenized (cached on disk when ``source`` is a file), labels per token; examples
    longer than ``max_length`` are cut (``cut``) and counted in the log, never dropped."""
    texts, spans = render(rows, tokenizer, chat_template)
    chat = rows.format == "chat"
    template = hashlib.sha256((chat_template or getattr(tokenizer, "chat_template", None) or "").encode())
    z = cached(lambda: tokenize(texts, spans, tokenizer, max_length, chat, train_on_prompt), source, (texts, None),
               tokenizer, ("causal_lm", max_length, train_on_prompt, rows.format, template.hexdigest()[:16]),
               cache_dir)
    n_cut = int(z["cut"].sum())
    if n_cut:
        log.info("%s: %d of %d examples are longer than data.max_length=%d and were cut from the prompt side",
                 rows.source, n_cut, len(rows.rows), max_length)
    if len(rows.rows) and not (z["labels"] != IGNORE).any():
        raise DataError(f"{rows.source}: no response token is left to learn after tokenizing; raise data.max_length "
                        f"(now {max_length})")
    return Encoded(z["ids"], None, z["offsets"], z["labels"], token_labels=True, pack=max_length if packing else 0)
