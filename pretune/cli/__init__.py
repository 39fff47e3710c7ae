"""Command line: ``pretune COMMAND ...``. The only package that parses argv and configures logging.

One module per command (``pretune/cli/fit.py`` for ``pretune fit``, ...), each with
``add_arguments(parser)`` and ``run(args) -> int``; the shared flag groups are in ``flags``, the console
set-up in ``logs``. A ``PretuneError`` is printed as one line (no traceback) with exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys

from ..errors import PretuneError
from .logs import configure_logging

# command -> one-line help; the code is pretune.cli.<command>, imported only when that command runs.
COMMANDS: dict[str, str] = {
    "fit": "fine-tune a model on labelled data",
    "eval": "evaluate a fine-tuned model folder on a labelled file",
    "predict": "predict labels and probabilities for a file (JSONL out)",
    "generate": "generate text with a causal language model, streamed to the terminal",
    "validate": "check a config file and print it resolved",
    "search": "search hyperparameters: many fits, pruned, budgeted, resumable",
    "compress": "make int8, pruned, distilled and ONNX variants; bench and gate each",
    "bench": "measure accuracy, latency, throughput, size and memory of a model folder",
    "run": "the whole job under a budget: search, best model, compress, bench, report",
    "demo": "the whole job offline on the packaged MiniLM, in a few minutes",
    "estimate": "predict one trial's time and peak memory from a short probe",
    "serve": "serve predictions over HTTP with dynamic batching, health and Prometheus metrics",
    "report": "write a self-contained HTML report and a Markdown summary of a run",
    "portfolio": "build a search portfolio from your own finished searches",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``only``, just that command's module is imported (``pretune fit`` never loads onnxruntime)."""
    parser = argparse.ArgumentParser(prog="pretune", description="Fine-tune, search, compress and report on "
                                     "a pretrained transformer within a compute budget.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_ in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if only is None or only == name:
            module = importlib.import_module(f"{__name__}.{name}")
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
    return parser


OVERRIDE = re.compile(r"^[A-Za-z_]\w*(\.\w+)+=")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Dotted overrides (train.lr=3e-5) may stand anywhere among the flags; argparse wants positionals
    # together, so take them out first.
    overrides = [a for a in argv if OVERRIDE.match(a)]
    argv = [a for a in argv if not OVERRIDE.match(a)]
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
    configure_logging(args.verbose)
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
