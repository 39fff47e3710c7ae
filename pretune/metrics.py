"""Metrics from predictions, shared by the tasks that use them (``pretune.tasks``)."""

from __future__ import annotations

import math

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
