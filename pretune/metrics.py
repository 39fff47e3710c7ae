"""Metrics from predictions, shared by the tasks that use them (``pretune.tasks``)."""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional

import numpy as np


def classification_metrics(pred: np.ndarray, gold: np.ndarray, num_labels: int) -> dict[str, float]:
    """Accuracy, macro-F1 over all ``num_labels`` classes, and (multiclass) Matthews correlation."""
    pred, gold = np.asarray(pred, dtype=np.int64), np.asarray(gold, dtype=np.int64)
    cm = np.zeros((num_labels, num_labels), dtype=np.float64)  # (gold, pred)
    np.add.at(cm, (gold, pred), 1)
    tp = np.diag(cm)
    precision = np.divide(tp, cm.sum(0), out=np.zeros_like(tp), where=cm.sum(0) > 0)
    recall = np.divide(tp, cm.sum(1), out=np.zeros_like(tp), where=cm.sum(1) > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    present = (cm.sum(0) + cm.sum(1)) > 0  # classes that occur in gold or pred
    n = cm.sum()
    # Gorodkin's multiclass MCC; equals the binary MCC for two classes.
    t, p = cm.sum(1), cm.sum(0)
    cov_tp = tp.sum() * n - (t * p).sum()
    cov_pp = n * n - (p * p).sum()
    cov_tt = n * n - (t * t).sum()
    mcc = cov_tp / math.sqrt(cov_pp * cov_tt) if cov_pp > 0 and cov_tt > 0 else 0.0
    return {
        "accuracy": float(tp.sum() / n) if n else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "mcc": float(mcc),
    }


def regression_metrics(pred: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    """Mean squared error, Pearson and Spearman correlation."""
    from scipy.stats import pearsonr, spearmanr

    pred, gold = np.asarray(pred, dtype=np.float64), np.asarray(gold, dtype=np.float64)
    constant = np.ptp(pred) == 0 or np.ptp(gold) == 0
    return {
        "mse": float(np.mean((pred - gold) ** 2)),
        "pearson": 0.0 if constant else float(pearsonr(pred, gold)[0]),
        "spearman": 0.0 if constant else float(spearmanr(pred, gold)[0]),
    }


# Below these the eval metrics say the model has learned next to nothing of the task (``chance_level``).
CHANCE_MCC = 0.05  # a model that predicts one class for every row scores an MCC of exactly 0
CHANCE_PEARSON = 0.05


def chance_level(metrics: Optional[Mapping[str, Any]]) -> Optional[str]:
    """A one-line warning when eval ``metrics`` are at chance level, else None.

    Classification: a Matthews correlation within ``CHANCE_MCC`` of 0 (predicting the most frequent class for
    every row scores 0, whatever its accuracy); regression: a Pearson correlation within ``CHANCE_PEARSON`` of 0;
    token classification: an entity F1 of 0. Accuracy alone hides this on unbalanced labels: a model that always
    answers the majority class of TweetEval offensive scores 65%.
    """
    metrics = metrics or {}
    hint = "more epochs (train.epochs), another learning rate (train.lr) or method full may help"

    def value(key):
        v = metrics.get(key)
        return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None

    mcc, pearson, f1 = value("mcc"), value("pearson"), value("f1")
    if mcc is not None and abs(mcc) < CHANCE_MCC:
        acc = value("accuracy")
        shown = f" (accuracy {acc:.4f})" if acc is not None else ""
        return (f"the model is at chance level: MCC {mcc:.3f}{shown}, where answering one class for every row "
                f"scores 0; {hint}")
    if pearson is not None and abs(pearson) < CHANCE_PEARSON:
        return (f"the model is at chance level: Pearson {pearson:.3f}, its predictions do not follow the labels; "
                f"{hint}")
    if f1 == 0.0 and "strict_f1" in metrics:  # token classification's entity scores
        return f"the model is at chance level: entity F1 0, it finds no entity of the eval set; {hint}"
    return None


PER_TYPE = "f1_"  # a metric named f1_<TYPE> is the F1 of one entity type (token classification)


def per_type_f1(metrics: dict) -> dict[str, float]:
    """``{type: F1}`` from the metrics named ``f1_<TYPE>``; empty for a task without types."""
    return {k[len(PER_TYPE):]: v for k, v in metrics.items() if k.startswith(PER_TYPE)}


def higher_is_better(metric: str) -> bool:
    return metric not in ("mse", "loss", "eval_loss", "perplexity")


# Metrics with no fixed scale (a perplexity of 20 or of 2,000): the compress gate compares them in per cent of the
# source's value, not in points.
RELATIVE = ("perplexity", "loss", "eval_loss")


def is_relative(metric: str) -> bool:
    return metric in RELATIVE
