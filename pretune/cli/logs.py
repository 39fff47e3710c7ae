"""The console of every pretune process: the only code that configures logging and library verbosity.

pretune's own loggers (``pretune``, ``pretune.search``, ...) speak at INFO; libraries only at WARNING and
above, unless ``--verbose``. Library settings go through environment variables where the library reads
them at import, so that commands which never import a library (``pretune report``) do not load it.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings


class _OwnInfo(logging.Filter):
    """INFO and DEBUG from pretune's loggers; WARNING and above from a library's own logger; ERROR and above
    from code that logs through the root logger (ONNX Runtime's quantizer advises there on every call)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "pretune" or record.name.startswith("pretune."):
            return True
        return record.levelno >= (logging.ERROR if record.name == "root" else logging.WARNING)


class _Stderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of each record (a test harness swaps it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure_logging(verbose: bool = False) -> None:
    """Set up the root handler and quiet the libraries; safe to call more than once."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    root = logging.getLogger()
    for h in list(root.handlers):
        if isinstance(h, _Stderr):
            root.removeHandler(h)
    handler = _Stderr()
    handler.setFormatter(logging.Formatter("%(message)s"))
    if not verbose:
        handler.addFilter(_OwnInfo())
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    if verbose:
        return
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # read when transformers is first imported
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' loading bars follow the hub's
    for category in (DeprecationWarning, FutureWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category)
    for name in ("optuna", "torch", "onnxruntime", "peft", "accelerate", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if "transformers" in sys.modules:  # already imported: the environment variables came too late
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


def quiet_optuna(verbose: bool = False) -> None:
    """Optuna sets its own logger to INFO when first imported: the commands that search call this after."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.INFO if verbose else optuna.logging.WARNING)


def init_search_worker(verbose: bool = False) -> None:
    """A spawned search worker is a fresh interpreter: the same quiet console as the command that spawned it."""
    configure_logging(verbose)
    quiet_optuna(verbose)
