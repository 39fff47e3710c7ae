"""A synthetic saved run folder (JSON only, shaped like what search, compress and run write)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml


def _bench(acc: float, p50: float, size: float, params: int = 1000) -> dict:
    return {"eval": {"metric": "accuracy", "metrics": {"accuracy": acc}, "rows": 60},
            "latency_ms": {"p50": p50, "p95": p50 * 1.3, "mean": p50 * 1.1},
            "throughput": {"batch_size": 32, "samples_per_s": 1000 / p50}, "size_mb": size, "parameters": params,
            "threads": 2, "environment": {"cpu": "x86_64", "cpu_count": 2, "loadavg_1m": 0.5}}


def write_run(root: Path, *, with_compress: bool = True, n_trials: int = 5) -> Path:
    """Write search/, compress/, run.json and config.yaml under ``root``; return ``root``."""
    search = root / "search"
    trials = []
    for n in range(n_trials):
        state = ["complete", "complete", "pruned", "fail", "complete"][n % 5]
        acc = None if state == "fail" else 0.6 + 0.05 * n
        source = "default" if n == 0 else "portfolio:c07" if n == 1 else "sampler"
        trials.append({"number": n, "state": state, "source": source, "accuracy": acc, "duration_s": 2.0 + n,
                       "train_samples": 320, "fail_reason": "lora.r: too big <b>" if state == "fail" else None,
                       "params.train.lr": 10 ** -(3 + n % 2), "params.method.name": ["full", "lora"][n % 2]})
        tdir = search / "trials" / f"{n:04d}"
        tdir.mkdir(parents=True)
        lines = [{"type": "train", "step": s, "loss": 1.0 / s, "lr": 1e-3} for s in (1, 2, 3, 4)]
        lines += [{"type": "eval", "step": s, "samples": 16 * s, "accuracy": 0.5 + 0.02 * s + 0.01 * n}
                  for s in (2, 4)]
        (tdir / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
        (tdir / "results.json").write_text(json.dumps({
            "steps": 4, "train_samples": 64, "environment": {
                "versions": {"python": "3.12", "torch": "2.13.0"}, "threads": 2, "cpu": "x86_64", "cuda": False}}))
    (search / "trials.json").write_text(json.dumps(trials))
    (search / "results.json").write_text(json.dumps({
        "objectives": [["accuracy", "maximize"]], "best_trial": 4, "best_params": {"train.lr": 1e-3},
        "best_values": [0.8], "counts": {"done": n_trials, "pruned": 1, "failed": 1}, "train_samples": 1600,
        "stopped_by": "n_trials"}))
    (search / "importances.json").write_text(json.dumps({"accuracy": {"train.lr": 0.7, "method.name": 0.3}}))
    if with_compress:
        (root / "compress").mkdir()
        variants = [{"name": "int8-dynamic-ort", "status": "accepted", "bench": _bench(0.79, 2.0, 0.5),
                     "points_lost": 1.0, "pareto": True},
                    {"name": "prune-magnitude", "status": "rejected", "bench": _bench(0.5, 4.0, 1.0),
                     "points_lost": 30.0, "pareto": False, "reason": "accuracy 0.5 is 30 points below"},
                    {"name": "distill", "status": "failed", "error": "distill needs training rows"}]
        (root / "compress" / "results.json").write_text(json.dumps({
            "source": "x", "data": "dev.csv", "metric": "accuracy", "tolerance_points": 1.0,
            "source_bench": _bench(0.8, 4.0, 2.0), "variants": variants,
            "pareto_front": ["source", "int8-dynamic-ort"]}))
    (root / "run.json").write_text(json.dumps({
        "asked": {"model": "tiny", "train": "train.csv", "eval": None, "budget_s": 600},
        "plan": {"budget_s": 600, "search_s": 420, "compress_s": 170, "trial_s": 40, "trial_error_pct": 12.5,
                 "n_trials": 10, "methods": ["int8-dynamic-ort"]},
        "stages": {"search": {"status": "done", "seconds": 400.0, "attempts": 2}}}))
    (root / "config.yaml").write_text(yaml.safe_dump({"model": {"path": "tiny"}, "data": {"train": "train.csv"}}))
    return root


@pytest.fixture
def run_writer():
    """``write_run`` itself, for tests that need a variant of the folder."""
    return write_run


@pytest.fixture
def saved_run(tmp_path) -> Path:
    return write_run(tmp_path / "run")
