"""``pretune search --config FILE [--n-trials N] [--timeout 30m] [--workers N] [--storage URL] [--study NAME]``.

Takes the same model and data flags as ``pretune fit``. Running the same command again resumes the
study. The stage is ``pretune.search``.
"""

from __future__ import annotations

import argparse
import functools
import json

from .flags import add_model_data, config_from_args, duration
from .logs import init_search_worker, quiet_optuna

# flag dest -> search config key
SEARCH_FLAGS = {"n_trials": "n_trials", "timeout": "timeout", "workers": "workers", "storage": "storage",
                "study": "study", "sampler": "sampler", "pruner": "pruner", "budget_samples": "budget_samples",
                "portfolio": "portfolio", "search_seed": "seed"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_data(p)
    s = p.add_argument_group("search (override search.* in the config)")
    s.add_argument("--n-trials", type=int, help="trials in the study, counted over restarts (default 20)")
    s.add_argument("--timeout", help="wall time for this run, e.g. 90s, 30m, 2h")
    s.add_argument("--budget-samples", type=int, help="stop after this many training samples over all trials")
    s.add_argument("--workers", type=int, help="worker processes on this machine sharing the study (default 1)")
    s.add_argument("--storage", help="SQLAlchemy URL of the study storage (default: sqlite file in --output)")
    s.add_argument("--study", help="study name (default pretune); the same name resumes it")
    s.add_argument("--sampler", help="tpe (default), random, grid, cmaes, qmc, gp, nsga2, nsga3, bruteforce")
    s.add_argument("--pruner", help="none (default), asha, hyperband, median")
    s.add_argument("--portfolio", help="trials after the default: auto (default, the packaged portfolio), none, "
                                       "or a file made by `pretune portfolio build`")
    s.add_argument("--search-seed", type=int, help="sampler seed (default 0)")


def search_flags(args: argparse.Namespace) -> dict:
    """The search flags that were given, as ``{"search": {...}}``."""
    search = {}
    for dest, key in SEARCH_FLAGS.items():
        value = getattr(args, dest, None)
        if value is not None:
            search[key] = duration("--timeout", value) if dest == "timeout" else value
    return {"search": search} if search else {}


def run(args: argparse.Namespace) -> int:
    from ..search import search

    cfg = config_from_args(args, search_flags(args), default_output="runs/search")
    quiet_optuna(args.verbose)
    result = search(cfg, worker_init=functools.partial(init_search_worker, args.verbose))
    print(json.dumps({"output": str(result.output), "best_trial": result.best_trial,
                      "best_values": dict(zip([m for m, _ in result.objectives], result.best_values or [])),
                      "best_params": result.best_params, "best_dir": str(result.best_dir) if result.best_dir else None,
                      "pareto": [r["number"] for r in result.pareto], "counts": result.counts,
                      "train_samples": result.train_samples}))
    return 0
