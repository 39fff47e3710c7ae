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
    from ..models.sources import resolve_model_path
    from ..train import defaults

    if not cfg.model.path or not defaults.missing(cfg.train):
        return
    written = cfg.model.path
    try:
        cfg.model.path = resolve_model_path(written, cfg.model.allow_pickle, cfg.model.trust_remote_code)
    except PretuneError as e:
        print(f"train: {', '.join(defaults.missing(cfg.train))} left to fit, which chooses them by the model "
              f"({e})", file=sys.stderr)
        return
    defaults.fill(cfg, quiet=True)
    cfg.model.path = written
