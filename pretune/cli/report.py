"""``pretune report RUN_DIR [--output DIR] [--title TEXT]``: HTML + Markdown from saved results only.

Imports neither torch nor transformers: a report can be made on any machine that has the run folder.
"""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="a pretune run, search or compress output folder")
    p.add_argument("--output", help="folder for report.html and report.md (default: RUN_DIR)")
    p.add_argument("--title", help="page title")


def run(args: argparse.Namespace) -> int:
    from ..report import report

    paths = report(args.run_dir, args.output, args.title)
    print(json.dumps({k: str(v) for k, v in paths.items()}))
    return 0
