"""Command line: ``pretune SUBCOMMAND ...``. The only place that parses argv and sets up logging.

Each subcommand lives in its stage's ``cli`` module, which exposes
``add_arguments(parser)`` and ``run(args) -> int``. A ``PretuneError`` is printed
as one line (no traceback) with exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import sys
import warnings

from .errors import PretuneError

# name -> (module, one-line help). Modules are imported only when their command runs.
COMMANDS: dict[str, tuple[str, str]] = {
    "fit": ("pretune.fit_cli", "fine-tune a model on labelled data"),
    "eval": ("pretune.fit_cli:eval", "evaluate a fine-tuned model folder on a labelled file"),
    "predict": ("pretune.fit_cli:predict", "predict labels and probabilities for a file (JSONL out)"),
    "validate": ("pretune.fit_cli:validate", "check a config file and print it resolved"),
    "search": ("pretune.search.cli", "search hyperparameters: many fits, pruned, budgeted, resumable"),
    "compress": ("pretune.compress.cli", "make int8, pruned, distilled and ONNX variants; bench and gate each"),
    "bench": ("pretune.bench.cli", "measure accuracy, latency, throughput, size and memory of a model folder"),
    "run": ("pretune.run_cli", "the whole job under a budget: search, best model, compress, bench, report"),
    "demo": ("pretune.demo_cli", "the whole job offline on the packaged MiniLM, in a few minutes"),
    "estimate": ("pretune.estimate_cli", "predict one trial's time and peak memory from a short probe"),
    "report": ("pretune.reporting.cli", "write a self-contained HTML report and a Markdown summary of a run"),
}


def _load(spec: str):
    module, _, prefix = spec.partition(":")
    mod = importlib.import_module(module)
    add = getattr(mod, f"add_{prefix}_arguments" if prefix else "add_arguments")
    run = getattr(mod, f"run_{prefix}" if prefix else "run")
    return add, run


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pretune", description="Fine-tune, search, compress and report on "
                                     "a pretrained transformer within a compute budget.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (spec, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if only is None or only == name:
            add, run = _load(spec)
            add(p)
            p.set_defaults(_run=run)
    return parser


def quiet_libraries(verbose: bool = False) -> None:
    """Keep the console for pretune's own output: libraries speak only on errors.

    Optuna resets its own logger to INFO when it is first imported, which happens later and only for the commands
    that search; ``PRETUNE_QUIET_OPTUNA`` tells them to quiet it again then.
    """
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ["PRETUNE_QUIET_OPTUNA"] = "0" if verbose else "1"
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s", stream=sys.stderr)
    if not verbose:
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning)
        try:
            from transformers.utils import logging as hf_logging
            hf_logging.set_verbosity_error()
            hf_logging.disable_progress_bar()
        except ImportError:
            pass
        for name in ("optuna", "torch", "onnxruntime", "peft", "accelerate"):
            logging.getLogger(name).setLevel(logging.ERROR)


OVERRIDE = re.compile(r"^[A-Za-z_]\w*(\.\w+)+=")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Dotted overrides (train.lr=3e-5) may stand anywhere among the flags; argparse wants positionals
    # together, so take them out first.
    overrides = [a for a in argv if OVERRIDE.match(a)]
    argv = [a for a in argv if not OVERRIDE.match(a)]
    # Build only the chosen subcommand's arguments: `pretune fit` never imports onnxruntime.
    only = next((a for a in argv if a in COMMANDS), None)
    parser = build_parser(only)
    args = parser.parse_args(argv)
    if overrides:
        if not hasattr(args, "overrides"):
            parser.error(f"{args.command or 'pretune'} takes no KEY=VALUE overrides (got {overrides[0]})")
        args.overrides = [*(args.overrides or []), *overrides]
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0 if not argv else 2
    quiet_libraries(args.verbose)
    try:
        return int(args._run(args) or 0)
    except PretuneError as e:
        if args.verbose:
            raise
        print(f"pretune {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pretune {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
