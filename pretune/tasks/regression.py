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


def setup(model, data, cfg) -> None:
    """A new head starts at the training targets' mean: its output bias, zero as a new Linear's is, is set to it.

    Without this the whole offset of the targets (2.7 on STS-B's 0-5 scale) must be learnt through the bias at the
    run's learning rate, and a short or low-rate run (LoRA, a frozen body, one epoch at 1e-4) ends far from it. A
    head whose bias is not zero (a trained regression model tuned further) and a head without a bias (a decoder's
    ``score``) are left as they are."""
    import torch
    from torch import nn

    if data.train.labels is None or not len(data.train.labels):
        return
    mean = float(np.mean(data.train.labels))
    with torch.no_grad():
        for module in model.modules():  # under LoRA the head's trainable copy and its original, alike
            if isinstance(module, nn.Linear) and module.out_features == 1 and module.bias is not None \
                    and not module.bias.any():
                module.bias.fill_(mean)


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
    setup=setup, classes=False, **COMMON))
