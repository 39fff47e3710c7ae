"""``pretune demo [--budget 8m] [--output runs/demo] [--train FILE --eval FILE]``: the whole job, offline.

Runs ``pretune run`` on the packaged MiniLM with the demo's data (see ``pretune.demo``) and prints
where the report is. The same command again resumes it.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from .fit_cli import add_model_data_arguments, flags_to_config

log = logging.getLogger("pretune")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_data_arguments(p)
    p.add_argument("--budget", default="8m", help="wall time for the whole job (default 8m)")
    p.add_argument("--overwrite", action="store_true", help="delete the demo folder and start again")


def run(args: argparse.Namespace) -> int:
    from .config import load_config, merge
    from .demo import demo_config, demo_data
    from .pipeline import run as run_job
    from .run_cli import summary

    output = args.output or "runs/demo"
    train, eval_, source = demo_data(Path(f"{output.rstrip('/')}-data"), args.train, args.eval)
    log.info("demo: data: %s", source)
    flags = {k: v for k, v in flags_to_config(args).items() if k != "output"}
    cfg = load_config(args.config, args.overrides, extra=merge(demo_config(train, eval_, output), flags))
    result = run_job(cfg, budget=args.budget, overwrite=args.overwrite, note=f"demo data: {source}")
    out = summary(result)
    out["data"] = source
    print(json.dumps(out))
    log.info("demo: open %s", result.report.get("html"))
    return 0
