"""``pretune estimate --config FILE [--steps N]``: one trial's time and peak memory from a short probe.

Takes the same model and data flags as ``pretune fit``; writes nothing to the run folder. The job is
``pretune.jobs.estimate``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from .flags import add_model_data, config_from_args


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_data(p)
    p.add_argument("--steps", type=int, default=8, help="optimizer steps to time (default 8)")


def run(args: argparse.Namespace) -> int:
    from ..jobs.estimate import estimate

    est = estimate(config_from_args(args), steps=args.steps)
    print(f"estimate: {est.describe()}", file=sys.stderr)
    print(json.dumps(asdict(est)))
    return 0
