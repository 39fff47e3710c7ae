"""``pretune run --config FILE --budget 1h``: search -> best model -> compress + bench -> report.

Takes the model and data flags of ``pretune fit``. Prints the plan first; the same command
again resumes the run folder, skipping finished stages.
"""

from __future__ import annotations

import argparse
import json

from .fit_cli import add_model_data_arguments, flags_to_config


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_data_arguments(p)
    j = p.add_argument_group("the whole job")
    j.add_argument("--budget", help="wall time for the whole job, e.g. 90s, 30m, 1h (default: no limit; "
                   "search.n_trials bounds it)")
    j.add_argument("--n-trials", type=int, help="at most this many search trials (default search.n_trials)")
    j.add_argument("--methods", help="compress methods, comma-separated (default: chosen to fit the budget)")
    j.add_argument("--probe-steps", type=int, default=8, help="optimizer steps timed to plan (default 8)")
    j.add_argument("--overwrite", action="store_true", help="delete the run folder and start again")


def config_from_args(args: argparse.Namespace):
    """YAML, then model/data flags, then job flags, then dotted overrides; output defaults to runs/run."""
    from .config import load_config, read_yaml

    extra = flags_to_config(args)
    if args.n_trials is not None:
        extra.setdefault("search", {})["n_trials"] = args.n_trials
    if args.methods:
        extra.setdefault("compress", {})["methods"] = [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.output is None and not (args.config and "output" in read_yaml(args.config)):
        extra["output"] = "runs/run"
    return load_config(args.config, args.overrides, extra=extra)


def summary(result) -> dict:
    """The one JSON line printed when the job ends."""
    variants = (result.compress or {}).get("variants", [])
    return {"run_dir": str(result.run_dir), "best_dir": str(result.best_dir), "best": result.best_values,
            "pareto_front": (result.compress or {}).get("pareto_front"),
            "accepted": [v["name"] for v in variants if v.get("status") == "accepted"],
            "stage_seconds": {k: v.get("seconds") for k, v in result.stages.items()},
            "report": {k: str(v) for k, v in result.report.items()}}


def run(args: argparse.Namespace) -> int:
    from .pipeline import run as run_job

    result = run_job(config_from_args(args), budget=args.budget, overwrite=args.overwrite,
                     probe_steps=args.probe_steps)
    print(json.dumps(summary(result)))
    return 0
