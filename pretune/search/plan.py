"""Everything a search needs, checked once before any trial runs: ``SearchPlan``.

The plan is plain data (picklable) so worker processes rebuild their own
samplers, pruners and storage connections from it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import optuna

from ..config import RunConfig
from ..errors import ConfigError
from .factories import default_storage_url, make_pruner, make_sampler, make_storage, parse_objectives
from .space import Param, parse_space

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
    prune_after: float  # epochs before pruning may stop a trial
    n_trials: Optional[int]
    timeout: Optional[float]
    budget_samples: Optional[int]
    workers: int
    seed: int
    heartbeat: int
    keep_models: str

    @property
    def multi(self) -> bool:
        return len(self.objectives) > 1

    @property
    def directions(self) -> list[str]:
        return [d for _, d in self.objectives]


def default_metric(cfg: RunConfig) -> str:
    if cfg.train.metric:
        return cfg.train.metric
    return "pearson" if cfg.data.task == "regression" else "accuracy"


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
    multi = len(objectives) > 1
    make_sampler(s.sampler, s.seed, params, multi)  # fail now on a bad name, not in a worker
    make_pruner(s.pruner, multi)
    # The run config's default output names a fit; a search left at that default gets its own folder.
    output = Path("runs/search" if cfg.output == RunConfig().output else cfg.output)
    return SearchPlan(base=cfg.to_dict(), params=params, objectives=objectives, output=output,
                      storage_url=s.storage or default_storage_url(output), study_name=s.study,
                      sampler=s.sampler, pruner=s.pruner, prune_after=s.prune_after, n_trials=s.n_trials,
                      timeout=s.timeout, budget_samples=s.budget_samples, workers=s.workers, seed=s.seed,
                      heartbeat=s.heartbeat, keep_models=s.keep_models)


def open_study(plan: SearchPlan, *, seed_offset: int = 0, create: bool = False) -> optuna.Study:
    """Create the study (first call) or load it, with this process's own sampler and pruner.

    Args:
        plan: from ``make_plan``.
        seed_offset: added to the sampler seed so workers and restarts do not repeat each other's draws.
        create: create the study if missing and check that an existing one has the same objectives.

    Raises:
        ConfigError: unreachable storage, or a study of that name with other objectives.
    """
    if os.environ.get("PRETUNE_QUIET_OPTUNA") == "1":  # set by the CLI (not verbose); the API leaves logging alone
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = make_storage(plan.storage_url, plan.heartbeat)
    sampler = make_sampler(plan.sampler, plan.seed + seed_offset, plan.params, plan.multi)
    pruner = make_pruner(plan.pruner, plan.multi)
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
