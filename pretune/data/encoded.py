"""Tokenize once, cache as arrays, and batch with dynamic padding and length grouping."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np

from ..files import atomic_path

if TYPE_CHECKING:
    import torch

CACHE_VERSION = "1"


IGNORE = -100  # a token without a target: PyTorch's cross-entropy skips it (its default ignore_index)


@dataclass
class Encoded:
    """Token ids of many rows stored flat: row i is ``ids[offsets[i]:offsets[i+1]]``.

    Sentence-level rows have one target per row. Word-level rows (token classification) have one per token,
    say which word of their input each token belongs to, and may be windows cut from one long input.
    """

    ids: np.ndarray  # (total_tokens,) int32
    type_ids: Optional[np.ndarray]  # (total_tokens,) int8, or None when the tokenizer has none
    offsets: np.ndarray  # (n_rows + 1,) int64
    labels: Optional[np.ndarray]  # (n_rows,) int64 ids or float32 targets; with ``words``: (total_tokens,), IGNORE
    words: Optional[np.ndarray] = None  # (total_tokens,) int32: the token's word in its input row; -1: none
    scored: Optional[np.ndarray] = None  # (total_tokens,) bool: the one token whose output predicts its word
    inputs: Optional[np.ndarray] = None  # (n_rows,) int64: the input row each row was cut from, 0..n_inputs - 1
    token_labels: bool = False  # labels are per token (IGNORE where unscored) without ``words`` (language modelling)
    pack: int = 0  # > 0: a batch's rows are packed into rows of at most this many tokens (the task's collate)
    # pair rows (preference tuning): each row is two sequences one after the other, the first ``split[i]`` tokens
    # long; ``reference`` (n_rows, 2) float64: the reference model's log-probs of the two, when computed ahead
    split: Optional[np.ndarray] = None
    reference: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def n_inputs(self) -> int:
        """Input rows (sentences) the rows were cut from; ``len(self)`` when each row is its own."""
        if self.inputs is None:
            return len(self)
        return int(self.inputs.max()) + 1 if len(self.inputs) else 0

    def select(self, rows: list[int] | np.ndarray) -> "Encoded":
        """The rows ``rows`` (in that order); their inputs are numbered 0.. again, in the order of their numbers."""
        rows = np.asarray(rows, dtype=np.int64)
        lengths = self.lengths[rows]
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        # token positions of the selected rows, vectorised: start of each row + position within it
        gather = np.repeat(self.offsets[rows] - offsets[:-1], lengths) + np.arange(offsets[-1])

        def tokens(a):
            return None if a is None else a[gather]

        per_token = self.words is not None or self.token_labels
        labels = None if self.labels is None else self.labels[gather if per_token else rows]
        inputs = None if self.inputs is None else np.unique(self.inputs[rows], return_inverse=True)[1].astype(np.int64)
        def per_row(a):
            return None if a is None else a[rows]

        return Encoded(self.ids[gather], tokens(self.type_ids), offsets, labels, tokens(self.words),
                       tokens(self.scored), inputs, self.token_labels, self.pack, per_row(self.split),
                       per_row(self.reference))

    def select_inputs(self, which: list[int] | np.ndarray) -> "Encoded":
        """Every row cut from the input rows ``which`` (all windows of each), in row order."""
        if self.inputs is None:
            return self.select(which)
        return self.select(np.flatnonzero(np.isin(self.inputs, np.asarray(which, dtype=np.int64))))

    def with_labels(self, labels: Optional[np.ndarray]) -> "Encoded":
        """The same rows with ``labels`` (one target per row, or per token for word-level rows)."""
        return replace(self, labels=labels)

    def token_rows(self) -> np.ndarray:
        """(total_tokens,) the row of every token."""
        return np.repeat(np.arange(len(self)), self.lengths)


def place_outputs(out: Optional[np.ndarray], enc: Encoded, rows: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """Write one batch's outputs into those of the whole set (allocated on the first batch) and return them.

    Outputs per row, (B, C), go to ``out[rows]`` of an (N, C) array; outputs per token, (B, T, C), go to each row's
    tokens of a (total_tokens, C) array laid out like ``enc.ids`` (padding dropped).
    """
    if out is None:
        shape = (len(enc) if logits.ndim == 2 else len(enc.ids), logits.shape[-1])
        out = np.zeros(shape, dtype=np.float32)
    if logits.ndim == 2:
        out[rows] = logits
        return out
    for j, r in enumerate(rows):
        a, b = enc.offsets[r], enc.offsets[r + 1]
        out[a:b] = logits[j, : b - a]
    return out


def _tokenizer_fingerprint(tokenizer) -> str:
    # The fast tokenizer's JSON describes it completely (vocab, normaliser, templates).
    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        import json
        spec = json.loads(backend.to_str())
        # Calling the tokenizer records truncation/padding settings in this JSON: not part of identity.
        spec.pop("truncation", None)
        spec.pop("padding", None)
        h.update(json.dumps(spec, sort_keys=True).encode())
    else:
        h.update(type(tokenizer).__name__.encode())
        h.update(repr(sorted(tokenizer.get_vocab().items())).encode())
    return h.hexdigest()[:16]


def _file_fingerprint(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def _rows_fingerprint(texts: list[str], pairs: Optional[list[str]]) -> str:
    # A Hub split has no file to hash: hash what gets tokenized (cheap next to tokenizing it).
    h = hashlib.sha256()
    for column in (texts, pairs or []):
        for text in column:
            h.update(str(text).encode("utf-8", "surrogatepass"))
            h.update(b"\0")
        h.update(b"\1")
    return h.hexdigest()[:16]


def default_cache_dir() -> Path:
    base = os.environ.get("PRETUNE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "pretune")
    return Path(base) / "tokenized"


def cached(build: Callable[[], dict[str, np.ndarray]], source: str | None, content: tuple, tokenizer,
           parts: tuple, cache_dir: str | Path | None = None) -> dict[str, np.ndarray]:
    """``build()``'s named arrays, kept on disk when ``source`` is a file or a Hub split.

    The cache key holds the file's bytes (for a ``hub:`` source the ``content`` tokenized, e.g. (texts, pairs)),
    the tokenizer and ``parts`` (whatever else decides the arrays: max length, columns, ...). An unreadable cache
    file is rebuilt; a read-only cache folder only costs speed.
    """
    rows = None
    if source and os.path.isfile(source):
        rows = _file_fingerprint(source)
    elif source and source.startswith("hub:"):
        rows = _rows_fingerprint(*content)
    if rows is None:
        return build()
    key_parts = [CACHE_VERSION, rows, _tokenizer_fingerprint(tokenizer), *map(str, parts)]
    key = hashlib.sha256("|".join(key_parts).encode()).hexdigest()[:24]
    path = Path(cache_dir or default_cache_dir()) / f"{key}.npz"
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                return {name: z[name] for name in z.files}
        except (OSError, ValueError, KeyError):
            pass  # unreadable cache: rebuild it
    arrays = build()
    try:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
    except OSError:
        pass
    return arrays


def tokenize(texts: list[str], pairs: Optional[list[str]], tokenizer, max_length: int,
             cache_dir: str | Path | None = None, source: str | None = None,
             columns: tuple = ()) -> Encoded:
    """Tokenize rows (truncating to ``max_length``), cached on disk when ``source`` is a file or a Hub split."""
    def build() -> dict[str, np.ndarray]:
        enc = _tokenize(texts, pairs, tokenizer, max_length)
        return {"ids": enc.ids, "offsets": enc.offsets,
                "type_ids": enc.type_ids if enc.type_ids is not None else np.zeros(0, np.int8)}

    z = cached(build, source, (texts, pairs), tokenizer, (max_length, repr(columns), len(texts)), cache_dir)
    return Encoded(z["ids"], z["type_ids"] if z["type_ids"].size else None, z["offsets"], None)


def _tokenize(texts, pairs, tokenizer, max_length) -> Encoded:
    ids_parts, type_parts, lengths = [], [], []
    chunk = 4096
    for start in range(0, len(texts), chunk):
        a = texts[start:start + chunk]
        b = pairs[start:start + chunk] if pairs is not None else None
        out = tokenizer(a, b, truncation=True, max_length=max_length, padding=False)
        for i, row in enumerate(out["input_ids"]):
            ids_parts.append(np.asarray(row, dtype=np.int32))
            lengths.append(len(row))
            if "token_type_ids" in out:
                type_parts.append(np.asarray(out["token_type_ids"][i], dtype=np.int8))
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    ids = np.concatenate(ids_parts) if ids_parts else np.zeros(0, np.int32)
    type_ids = np.concatenate(type_parts) if type_parts else None
    return Encoded(ids, type_ids, offsets, None)


# ----------------------------------------------------------------------------- batching


def collate(enc: Encoded, rows: np.ndarray | list[int], pad_id: int) -> dict[str, "torch.Tensor"]:
    """Pad ``rows`` to their longest member. Returns model inputs plus ``labels`` if known (per token: padded
    with ``IGNORE``)."""
    import torch  # here, not at the top: reading and checking data needs no torch
    rows = np.asarray(rows)
    lengths = enc.lengths[rows]
    width = int(lengths.max())
    input_ids = np.full((len(rows), width), pad_id, dtype=np.int64)  # (B, T)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    type_ids = np.zeros((len(rows), width), dtype=np.int64) if enc.type_ids is not None else None
    per_token = enc.labels is not None and (enc.words is not None or enc.token_labels)
    labels = np.full((len(rows), width), IGNORE, dtype=np.int64) if per_token else None
    for j, r in enumerate(rows):
        a, b = enc.offsets[r], enc.offsets[r + 1]
        input_ids[j, : b - a] = enc.ids[a:b]
        mask[j, : b - a] = 1
        if type_ids is not None:
            type_ids[j, : b - a] = enc.type_ids[a:b]
        if labels is not None:
            labels[j, : b - a] = enc.labels[a:b]
    batch = {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(mask)}
    if type_ids is not None:
        batch["token_type_ids"] = torch.from_numpy(type_ids)
    if labels is not None:
        batch["labels"] = torch.from_numpy(labels)
    elif enc.labels is not None:
        batch["labels"] = torch.from_numpy(enc.labels[rows])
    return batch


def epoch_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int,
                  group_by_length: bool = True, megabatch: int = 64) -> list[np.ndarray]:
    """The batches of one epoch, a pure function of (seed, epoch) so resume can replay it.

    With grouping, rows are shuffled, cut into megabatches of ``megabatch`` batches,
    each sorted by length and cut into batches, and the batch order shuffled: rows
    in a batch have similar lengths (little padding) while the data order stays random.
    """
    rng = np.random.default_rng([seed, epoch])
    perm = rng.permutation(len(lengths))
    if not group_by_length:
        return [perm[i:i + batch_size] for i in range(0, len(perm), batch_size)]
    batches = []
    span = batch_size * megabatch
    for start in range(0, len(perm), span):
        chunk = perm[start:start + span]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    order = rng.permutation(len(batches))
    return [batches[i] for i in order]


def eval_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Sorted by length (fast, little padding); callers scatter results back by index."""
    order = np.argsort(-lengths, kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def padding_fraction(lengths: np.ndarray, batches: list[np.ndarray]) -> float:
    real = sum(int(lengths[b].sum()) for b in batches)
    padded = sum(int(lengths[b].max()) * len(b) for b in batches)
    return 1 - real / padded if padded else 0.0
