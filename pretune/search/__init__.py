"""Search stage: many ``fit`` runs over a declared space, pruned, budgeted and resumable.

    from pretune.search import search
    result = search(cfg)            # or pretune.search(cfg)
    result.best_params, result.best_dir, result.trials

The study lives in an Optuna storage (``study.db`` in the output folder by
default), so re-running the same command resumes it and ``optuna-dashboard``
opens it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable, Optional

from .. import files
from .._package import make_package_callable
from ..config import RunConfig, as_config
from ..errors import ConfigError
from .plan import SearchPlan, make_plan, open_study
from .results import SearchResult, collect
from .runner import TrainFn, budget_left, counts, run_workers, samples_used
from .space import DEFAULT_SPACE, Param, parse_space, suggest
from . import portfolio, ranks

log = logging.getLogger("pretune.search")


def progress_line(study, plan: SearchPlan, deadline: Optional[float]) -> str:
    """``trials 7/20 (2 pruned, 1 failed), best accuracy 0.8125 (trial 4), samples 12,800/50,000, 3m left``."""
    trials = study.get_trials(deepcopy=False)
    c = counts(trials)
    total = f"/{plan.n_trials}" if plan.n_trials else ""
    parts = [f"trials {c['done']}{total} ({c['pruned']} pruned, {c['failed']} failed, {c['running']} running)"]
    try:
        best = study.best_trials
    except ValueError:
        best = []
    if best and not plan.multi:
        parts.append(f"best {plan.objectives[0][0]} {best[0].values[0]:.4f} (trial {best[0].number})")
    elif best:
        parts.append(f"Pareto set {len(best)} trials")
    used = samples_used(trials)
    parts.append(f"samples {used:,}" + (f"/{plan.budget_samples:,}" if plan.budget_samples else ""))
    if deadline is not None:
        parts.append(f"{max(deadline - time.time(), 0) / 60:.1f}m left")
    return "search: " + ", ".join(parts)


def search(cfg: RunConfig | dict | str | Path, *, train_fn: Optional[TrainFn] = None,
           worker_init: Optional[Callable[[], None]] = None) -> SearchResult:
    """Run (or resume) a hyperparameter search and collect its results.

    Args:
        cfg: a ``RunConfig``, dict or YAML path; ``cfg.search`` holds the space, budgets, sampler, pruner,
            storage and workers; ``cfg.output`` is the search folder.
        train_fn: the function that trains one trial, ``fit``-like (default ``pretune.fit``); tests pass fakes.
        worker_init: a picklable function run first in each spawned worker process (``search.workers > 1``);
            the CLI sets up the worker's console with it. The library itself leaves logging alone.

    Returns:
        SearchResult: best trial, params and model folder (``best/``), all trials, importances, Pareto set.

    Raises:
        ConfigError: bad space, sampler, pruner, objectives or budget; unreachable storage; a study of that
            name with other objectives. Raised before any trial runs.
    """
    cfg = as_config(cfg)
    plan = make_plan(cfg)
    if ranks.world_size() > 1 and plan.workers > 1:
        raise ConfigError("search.workers > 1 cannot be combined with torchrun; use one or the other")
    deadline = time.time() + plan.timeout if plan.timeout else None
    if ranks.rank() == 0:
        study = open_study(plan, create=True)  # creates it once here, before any worker races to
        if portfolio.enqueue(study, plan.start):  # a new study: the default, the portfolio, then the sampler
            log.info("search: starting from %s", ", ".join(s for s, _ in plan.start))
        plan.output.mkdir(parents=True, exist_ok=True)
        files.write_text(plan.output / files.CONFIG, cfg.to_yaml())  # the resolved config beside the results
        log.info("search: study %r in %s, %d parameters, objectives %s, sampler %s, %d worker(s)",
                 plan.study_name, plan.storage_url.split("@")[-1], len(plan.params),
                 ", ".join(f"{m} ({d})" for m, d in plan.objectives), plan.sampler, plan.workers)
    run_workers(plan, train_fn, deadline, worker_init, lambda s: log.info("%s", progress_line(s, plan, deadline)))
    if ranks.rank() != 0:
        return SearchResult(plan.output, plan.study_name, "", plan.objectives, None, {}, None, None)
    study = open_study(plan)
    stopped = budget_left(plan, study.get_trials(deepcopy=False), deadline)
    result = collect(study, plan, stopped)
    log.info("%s; stopped by %s", progress_line(study, plan, deadline), stopped or "no budget left to run")
    return result


make_package_callable(__name__, search)

__all__ = ["search", "SearchResult", "SearchPlan", "make_plan", "parse_space", "suggest", "Param",
           "DEFAULT_SPACE", "progress_line"]
