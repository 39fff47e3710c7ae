"""The Python API stays callable whatever has been imported.

A submodule named like an API function (``pretune/predict.py`` beside ``pretune.predict``) silently replaces
the function with the module on first import; this walks every module, then calls nothing but checks each name.
"""

import importlib
import pkgutil

import pretune

API = ("fit", "run", "search", "compress", "bench", "report", "estimate", "evaluate", "predict")


def test_api_functions_survive_importing_every_module():
    for info in pkgutil.walk_packages(pretune.__path__, "pretune."):
        if not info.name.endswith("__main__"):  # those run the command line
            importlib.import_module(info.name)
    for name in API:
        assert name in pretune.__all__, name
        assert callable(getattr(pretune, name)), f"pretune.{name} is not callable"
