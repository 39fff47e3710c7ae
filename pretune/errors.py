"""One exception family for everything a user can get wrong.

The CLI prints these as one line (no traceback) and exits with status 2; any
other exception is a bug in pretune and keeps its traceback.
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
