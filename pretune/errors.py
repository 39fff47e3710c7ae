"""Every error a user can reach: one family, printed by the CLI as one line.

The CLI prints a ``PretuneError`` as one line (no traceback) and exits with status 2; any other
exception is a bug in pretune and keeps its traceback. Each class here keeps its name when it
crosses a worker process (``pretune.workers``), so a caller can catch it by class.
"""

from __future__ import annotations


class PretuneError(Exception):
    """Base class: bad input, bad config, or an environment pretune cannot use."""


class ConfigError(PretuneError):
    """A config key, value or combination is invalid."""


class DataError(PretuneError):
    """A data file is missing, unreadable, or holds a bad row."""


class ModelError(PretuneError):
    """A model folder is missing, incompatible, or unsafe to load."""


class MissingExtra(PretuneError):
    """A feature needs an optional dependency that is not installed; the message names the extra."""


class ResumeError(PretuneError):
    """A checkpoint cannot continue this run: other settings, other parameters, or a part missing."""


class TrainingDiverged(PretuneError):
    """The loss became NaN or infinite."""


class BudgetStop(PretuneError):
    """Raised inside a search trial when the wall-time budget runs out; the trial is failed and not counted."""


class TrialOutOfMemory(PretuneError):
    """A search trial ran out of memory (torch raises a plain RuntimeError for some allocators)."""


class WorkerFailed(PretuneError):
    """A worker process (bench isolation, the estimate probe, a search worker) died without an answer."""


def by_name(name: str) -> type[PretuneError]:
    """The error class called ``name``; ``PretuneError`` for an unknown name."""
    cls = globals().get(name)
    return cls if isinstance(cls, type) and issubclass(cls, PretuneError) else PretuneError


def require(module: str, extra: str, feature: str):
    """Import ``module`` or raise ``MissingExtra`` naming the pip extra that brings it.

    Args:
        module: the module to import, e.g. ``onnxruntime``.
        extra: the pretune extra that installs it, e.g. ``onnx``.
        feature: what needs it, for the message, e.g. ``compress method int8-dynamic-ort``.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtra(f"{feature} needs {module}, which is not installed; pip install 'pretune[{extra}]'") \
            from None
