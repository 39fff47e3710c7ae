"""Tasks: what a model is trained to do, one unit of variation behind one interface (``Task``).

A task decides how rows are read and checked, how batches are built, the loss, the metrics, the default
metric and what ``predict`` returns (see ``base``). The stages look a task up by name (``get``) and never
branch on it. A new task is one module here that calls ``register(Task(...))``, imported below.

    from pretune import tasks
    tasks.get("regression").default_metric   # "pearson"
    tasks.names()  # ("regression", "token_classification", "causal_lm", "classification")
"""

from .base import REGISTRY, Task, TaskSpec, get, infer, names, register

# Registration order is the order ``infer`` tries: classification, which accepts any labels, comes last.
from . import regression as _regression  # noqa: E402,F401,I001
from . import tokens as _tokens  # noqa: E402,F401
from . import causal_lm as _causal_lm  # noqa: E402,F401
from . import dpo as _dpo  # noqa: E402,F401
from . import classification as _classification  # noqa: E402,F401
from .load import (TaskData, columns_for, load_labelled, load_task_data, load_unlabelled, read_unlabelled,  # noqa: E402
                   spec_from_config, task_of)

__all__ = ["Task", "TaskSpec", "TaskData", "REGISTRY", "register", "get", "names", "infer", "load_task_data",
           "load_labelled", "load_unlabelled", "read_unlabelled", "columns_for", "spec_from_config", "task_of"]
