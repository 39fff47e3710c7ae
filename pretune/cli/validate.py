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
    _fill_train_defaults(cfg)
    sys.stdout.write(cfg.to_yaml())
    print(f"{args.config}: ok", file=sys.stderr)
    return 0


def _fill_train_defaults(cfg) -> None:
    """The model's recipe for the train settings left unset, as fit will fill them (``pretune.train.defaults``),
    where the model can be found without a download; the model's own path is printed as written."""
    from ..errors import PretuneError
    from ..train import defaults

    written = cfg.model.path
    try:
        defaults.fill_config(cfg)
    except PretuneError as e:
        print(f"train: {', '.join(defaults.missing(cfg.train))} left to fit, which chooses them by the model "
              f"({e})", file=sys.stderr)
    cfg.model.path = written
