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


def _recorded(folder: Path, seed: int, best: float, trials: list[tuple[list[tuple[float, float]], float]]) -> str:
    """A finished run with an unpruned tpe arm of 1-epoch trials on 1000 rows (40 steps of 25):
    per trial [(epoch, accuracy), ...] of its evaluations, and its final accuracy."""
    arm = folder / "tpe"
    table = []
    for n, (evals, final) in enumerate(trials):
        (arm / "trials" / f"{n:04d}").mkdir(parents=True)
        lines = [json.dumps({"type": "eval", "step": round(40 * e), "epoch": e, "samples": round(1000 * e),
                             "accuracy": a, "loss": 1 - a}) for e, a in [*evals, (1.0, final)]]
        (arm / "trials" / f"{n:04d}" / "metrics.jsonl").write_text("\n".join(lines) + "\n")
        table.append({"number": n, "state": "complete", "accuracy": final, "train_samples": 1000,
                      "params.train.epochs": 1})
    (arm / "trials.json").write_text(json.dumps(table))
    (folder / "search_efficiency.json").write_text(json.dumps({"settings": {"seed": seed},
                                                               "summary": {"overall_best": best}}))
    return str(folder)


def test_replay_runs_recorded_trials_through_the_search_pruner(tmp_path):
    """Trials 1 and 2 end within 0.5 point of the best. ASHA judging from the start cuts trial 1 at 0.4 of an
    epoch (0.50 against trial 0's 0.90 at the rung of a third) and trial 3; from half an epoch it first
    judges trial 1 at 0.7, where its 0.92 leads the rung, and cuts trial 3 there."""
    trials = [([(0.4, 0.90), (0.7, 0.90)], 0.80), ([(0.4, 0.50), (0.7, 0.92)], 0.85),
              ([(0.4, 0.95), (0.7, 0.95)], 0.85), ([(0.4, 0.60), (0.7, 0.60)], 0.70)]
    run = _recorded(tmp_path / "s1", 1, 0.85, trials)
    result = bench.replay([run], rules=(("none", 0.0), ("asha", 0.0), ("asha", 0.5)))
    assert result["rules"] == {
        "none": {"samples": 4000, "arrivals_kept": 2, "arrivals": 2, "samples_per_arrival": 2000, "vs_none": 1.0},
        "asha, prune_after 0": {"samples": 2800, "arrivals_kept": 1, "arrivals": 2, "samples_per_arrival": 2800,
                                "vs_none": 1.4},
        "asha, prune_after 0.5": {"samples": 3700, "arrivals_kept": 2, "arrivals": 2, "samples_per_arrival": 1850,
                                  "vs_none": 0.925}}


def test_replay_takes_a_seeds_bar_from_its_last_run(tmp_path):
    """An older run of seed 1 found 0.90; the later one, whose summary holds every arm compared, 0.85."""
    older = _recorded(tmp_path / "old", 1, 0.90, [([(0.5, 0.9)], 0.88)])
    later = _recorded(tmp_path / "new", 1, 0.85, [([(0.5, 0.9)], 0.85)])
    rule = bench.replay([older, later], rules=(("none", 0.0),))["rules"]["none"]
    assert (rule["arrivals"], rule["samples_per_arrival"]) == (2, 1000)
