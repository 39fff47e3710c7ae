"""Rows of text read from a table and checked, and the seeded splits and subsets of a data set.

What the labels mean (classes, numbers, ...) is the task's business (``pretune.tasks``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..errors import DataError
from .readers import Table, is_missing, read_table


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


def read_examples(source: str | Path | Table, text: str = "text", text_pair: str | None = None,
                  label: str | None = "label") -> Examples:
    """Read and check the text columns of a file (or a table already read); labels are returned raw, for the
    task to check and convert."""
    table = source if isinstance(source, Table) else read_table(source)
    texts = _text_column(table, text, "text", "--text")
    pairs = _text_column(table, text_pair, "text pair", "--text-pair") if text_pair else None
    labels = list(table.column(label, "label", "--label")) if label else None
    return Examples(texts, pairs, labels, table.path)


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
