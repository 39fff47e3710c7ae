"""Callable stage packages: ``pretune.search(cfg)`` runs a search and ``pretune.search.space`` is a module."""

from __future__ import annotations

import sys
import types


def make_package_callable(package: str, fn) -> None:
    """Let ``pretune.<stage>(...)`` call ``fn``.

    The public function and the stage package share a name, and importing any of the package's
    submodules rebinds ``pretune.<stage>`` to the package, so the package itself is made callable.
    """

    class _CallablePackage(types.ModuleType):
        def __call__(self, *args, **kwargs):
            return fn(*args, **kwargs)

    sys.modules[package].__class__ = _CallablePackage
