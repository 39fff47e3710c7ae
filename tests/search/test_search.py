"""The search loop with a fake ``fit``: failures, pruning, budgets, resume, Pareto set, results files."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import optuna
import pytest

from pretune.search import search
from search.fakes import FakeResult, fake_fit

LR = {"type": "float", "low": 1e-6, "high": 1e-2, "log": True}


def cfg(tmp_path, **search_settings) -> dict:
    settings = {"space": {"train.lr": LR}, "seed": 0, "pruner": "none", **search_settings}
    return {"output": str(tmp_path / "s"), "search": settings}


@pytest.mark.slow
def test_failed_trials_are_recorded_with_reason_and_the_study_goes_on(tmp_path):
    space = {"train.lr": LR, "method.name": ["full", "bitfit", "freeze"],
             "method.train_top_layers": {"type": "int", "low": 3, "high": 4, "when": {"method.name": "freeze"}}}
    result = search(cfg(tmp_path, space=space, n_trials=12, sampler="random"), train_fn=fake_fit)
    failed = [r for r in result.trials if r["state"] == "fail"]
    reasons = {r["fail_reason"].split(";")[0] for r in failed}
    assert "loss became nan at step 3" in reasons  # bitfit diverges in the fake
    assert any("train_top_layers=4" in r for r in reasons)  # invalid combination
    assert result.counts["done"] == 12 and result.counts["complete"] >= 1
    assert result.counts["failed"] == len(failed)
    assert all(r["params.method.name"] in ("bitfit", "freeze") for r in failed)


@pytest.mark.slow
def test_results_files_best_folder_and_importances(tmp_path):
    result = search(cfg(tmp_path, space={"train.lr": LR, "train.batch_size": [16, 32]}, n_trials=6),
                    train_fn=fake_fit)
    out = tmp_path / "s"
    rows = list(csv.DictReader(open(out / "trials.csv")))
    assert [int(r["number"]) for r in rows] == list(range(6))
    assert {"state", "accuracy", "duration_s", "train_samples", "params.train.lr", "fail_reason"} <= set(rows[0])
    assert json.loads((out / "trials.json").read_text()) == json.loads(json.dumps(result.trials))
    best = max(result.trials, key=lambda r: r["accuracy"])
    assert result.best_trial == best["number"] and result.best_values == [best["accuracy"]]
    # best/ is a copy of the best trial's model; other trials' models were deleted to save disk.
    assert json.loads((out / "best" / "params.json").read_text())["lr"] == best["params.train.lr"]
    kept = sorted(p.parent.name for p in out.glob("trials/*/model"))
    assert kept == [f"{best['number']:04d}"]
    imp = json.loads((out / "importances.json").read_text())["accuracy"]
    assert set(imp) == {"train.lr", "train.batch_size"} and abs(sum(imp.values()) - 1) < 1e-3
    from pretune.config import load_config
    assert load_config(out / "config.yaml").search.n_trials == 6  # the resolved config is saved and loads
    summary = json.loads((out / "results.json").read_text())
    assert summary["best_trial"] == best["number"] and summary["stopped_by"] == "6 trials"


@pytest.mark.slow
def test_rerun_resumes_without_repeating_or_double_counting(tmp_path):
    first = search(cfg(tmp_path, n_trials=3), train_fn=fake_fit)
    second = search(cfg(tmp_path, n_trials=5), train_fn=fake_fit)
    assert [r["number"] for r in second.trials] == [0, 1, 2, 3, 4]
    assert second.trials[:3] == first.trials
    lrs = [r["params.train.lr"] for r in second.trials]
    assert len(set(lrs)) == 5  # the restarted sampler did not replay the first draws
    # Budget already spent: running again trains nothing.
    third = search(cfg(tmp_path, n_trials=5), train_fn=fake_fit)
    assert len(third.trials) == 5


def test_sample_budget_counts_pruned_trials_and_stops(tmp_path):
    # fake_fit uses 2 * batch_size samples per evaluation, 4 evaluations: 256 samples per full trial of 32.
    result = search(cfg(tmp_path, n_trials=100, budget_samples=1000, space={"train.lr": LR, "train.batch_size": [32]}),
                    train_fn=fake_fit)
    assert result.stopped_by == "1,000 training samples"
    assert result.train_samples == sum(r["train_samples"] for r in result.trials)
    assert 1000 <= result.train_samples < 1000 + 256
    assert len(result.trials) == 4


@pytest.mark.slow
@pytest.mark.parametrize("pruner", ["asha", "median", "hyperband"])
def test_pruners_stop_bad_trials_early_and_save_samples(tmp_path, pruner):
    result = search(cfg(tmp_path, n_trials=10, pruner=pruner, sampler="random"), train_fn=fake_fit)
    pruned = [r for r in result.trials if r["state"] == "pruned"]
    assert pruned, "no trial was pruned"
    full = max(r["train_samples"] for r in result.trials if r["state"] == "complete")
    assert all(r["train_samples"] < full for r in pruned)  # stopped before the end
    # Only trials worse than the best are pruned.
    best = max(r["accuracy"] for r in result.trials if r["state"] == "complete")
    assert all(r["last_step"] is not None for r in pruned)
    assert result.best_values[0] == best


@pytest.mark.slow
def test_multi_objective_returns_the_pareto_set(tmp_path):
    space = {"train.lr": LR, "method.name": ["full", "lora"],
             "lora.r": {"choices": [4, 8, 16], "when": {"method.name": "lora"}}}
    result = search(cfg(tmp_path, space=space, n_trials=12, sampler="nsga2", pruner=None,
                        objectives=["accuracy", "trainable_params"]), train_fn=fake_fit)
    done = [r for r in result.trials if r["state"] == "complete"]
    assert result.pareto
    dominated = lambda a, b: (b["accuracy"] >= a["accuracy"] and b["trainable_params"] <= a["trainable_params"]
                              and (b["accuracy"], b["trainable_params"]) != (a["accuracy"], a["trainable_params"]))
    for p in result.pareto:
        assert not any(dominated(p, other) for other in done)
    for r in done:
        if r not in result.pareto:
            assert any(dominated(r, p) for p in result.pareto)
    assert (tmp_path / "s" / "best").is_dir()


def test_wall_time_budget_stops_and_the_cut_trial_is_not_counted(tmp_path, monkeypatch):
    import pretune.search.runner as runner

    clock = {"t": 1000.0}
    monkeypatch.setattr(runner.time, "time", lambda: clock["t"])

    def slow_fit(config, *, callback=None, overwrite=False):
        def tick(step, metrics):
            clock["t"] += 4  # each evaluation "takes" 4 s
            callback(step, metrics)
        return fake_fit(config, callback=tick, overwrite=overwrite)

    monkeypatch.setattr("pretune.search.time.time", lambda: clock["t"])
    # Trial 0 evaluates at 4, 8, 12, 16 s; trial 1 at 20, 24 and 28 s, past the deadline and not its last.
    result = search(cfg(tmp_path, n_trials=50, timeout=26, portfolio="none"), train_fn=slow_fit)
    cut = [r for r in result.trials if r["fail_reason"] == "stopped by the search budget"]
    assert len(cut) == 1 and result.counts["done"] == len(result.trials) - 1 == 1
    assert result.stopped_by == "wall time"


def test_progress_line_reports_counts_best_and_budget(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="pretune.search")
    search(cfg(tmp_path, n_trials=3, budget_samples=10_000), train_fn=fake_fit)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("search: trials")]
    assert lines[-1].startswith("search: trials 3/3 (0 pruned, 0 failed, 0 running), best accuracy 0.")
    assert "samples 768/10,000" in lines[-1]


def test_study_opens_with_plain_optuna(tmp_path):
    search(cfg(tmp_path, n_trials=2), train_fn=fake_fit)
    study = optuna.load_study(study_name="pretune", storage=f"sqlite:///{tmp_path / 's' / 'study.db'}")
    assert len(study.trials) == 2 and study.best_trial.user_attrs["train_samples"] == 256


@pytest.mark.parametrize("error", ["torch", "runtime"])
def test_out_of_memory_fails_the_trial_with_its_reason(tmp_path, error):
    import torch

    def oom_fit(config, *, callback=None, overwrite=False):
        if config.train.batch_size == 64:
            raise (torch.OutOfMemoryError("tried to allocate 2 GiB") if error == "torch"
                   else RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"))
        return fake_fit(config, callback=callback, overwrite=overwrite)

    result = search(cfg(tmp_path, space={"train.batch_size": [16, 64]}, sampler="grid", n_trials=2), train_fn=oom_fit)
    by_bs = {r["params.train.batch_size"]: r for r in result.trials}
    assert by_bs[64]["state"] == "fail" and by_bs[64]["fail_reason"].startswith("out of memory")
    assert by_bs[16]["state"] == "complete"


def test_a_bug_in_training_is_not_swallowed(tmp_path):
    def buggy_fit(config, *, callback=None, overwrite=False):
        raise KeyError("oops")

    with pytest.raises(KeyError):
        search(cfg(tmp_path, n_trials=2), train_fn=buggy_fit)


def test_pretune_search_is_callable_as_the_api(tmp_path):
    import pretune
    import pretune.search.runner  # noqa: F401  (importing a submodule must not hide the API)

    result = pretune.search(cfg(tmp_path, n_trials=1), train_fn=fake_fit)
    assert result.counts["done"] == 1


def test_ctrl_c_mid_trial_then_rerun_does_not_count_the_interrupted_trial(tmp_path):
    calls = {"n": 0}

    def interrupted_fit(config, *, callback=None, overwrite=False):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return fake_fit(config, callback=callback, overwrite=overwrite)

    with pytest.raises(KeyboardInterrupt):
        search(cfg(tmp_path, n_trials=3), train_fn=interrupted_fit)
    result = search(cfg(tmp_path, n_trials=3), train_fn=interrupted_fit)
    assert [r["state"] for r in result.trials] == ["complete", "fail", "complete", "complete"]
    assert result.trials[1]["fail_reason"] == "interrupted (Ctrl-C)" and result.counts["done"] == 3


class _AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study, trial) -> bool:
        return True


@pytest.mark.parametrize("last", [False, True])
def test_the_last_evaluation_is_neither_pruned_nor_cut_by_the_deadline(last):
    """A trial whose training is over has its full result: stopping it then would throw that away for nothing."""
    from types import SimpleNamespace

    from pretune.config import config_from_dict
    from pretune.errors import BudgetStop
    from pretune.search.runner import _make_callback

    cfg = config_from_dict({"train": {"epochs": 2}})
    plan = SimpleNamespace(objectives=[("accuracy", "maximize")], multi=False)
    record = {"step": 20, "epoch": 2.0 if last else 1.0, "samples": 320, "accuracy": 0.7}
    pruned = optuna.create_study(direction="maximize", pruner=_AlwaysPrune()).ask()
    late = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner()).ask()
    if last:
        _make_callback(pruned, plan, None, cfg)(20, record)
        _make_callback(late, plan, 0.0, cfg)(20, record)
    else:
        with pytest.raises(optuna.TrialPruned):
            _make_callback(pruned, plan, None, cfg)(20, record)
        with pytest.raises(BudgetStop):
            _make_callback(late, plan, 0.0, cfg)(20, record)
    # Reported either way, at its place in the schedule (half way, or the end) in 10,000 parts.
    assert pruned.study.trials[0].intermediate_values == {10_000 if last else 5_000: 0.7}


def test_the_runner_asks_the_pruner_at_every_evaluation_but_the_last():
    """The grace period is the pruner's (tests/search/test_pruning.py); the runner only reports and asks."""
    from types import SimpleNamespace

    from pretune.config import config_from_dict
    from pretune.search.runner import _make_callback

    asked = []

    class Recording(optuna.pruners.BasePruner):
        def prune(self, study, trial) -> bool:
            asked.append(trial.last_step)
            return False

    plan = SimpleNamespace(objectives=[("accuracy", "maximize")], multi=False)
    trial = optuna.create_study(direction="maximize", pruner=Recording()).ask()
    callback = _make_callback(trial, plan, None, config_from_dict({"train": {"epochs": 1}}))
    for i in range(1, 5):
        callback(i, {"step": i, "epoch": i / 4, "samples": 100 * i, "accuracy": 0.5})
    assert asked == [2500, 5000, 7500]  # not at the end: pruning a finished trial saves nothing
    assert trial.user_attrs == {"train_samples": 400}  # no pruner settings travel as trial attributes


@pytest.mark.parametrize("train, metrics, expected", [
    ({"epochs": 1}, {"epoch": 0.5}, 5_000),
    ({"epochs": 3}, {"epoch": 1.5}, 5_000),  # three times the samples, the same place in its schedule
    ({"epochs": 3}, {"epoch": 1.0}, 3_333),
    ({"epochs": 3, "max_steps": 40}, {"epoch": 9.0}, 2_500),  # max_steps ends training, whatever the epochs
])
def test_pruners_see_each_evaluation_at_its_place_in_the_trial_schedule(train, metrics, expected):
    from pretune.config import config_from_dict
    from pretune.search.runner import progress_step

    assert progress_step(config_from_dict({"train": train}), 10, metrics) == expected


RUNGS = [0.0123, 0.037, 0.1111, 0.3333]  # 1/81 .. 1/3 of a schedule, in the pruners' 10,000ths


@pytest.mark.parametrize("pruner, train, prune_after, rungs", [
    ("asha", {"epochs": 1}, 0.25, RUNGS[3:]),  # 1/9 of one epoch falls in the grace period
    ("asha", {"epochs": 3}, 0.25, RUNGS[2:]),  # 1/9 of three epochs does not
    ("hyperband", {"epochs": 3}, 0.0, RUNGS),
    ("asha", {"epochs": 1, "max_steps": 50}, 0.25, RUNGS),  # epochs per step unknown before the data: all
    ("median", {"epochs": 3}, 0.0, []),  # it reads trials wherever they report
    ("none", {"epochs": 3}, 0.0, []),
])
def test_trials_evaluate_at_the_rungs_their_pruner_may_judge_them_on(tmp_path, pruner, train, prune_after, rungs):
    from pretune.config import config_from_dict
    from pretune.search.plan import make_plan
    from pretune.search.runner import trial_config

    c = cfg(tmp_path, pruner=pruner, prune_after=prune_after, n_trials=1)
    c["train"] = {**train, "eval_at": [0.5]}  # the user's own are kept
    eval_at = trial_config(make_plan(config_from_dict(c)), {"train.lr": 1e-3}, tmp_path / "t").train.eval_at
    assert eval_at == pytest.approx(sorted([0.5, *rungs]))


def _schedule_fit(cfg, *, callback=None, overwrite=False):
    """Three evaluations at thirds of the schedule; 1 epoch learns fast and ends at 0.6, 3 epochs slowly to 0.9."""
    rows, epochs = 300, cfg.train.epochs
    curve = (lambda f: 0.5 + 0.1 * f ** 2) if epochs == 1 else (lambda f: 0.5 + 0.4 * f ** 3)
    for i in (1, 2, 3):
        callback(i, {"step": i, "epoch": epochs * i / 3, "samples": rows * epochs * i // 3, "accuracy": curve(i / 3)})
    (Path(cfg.output) / "model").mkdir(parents=True)
    return FakeResult(Path(cfg.output), Path(cfg.output) / "model", {"accuracy": curve(1)}, rows * epochs, 1000)


def test_asha_compares_a_long_schedule_with_short_ones_at_the_same_place_in_it(tmp_path):
    """At 300 samples the 3-epoch trial (0.515, a third through) trails the 1-epoch one at its end (0.6), and
    pruning on samples would cut it; at a third of each schedule it leads (0.515 against 0.511) and ends best."""
    c = cfg(tmp_path, space={"train.epochs": [1, 3]}, n_trials=2, sampler="grid", pruner="asha", prune_after=0.0,
            seed=1)
    result = search(c, train_fn=_schedule_fit)
    assert [r["params.train.epochs"] for r in result.trials] == [1, 3]  # the short one first sets the bar
    assert [r["state"] for r in result.trials] == ["complete", "complete"]
    assert result.best_params["train.epochs"] == 3


def test_no_trial_is_pruned_before_prune_after_epochs(tmp_path):
    """Early evaluations are noise (a model that still predicts one class); the grace period holds pruning off."""
    c = cfg(tmp_path, n_trials=8, pruner="median", sampler="random")
    c["train"] = {"epochs": 2}  # fake_fit reports at epochs 0.5, 1, 1.5, 2
    c["search"]["prune_after"] = 1.5
    result = search(c, train_fn=fake_fit)
    pruned = [r for r in result.trials if r["state"] == "pruned"]
    assert pruned and all(r["train_samples"] == 3 * 64 for r in pruned)  # 64 rows an evaluation; the third is at 1.5


def test_trials_write_no_checkpoints(base_config, monkeypatch):
    """Trials are re-run, never resumed, so their checkpoints would only cost time and disk."""
    import pretune.train.loop as loop
    written = []
    monkeypatch.setattr(loop, "save_checkpoint", lambda *a, **kw: written.append(a[1]))
    monkeypatch.setattr(loop, "save_file", lambda state, path: written.append(path))
    result = search({**base_config, "search": {"space": {"train.lr": LR}, "n_trials": 2, "pruner": "none"}})
    assert result.counts["complete"] == 2 and all(r["accuracy"] is not None for r in result.trials)
    assert written == []


def test_a_search_on_float_labels_aims_at_the_regression_metric(tiny_bert, tmp_path):
    """data.task unset: the search infers the task from the labels as fit does, and maximises Pearson."""
    from conftest import write_csv

    from pretune.config import config_from_dict
    from pretune.search import make_plan

    scores = write_csv(tmp_path / "scores.csv", [("good film", 0.9), ("bad film", 0.1), ("fine plot", 0.6)])
    plan = make_plan(config_from_dict({"model": {"path": str(tiny_bert)}, "data": {"train": str(scores)},
                                       "output": str(tmp_path / "search")}))
    assert plan.objectives == [("pearson", "maximize")]
    labels = write_csv(tmp_path / "labels.csv", [("good film", "pos"), ("bad film", "neg")])
    plan = make_plan(config_from_dict({"data": {"train": str(labels)}, "output": str(tmp_path / "search2")}))
    assert plan.objectives == [("accuracy", "maximize")]


def test_the_space_draws_no_more_top_layers_than_the_model_has(tiny_bert, tmp_path, caplog):
    """The tiny BERT has 2 layers: the default space (1-4) is narrowed to 1-2, saying so; a range the user declared
    past 2 is a one-line error before anything runs, rather than trials that fail one by one."""
    from conftest import write_csv

    from pretune.config import config_from_dict
    from pretune.errors import ConfigError
    from pretune.search import make_plan

    labels = write_csv(tmp_path / "labels.csv", [("good film", "pos"), ("bad film", "neg")])
    base = {"model": {"path": str(tiny_bert)}, "data": {"train": str(labels)}, "search": {"n_trials": 4}}
    with caplog.at_level(logging.INFO, logger="pretune.search"):
        plan = make_plan(config_from_dict({**base, "output": str(tmp_path / "a")}))
    top = plan.params["method.train_top_layers"]
    assert (top.low, top.high) == (1, 2)
    assert "method.train_top_layers drawn from 1 to 2, the model's 2 layers" in caplog.text
    declared = {"train.lr": LR, "method.name": ["full", "freeze"],
                "method.train_top_layers": {"type": "int", "low": 1, "high": 3, "when": {"method.name": "freeze"}}}
    with pytest.raises(ConfigError, match=r"method.train_top_layers goes up to 3, but the model \(.*\) has 2 "
                                          r"layers; set its high to 2 or less"):
        make_plan(config_from_dict({**base, "output": str(tmp_path / "b"),
                                    "search": {"n_trials": 4, "space": declared}}))
    # a copy of the default space (pretune run's, with the epochs taken out) is narrowed like the default
    from pretune.search.space import DEFAULT_SPACE

    copied = {k: v for k, v in DEFAULT_SPACE.items() if k != "train.epochs"}
    plan = make_plan(config_from_dict({**base, "output": str(tmp_path / "d"),
                                       "search": {"n_trials": 4, "space": copied}}))
    assert plan.params["method.train_top_layers"].high == 2
    declared["method.train_top_layers"]["high"] = 2  # within the model: kept as declared
    plan = make_plan(config_from_dict({**base, "output": str(tmp_path / "c"),
                                       "search": {"n_trials": 4, "space": declared}}))
    assert plan.params["method.train_top_layers"].high == 2


def test_a_best_trial_at_chance_level_is_named_in_the_results_and_the_log(tmp_path, caplog):
    """fit writes its chance-level warning into the trial's results.json; the search repeats the best trial's
    only (a search's weak trials are expected)."""
    def fit_writing_warning(c, **kw):
        result = fake_fit(c, **kw)
        warning = f"at chance level ({Path(c.output).name})"
        (Path(c.output) / "results.json").write_text(json.dumps({"warning": warning}))
        return result

    with caplog.at_level(logging.WARNING, logger="pretune"):
        result = search(cfg(tmp_path, n_trials=3, sampler="random", portfolio="none"), train_fn=fit_writing_warning)
    summary = json.loads((tmp_path / "s" / "results.json").read_text())
    assert summary["warning"] == f"at chance level ({result.best_trial:04d})"
    assert [r.getMessage() for r in caplog.records if "chance level" in r.getMessage()] == [
        f"search: best trial {result.best_trial}: at chance level ({result.best_trial:04d})"]
