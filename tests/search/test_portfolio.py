"""Where a search starts: greedy portfolio selection, the default and portfolio trials enqueued first (within the
space, conditional parameters respected, once per study), and the portfolio file's checks."""

from __future__ import annotations

import json
import logging

import pytest

from pretune.errors import ConfigError
from pretune.search import portfolio, search
from pretune.search.portfolio import Entry
from search.fakes import fake_fit

SPACE = {"train.lr": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True},
         "method.name": ["full", "lora"],
         "lora.r": {"type": "categorical", "choices": [4, 8, 16], "when": {"method.name": "lora"}}}


def test_greedy_selection_finds_the_known_best_order():
    """Three tasks. A is best on t1 and t2 (by a little), B alone lifts t3, C is B's near-copy and D is worse than the
    default everywhere. With the default first, A adds the most (2/3), then B (1/3); C and D add nothing."""
    scores = {"t1": {"def": 0.80, "A": 0.90, "B": 0.81, "C": 0.81, "D": 0.70},
              "t2": {"def": 0.60, "A": 0.70, "B": 0.60, "C": 0.59, "D": 0.50},
              "t3": {"def": 0.30, "A": 0.30, "B": 0.50, "C": 0.49, "D": None}}
    assert portfolio.greedy(scores, "def") == ["def", "A", "B"]
    assert portfolio.greedy(scores, "def", size=4) == ["def", "A", "B", "C"]  # C: the best of what is left
    assert portfolio.mean_best(scores, "def", ["def"]) == 0.0
    assert portfolio.mean_best(scores, "def", ["def", "A", "B"]) == pytest.approx(1.0)
    # normalised per task: the gain over the default as a share of the best gain (t3: C's 0.19 of B's 0.20)
    assert portfolio.normalised(scores, "def")["t3"]["C"] == pytest.approx(0.95)
    with pytest.raises(ValueError, match="task 't3' has no score for the default candidate 'X'"):
        portfolio.greedy({"t3": {"A": 1.0}}, "X")


def _write(path, entries):
    portfolio.write(path, [Entry(n, c) for n, c in entries], {"what": "a test"})
    return str(path)


def _cfg(tmp_path, portfolio_file, n_trials=5, **search_settings):
    return {"output": str(tmp_path / "s"), "train": {"lr": 5e-5},
            "search": {"space": SPACE, "n_trials": n_trials, "seed": 0, "portfolio": portfolio_file,
                       **search_settings}}


def test_the_default_then_the_portfolio_are_the_first_trials_then_the_sampler(tmp_path, caplog):
    file = _write(tmp_path / "p.json", [
        ("lora-hi", {"train.lr": 5e-4, "method.name": "lora", "lora.r": 16}),
        ("too-fast", {"train.lr": 5e-2, "method.name": "full"}),  # outside the space: skipped
        ("full-lo", {"train.lr": 2e-5, "method.name": "full", "lora.r": 32}),  # lora.r not active with full
        ("lora-def", {"method.name": "lora", "train.lr": 5e-5}),  # lora.r: the run's own (8)
        ("copy", {"train.lr": 5e-5}),  # the same point as the default: kept once
    ])
    with caplog.at_level(logging.INFO, logger="pretune.search"):
        result = search(_cfg(tmp_path, file, n_trials=6), train_fn=fake_fit)
    rows = result.trials
    assert [r["source"] for r in rows] == ["default", "portfolio:lora-hi", "portfolio:full-lo",
                                          "portfolio:lora-def", "sampler", "sampler"]
    assert (rows[0]["params.train.lr"], rows[0]["params.method.name"]) == (5e-5, "full")
    assert "params.lora.r" not in rows[0] or rows[0]["params.lora.r"] is None
    assert (rows[1]["params.train.lr"], rows[1]["params.lora.r"]) == (5e-4, 16)
    assert rows[2]["params.method.name"] == "full" and rows[2].get("params.lora.r") is None
    assert (rows[3]["params.method.name"], rows[3]["params.lora.r"]) == ("lora", 8)
    skipped = [m for m in caplog.messages if "skipped" in m]
    assert skipped == ["search: portfolio entry too-fast skipped: train.lr=0.05 is outside the space's range "
                       "[1e-05, 0.001]"]
    written = json.loads((tmp_path / "s" / "trials.json").read_text())
    assert [r["source"] for r in written][:2] == ["default", "portfolio:lora-hi"]


def test_n_trials_caps_the_portfolio_and_a_resumed_study_does_not_enqueue_it_again(tmp_path):
    file = _write(tmp_path / "p.json", [(f"e{i}", {"train.lr": 1e-4 * (i + 2)}) for i in range(6)])
    first = search(_cfg(tmp_path, file, n_trials=3), train_fn=fake_fit)
    assert [r["source"] for r in first.trials] == ["default", "portfolio:e0", "portfolio:e1"]
    again = search(_cfg(tmp_path, file, n_trials=6), train_fn=fake_fit)  # the same study, three more trials
    assert [r["source"] for r in again.trials] == ["default", "portfolio:e0", "portfolio:e1"] + ["sampler"] * 3


def test_portfolio_none_starts_from_the_default_alone(tmp_path):
    result = search(_cfg(tmp_path, "none", n_trials=3), train_fn=fake_fit)
    assert [r["source"] for r in result.trials] == ["default", "sampler", "sampler"]


def test_a_bad_portfolio_file_is_a_one_line_error_before_any_trial(tmp_path):
    bad = _write(tmp_path / "bad.json", [("ok", {"train.lr": 1e-4}), ("typo", {"train.learning_rate": 1e-4})])
    with pytest.raises(ConfigError) as e:
        search(_cfg(tmp_path, bad), train_fn=fake_fit)
    assert str(e.value).startswith(f"{bad}, entry 2 (typo): unknown config key 'train.learning_rate'; valid: ")
    assert "\n" not in str(e.value) and not (tmp_path / "s").exists()
    (tmp_path / "other.json").write_text(json.dumps({"entries": []}))
    with pytest.raises(ConfigError, match="is not a portfolio file"):
        search(_cfg(tmp_path, str(tmp_path / "other.json")), train_fn=fake_fit)
    with pytest.raises(ConfigError, match="not found; give a file made by `pretune portfolio build`"):
        search(_cfg(tmp_path, str(tmp_path / "missing.json")), train_fn=fake_fit)


def _finished_search(folder, metric, direction, trials):
    """The files `pretune search` leaves, for ``trials`` [(source, lr, value)]."""
    folder.mkdir(parents=True)
    rows = [{"number": i, "state": "complete", "source": s, metric: v, "params.train.lr": lr,
             "params.method.name": "full"} for i, (s, lr, v) in enumerate(trials)]
    rows.append({"number": len(rows), "state": "fail", "source": "sampler", metric: None, "params.train.lr": 1e-2})
    (folder / "trials.json").write_text(json.dumps(rows))
    (folder / "results.json").write_text(json.dumps({"objectives": [[metric, direction]]}))
    return str(folder)


def test_portfolio_build_learns_from_a_teams_searches_and_the_file_drives_a_search(tmp_path, capsys):
    """lr 1e-4 beats the default on all three searches (a little on the third), 3e-4 lifts the third a lot:
    that order. The third search minimises a loss. 1.05e-4 in the second counts as 1e-4 (nearly the same)."""
    from pretune.cli import main

    a = _finished_search(tmp_path / "a", "accuracy", "maximize",
                         [("default", 5e-5, 0.80), ("sampler", 1e-4, 0.85), ("sampler", 1e-3, 0.60)])
    b = _finished_search(tmp_path / "b", "accuracy", "maximize",
                         [("default", 5e-5, 0.70), ("sampler", 1.05e-4, 0.78), ("sampler", 3e-4, 0.74)])
    c = _finished_search(tmp_path / "c", "loss", "minimize",
                         [("default", 5e-5, 2.0), ("sampler", 3e-4, 1.5), ("sampler", 1e-4, 1.9)])
    out = tmp_path / "mine.json"
    assert main(["portfolio", "build", a, b, c, "--output", str(out), "--per-search", "2"]) == 0
    entries = portfolio.read(out)
    assert [e.config["train.lr"] for e in entries[:2]] == [1e-4, 3e-4]
    source = json.loads(out.read_text())["source"]
    assert source["searches"] == [a, b, c] and source["command"].startswith("pretune portfolio build ")
    result = search(_cfg(tmp_path, str(out), n_trials=3), train_fn=fake_fit)
    assert [r["source"] for r in result.trials] == ["default", "portfolio:p00", "portfolio:p01"]
    assert main(["portfolio", "build", a, "--output", str(tmp_path / "one.json")]) == 2
    assert "needs at least two finished searches" in capsys.readouterr().err


# ----------------------------------------------------------------------------- benchmarks/portfolio/select.py


def _select():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "portfolio" / "select.py"
    spec = importlib.util.spec_from_file_location("portfolio_select", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _matrix(path, cells):
    """A matrix.csv of (task, candidate, seed, score or None for a failed cell)."""
    import csv

    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "task", "candidate", "seed", "metric", "score", "status"])
        for task, cand, seed, score in cells:
            w.writerow(["minilm", task, cand, seed, "accuracy", "" if score is None else score,
                        "ok" if score is not None else "failed"])
        w.writerow(["other", "t1", "A", 0, "accuracy", 0.99, "ok"])  # another model's row: not read
    return path


def test_the_matrix_reads_as_mean_scores_over_seeds_with_failed_cells_empty(tmp_path):
    select = _select()
    path = _matrix(tmp_path / "m.csv", [("t1", "c00", 0, 0.5), ("t1", "A", 0, 0.6), ("t1", "A", 1, 0.8),
                                         ("t1", "B", 0, None), ("t2", "c00", 0, 0.4), ("t2", "A", 0, 0.3)])
    scores = select.read_matrix(path, "minilm")
    assert scores == {"t1": {"c00": 0.5, "A": pytest.approx(0.7), "B": None}, "t2": {"c00": 0.4, "A": 0.3}}
    assert select.complete(scores) == {"t1": {"c00": 0.5, "A": pytest.approx(0.7)}, "t2": {"c00": 0.4, "A": 0.3}}
    assert select.complete(scores, partial=True) == scores


def test_random_draws_expect_exactly_the_mean_best_over_every_draw():
    import itertools

    select = _select()
    norm = {"a": 1.0, "b": 0.5, "c": 0.2, "d": 0.0, "e": -0.3}
    for k in (1, 2, 3, 5, 7):
        draws = list(itertools.combinations(norm, min(k, len(norm))))
        brute = sum(max(norm[c] for c in d) for d in draws) / len(draws)
        assert select.expected_random_best(norm, list(norm), k) == pytest.approx(brute)


def test_leave_one_task_out_builds_each_portfolio_without_its_task(tmp_path):
    """A lifts t1 and t2 only, B lifts t3 only. Held out, t3's portfolio (from t1, t2) holds A and not B, so at two
    trials it finds nothing on t3; t1's (from t2, t3) has A and B and finds A."""
    select = _select()
    scores = {"t1": {"c00": 0.5, "A": 0.7, "B": 0.5}, "t2": {"c00": 0.5, "A": 0.6, "B": 0.4},
              "t3": {"c00": 0.5, "A": 0.4, "B": 0.9}}
    loo = select.leave_one_out(scores, "c00", budgets=(1, 2, 3))
    assert loo["t3"]["order"] == ["c00", "A"] and loo["t3"]["portfolio"] == {1: 0.0, 2: 0.0, 3: 0.0}
    assert loo["t1"]["order"][:2] == ["c00", "A"] and loo["t1"]["portfolio"][2] == 1.0
    # one random draw is A (0.1 below the default, a quarter of B's gain: -0.25) or B (1); it has no default
    assert loo["t3"]["random"][1] == pytest.approx((1.0 - 0.25) / 2)
    # in points below each task's best cell: t3's best is B (0.9); the default is 40 below, A 50
    assert loo["t3"]["gap"]["portfolio"] == {1: pytest.approx(40.0), 2: pytest.approx(40.0), 3: pytest.approx(40.0)}
    assert loo["t3"]["gap"]["random"][1] == pytest.approx((50.0 + 0.0) / 2)
    assert loo["t1"]["gap"]["portfolio"] == {1: pytest.approx(20.0), 2: 0.0, 3: 0.0}


def test_the_written_portfolio_is_the_default_then_the_greedy_order_and_reads_back(tmp_path, capsys):
    select = _select()
    cells = [("t1", "c00", 0, 0.5), ("t1", "c01", 0, 0.7), ("t1", "c02", 0, 0.5),
             ("t2", "c00", 0, 0.5), ("t2", "c01", 0, 0.6), ("t2", "c02", 0, 0.4),
             ("t3", "c00", 0, 0.5), ("t3", "c01", 0, 0.4), ("t3", "c02", 0, 0.9)]
    candidates = tmp_path / "candidates.json"
    candidates.write_text(json.dumps({"candidates": [
        {"name": "c00", "label": "default", "config": {"train.lr": 5e-5}},
        {"name": "c01", "label": "hot", "config": {"train.lr": 3e-4, "train.layer_lr_decay": 0.8}},
        {"name": "c02", "label": "lora", "config": {"train.lr": 5e-4, "method.name": "lora", "lora.r": 8}}]}))
    out = tmp_path / "portfolio.json"
    select.main(["--matrix", str(_matrix(tmp_path / "m.csv", cells)), "--candidates", str(candidates),
                 "--default", "c00", "--write", str(out)])
    entries = portfolio.read(out)
    assert [e.name for e in entries] == ["c00", "c01", "c02"]  # the default, then c01 lifts two tasks, c02 one
    assert entries[2].config == {"train.lr": 5e-4, "method.name": "lora", "lora.r": 8}
    source = json.loads(out.read_text())["source"]
    assert source["tasks"] == ["t1", "t2", "t3"] and source["default_config"] == {"train.lr": 5e-5}
    assert source["mean_normalised_score"] == {"1": 0.0, "2": pytest.approx(2 / 3, abs=1e-4), "3": 1.0}
    assert "leave-one-task-out" in capsys.readouterr().out


def test_the_matrix_candidates_file_is_the_generators_and_lies_in_the_default_space():
    """candidates.json is what benchmarks/portfolio/candidates.py writes (the matrix's names stay bound to the same
    configurations), every candidate is a valid config inside pretune's default space, and the candidates the
    small-encoder recipes came from hold their values."""
    from benchmarks.portfolio import candidates as candlib

    from pretune.train.defaults import SMALL_ENCODER, SMALL_ENCODER_FREEZE, SMALL_ENCODER_LORA

    on_disk = candlib.load()
    assert on_disk == json.loads(json.dumps(candlib.generate()))
    candlib.check_space(on_disk)
    named = {c["name"]: c["config"] for c in on_disk}
    assert {f"train.{k}": v for k, v in SMALL_ENCODER.values.items()}.items() <= named["c04"].items()
    assert {f"train.{k}": v for k, v in SMALL_ENCODER_LORA.values.items()}.items() <= named["c05"].items()
    assert {f"train.{k}": v for k, v in SMALL_ENCODER_FREEZE.values.items()}.items() <= named["c07"].items()
