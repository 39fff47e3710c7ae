"""From tables to training batches: labels, task, splits, tokenization cache, batching.

``load_task_data`` turns a ``DataConfig`` into tokenized train and eval sets with
a ``TaskSpec``. Tokenization is done once per (file, columns, tokenizer,
max_length) and cached as plain arrays (no pickle). Batches are padded to their
longest row only; ``LengthGroupedBatches`` groups rows of similar length so
little of each batch is padding, with a deterministic order per (seed, epoch)
that resume can reproduce.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..errors import DataError
from .readers import Table, is_missing, read_table


@dataclass
class TaskSpec:
    """What the model predicts: ``classification`` with ``labels`` names, or ``regression``."""

    task: str
    labels: list[str]  # class names in id order; empty for regression

    @property
    def num_labels(self) -> int:
        return len(self.labels) if self.task == "classification" else 1


@dataclass
class Examples:
    """Raw rows after validation: texts, optional pairs, labels (ids or floats)."""

    texts: list[str]
    pairs: Optional[list[str]]
    labels: Optional[list[Any]]  # None when unlabelled (predict)
    source: str


# ----------------------------------------------------------------------------- reading


def _text_column(table: Table, name: str, role: str, flag: str) -> list[str]:
    values = table.column(name, role, flag)
    out = []
    for i, v in enumerate(values):
        if is_missing(v) or (isinstance(v, str) and not v.strip()):
            raise DataError(f"{table.where(i)}, column {name!r}: empty text; remove the row or fill it in")
        if not isinstance(v, str):
            v = str(v)
        out.append(v)
    return out


def read_examples(path: str | Path, text: str = "text", text_pair: str | None = None,
                  label: str | None = "label") -> tuple[Examples, Table]:
    """Read and check the text columns of a file; labels are returned raw (converted later)."""
    table = read_table(path)
    texts = _text_column(table, text, "text", "--text")
    pairs = _text_column(table, text_pair, "text pair", "--text-pair") if text_pair else None
    labels = list(table.column(label, "label", "--label")) if label else None
    return Examples(texts, pairs, labels, str(path)), table


def _as_float(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v.strip())
        except ValueError:
            return None
    return None


def infer_task(labels: list[Any]) -> str:
    """Regression when every label is a number and some are not whole numbers."""
    floats = [_as_float(v) for v in labels if not is_missing(v)]
    if floats and all(f is not None for f in floats) and any(not float(f).is_integer() for f in floats):
        return "regression"
    return "classification"


def _label_key(v: Any) -> str:
    """Canonical class name: 1, 1.0 and "1" are the same class."""
    f = _as_float(v)
    if f is not None and f.is_integer() and not isinstance(v, bool):
        return str(int(f))
    return str(v).strip()


def build_spec(labels: list[Any], task: str | None, table: Table, column: str) -> TaskSpec:
    task = task or infer_task(labels)
    if task == "regression":
        return TaskSpec("regression", [])
    for i, v in enumerate(labels):
        if is_missing(v) or (isinstance(v, str) and not v.strip()):
            raise DataError(f"{table.where(i)}, column {column!r}: missing label; every training row needs one")
    names = sorted({_label_key(v) for v in labels}, key=_sort_key)
    if len(names) < 2:
        raise DataError(f"{table.path}, column {column!r}: only one class ({names[0]!r}); "
                        "classification needs at least two (use --task regression for numbers)")
    return TaskSpec("classification", names)


def _sort_key(name: str) -> tuple:
    f = _as_float(name)
    return (0, f, "") if f is not None else (1, 0.0, name)


def encode_labels(labels: list[Any], spec: TaskSpec, table: Table, column: str) -> list[Any]:
    """Class names -> ids, or numbers -> floats; bad values name the file, line and fix."""
    out: list[Any] = []
    if spec.task == "regression":
        for i, v in enumerate(labels):
            f = _as_float(v)
            if f is None or math.isnan(f) or math.isinf(f):
                raise DataError(f"{table.where(i)}, column {column!r}: regression target {v!r} is not a "
                                "finite number; fix or drop the row")
            out.append(f)
        return out
    index = {name: i for i, name in enumerate(spec.labels)}
    for i, v in enumerate(labels):
        key = None if is_missing(v) else _label_key(v)
        if key not in index:
            raise DataError(f"{table.where(i)}, column {column!r}: label {v!r} does not occur in the training "
                            f"data (known: {', '.join(spec.labels)}); fix the label or add training rows for it")
        out.append(index[key])
    return out


def stratified_split(labels: list[Any], fraction: float, seed: int, stratify: bool) -> tuple[list[int], list[int]]:
    """Seeded split of row indices into (train, validation); per-class when ``stratify``."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    if n < 2:
        raise DataError("need at least 2 rows to split off a validation set; pass --eval FILE")
    groups: dict[Any, list[int]] = {}
    for i, y in enumerate(labels):
        groups.setdefault(y if stratify else 0, []).append(i)
    train, val = [], []
    for key in sorted(groups, key=str):
        idx = np.array(groups[key])
        rng.shuffle(idx)
        k = int(round(len(idx) * fraction))
        if len(idx) >= 2:
            k = min(max(k, 1), len(idx) - 1)
        val.extend(idx[:k].tolist())
        train.extend(idx[k:].tolist())
    return sorted(train), sorted(val)


def subsample(n: int, k: int | None, seed: int) -> list[int]:
    if k is None or k >= n:
        return list(range(n))
    rng = np.random.default_rng(seed + 1)
    return sorted(rng.choice(n, size=k, replace=False).tolist())
