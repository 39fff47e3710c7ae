"""Compress stage: int8, pruning, distillation and ONNX variants of a fine-tuned model, each benchmarked and gated.

Importing this package registers every method (``METHODS``: name -> function).
"""

from ..utils import make_package_callable
from . import distill as _distill  # noqa: F401  (registers distill)
from . import prune as _prune  # noqa: F401  (registers prune-magnitude, prune-structured)
from . import quantize as _quantize  # noqa: F401  (registers onnx and the int8 methods)
from .gate import gate, pareto_front, points_lost
from .pipeline import RESULTS_FILE, check_config, compress, find_model_folder, load_results, rebench
from .registry import METHODS, Context, register, resolve

__all__ = ["compress", "rebench", "METHODS", "register", "resolve", "Context", "gate", "pareto_front", "points_lost",
           "check_config", "find_model_folder", "load_results", "RESULTS_FILE"]


make_package_callable(__name__, compress)
