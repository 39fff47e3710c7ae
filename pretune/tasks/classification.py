"""Sequence classification: one class per text (or text pair), from string or integer labels."""

from __future__ import annotations

import numpy as np

from ..data import Encoded
from ..data.readers import is_missing
from ..errors import DataError
from ..metrics import classification_metrics
from .base import Task, TaskSpec, register
from .sentences import COMMON
from .values import as_float


def label_key(v) -> str:
    """Canonical class name: 1, 1.0 and "1" are the same class."""
    f = as_float(v)
    if f is not None and f.is_integer() and not isinstance(v, bool):
        return str(int(f))
    return str(v).strip()


def _sort_key(name: str) -> tuple:
    f = as_float(name)
    return (0, f, "") if f is not None else (1, 0.0, name)


def spec(labels: list, table, column: str, cfg=None) -> TaskSpec:
    for i, v in enumerate(labels):
        if is_missing(v) or (isinstance(v, str) and not v.strip()):
            raise DataError(f"{table.where(i)}, column {column!r}: missing label; every training row needs one")
    names = sorted({label_key(v) for v in labels}, key=_sort_key)
    if len(names) < 2:
        raise DataError(f"{table.path}, column {column!r}: only one class ({names[0]!r}); "
                        "classification needs at least two (use --task regression for numbers)")
    return TaskSpec("classification", names)


def labels(raw: list, spec: TaskSpec, table, column: str, cfg=None) -> np.ndarray:
    index = {name: i for i, name in enumerate(spec.labels)}
    out = []
    for i, v in enumerate(raw):
        key = None if is_missing(v) else label_key(v)
        if key not in index:
            raise DataError(f"{table.where(i)}, column {column!r}: label {v!r} does not occur in the training "
                            f"data (known: {', '.join(spec.labels)}); fix the label or add training rows for it")
        out.append(index[key])
    return np.asarray(out, dtype=np.int64)


def head(spec: TaskSpec) -> dict:
    return {"num_labels": len(spec.labels), "problem_type": "single_label_classification",
            "id2label": dict(enumerate(spec.labels)), "label2id": {n: i for i, n in enumerate(spec.labels)}}


def loss(logits, targets):
    """Mean cross-entropy, in fp32."""
    from torch.nn import functional as F

    return F.cross_entropy(logits.float(), targets)


def soft_loss(student, teacher, temperature: float, mask=None):
    """KL divergence between the softened distributions, times T^2 so its gradients keep their scale."""
    from torch.nn import functional as F

    return F.kl_div(F.log_softmax(student / temperature, -1), F.log_softmax(teacher / temperature, -1),
                    reduction="batchmean", log_target=True) * temperature ** 2


def metrics(outputs: np.ndarray, enc: Encoded, spec: TaskSpec) -> dict:
    return classification_metrics(np.asarray(outputs).argmax(-1), enc.labels, spec.num_labels)


def rows(outputs: np.ndarray, enc: Encoded, spec: TaskSpec, examples=None) -> list[dict]:
    """``label`` and ``probabilities`` (softmax, by class name) per row."""
    z = outputs - outputs.max(-1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(-1, keepdims=True)  # softmax, stable
    return [{"label": spec.labels[int(p.argmax())],
             "probabilities": {name: round(float(v), 6) for name, v in zip(spec.labels, p)}} for p in probs]


TASK = register(Task(
    name="classification", description="one class per text or text pair", spec=spec, labels=labels, head=head,
    loss=loss, soft_loss=soft_loss, metrics=metrics, default_metric="accuracy", rows=rows, stratify=True,
    infer=lambda raw: True,  # the fallback: anything that is not another task's labels is a class name
    **COMMON))
