"""The compression methods: a registry of plain functions sharing one ``Context``.

A method is ``fn(ctx, out) -> dict``: it reads the source model from ``ctx`` (never
modifying it), writes a complete variant folder at ``out`` (weights, ``config.json``,
tokenizer, ``pretune_variant.json``) and returns facts worth keeping in the results
(e.g. the ONNX check's max difference, the distillation losses). It raises on failure;
the pipeline records the error and goes on with the other methods.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from torch import nn

from ..config import CompressConfig
from ..data import Encoded
from ..tasks import Task, TaskSpec
from ..errors import ConfigError

MethodFn = Callable[["Context", Path], dict]


@dataclass(frozen=True)
class MethodInfo:
    trains: bool = False  # runs optimizer steps (recovery, distillation): minutes, not seconds
    needs_rows: bool = False  # needs training rows (calibration, importance scores, training)
    # reads the model's logits (exports them to ONNX, or trains on the teacher's soft targets): not for a task whose
    # outputs come from its own forward (``Task.forward``: a language model's per-token loss over the vocabulary)
    logits: bool = False


# The one list of methods: name -> function, in registration order; and what each needs.
METHODS: dict[str, MethodFn] = {}
INFO: dict[str, MethodInfo] = {}


def register(name: str, *, trains: bool = False, needs_rows: bool = False, logits: bool = False):
    """Decorator: register ``fn`` as compression method ``name``.

    Args:
        trains: the method runs optimizer steps (a budgeted run leaves it out when time is short).
        needs_rows: the method needs training rows (``--train``).
        logits: the method reads the model's logits (ONNX export, soft targets); tasks with their own
            ``forward`` do not get it.
    """
    def deco(fn: MethodFn) -> MethodFn:
        METHODS[name] = fn
        INFO[name] = MethodInfo(trains=trains, needs_rows=needs_rows or trains, logits=logits)
        return fn
    return deco


def info(name: str) -> MethodInfo:
    return INFO.get(name, MethodInfo())


def applies(name: str, task: Optional[Task]) -> bool:
    """Whether method ``name`` can compress a model of ``task`` (None: any task)."""
    return task is None or not (info(name).logits and task.forward is not None)


def method_names(*, trains: Optional[bool] = None, task: Optional[Task] = None) -> list[str]:
    """Every method in running order (training-free ones first, so their results exist early);
    with ``trains``, only the methods that do (or do not) train; with ``task``, only those that apply to it."""
    names = sorted(METHODS, key=lambda n: info(n).trains)  # stable: registration order within each group
    return [n for n in names if (trains is None or info(n).trains == trains) and applies(n, task)]


def resolve(names: Optional[list[str]], task: Optional[Task] = None) -> list[str]:
    """The methods to run, in running order when ``names`` is None (those that apply to ``task``).

    Raises:
        ConfigError: an unknown name (listing the valid ones), or a method that cannot apply to ``task``
            (naming the task and the methods that can).
    """
    if not names:
        return method_names(task=task)
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise ConfigError(f"unknown compression method(s) {', '.join(map(repr, unknown))}; choose from "
                          f"{', '.join(METHODS)}")
    refused = [n for n in names if not applies(n, task)]
    if refused:
        raise ConfigError(f"compress.methods: {', '.join(refused)} cannot compress a {task.name} model (they "
                          f"export or distil the model's logits, and {task.name} scores its own per-token "
                          f"outputs); choose from {', '.join(method_names(task=task))}")
    return list(dict.fromkeys(names))


@dataclass
class Context:
    """Everything a method may use. ``model`` is the fp32 source: methods copy it before changing it."""

    source: Path  # the source model folder
    model: nn.Module
    tokenizer: object
    spec: TaskSpec
    train: Encoded  # training rows: calibration, importance scores, recovery and distillation
    eval: Encoded  # held-out rows: the ONNX check (the gate uses bench on the eval file)
    cfg: CompressConfig
    pad_id: int

    def copy_model(self) -> nn.Module:
        return copy.deepcopy(self.model)

    def save_tokenizer(self, out: Path) -> None:
        self.tokenizer.save_pretrained(str(out))
