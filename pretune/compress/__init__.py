"""Compress stage: int8, pruning, distillation and ONNX variants of a fine-tuned model, each benchmarked and gated.

Importing this package registers every method (``METHODS``: name -> function; ``method_names()`` in running
order).
"""

from .._package import make_package_callable
# Importing the method modules registers them; within training-free and training methods, this order is the
# running order.
from . import quantize as _quantize  # noqa: F401, I001  (onnx and the int8 methods)
from . import prune as _prune  # noqa: F401  (prune-magnitude, prune-structured)
from . import distill as _distill  # noqa: F401  (distill)
from .gate import gate, pareto_front, points_lost
from .registry import METHODS, Context, method_names, register, resolve
from .variants import check_config, compress, find_model_folder, load_results, rebench

__all__ = ["compress", "rebench", "METHODS", "method_names", "register", "resolve", "Context", "gate",
           "pareto_front", "points_lost", "check_config", "find_model_folder", "load_results"]


make_package_callable(__name__, compress)
