"""``pretune demo [--budget 8m] [--output runs/demo] [--train FILE --eval FILE]``: the whole job, offline.

Runs ``pretune run`` on the packaged MiniLM with the demo's data (``pretune.jobs.demo``) and prints where
the report is. The same command again resumes it.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
from pathlib import Path

from .flags import flags_to_config
from .logs import init_search_worker, quiet_optuna
from .run import add_job_arguments, summary

log = logging.getLogger("pretune")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_job_arguments(p)
    p.add_argument("--budget", default="8m", help="wall time for the whole job (default 8m)")


def run(args: argparse.Namespace) -> int:
    from ..config import load_config, merge
    from ..jobs.demo import demo_config, demo_data
    from ..jobs.run import run as run_job

    output = args.output or "runs/demo"
    train, eval_, source = demo_data(Path(f"{output.rstrip('/')}-data"), args.train, args.eval)
    log.info("demo: data: %s", source)
    flags = {k: v for k, v in flags_to_config(args).items() if k != "output"}
    cfg = load_config(args.config, args.overrides, extra=merge(demo_config(train, eval_, output), flags))
    quiet_optuna(args.verbose)
    result = run_job(cfg, budget=args.budget, overwrite=args.overwrite, note=f"demo data: {source}",
                     worker_init=functools.partial(init_search_worker, args.verbose))
    out = summary(result)
    out["data"] = source
    print(json.dumps(out))
    log.info("demo: open %s", result.report.get("html"))
    return 0
