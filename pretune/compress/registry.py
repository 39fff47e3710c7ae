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
from ..data import Encoded, TaskSpec
from ..errors import ConfigError

MethodFn = Callable[["Context", Path], dict]
METHODS: dict[str, MethodFn] = {}
# Default running order: quick, training-free methods first, so their results exist early.
ORDER = ("onnx", "int8-dynamic-torch", "int8-dynamic-ort", "int8-static-ort", "prune-magnitude",
         "prune-structured", "distill")


def register(name: str):
    """Decorator: register ``fn`` as compression method ``name``."""
    def deco(fn: MethodFn) -> MethodFn:
        METHODS[name] = fn
        return fn
    return deco


def resolve(names: Optional[list[str]]) -> list[str]:
    """The methods to run, in registry order when ``names`` is None; unknown names list the valid ones."""
    if not names:
        rank = {n: i for i, n in enumerate(ORDER)}
        return sorted(METHODS, key=lambda n: rank.get(n, len(rank)))
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise ConfigError(f"unknown compression method(s) {', '.join(map(repr, unknown))}; choose from "
                          f"{', '.join(METHODS)}")
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
