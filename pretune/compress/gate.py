"""Decisions over benchmarked variants: the accuracy gate, ratios to the source, the Pareto front."""

from __future__ import annotations

from typing import Optional

from ..metrics import higher_is_better, is_relative


def gate_metric(bench: dict) -> str:
    """The metric a bench result is gated on: its task's ``gate_metric`` (perplexity for a language model), else
    its default metric."""
    return bench["eval"].get("gate_metric") or bench["eval"]["metric"]


def points_lost(source: float, variant: float, metric: str) -> float:
    """Metric points (x100) the variant loses against the source, or, for a metric with no fixed scale
    (perplexity, loss), per cent of the source's value; negative when it gains."""
    lost = (source - variant) if higher_is_better(metric) else (variant - source)
    if is_relative(metric):
        return 100.0 * lost / abs(source) if source else (0.0 if lost == 0 else float("inf"))
    return 100.0 * lost


def gate(entry: dict, source_bench: dict, tolerance: float) -> None:
    """Mark ``entry`` accepted or rejected (in place) against the source model's bench result.

    Args:
        entry: a variant record with a ``bench`` result; failed and skipped variants are left as they are.
        source_bench: the bench result of the model the variant came from.
        tolerance: metric points a variant may lose and still be accepted; per cent of the source's value for a
            metric with no fixed scale (a variant's perplexity at most ``tolerance`` % above the source's).
    """
    if entry.get("status") in ("failed", "skipped"):
        return
    metric = gate_metric(source_bench)
    src = source_bench["eval"]["metrics"][metric]
    var = entry["bench"]["eval"]["metrics"][metric]
    lost = points_lost(src, var, metric)
    entry["points_lost"] = lost
    entry["ratios"] = ratios(entry["bench"], source_bench)
    if lost > tolerance + 1e-9:  # 0.85 - 0.84 is 1.0000000000000009 points in floating point
        entry["status"] = "rejected"
        if is_relative(metric):
            entry["reason"] = (f"{metric} {var:.4f} is {lost:.2f}% worse than the source's {src:.4f} "
                               f"(tolerance {tolerance:g}%)")
        else:
            entry["reason"] = (f"{metric} {var:.4f} is {lost:.2f} points below the source's {src:.4f} "
                               f"(tolerance {tolerance:g})")
    else:
        entry["status"] = "accepted"
        entry.pop("reason", None)  # from an earlier measurement that rejected it


def ratios(bench: dict, source: dict) -> dict:
    """How many times faster, smaller and higher-throughput than the source (> 1 is better)."""
    def div(a: Optional[float], b: Optional[float]) -> Optional[float]:
        return a / b if a and b else None

    return {"latency_p50_speedup": div(source["latency_ms"]["p50"], bench["latency_ms"]["p50"]),
            "latency_p95_speedup": div(source["latency_ms"]["p95"], bench["latency_ms"]["p95"]),
            "throughput_ratio": div(bench["throughput"]["samples_per_s"], source["throughput"]["samples_per_s"]),
            "size_reduction": div(source["size_mb"], bench["size_mb"]),
            "parameter_ratio": div(bench["parameters"], source["parameters"])}


def pareto_front(points: dict[str, tuple[float, float, float]]) -> list[str]:
    """Names whose (metric, latency, size) no other point beats: metric up, latency and size down.

    Args:
        points: name -> (metric where higher is better, latency, size).
    """
    def dominates(a, b) -> bool:
        no_worse = a[0] >= b[0] and a[1] <= b[1] and a[2] <= b[2]
        return no_worse and (a[0] > b[0] or a[1] < b[1] or a[2] < b[2])

    return [n for n, p in points.items() if not any(dominates(q, p) for m, q in points.items() if m != n)]
