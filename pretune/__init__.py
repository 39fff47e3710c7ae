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
    """Fine-tune a model; see ``pretune.fit.fit``."""
    from .finetune import fit as _fit

    return _fit(cfg, **kwargs)


def evaluate(model_dir, data, **kwargs):
    """Metrics of a saved model on a labelled file; see ``pretune.predict.evaluate_folder``."""
    from .predict import evaluate_folder

    return evaluate_folder(model_dir, data, **kwargs)


def predict(model_dir, data, **kwargs):
    """Predictions for a file; see ``pretune.predict.predict_file``."""
    from .predict import predict_file

    return predict_file(model_dir, data, **kwargs)


__all__ = ["fit", "evaluate", "predict", "RunConfig", "load_config", "PretuneError", "ConfigError", "DataError",
           "ModelError", "__version__"]
