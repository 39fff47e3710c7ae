"""Rows of words for token classification: read and checked, then tokenized into windows of sub-tokens.

A row's words come as a list (a JSON list, a Parquet list, a CoNLL sentence) or as a text, split into words
here. The words are tokenized as one string (the text, or the words joined by spaces) with the tokenizer's
character offsets, which say which word every sub-token belongs to; a word the tokenizer drops (a control
character) is tokenized as the unknown token, so that every word has a sub-token.

A row longer than ``max_length`` sub-tokens becomes several windows, cut between words, that share
``stride`` sub-tokens with the next one. Each word is predicted once: at its first sub-token, in the window
where that sub-token has the most context on both sides.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from ..data import Encoded, Table, cached
from ..data.readers import is_missing
from ..errors import ConfigError, DataError, ModelError

WORD = re.compile(r"\w+|[^\w\s]")  # words of a text: runs of letters and digits, and each other visible character


@dataclass
class WordRows:
    """Rows of words after validation: each row's words, the string its words are tokenized from, where each
    word stands in it, and the raw tags."""

    words: list[list[str]]
    texts: list[str]  # the row's text when the input had one, else its words joined by spaces
    spans: list[np.ndarray]  # (n_words, 2) character offsets of each word in texts[i], end exclusive
    given: list[bool]  # whether texts[i] is the input's own text (predict then reports character offsets)
    labels: Optional[list[Any]]  # raw tag lists; None when unlabelled
    source: str


def _from_tokens(table: Table, i: int, column: str, tokens) -> tuple[list[str], str, np.ndarray]:
    words, spans, at = [], [], 0
    for k, token in enumerate(tokens):
        token = "" if is_missing(token) else str(token)
        if not token.strip():
            raise DataError(f"{table.where_item(i, k)}, column {column!r}: token {k + 1} is empty; remove it or "
                            "fill it in")
        words.append(token)
        spans.append((at, at + len(token)))
        at += len(token) + 1
    return words, " ".join(words), np.asarray(spans, dtype=np.int64).reshape(-1, 2)


def read_words(table: Table, column: str, label: Optional[str]) -> WordRows:
    """The words of ``column`` (lists of tokens, or texts split into words) and the tag lists of ``label``.

    Raises:
        DataError: a row without words, an empty token, or a row whose tokens and tags differ in number.
    """
    values = table.column(column, "tokens", "--text")
    tags = table.column(label, "tags", "--label") if label else None
    rows = WordRows([], [], [], [], None if tags is None else [], table.path)
    for i, value in enumerate(values):
        if isinstance(value, str):
            matches = list(WORD.finditer(value))
            words, text = [m.group() for m in matches], value
            spans = np.asarray([m.span() for m in matches], dtype=np.int64).reshape(-1, 2)
        elif isinstance(value, (list, tuple, np.ndarray)):
            words, text, spans = _from_tokens(table, i, column, value)
        elif is_missing(value):
            words = []
        else:
            raise DataError(f"{table.where(i)}, column {column!r}: expected a list of tokens or a text, got "
                            f"{type(value).__name__}; choose the tokens column with --text")
        if not words:
            raise DataError(f"{table.where(i)}, column {column!r}: no tokens; remove the row or fill it in")
        rows.words.append(words)
        rows.texts.append(text)
        rows.spans.append(spans)
        rows.given.append(isinstance(value, str))
        if tags is not None:
            row_tags = tags[i]
            if isinstance(row_tags, (list, tuple, np.ndarray)) and len(row_tags) != len(words):
                raise DataError(f"{table.where(i)}: {len(words)} tokens in column {column!r} but {len(row_tags)} tags "
                                f"in column {label!r}; every token needs one tag")
            rows.labels.append(row_tags)
    return rows


# ----------------------------------------------------------------------------- tokenizing into windows


def _specials(tokenizer) -> tuple[list[int], list[int], Optional[list[int]]]:
    """(ids before, ids after, type ids of the whole) of one sequence: what the tokenizer wraps around a window."""
    probe = tokenizer("a", add_special_tokens=True, return_special_tokens_mask=True)
    special = probe["special_tokens_mask"]
    content = [k for k, m in enumerate(special) if not m]
    first, last = (content[0], content[-1]) if content else (len(special), len(special) - 1)
    ids = probe["input_ids"]
    return ids[:first], ids[last + 1:], probe.get("token_type_ids")


def _word_of_tokens(offsets: np.ndarray, spans: np.ndarray) -> np.ndarray:
    """(T,) the word whose characters each token covers (a token that covers only spaces joins the next word)."""
    starts, ends = spans[:, 0], spans[:, 1]
    a, b = offsets[:, 0], offsets[:, 1]
    w = np.searchsorted(starts, a, side="right") - 1  # the last word starting at or before the token
    inside = (w >= 0) & (a < ends[np.maximum(w, 0)])
    nxt = np.minimum(w + 1, len(starts) - 1)
    into_next = ~inside & (w + 1 < len(starts)) & (b > starts[nxt])  # " word": a token with its leading space
    out = np.where(inside, w, np.where(into_next, nxt, -1))
    return np.where(b > a, out, -1).astype(np.int32)


def _tokenize_batch(tokenizer, texts: list[str], spans: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Sub-token ids of each row and the word of each sub-token (-1: none)."""
    out = []
    for start in range(0, len(texts), 1024):
        batch = tokenizer(texts[start:start + 1024], add_special_tokens=False, return_offsets_mapping=True)
        for ids, offsets, row_spans in zip(batch["input_ids"], batch["offset_mapping"], spans[start:start + 1024]):
            words = _word_of_tokens(np.asarray(offsets, dtype=np.int64).reshape(-1, 2), row_spans)
            out.append((np.asarray(ids, dtype=np.int32), words))
    return out


def _tokenize(tokenizer, texts: list[str], spans: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """As ``_tokenize_batch``; a row where a word got no sub-token is tokenized again with the unknown token in
    that word's place."""
    out = _tokenize_batch(tokenizer, texts, spans)
    for i, (ids, words) in enumerate(out):
        missing = set(range(len(spans[i]))) - set(words.tolist())
        if not missing or not tokenizer.unk_token:
            continue
        pieces = [tokenizer.unk_token if k in missing else texts[i][s:e] for k, (s, e) in enumerate(spans[i])]
        ends = np.cumsum([len(piece) + 1 for piece in pieces]) - 1
        row_spans = np.stack([ends - np.asarray([len(piece) for piece in pieces]), ends], axis=1)
        out[i] = _tokenize_batch(tokenizer, [" ".join(pieces)], [row_spans])[0]
    return out


def windows(words: np.ndarray, budget: int, stride: int) -> list[tuple[int, int]]:
    """(start, end) of each window over one row's sub-tokens: at most ``budget`` long, cut before a word (inside
    one only when the word alone is longer than the budget), each after the first starting ``stride`` sub-tokens
    or fewer before the end of the previous one, at a word's first sub-token."""
    n = len(words)
    if n <= budget:
        return [(0, n)]
    firsts = np.flatnonzero((words >= 0) & np.r_[True, words[1:] != words[:-1]])
    out, a = [], 0
    while True:
        b = min(a + budget, n)
        cuts = firsts[(firsts > a) & (firsts <= b)]
        if b < n and len(cuts):
            b = int(cuts[-1])
        out.append((a, b))
        if b >= n:
            return out
        later = firsts[(firsts >= max(b - stride, a + 1)) & (firsts < b)]
        a = int(later[0]) if len(later) else b


def _scored(words: np.ndarray, spans: list[tuple[int, int]]) -> np.ndarray:
    """(sum of window lengths,) True at each word's first sub-token in the window giving it the most context."""
    out = np.zeros(sum(b - a for a, b in spans), dtype=bool)
    firsts = np.flatnonzero((words >= 0) & np.r_[True, words[1:] != words[:-1]])
    best = np.full(len(firsts), -1)
    where = np.zeros(len(firsts), dtype=np.int64)
    at = 0
    for a, b in spans:
        inside = (firsts >= a) & (firsts < b)
        context = np.minimum(firsts - a, b - 1 - firsts)
        better = inside & (context > best)
        best[better], where[better] = context[better], at + firsts[better] - a
        at += b - a
    out[where[best >= 0]] = True
    return out


def encode_words(rows: WordRows, tokenizer, max_length: int, stride: Optional[int], cache_dir=None,
                 source: Optional[str] = None, columns: tuple = ()) -> Encoded:
    """Windows of every row with the tokenizer's special tokens around each, words and scored positions marked
    (``Encoded.words``, ``scored``, ``inputs``); cached when ``source`` is a file or a Hub split.

    Raises:
        ModelError: the tokenizer cannot say which word a sub-token belongs to (it is not a "fast" one).
        ConfigError: ``max_length`` leaves no room beside the special tokens.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(f"{getattr(tokenizer, 'name_or_path', '') or type(tokenizer).__name__}: token "
                         f"classification needs a fast tokenizer, which maps sub-tokens to words; "
                         f"{type(tokenizer).__name__} is not one: save the model folder with its tokenizer.json "
                         "(AutoTokenizer.from_pretrained(name).save_pretrained(folder))")
    prefix, suffix, type_probe = _specials(tokenizer)
    budget = max_length - len(prefix) - len(suffix)
    if budget < 2:
        raise ConfigError(f"data.max_length={max_length} leaves {budget} sub-tokens beside the special tokens; "
                          "raise it")
    stride = min(max_length // 4 if stride is None else stride, budget // 2)

    def build() -> dict[str, np.ndarray]:
        return _build(rows, tokenizer, prefix, suffix, type_probe, budget, stride)

    z = cached(build, source, (rows.texts,), tokenizer, ("words", max_length, stride, repr(columns), len(rows.texts)),
               cache_dir)
    return Encoded(z["ids"], z["type_ids"] if z["type_ids"].size else None, z["offsets"], None,
                   z["words"], z["scored"].astype(bool), z["inputs"])


def _build(rows: WordRows, tokenizer, prefix, suffix, type_probe, budget: int, stride: int) -> dict[str, np.ndarray]:
    ids, words, scored, lengths, inputs = [], [], [], [], []
    for i, (row_ids, row_words) in enumerate(_tokenize(tokenizer, rows.texts, rows.spans)):
        cuts = windows(row_words, budget, stride)
        marks = _scored(row_words, cuts)
        at = 0
        for a, b in cuts:
            ids.append(np.r_[np.asarray(prefix, np.int32), row_ids[a:b], np.asarray(suffix, np.int32)])
            none_p, none_s = np.full(len(prefix), -1, np.int32), np.full(len(suffix), -1, np.int32)
            words.append(np.r_[none_p, row_words[a:b], none_s])
            scored.append(np.r_[none_p >= 0, marks[at:at + b - a], none_s >= 0])
            lengths.append(len(prefix) + b - a + len(suffix))
            inputs.append(i)
            at += b - a
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.concatenate(ids) if ids else np.zeros(0, np.int32)
    # a single sequence has one segment: the type id the tokenizer gives its first token, everywhere
    type_ids = np.full(len(flat), type_probe[0], np.int8) if type_probe else np.zeros(0, np.int8)
    return {"ids": flat, "type_ids": type_ids, "offsets": offsets,
            "words": np.concatenate(words) if words else np.zeros(0, np.int32),
            "scored": np.concatenate(scored) if scored else np.zeros(0, bool),
            "inputs": np.asarray(inputs, dtype=np.int64)}


def first_subtokens(enc: Encoded) -> np.ndarray:
    """(total_tokens,) True at the first sub-token of each word in each row."""
    w = enc.words
    starts = np.zeros(len(w), dtype=bool)
    starts[enc.offsets[:-1][enc.lengths > 0]] = True
    return (w >= 0) & (starts | np.r_[True, w[1:] != w[:-1]])
