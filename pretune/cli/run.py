"""``pretune run --config FILE --budget 1h``: search -> best model -> compress + bench -> report.

Takes the model and data flags of ``pretune fit``. Prints the plan first; the same command again resumes
the run folder, skipping finished stages. The job is ``pretune.jobs.run``.
"""

from __future__ import annotations

import argparse
import functools
import json

from .flags import add_model_data, config_from_args, set_key
from .logs import init_search_worker, quiet_optuna


def add_job_arguments(p: argparse.ArgumentParser) -> None:
    add_model_data(p)
    p.add_argument("--overwrite", action="store_true", help="delete the run folder and start again")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_job_arguments(p)
    j = p.add_argument_group("the whole job")
    j.add_argument("--budget", help="wall time for the whole job, e.g. 90s, 30m, 1h (default: no limit; "
                   "search.n_trials bounds it)")
    j.add_argument("--n-trials", type=int, help="at most this many search trials (default search.n_trials)")
    j.add_argument("--methods", help="compress methods, comma-separated (default: chosen to fit the budget)")
    j.add_argument("--probe-steps", type=int, default=8, help="optimizer steps timed to plan (default 8)")


def job_flags(args: argparse.Namespace) -> dict:
    extra: dict = {}
    if args.n_trials is not None:
        set_key(extra, "search.n_trials", args.n_trials)
    if args.methods:
        set_key(extra, "compress.methods", [m.strip() for m in args.methods.split(",") if m.strip()])
    return extra


def summary(result) -> dict:
    """The one JSON line printed when the job ends."""
    variants = (result.compress or {}).get("variants", [])
    return {"run_dir": str(result.run_dir), "best_dir": str(result.best_dir), "best": result.best_values,
            "pareto_front": (result.compress or {}).get("pareto_front"),
            "accepted": [v["name"] for v in variants if v.get("status") == "accepted"],
            "stage_seconds": {k: v.get("seconds") for k, v in result.stages.items()},
            "report": {k: str(v) for k, v in result.report.items()}}


def run(args: argparse.Namespace) -> int:
    from ..jobs.run import run as run_job

    cfg = config_from_args(args, job_flags(args), default_output="runs/run")
    quiet_optuna(args.verbose)
    result = run_job(cfg, budget=args.budget, overwrite=args.overwrite, probe_steps=args.probe_steps,
                     worker_init=functools.partial(init_search_worker, args.verbose))
    print(json.dumps(summary(result)))
    return 0
