"""``pretune validate CONFIG [KEY=VALUE ...]``: check a config file and print it resolved."""

from __future__ import annotations

import argparse
import sys

from ..config import load_config


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", metavar="CONFIG", help="YAML config file")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    sys.stdout.write(cfg.to_yaml())
    print(f"{args.config}: ok", file=sys.stderr)
    return 0
