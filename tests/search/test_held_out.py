"""The leave-one-task-out measure of searches (benchmarks/portfolio/held_out.py): which trials each pretune arm
starts from, and how the arms' trials become the normalised table and the targets."""

from __future__ import annotations

import pytest

from benchmarks.portfolio import held_out
from pretune.search import portfolio
from search.fakes import fake_fit


def _base(tmp_path):
    return {"output": str(tmp_path / "unused"), "train": {"lr": 5e-5}}


def test_the_pretune_arm_starts_from_the_default_and_the_portfolio_and_the_others_from_their_sampler(tmp_path):
    file = portfolio.write(tmp_path / "p.json", [portfolio.Entry("hi", {"train.lr": 3e-4, "train.layer_lr_decay": 0.8}),
                                                 portfolio.Entry("lo", {"train.lr": 2e-5})], {"what": "a test"})
    a = held_out.run_pretune_arm("pretune", _base(tmp_path), "accuracy", 4, 0, tmp_path, file, fake_fit)
    assert [t["source"] for t in a] == ["default", "portfolio:hi", "portfolio:lo", "sampler"]
    assert all(isinstance(t["score"], float) for t in a)
    for arm in ("tpe", "random"):
        trials = held_out.run_pretune_arm(arm, _base(tmp_path), "accuracy", 3, 0, tmp_path, None, fake_fit)
        assert [t["source"] for t in trials] == ["sampler"] * 3, arm
    # A rerun resumes the study: nothing enqueued now, nothing run twice
    again = held_out.run_pretune_arm("tpe", _base(tmp_path), "accuracy", 3, 0, tmp_path, None, fake_fit)
    assert [t["source"] for t in again] == ["sampler"] * 3
    assert "train.layer_lr_decay" in held_out.search_space()


def _record(task, seed, arm, scores):
    return {"task": task, "seed": seed, "arm": arm, "trials": [{"score": s} for s in scores]}


def test_each_arm_is_normalised_between_the_default_and_the_best_any_arm_found():
    """One task: the default scores 0.80 and the best of any arm 0.90. The portfolio arm reaches 0.90 at its 3rd
    trial; TPE reaches 0.85 at its 8th; random never beats 0.78 (below the default); the Trainer has a failed
    trial (None)."""
    pretune_arm = [0.80, 0.82, 0.90] + [0.81] * 13
    records = [_record("t", 0, "pretune", pretune_arm),
               _record("t", 0, "tpe", [0.70] * 7 + [0.85] + [0.70] * 8),
               _record("t", 0, "random", [0.78] * 16),
               _record("t", 0, "trainer", [None, 0.88] + [0.5] * 14),
               _record("u", 0, "tpe", [0.5] * 16)]  # a task with arms still to run
    table = held_out.normalised_table(records)
    assert table["missing"] == [("u", 0, "pretune"), ("u", 0, "random"), ("u", 0, "trainer")]
    cell = table["cells"][("t", 0)]
    assert cell["default"] == {k: 0.0 for k in held_out.BUDGETS}
    assert cell["pretune"][1] == 0.0 and cell["pretune"][2] == pytest.approx(0.2) and cell["pretune"][4] == 1.0
    assert cell["tpe"][4] == pytest.approx(-1.0) and cell["tpe"][8] == pytest.approx(0.5)
    assert cell["random"][16] == pytest.approx(-0.2)
    assert cell["trainer"][1] == 0.0 and cell["trainer"][2] == pytest.approx(0.8)  # a failed first trial: none yet
    lines = held_out.targets(table)
    assert lines[0].startswith("a at 4 trials 1.000 against b at 16 0.500 and d at 16 0.800: met")
    assert lines[1] == "a never below e: met"
    assert lines[2].startswith("a at 8 trials within 0.5 point of the best of any arm at 16: met")
    row = "| (a) pretune: default, portfolio, TPE | 0.000 | 0.200 | 1.000 | 1.000 | 1.000 |"
    assert row in held_out.markdown(table)
    # the same in points below the best any arm found (0.90): TPE at 4 trials is 0.70 (20 points), the default 10
    assert table["points"][("t", 0)]["tpe"][4] == pytest.approx(20.0)
    assert table["points_mean"]["default"][16] == pytest.approx(10.0)
    assert "| (a) pretune: default, portfolio, TPE | 10.0 | 8.0 | 0.0 | 0.0 | 0.0 |" in held_out.markdown(
        table, what="points_mean")
    assert "| t | 0 | 0.9000 | 0.8500 | 0.7800 | 0.8800 | 0.8000 |" in held_out.raw_markdown(table)
    chart = held_out.svg(table)
    assert chart.startswith("<svg") and "<style>" in chart
    # the trial axis is a log scale labelled in trials, one tick per budget
    assert [t for t in ("1", "2", "4", "8", "16") if f'text-anchor="middle">{t}</text>' in chart] == \
        ["1", "2", "4", "8", "16"]
