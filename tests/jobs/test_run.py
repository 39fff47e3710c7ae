"""``pretune run``: the plan (budget split, methods, refusals) with a fake estimate, and the whole job
end to end on the tiny BERT, resumed stage by stage."""

from __future__ import annotations

import json

import pytest
import yaml

from pretune.jobs import run as pipeline
from pretune.cli import main
from pretune.config import config_from_dict
from pretune.errors import ConfigError
from pretune.jobs.estimate import Estimate

from conftest import make_rows, tiny_config, write_csv


def fake_estimate(trial_s: float = 10.0, step_s: float | None = None, rows: int = 100):
    """A probe of the tiny config (2 epochs, an evaluation per epoch) whose parts add up to ``trial_s``:
    setup 1 s, 100 steps, 3 evaluations and saves of 0.6 s."""
    fixed = 1.0 + 3 * (0.5 + 0.1)

    def estimate(cfg, steps=8):
        step = step_s if step_s is not None else (trial_s - fixed) / 100
        return Estimate(trial_s=fixed + 100 * step, error_pct=10.0, step_s=step, steps=100, evals=2, eval_s=0.5,
                        setup_s=1.0, save_s=0.1, peak_memory_mb=500.0, device="cpu", probe_steps=steps,
                        train_rows=rows, eval_rows=20, first_setup_s=3.0)
    return estimate


@pytest.fixture
def cfg(tiny_bert, sentiment_csv, sentiment_eval_csv, tmp_path):
    return config_from_dict(tiny_config(tiny_bert, sentiment_csv, tmp_path / "run",  # the default trial alone
                                        data={"eval": str(sentiment_eval_csv)}, search={"portfolio": "none"}))


@pytest.fixture
def with_portfolio(cfg, tmp_path):
    """``cfg`` searching from a two-entry portfolio: the default trial and two more are owed."""
    from pretune.search import portfolio

    path = portfolio.write(tmp_path / "portfolio.json", [portfolio.Entry("a", {"train.lr": 3e-4}),
                                                         portfolio.Entry("b", {"train.lr": 1e-3})], {})
    cfg.search.portfolio = str(path)
    cfg.train.lr = 1e-4  # inside the default space, as both entries are: the search runs all three
    return cfg


def test_plan_splits_the_budget_and_counts_trials(cfg, monkeypatch):
    monkeypatch.setattr("pretune.jobs.estimate.estimate", fake_estimate(trial_s=10.0))
    cfg.search.space = {"train.lr": [1e-3], "train.epochs": [1, 3]}  # mean 2 epochs = the config's 2
    plan = pipeline.make_plan(cfg, 600.0)
    left = 600.0 - plan["probe_s"] - pipeline.RESERVE_S
    assert plan["search_s"] == pytest.approx(0.75 * left, abs=0.1)
    assert plan["compress_s"] == pytest.approx(0.25 * left, abs=0.1)
    assert plan["n_trials_fit"] == int((plan["search_s"] - 2.0) // 10.0)
    # The time share binds, not the estimate (pruned trials are shorter); search.n_trials stays the cap.
    assert plan["n_trials"] == cfg.search.n_trials == 20
    line = pipeline.describe_plan(plan)[1]
    assert f"about {plan['n_trials_fit']} unpruned trials" in line and "up to 20" in line


def test_trial_time_scales_with_the_space_epochs(cfg, monkeypatch):
    monkeypatch.setattr("pretune.jobs.estimate.estimate", fake_estimate(trial_s=10.0))
    cfg.search.space = {"train.epochs": {"type": "int", "low": 3, "high": 5}}  # mean 4 = 2x the config's 2
    # twice the steps (2 x 7.2 s) and an evaluation per epoch (5 x 0.6 s) after 1 s of setup
    assert pipeline.make_plan(cfg, 600.0)["trial_s"] == pytest.approx(1.0 + 2 * 7.2 + 5 * 0.6)


def test_trained_methods_only_when_they_fit(cfg, monkeypatch):
    monkeypatch.setattr("pretune.jobs.estimate.estimate", fake_estimate(trial_s=10.0, step_s=0.05))
    assert pipeline.make_plan(cfg, 3600.0)["methods"] == pipeline.quick_methods() + pipeline.trained_methods()
    # each variant's bench is predicted at 11 s and 3 latency rounds of 8 s: 35 s, the source's too
    assert pipeline.make_plan(cfg, 800.0)["methods"] == pipeline.quick_methods()  # 197 s for compress
    # 72 s: the source and one variant, the one first in QUICK_FIRST
    assert pipeline.make_plan(cfg, 300.0)["methods"] == ["int8-dynamic-ort"]
    assert pipeline.make_plan(cfg, 440.0)["methods"] == ["int8-dynamic-ort", "int8-static-ort"]  # 107 s
    cfg.compress.methods = ["onnx", "prune-magnitude"]
    assert pipeline.make_plan(cfg, 300.0)["methods"] == ["onnx", "prune-magnitude"]  # the user's choice stands


def test_a_tight_budget_gives_the_owed_trial_its_time_before_compress_its_quarter(cfg, monkeypatch):
    """When a quarter for compress would leave the default trial short, the search takes what that trial needs and
    compress keeps its floor (the source's bench); only below that is the fidelity lowered."""
    monkeypatch.setattr("pretune.jobs.estimate.estimate", fake_estimate(trial_s=300.0))
    cfg.search.space = {"train.lr": [1e-4, 1e-3]}  # the epochs are the config's 2
    est = fake_estimate(trial_s=300.0)(cfg)
    full = pipeline._trial_seconds(est, cfg, 2, 100) + 2.0  # the default's 2 epochs and the first trial's setup
    floor = pipeline._compress_floor_s(est)
    assert floor == pytest.approx(2 * 0.5 + 10.0)  # two eval passes and a fresh process
    plan = pipeline.make_plan(cfg, 380.0)  # 0.75 of what is left is about 277 s, short of the trial's 302 s
    left = 380.0 - plan["probe_s"] - pipeline.RESERVE_S
    assert 0.75 * left < full <= left - floor
    assert plan["search_s"] == pytest.approx(full, abs=0.1) and "fidelity" not in plan
    assert plan["compress_s"] == pytest.approx(left - full, abs=0.1) and plan["methods"] == ["int8-dynamic-ort"]
    plan = pipeline.make_plan(cfg, 320.0)  # the floor would not be left: the search's time stops there
    left = 320.0 - plan["probe_s"] - pipeline.RESERVE_S
    assert plan["search_s"] == pytest.approx(left - floor, abs=0.1) and plan["fidelity"]["epochs"] == 1.9
    assert plan["fidelity"]["lowered"] == ["epochs fixed at 1.9 (the trials would have run 2)"]  # tenths that fit
    assert pipeline.apply_fidelity(cfg, plan).train.epochs == 1.9


def test_a_tight_budget_lowers_the_epochs_then_the_trial_count_then_the_rows(with_portfolio, monkeypatch):
    cfg = with_portfolio
    # 2,000 rows; the space's mean is 2.5 epochs: 0.06 s a step -> one trial is about 16 s of steps
    monkeypatch.setattr("pretune.jobs.estimate.estimate", fake_estimate(step_s=0.06, rows=2000))
    est = fake_estimate(step_s=0.06, rows=2000)(cfg)
    plenty = pipeline.make_plan(cfg, 600.0)
    assert "fidelity" not in plenty
    assert plenty["n_trials_fit"] >= pipeline.MIN_TRIALS

    def budget_for(search_s: float) -> float:  # the first trial's setup (2 s) on top, as the plan adds it
        return (search_s + 2.0 + 0.02) / pipeline.SEARCH_SHARE + pipeline.RESERVE_S + 0.02

    # Room for three two-epoch trials: the epochs are fixed at 2 (at least 2/3 of 2.5), every row stays.
    two = pipeline._trial_seconds(est, cfg, 2, 2000)
    plan = pipeline.make_plan(cfg, budget_for(3 * two))
    assert plan["fidelity"] == {"trials": 3, "epochs": 2,
                                "lowered": ["epochs fixed at 2 (the trials would have run 2.5)"]}
    assert plan["n_trials_fit"] >= 3 and plan["trial_s"] == pytest.approx(two, abs=0.01)
    assert "plan: fidelity lowered so that 3 trials fit the search's share: epochs fixed at 2" in \
        pipeline.describe_plan(plan)[-1]

    # Room for three one-epoch trials: two would have 1.5 epochs each, below 2/3 of the default's. The default
    # alone keeps its 2.5 epochs.
    one = pipeline._trial_seconds(est, cfg, 1, 2000)
    plan = pipeline.make_plan(cfg, budget_for(3 * one))
    assert plan["fidelity"] == {"trials": 1, "lowered": ["1 trial planned rather than 3, each on every training row"]}
    assert plan["trial_s"] == pytest.approx(pipeline._trial_seconds(est, cfg, 2.5, 2000), abs=0.01)

    # Room for one trial of one and a half epochs: the default alone, its epochs lowered.
    plan = pipeline.make_plan(cfg, budget_for(pipeline._trial_seconds(est, cfg, 1.5, 2000)))
    assert plan["fidelity"] == {"trials": 1, "epochs": 1.5, "lowered": [
        "epochs fixed at 1.5 (the trials would have run 2.5)", "1 trial planned rather than 3, each on every "
        "training row"]}

    # Room for one one-epoch trial on about half the rows: a seeded subset of about 1,000.
    plan = pipeline.make_plan(cfg, budget_for(pipeline._trial_seconds(est, cfg, 1, 1000)))
    assert plan["fidelity"]["epochs"] == 1 and plan["fidelity"]["trials"] == 1
    assert 950 <= plan["fidelity"]["max_train_samples"] <= 1050
    assert plan["fidelity"]["lowered"][-1] == f"training rows: a seeded subset of " \
                                              f"{plan['fidelity']['max_train_samples']:,} of 2,000"

    # The lowered fidelity is what the search runs: the rows subset, the epochs out of the space.
    search_cfg = pipeline.apply_fidelity(cfg, plan)
    assert search_cfg.data.max_train_samples == plan["fidelity"]["max_train_samples"]
    assert search_cfg.train.epochs == 1 and "train.epochs" not in search_cfg.search.space
    assert "train.lr" in search_cfg.search.space
    assert cfg.train.epochs == 2 and cfg.data.max_train_samples is None  # the run's own config is untouched


def test_fewer_trials_before_fewer_rows_than_the_minimum(with_portfolio, monkeypatch):
    cfg = with_portfolio
    monkeypatch.setattr("pretune.jobs.estimate.estimate", fake_estimate(step_s=0.06, rows=2000))
    est = fake_estimate(step_s=0.06, rows=2000)(cfg)
    # room for one trial of one epoch on 300 rows, not three
    one = pipeline._trial_seconds(est, cfg, 1, 300)
    plan = pipeline.make_plan(cfg, (one + 2.0 + 0.02) / pipeline.SEARCH_SHARE + pipeline.RESERVE_S + 0.02)
    assert plan["fidelity"]["trials"] == 1 and 270 <= plan["fidelity"]["max_train_samples"] <= 330


def test_without_a_portfolio_only_the_default_trial_is_owed(cfg, monkeypatch):
    # search.portfolio none: the budget buys the default configuration's epochs, not sampler draws
    monkeypatch.setattr("pretune.jobs.estimate.estimate", fake_estimate(step_s=0.06, rows=2000))
    est = fake_estimate(step_s=0.06, rows=2000)(cfg)
    two = pipeline._trial_seconds(est, cfg, 2, 2000)
    plan = pipeline.make_plan(cfg, (two + 2.0 + 0.02) / pipeline.SEARCH_SHARE + pipeline.RESERVE_S + 0.02)
    assert plan["fidelity"] == {"trials": 1, "epochs": 2,
                                "lowered": ["epochs fixed at 2 (the trials would have run 2.5)"]}
    cfg.search.portfolio = "none"
    assert pipeline._trials_owed(cfg) == 1


def test_the_shipped_portfolio_owes_the_entries_a_search_would_run(cfg):
    """The packaged portfolio starts with the small-encoder recipe: for a small encoder left at its defaults that
    repeats trial 1 and is not run, so one trial fewer is owed than for the same model at another lr."""
    from pretune.search import portfolio
    from pretune.train import defaults

    shipped = portfolio.resolve("auto")
    assert shipped and shipped[0].config["train.lr"] == defaults.SMALL_ENCODER.values["lr"]
    cfg.search.portfolio, cfg.train.lr = "auto", 1e-4
    assert pipeline._trials_owed(cfg) == min(pipeline.MIN_TRIALS, 1 + len(shipped))  # every entry differs
    for key in defaults.KEYS:
        setattr(cfg.train, key, None)
    cfg.train.epochs, cfg.train.batch_size = 3, 32  # pretune's defaults, as the recipe's entry has them
    assert pipeline._trials_owed(cfg) == min(pipeline.MIN_TRIALS, len(shipped))
    assert cfg.train.lr is None  # counting does not fill the run's own config


def test_budget_too_small_for_any_training_names_the_fix(cfg, monkeypatch):
    monkeypatch.setattr("pretune.jobs.estimate.estimate", fake_estimate(trial_s=120.0))
    with pytest.raises(ConfigError, match=r"too small for any training.*one epoch on 100 rows takes about \d+ s; "
                                          r"raise --budget to at least \d+s"):
        pipeline.make_plan(cfg, 40.0)


def test_refusals_before_anything_is_written(cfg, tmp_path):
    cfg.data.eval = None
    with pytest.raises(ConfigError, match="needs a held-out file"):
        pipeline.run(cfg)
    cfg.data.eval = "dev.csv"
    with pytest.raises(ConfigError, match="cannot read duration"):
        pipeline.run(cfg, budget="soon")
    assert not (tmp_path / "run").exists()


def test_a_folder_with_another_run_is_not_resumed_with_another_config(cfg, monkeypatch, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(cfg.to_yaml())
    (run_dir / "run.json").write_text(json.dumps({"asked": {"budget_s": None}, "stages": {}}))
    cfg.train.lr = 0.5
    with pytest.raises(ConfigError, match=r"another config \(train.lr differ\)"):
        pipeline.run(cfg)
    cfg.train.lr = 5e-3
    with pytest.raises(ConfigError, match="planned with budget None s, not 60.0 s"):
        pipeline.run(cfg, budget="1m")


@pytest.mark.slow
def test_whole_job_on_tiny_bert_then_resume_skips_finished_stages(tiny_bert, tmp_path, capsys, caplog):
    caplog.set_level("INFO", logger="pretune")
    train = write_csv(tmp_path / "train.csv", make_rows(160, seed=1))
    dev = write_csv(tmp_path / "dev.csv", make_rows(40, seed=2))
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"search": {"space": {"train.lr": [0.001, 0.005], "method.name": ["full"]},
                                                 "sampler": "grid"}}))
    argv = ["run", "--config", str(config), "--model", str(tiny_bert), "--train", str(train), "--eval", str(dev),
            "--output", str(tmp_path / "run"), "--budget", "20m", "--n-trials", "2", "--methods",
            "int8-dynamic-torch", "--probe-steps", "3", "--threads", "1", "data.max_length=32", "train.epochs=1",
            "train.progress=false", "compress.threads=1", "compress.bench_runs=10", "compress.isolate=false"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out.strip().splitlines()[-1])
    assert "plan: budget 20.0 min = search" in caplog.text and "per trial (+/-" in caplog.text
    run_dir = tmp_path / "run"
    state = json.loads((run_dir / "run.json").read_text())
    assert {k: v["status"] for k, v in state["stages"].items()} == {"search": "done", "compress": "done",
                                                                  "report": "done"}
    assert state["stages"]["search"]["counts"]["complete"] == 2
    variants = json.loads((run_dir / "compress" / "results.json").read_text())["variants"]
    assert [(v["name"], v["status"] in ("accepted", "rejected")) for v in variants] == [("int8-dynamic-torch", True)]
    html = (run_dir / "report.html").read_text()
    for chart in ("search-history", "learning-curves", "pareto"):
        assert f'data-chart="{chart}"' in html
    from transformers import AutoModelForSequenceClassification
    assert AutoModelForSequenceClassification.from_pretrained(out["best_dir"]).config.num_labels == 2

    # Same command again: nothing is redone. Then a compress "killed" mid-way is redone, search is not.
    assert main(argv) == 0
    again = json.loads((run_dir / "run.json").read_text())
    assert again["stages"]["search"] == state["stages"]["search"]
    assert again["stages"]["compress"] == state["stages"]["compress"]
    again["stages"]["compress"].update(status="running", started=again["stages"]["compress"].get("started", 0))
    (run_dir / "run.json").write_text(json.dumps(again))
    assert main(argv) == 0
    last = json.loads((run_dir / "run.json").read_text())
    assert last["stages"]["search"]["attempts"] == 1 and last["stages"]["compress"]["attempts"] == 2
    assert len(json.loads((run_dir / "search" / "trials.json").read_text())) == 2


@pytest.mark.slow
def test_run_killed_during_search_resumes_without_losing_a_finished_trial(tiny_bert, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    train = write_csv(tmp_path / "train.csv", make_rows(160, seed=1))
    dev = write_csv(tmp_path / "dev.csv", make_rows(40, seed=2))
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"search": {"space": {"train.lr": [0.001, 0.002, 0.005]}, "sampler": "grid",
                                                 "heartbeat": 1}}))
    run_dir = tmp_path / "run"
    argv = [sys.executable, "-m", "pretune.cli", "run", "--config", str(config), "--model", str(tiny_bert),
            "--train", str(train), "--eval", str(dev), "--output", str(run_dir), "--n-trials", "3", "--methods",
            "int8-dynamic-torch", "--probe-steps", "2", "--threads", "1", "data.max_length=32", "train.epochs=2",
            "train.progress=false", "compress.threads=1", "compress.bench_runs=10", "compress.isolate=false"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, HF_HUB_OFFLINE="1"))
    deadline = time.time() + 240
    while not (run_dir / "search" / "trials" / "0001").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)  # during the second trial, the first one finished
    proc.wait()
    state = json.loads((run_dir / "run.json").read_text())
    assert state["stages"]["search"]["status"] == "running"

    time.sleep(2.5)  # > 2 heartbeats: the killed trial is seen as dead and re-queued
    done = subprocess.run(argv, capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert done.returncode == 0, done.stderr[-2000:]
    state = json.loads((run_dir / "run.json").read_text())
    assert state["stages"]["search"]["attempts"] == 2 and state["stages"]["compress"]["status"] == "done"
    trials = json.loads((run_dir / "search" / "trials.json").read_text())
    # the trial finished before the kill is kept, not re-run; the killed one is failed and re-run with its
    # parameters; three trials are counted in all
    assert trials[0]["number"] == 0 and trials[0]["state"] == "complete"
    killed = [t for t in trials if t["state"] == "fail"]
    assert len(killed) == 1 and "worker died" in killed[0]["fail_reason"]
    rerun = [t for t in trials if t["retry_of"] == killed[0]["number"]]
    assert len(rerun) == 1 and rerun[0]["params.train.lr"] == killed[0]["params.train.lr"]
    assert sum(t["state"] in ("complete", "pruned") for t in trials) == 3
    assert (run_dir / "report.html").is_file()


def test_compress_drops_training_methods_when_search_overran(cfg, tmp_path):
    plan = {"budget_s": 600.0, "probe_s": 10.0, "compress_s": 150.0,
            "methods": pipeline.quick_methods() + pipeline.trained_methods()}
    stages = pipeline._Stages(tmp_path, {"stages": {"search": {"status": "done", "seconds": 450.0}}})
    # 600 - 10 probe - 450 search - 30 reserve = 110 s left < 150 planned
    assert pipeline._methods_left(cfg, plan, stages) == pipeline.quick_methods()
    stages.state["stages"]["search"]["seconds"] = 300.0
    assert pipeline._methods_left(cfg, plan, stages) == plan["methods"]  # on plan: everything runs
    cfg.compress.methods = ["distill"]
    stages.state["stages"]["search"]["seconds"] = 590.0
    assert pipeline._methods_left(cfg, dict(plan, methods=["distill"]), stages) == ["distill"]  # the user's choice


@pytest.mark.slow
def test_whole_job_on_tagged_sentences_reports_f1_per_entity_type(tiny_bert, tmp_path, capsys):
    from tagging import write_conll, write_jsonl

    train, dev = write_jsonl(tmp_path / "train.jsonl", 160, 1), write_conll(tmp_path / "dev.conll", 40, 2)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"search": {"space": {"train.lr": [0.005, 0.01]}, "sampler": "grid"}}))
    run_dir = tmp_path / "run"
    assert main(["run", "--config", str(config), "--model", str(tiny_bert), "--train", str(train), "--eval", str(dev),
                 "--output", str(run_dir), "--budget", "20m", "--n-trials", "2", "--methods", "onnx,int8-dynamic-torch",
                 "--probe-steps", "3", "--threads", "1", "data.max_length=32", "train.epochs=2", "train.progress=false",
                 "compress.threads=1", "compress.bench_runs=10", "compress.isolate=false"]) == 0
    capsys.readouterr()
    results = json.loads((run_dir / "compress" / "results.json").read_text())
    assert results["metric"] == "f1" and [v["name"] for v in results["variants"]] == ["onnx", "int8-dynamic-torch"]
    report = (run_dir / "report.md").read_text()
    section = report.split("## F1 per entity type", 1)[1].split("##", 1)[0]
    assert "| model | F1 (all types) | NEG | POS |" in section
    for name in ("best trial", "source (PyTorch fp32)", "onnx", "int8-dynamic-torch"):
        assert f"| {name}" in section
    assert "F1 per entity type" in (run_dir / "report.html").read_text()
