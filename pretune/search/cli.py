"""``pretune search --config FILE [--n-trials N] [--timeout 30m] [--workers N] [--storage URL] [--study NAME]``.

Takes the same model and data flags as ``pretune fit``. Running the same
command again resumes the study.
"""

from __future__ import annotations

import argparse
import json

from ..errors import ConfigError
from ..fit_cli import add_model_data_arguments, flags_to_config
from ..utils import parse_duration

# flag dest -> search config key
SEARCH_FLAGS = {"n_trials": "n_trials", "timeout": "timeout", "workers": "workers", "storage": "storage",
                "study": "study", "sampler": "sampler", "pruner": "pruner", "budget_samples": "budget_samples",
                "search_seed": "seed"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_data_arguments(p)
    s = p.add_argument_group("search (override search.* in the config)")
    s.add_argument("--n-trials", type=int, help="trials in the study, counted over restarts (default 20)")
    s.add_argument("--timeout", help="wall time for this run, e.g. 90s, 30m, 2h")
    s.add_argument("--budget-samples", type=int, help="stop after this many training samples over all trials")
    s.add_argument("--workers", type=int, help="worker processes on this machine sharing the study (default 1)")
    s.add_argument("--storage", help="SQLAlchemy URL of the study storage (default: sqlite file in --output)")
    s.add_argument("--study", help="study name (default pretune); the same name resumes it")
    s.add_argument("--sampler", help="tpe (default), random, grid, cmaes, qmc, gp, nsga2, nsga3, bruteforce")
    s.add_argument("--pruner", help="asha (default), hyperband, median, none")
    s.add_argument("--search-seed", type=int, help="sampler seed (default 0)")


def config_from_args(args: argparse.Namespace):
    """The run config: YAML, then model/data flags, then search flags, then dotted overrides."""
    from ..config import load_config

    extra = flags_to_config(args)
    search = {}
    for dest, key in SEARCH_FLAGS.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        if dest == "timeout":
            try:
                value = parse_duration(value)
            except ValueError as e:
                raise ConfigError(f"--timeout: {e}") from None
        search[key] = value
    if search:
        extra["search"] = search
    if args.output is None and not (args.config and _has_output(args.config)):
        extra["output"] = "runs/search"
    return load_config(args.config, args.overrides, extra=extra)


def _has_output(path: str) -> bool:
    from ..config import read_yaml
    return "output" in read_yaml(path)


def run(args: argparse.Namespace) -> int:
    from . import search

    cfg = config_from_args(args)
    result = search(cfg)
    print(json.dumps({"output": str(result.output), "best_trial": result.best_trial,
                      "best_values": dict(zip([m for m, _ in result.objectives], result.best_values or [])),
                      "best_params": result.best_params, "best_dir": str(result.best_dir) if result.best_dir else None,
                      "pareto": [r["number"] for r in result.pareto], "counts": result.counts,
                      "train_samples": result.train_samples}))
    return 0
