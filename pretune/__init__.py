"""pretune: fine-tune, search, compress and report on a pretrained transformer within a budget.

The Python API mirrors the command line::

    import pretune
    result = pretune.fit({"model": {"path": folder}, "data": {"train": "train.csv"}})
    result.eval["accuracy"], result.model_dir

Importing pretune loads neither torch nor transformers; each function imports its stage when called.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .config import RunConfig, load_config
from .errors import ConfigError, DataError, ModelError, PretuneError


def fit(cfg=None, **kwargs):
    """Fine-tune a model; see ``pretune.jobs.fit.fit``."""
    from .jobs.fit import fit as _fit

    return _fit(cfg, **kwargs)


def evaluate(model_dir, data, **kwargs):
    """Metrics of a saved model on a labelled file; see ``pretune.jobs.predict.evaluate_folder``."""
    from .jobs.predict import evaluate_folder

    return evaluate_folder(model_dir, data, **kwargs)


def predict(model_dir, data, **kwargs):
    """Predictions for a file; see ``pretune.jobs.predict.predict_file``."""
    from .jobs.predict import predict_file

    return predict_file(model_dir, data, **kwargs)


def run(cfg=None, **kwargs):
    """The whole job under a budget (search, best model, compress + bench, report); see ``pretune.jobs.run.run``."""
    from .jobs.run import run as _run

    return _run(cfg, **kwargs)


def estimate(cfg=None, **kwargs):
    """Predicted time and peak memory of one fit from a short probe; see ``pretune.jobs.estimate.estimate``."""
    from .jobs.estimate import estimate as _estimate

    return _estimate(cfg, **kwargs)


# search, compress, bench and report are stage packages that are also callable: pretune.search(cfg) runs a search.
_STAGE_PACKAGES = ("search", "compress", "bench", "report")


def __getattr__(name: str):
    """Import a callable stage package on first use (keeps ``import pretune`` light)."""
    if name in _STAGE_PACKAGES:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'pretune' has no attribute {name!r}")


__all__ = ["fit", "run", "search", "compress", "bench", "report", "estimate", "evaluate", "predict", "RunConfig",
           "load_config", "PretuneError", "ConfigError", "DataError", "ModelError", "__version__"]
