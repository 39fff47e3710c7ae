"""Sequence regression: one number per text (or text pair), e.g. a similarity score."""

from __future__ import annotations

import math

import numpy as np

from ..data import Encoded
from ..data.readers import is_missing
from ..errors import DataError
from ..metrics import regression_metrics
from .base import Task, TaskSpec, register
from .sentences import COMMON
from .values import as_float


def looks_like(raw: list) -> bool:
    """Every label is a number and some are not whole numbers (whole numbers read as class ids)."""
    floats = [as_float(v) for v in raw if not is_missing(v)]
    return bool(floats) and all(f is not None for f in floats) and any(not f.is_integer() for f in floats)


def spec(raw: list, table, column: str, cfg=None) -> TaskSpec:
    return TaskSpec("regression", [])


def labels(raw: list, spec: TaskSpec, table, column: str, cfg=None) -> np.ndarray:
    out = []
    for i, v in enumerate(raw):
        f = as_float(v)
        if f is None or math.isnan(f) or math.isinf(f):
            raise DataError(f"{table.where(i)}, column {column!r}: regression target {v!r} is not a "
                            "finite number; fix or drop the row")
        out.append(f)
    return np.asarray(out, dtype=np.float32)


def head(spec: TaskSpec) -> dict:
    return {"num_labels": 1, "problem_type": "regression", "id2label": {0: "LABEL_0"}, "label2id": {"LABEL_0": 0}}


def loss(outputs, targets):
    """Mean squared error, in fp32."""
    from torch.nn import functional as F

    return F.mse_loss(outputs.float().squeeze(-1), targets.float())


def soft_loss(student, teacher, temperature: float, mask=None):
    """Squared error to the teacher's prediction (a number has no distribution to soften)."""
    from torch.nn import functional as F

    return F.mse_loss(student, teacher)


def metrics(outputs: np.ndarray, enc: Encoded, spec: TaskSpec) -> dict:
    return regression_metrics(np.asarray(outputs).reshape(-1), enc.labels)


def rows(outputs: np.ndarray, enc: Encoded, spec: TaskSpec, examples=None) -> list[dict]:
    return [{"score": float(v)} for v in outputs.reshape(-1)]


TASK = register(Task(
    name="regression", description="one number per text or text pair", spec=spec, labels=labels, head=head,
    loss=loss, soft_loss=soft_loss, metrics=metrics, default_metric="pearson", rows=rows, infer=looks_like,
    classes=False, **COMMON))
