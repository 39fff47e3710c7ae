"""The search benchmark's bookkeeping: who arrived within 0.5 point, and how well early evaluations rank trials."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

_path = Path(__file__).resolve().parents[1] / "benchmarks" / "search_efficiency.py"
_spec = importlib.util.spec_from_file_location("search_efficiency", _path)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_a_pruned_trial_never_counts_as_arriving():
    """The Trainer arm's MedianPruner-stopped trials keep their best evaluation but are not complete trials."""
    arms = {"trainer": [{"state": "pruned", "accuracy": 0.90, "samples": 300, "duration_s": 1.0},
                        {"state": "complete", "accuracy": 0.80, "samples": 1000, "duration_s": 1.0}],
            "tpe": [{"state": "complete", "accuracy": 0.85, "samples": 2000, "duration_s": 1.0}]}
    summary = bench.summarise(arms)
    assert summary["overall_best"] == 0.85
    assert summary["arms"]["tpe"]["samples_to_within_0.5pt"] == 2000
    assert summary["arms"]["trainer"]["samples_to_within_0.5pt"] is None  # 0.90 was a pruned trial's


def _run(folder: Path, trials: list[tuple[int, list[tuple[float, float, float]], float]]) -> Path:
    """A finished run with a tpe arm: per trial (epochs, [(epoch, accuracy, loss), ...], final accuracy)."""
    arm = folder / "tpe"
    table = []
    for n, (epochs, evals, final) in enumerate(trials):
        (arm / "trials" / f"{n:04d}").mkdir(parents=True)
        lines = [json.dumps({"type": "eval", "epoch": e, "accuracy": a, "loss": loss}) for e, a, loss in evals]
        (arm / "trials" / f"{n:04d}" / "metrics.jsonl").write_text("\n".join(lines) + "\n")
        table.append({"number": n, "state": "complete", "accuracy": final, "params.train.epochs": epochs})
    (arm / "trials.json").write_text(json.dumps(table))
    return folder


def test_curves_read_each_trial_at_the_same_fraction_of_its_own_schedule(tmp_path):
    """At a tenth of each schedule, accuracy ranks the trials as they end and loss the other way round. The
    3-epoch trials' first evaluation (a thirtieth of their schedule) is no such reading and would break both."""
    finals = [0.60, 0.70, 0.80, 0.85, 0.90]
    trials = []
    for epochs, early, final in zip((1, 3, 1, 3, 1), (0.51, 0.55, 0.60, 0.62, 0.70), finals):
        first = [(0.1, 0.95, 0.05)] if epochs == 3 else []
        trials.append((epochs, [*first, (0.1 * epochs, early, 1 - early), (epochs, final, 0.3)], final))
    result = bench.curves([str(_run(tmp_path / "s1", trials))], fractions=(0.1,))
    assert result == {"runs": 1, "mean_spearman": {"accuracy@0.10": pytest.approx(1.0),
                                                   "-loss@0.10": pytest.approx(1.0)}}
