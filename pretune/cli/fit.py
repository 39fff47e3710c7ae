"""``pretune fit``: fine-tune a model on labelled data; the job is ``pretune.jobs.fit``."""

from __future__ import annotations

import argparse
import json

from .flags import add_model_data, config_from_args


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_data(p)
    p.add_argument("--resume", action="store_true", help="continue the run in --output from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")


def run(args: argparse.Namespace) -> int:
    from ..jobs.fit import fit

    result = fit(config_from_args(args), resume=args.resume, overwrite=args.overwrite)
    print(json.dumps({"run_dir": str(result.run_dir), "model_dir": str(result.model_dir), "eval": result.eval}))
    return 0
