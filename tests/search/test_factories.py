"""Samplers, pruners, objectives and storage by name; bad names and bad storage fail in one line."""

from __future__ import annotations

import optuna
import pytest

from pretune.config import config_from_dict
from pretune.errors import ConfigError
from pretune.search import search
from pretune.search.pruning import ScheduleHalvingPruner
from pretune.search.factories import PRUNERS, SAMPLERS, make_pruner, make_sampler, make_storage, parse_objectives
from pretune.search.space import parse_space

from search.fakes import fake_fit

PARAMS = parse_space({"train.lr": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True, "step": None},
                      "train.batch_size": [16, 32]})
GRID_PARAMS = parse_space({"train.epochs": {"type": "int", "low": 1, "high": 2}, "train.batch_size": [16, 32]})


def _draws(sampler_name: str, seed: int, multi: bool = False) -> list[dict]:
    params = GRID_PARAMS if sampler_name in ("grid", "bruteforce") else PARAMS
    directions = ["maximize", "minimize"] if multi else ["maximize"]
    study = optuna.create_study(sampler=make_sampler(sampler_name, seed, params, multi), directions=directions)
    out = []
    for i in range(3):  # the 2x2 grid stops the study once exhausted
        trial = study.ask()
        values = {p.key: (trial.suggest_categorical(p.key, list(p.choices)) if p.type == "categorical" else
                          trial.suggest_int(p.key, p.low, p.high) if p.type == "int" else
                          trial.suggest_float(p.key, p.low, p.high, log=p.log)) for p in params.values()}
        study.tell(trial, [float(i), float(-i)] if multi else float(i))
        out.append(values)
    return out


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_builds_and_is_seeded(name):
    if name == "cmaes":
        pytest.importorskip("cmaes")
    multi = name in ("nsga2", "nsga3")
    first = _draws(name, 7, multi)
    assert first == _draws(name, 7, multi)
    assert all(1e-5 <= d.get("train.lr", 1e-4) <= 1e-3 for d in first)


@pytest.mark.parametrize("name, cls", [("asha", ScheduleHalvingPruner),
                                       ("hyperband", optuna.pruners.HyperbandPruner),
                                       ("median", optuna.pruners.MedianPruner),
                                       ("none", optuna.pruners.NopPruner)])
def test_pruners_by_name(name, cls):
    assert isinstance(make_pruner(name, multi=False), cls)
    assert set(PRUNERS) == {"asha", "hyperband", "median", "none"}


def test_pruning_is_opt_in():
    assert isinstance(make_pruner(None, multi=False), optuna.pruners.NopPruner)
    assert isinstance(make_pruner(None, multi=True), optuna.pruners.NopPruner)
    assert isinstance(make_pruner("asha", multi=False), ScheduleHalvingPruner)


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ConfigError, match="unknown sampler 'tpee'; choose one of tpe, random, grid"):
        make_sampler("tpee", 0, PARAMS)
    with pytest.raises(ConfigError, match="unknown pruner 'ashaa'; choose one of asha, hyperband, median, none"):
        make_pruner("ashaa", multi=False)
    with pytest.raises(ConfigError, match="cannot prune a multi-objective study"):
        make_pruner("asha", multi=True)


def test_missing_optional_sampler_dependency_names_the_fix():
    try:
        import cmaes  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="pip install cmaes"):
            make_sampler("cmaes", 0, PARAMS)
    else:
        assert make_sampler("cmaes", 0, PARAMS) is not None


def test_objectives_directions():
    assert parse_objectives(None, "accuracy") == [("accuracy", "maximize")]
    assert parse_objectives(["accuracy", "trainable_params"], "x") == [("accuracy", "maximize"),
                                                                       ("trainable_params", "minimize")]
    assert parse_objectives(["loss:max"], "x") == [("loss", "maximize")]
    with pytest.raises(ConfigError, match="METRIC:min or METRIC:max"):
        parse_objectives(["accuracy:up"], "x")
    with pytest.raises(ConfigError, match="listed twice"):
        parse_objectives(["accuracy", "accuracy:max"], "x")


@pytest.mark.parametrize("url", ["postgresql://pretune:secret@127.0.0.1:1/nodb", "nosuchdialect://x/y",
                                 "sqlite:////nonexistent-dir/deeper/study.db"])
def test_unreachable_storage_is_one_line_error_without_password(url):
    with pytest.raises(ConfigError) as e:
        make_storage(url, heartbeat=30)
    msg = str(e.value)
    assert msg.startswith("search.storage: cannot open") and "\n" not in msg and "secret" not in msg


def test_search_rejects_bad_input_before_any_trial(tmp_path):
    base = {"output": str(tmp_path / "s")}
    cases = [({"sampler": "nope"}, "unknown sampler"), ({"pruner": "nope"}, "unknown pruner"),
             ({"space": {}}, "search.space is empty"), ({"n_trials": 0}, "search.n_trials: must be > 0"),
             ({"n_trials": None}, "search has no budget"),
             ({"objectives": ["accuracy", "trainable_params"], "pruner": "asha"}, "cannot prune"),
             ({"storage": "postgresql://u@127.0.0.1:1/db"}, "search.storage: cannot open")]
    for settings, message in cases:
        with pytest.raises(ConfigError, match=message):
            search({**base, "search": settings}, train_fn=fake_fit)
    assert not list((tmp_path / "s").glob("trials/*"))


def test_study_with_other_objectives_is_refused(tmp_path):
    cfg = {"output": str(tmp_path / "s"), "search": {"n_trials": 1, "space": {"train.lr": [1e-4]}}}
    search(cfg, train_fn=fake_fit)
    multi = {**cfg, "search": {**cfg["search"], "objectives": ["accuracy", "trainable_params"]}}
    with pytest.raises(ConfigError, match="already exists with objectives .*pass another --study name"):
        search(multi, train_fn=fake_fit)
    # A study made by plain optuna with another direction is refused too.
    url = f"sqlite:///{tmp_path / 'other.db'}"
    optuna.create_study(study_name="pretune", storage=url, direction="minimize")
    with pytest.raises(ConfigError, match=r"\['minimize'\], not \['maximize'\]"):
        search({**cfg, "search": {**cfg["search"], "storage": url}}, train_fn=fake_fit)


def test_config_accepts_search_section():
    cfg = config_from_dict({"search": {"space": {"train.lr": [1e-4]}, "n_trials": 3, "timeout": 60}})
    assert cfg.search.n_trials == 3 and cfg.search.timeout == 60.0 and cfg.search.space == {"train.lr": [1e-4]}
