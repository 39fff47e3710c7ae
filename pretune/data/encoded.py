"""Tokenize once, cache as arrays, and batch with dynamic padding and length grouping."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np

from ..files import atomic_path

if TYPE_CHECKING:
    import torch

CACHE_VERSION = "1"


@dataclass
class Encoded:
    """Token ids of many rows stored flat: row i is ``ids[offsets[i]:offsets[i+1]]``."""

    ids: np.ndarray  # (total_tokens,) int32
    type_ids: Optional[np.ndarray]  # (total_tokens,) int8, or None when the tokenizer has none
    offsets: np.ndarray  # (n_rows + 1,) int64
    labels: Optional[np.ndarray]  # (n_rows,) int64 ids or float32 targets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def select(self, rows: list[int] | np.ndarray) -> "Encoded":
        rows = np.asarray(rows, dtype=np.int64)
        lengths = self.lengths[rows]
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        # token positions of the selected rows, vectorised: start of each row + position within it
        gather = np.repeat(self.offsets[rows] - offsets[:-1], lengths) + np.arange(offsets[-1])
        return Encoded(self.ids[gather], None if self.type_ids is None else self.type_ids[gather], offsets,
                       None if self.labels is None else self.labels[rows])

    def with_labels(self, labels: Optional[np.ndarray]) -> "Encoded":
        """The same rows with ``labels`` (one target per row, in the dtype the task's loss takes)."""
        return Encoded(self.ids, self.type_ids, self.offsets, labels)


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


def tokenize(texts: list[str], pairs: Optional[list[str]], tokenizer, max_length: int,
             cache_dir: str | Path | None = None, source: str | None = None,
             columns: tuple = ()) -> Encoded:
    """Tokenize rows (truncating to ``max_length``), cached on disk when ``source`` is a file or a Hub split.

    The cache key holds the file's bytes, or for a ``hub:`` source the rows' texts themselves.
    """
    key = None
    rows = None
    if source and os.path.isfile(source):
        rows = _file_fingerprint(source)
    elif source and source.startswith("hub:"):
        rows = _rows_fingerprint(texts, pairs)
    if rows is not None:
        parts = [CACHE_VERSION, rows, _tokenizer_fingerprint(tokenizer),
                 str(max_length), repr(columns), str(len(texts))]
        key = hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]
        path = Path(cache_dir or default_cache_dir()) / f"{key}.npz"
        if path.exists():
            try:
                with np.load(path, allow_pickle=False) as z:
                    type_ids = z["type_ids"] if z["type_ids"].size else None
                    return Encoded(z["ids"], type_ids, z["offsets"], None)
            except (OSError, ValueError, KeyError):
                pass  # unreadable cache: rebuild it
    enc = _tokenize(texts, pairs, tokenizer, max_length)
    if key is not None:
        try:
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as f:
                    np.savez(f, ids=enc.ids, offsets=enc.offsets,
                             type_ids=enc.type_ids if enc.type_ids is not None else np.zeros(0, np.int8))
        except OSError:
            pass  # a read-only cache folder only costs speed
    return enc


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
    """Pad ``rows`` to their longest member. Returns model inputs plus ``labels`` if known."""
    import torch  # here, not at the top: reading and checking data needs no torch
    rows = np.asarray(rows)
    lengths = enc.lengths[rows]
    width = int(lengths.max())
    input_ids = np.full((len(rows), width), pad_id, dtype=np.int64)  # (B, T)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    type_ids = np.zeros((len(rows), width), dtype=np.int64) if enc.type_ids is not None else None
    for j, r in enumerate(rows):
        a, b = enc.offsets[r], enc.offsets[r + 1]
        input_ids[j, : b - a] = enc.ids[a:b]
        mask[j, : b - a] = 1
        if type_ids is not None:
            type_ids[j, : b - a] = enc.type_ids[a:b]
    batch = {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(mask)}
    if type_ids is not None:
        batch["token_type_ids"] = torch.from_numpy(type_ids)
    if enc.labels is not None:
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
