"""pretune: fine-tune, search, compress and report on a pretrained transformer within a budget.

The Python API mirrors the command line::

    import pretune
    result = pretune.fit({"model": {"path": folder}, "data": {"train": "train.csv"}})
    result.eval["accuracy"], result.model_dir
"""

from __future__ import annotations

__version__ = "0.1.0"

from .config import RunConfig, load_config
from .errors import ConfigError, DataError, ModelError, PretuneError


def fit(cfg=None, **kwargs):
    """Fine-tune a model; see ``pretune.finetune.fit``."""
    from .finetune import fit as _fit

    return _fit(cfg, **kwargs)


def evaluate(model_dir, data, **kwargs):
    """Metrics of a saved model on a labelled file; see ``pretune.inference.evaluate_folder``."""
    from .inference import evaluate_folder

    return evaluate_folder(model_dir, data, **kwargs)


def predict(model_dir, data, **kwargs):
    """Predictions for a file; see ``pretune.inference.predict_file``."""
    from .inference import predict_file

    return predict_file(model_dir, data, **kwargs)


def run(cfg=None, **kwargs):
    """The whole job under a budget (search, best model, compress + bench, report); see ``pretune.pipeline.run``."""
    from .pipeline import run as _run

    return _run(cfg, **kwargs)


def report(run_dir, **kwargs):
    """HTML + Markdown report from a run folder's saved results; see ``pretune.reporting.report``."""
    from .reporting import report as _report

    return _report(run_dir, **kwargs)


def estimate(cfg=None, **kwargs):
    """Predicted time and peak memory of one fit from a short probe; see ``pretune.estimation.estimate``."""
    from .estimation import estimate as _estimate

    return _estimate(cfg, **kwargs)


# search, compress and bench are stage packages that are also callable: pretune.search(cfg) runs a search.
_STAGE_PACKAGES = ("search", "compress", "bench")


def __getattr__(name: str):
    """Import a callable stage package on first use (keeps ``import pretune`` light)."""
    if name in _STAGE_PACKAGES:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'pretune' has no attribute {name!r}")


__all__ = ["fit", "run", "search", "compress", "bench", "report", "estimate", "evaluate", "predict", "RunConfig",
           "load_config", "PretuneError", "ConfigError", "DataError", "ModelError", "__version__"]
