"""Everything a search needs, checked once before any trial runs: ``SearchPlan``.

The plan is plain data (picklable) so worker processes rebuild their own
samplers, pruners and storage connections from it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import optuna

from .. import files
from ..config import RunConfig
from ..errors import ConfigError
from .factories import default_storage_url, make_pruner, make_sampler, make_storage, parse_objectives, pruner_name
from . import portfolio
from .pruning import GracePeriod
from .space import Param, parse_space

log = logging.getLogger("pretune.search")
KEEP_MODELS = ("best", "all")
STUDY_OBJECTIVES_ATTR = "pretune:objectives"


@dataclass
class SearchPlan:
    base: dict[str, Any]  # the run config as a dict, ``search`` included
    params: dict[str, Param]
    objectives: list[tuple[str, str]]  # (metric, "maximize" | "minimize")
    output: Path
    storage_url: str
    study_name: str
    sampler: str
    pruner: Optional[str]
    grace: GracePeriod  # search.prune_after: epochs a trial trains before a pruner may stop it
    n_trials: Optional[int]
    timeout: Optional[float]
    budget_samples: Optional[int]
    workers: int
    seed: int
    heartbeat: int
    keep_models: str
    start: list = field(default_factory=list)  # (source, values) enqueued before the sampler: portfolio.start_points

    @property
    def multi(self) -> bool:
        return len(self.objectives) > 1

    @property
    def directions(self) -> list[str]:
        return [d for _, d in self.objectives]


def default_metric(cfg: RunConfig) -> str:
    """``train.metric``, else the task's default metric, the task inferred from the labels as ``fit`` infers it."""
    from .. import tasks

    return cfg.train.metric or tasks.get(tasks.task_of(cfg.data)).default_metric


def make_plan(cfg: RunConfig) -> SearchPlan:
    """Check the search settings of ``cfg`` and resolve their defaults.

    Raises:
        ConfigError: a bad space, sampler, pruner, objective or budget (all before anything runs).
    """
    s = cfg.search
    errors = []
    for key in ("n_trials", "timeout", "budget_samples", "workers", "heartbeat"):
        value = getattr(s, key)
        if value is not None and (not math.isfinite(value) or value <= 0):
            errors.append(f"search.{key}: must be > 0, got {value!r}")
    if s.prune_after is None or not math.isfinite(s.prune_after) or s.prune_after < 0:
        errors.append(f"search.prune_after: must be >= 0 epochs, got {s.prune_after!r}")
    if s.heartbeat is None or s.workers is None:
        errors.append("search.heartbeat and search.workers cannot be null")
    if s.keep_models not in KEEP_MODELS:
        errors.append(f"search.keep_models: expected one of {', '.join(KEEP_MODELS)}, got {s.keep_models!r}")
    if s.n_trials is None and s.timeout is None and s.budget_samples is None:
        errors.append("search has no budget: set search.n_trials, search.timeout or search.budget_samples")
    if errors:
        raise ConfigError("invalid search config: " + "; ".join(errors))
    params = parse_space(s.space)
    objectives = parse_objectives(s.objectives, default_metric(cfg))
    # the model's recipe for the train settings left unset, so that trial 1 runs what `pretune fit` would and the
    # portfolio's entries take the same values for the keys they leave (each trial's config.yaml records them)
    from ..train.defaults import fill_config
    fill_config(cfg)
    multi = len(objectives) > 1
    make_sampler(s.sampler, s.seed, params, multi)  # fail now on a bad name, not in a worker
    grace = GracePeriod(s.prune_after, None if cfg.train.max_steps else cfg.train.epochs)
    if cfg.train.max_steps and s.prune_after and pruner_name(s.pruner, multi) != "none":
        log.warning("search.prune_after=%g epochs cannot be placed in a schedule of train.max_steps=%d steps (its "
                    "epochs depend on the data): trials may be pruned from their first evaluation; set "
                    "train.epochs instead of train.max_steps to keep a grace period", s.prune_after,
                    cfg.train.max_steps)
    make_pruner(s.pruner, multi, grace)
    # The run config's default output names a fit; a search left at that default gets its own folder.
    output = files.check_output_dir("runs/search" if cfg.output == RunConfig().output else cfg.output)
    entries = portfolio.resolve(s.portfolio)  # a bad file fails here, before anything runs
    params = fit_to_model(params, cfg)  # the last check; it logs what it narrows
    if s.sampler in portfolio.OWN_POINTS:
        start = []
    else:
        start = portfolio.start_points(params, cfg.to_dict(), entries, limit=s.n_trials)
    return SearchPlan(base=cfg.to_dict(), params=params, objectives=objectives, output=output,
                      storage_url=s.storage or default_storage_url(output), study_name=s.study,
                      sampler=s.sampler, pruner=s.pruner, grace=grace, n_trials=s.n_trials,
                      timeout=s.timeout, budget_samples=s.budget_samples, workers=s.workers, seed=s.seed,
                      heartbeat=s.heartbeat, keep_models=s.keep_models, start=start)


def fit_to_model(params: dict[str, Param], cfg: RunConfig) -> dict[str, Param]:
    """The space with ``method.train_top_layers`` bounded by the model's number of blocks, so that no trial draws
    more layers than the model has. The default space's range is narrowed (one log line), also where a space
    copies it (``pretune run`` takes the epochs out of the default space when it lowers them); another range
    past the model's blocks is a ``ConfigError`` naming the bound to set."""
    from .space import DEFAULT_SPACE

    key = "method.train_top_layers"
    p = params.get(key)
    if p is None or p.high is None:
        return params
    declared = cfg.search.space is not None and cfg.search.space.get(key) != DEFAULT_SPACE[key]
    from ..train.defaults import model_shape

    shape = model_shape(cfg)
    if shape is None or shape.layers is None or p.high <= shape.layers:
        return params
    if declared:
        raise ConfigError(f"search.space: {key} goes up to {p.high:g}, but the model ({cfg.model.path}) has "
                          f"{shape.layers} layers; set its high to {shape.layers} or less")
    log.info("search: %s drawn from %g to %d, the model's %d layers (the default space goes to %g)", key,
             min(p.low, shape.layers), shape.layers, shape.layers, p.high)
    return {**params, key: dataclasses.replace(p, low=min(p.low, shape.layers), high=shape.layers)}


def open_study(plan: SearchPlan, *, seed_offset: int = 0, create: bool = False,
               storage: Optional[optuna.storages.BaseStorage] = None) -> optuna.Study:
    """Create the study (first call) or load it, with this process's own sampler and pruner.

    Args:
        plan: from ``make_plan``.
        seed_offset: added to the sampler seed so workers and restarts do not repeat each other's draws.
        create: create the study if missing and check that an existing one has the same objectives.
        storage: an open storage of ``plan.storage_url`` to use (default: open one).

    Raises:
        ConfigError: unreachable storage, or a study of that name with other objectives.
    """
    storage = storage or make_storage(plan.storage_url, plan.heartbeat)
    sampler = make_sampler(plan.sampler, plan.seed + seed_offset, plan.params, plan.multi)
    pruner = make_pruner(plan.pruner, plan.multi, plan.grace)
    if not create:
        return optuna.load_study(study_name=plan.study_name, storage=storage, sampler=sampler, pruner=pruner)
    wanted = [f"{m}:{d[:3]}" for m, d in plan.objectives]
    try:
        study = optuna.load_study(study_name=plan.study_name, storage=storage, sampler=sampler, pruner=pruner)
    except KeyError:  # no such study yet
        study = optuna.create_study(study_name=plan.study_name, storage=storage, sampler=sampler, pruner=pruner,
                                    directions=plan.directions, load_if_exists=True)
        study.set_user_attr(STUDY_OBJECTIVES_ATTR, wanted)
    have = study.user_attrs.get(STUDY_OBJECTIVES_ATTR)
    if have is None:  # a study made by plain optuna: only its directions are known
        have, wanted = [d.name.lower() for d in study.directions], plan.directions
    if have != wanted:
        where = plan.storage_url.split("@")[-1]  # no credentials in messages
        raise ConfigError(f"study {plan.study_name!r} in {where} already exists with objectives {have}, not "
                          f"{wanted}; pass another --study name, or the same objectives to resume it")
    return study
