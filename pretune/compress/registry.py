"""The compression methods: a registry of plain functions sharing one ``Context``.

A method is ``fn(ctx, out) -> dict``: it reads the source model from ``ctx`` (never
modifying it), writes a complete variant folder at ``out`` (weights, ``config.json``,
tokenizer, ``pretune_variant.json``) and returns facts worth keeping in the results
(e.g. the ONNX check's max difference, the distillation losses). It raises on failure;
the pipeline records the error and goes on with the other methods.

Methods stack: ``distill>int8-dynamic-ort`` quantizes the distilled student. Each step but the last must give a
full-precision PyTorch model (``MethodInfo.gives_model``); every prefix of a chain is itself a variant, built once,
benchmarked and gated against the source, and a chain goes on only from a prefix that passed the gate.
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
    # writes a full-precision PyTorch model (a Hugging Face or pruned folder) that a next step of a chain can start
    # from; ONNX graphs and int8 models end a chain
    gives_model: bool = False


CHAIN = ">"  # "distill>int8-dynamic-ort": the steps of a chain, in order
# Chains in the default method list: a smaller model, then int8 on ONNX Runtime (the fastest runtime here).
DEFAULT_CHAINS = ("distill>int8-dynamic-ort", "prune-structured>int8-dynamic-ort")


# The one list of methods: name -> function, in registration order; and what each needs.
METHODS: dict[str, MethodFn] = {}
INFO: dict[str, MethodInfo] = {}


def register(name: str, *, trains: bool = False, needs_rows: bool = False, logits: bool = False,
             gives_model: bool = False):
    """Decorator: register ``fn`` as compression method ``name``.

    Args:
        trains: the method runs optimizer steps (a budgeted run leaves it out when time is short).
        needs_rows: the method needs training rows (``--train``).
        logits: the method reads the model's logits (ONNX export, soft targets); tasks with their own
            ``forward`` do not get it.
        gives_model: the method writes a full-precision PyTorch model that a next step of a chain can start from.
    """
    def deco(fn: MethodFn) -> MethodFn:
        METHODS[name] = fn
        INFO[name] = MethodInfo(trains=trains, needs_rows=needs_rows or trains, logits=logits,
                                gives_model=gives_model)
        return fn
    return deco


def steps(name: str) -> list[str]:
    """The methods of ``name`` in order: one for a single method, several for a chain."""
    return [s.strip() for s in name.split(CHAIN)]


def prefixes(name: str) -> list[str]:
    """The chains a chain builds on, shortest first: ``a>b>c`` -> ``a``, ``a>b``."""
    parts = steps(name)
    return [CHAIN.join(parts[:i]) for i in range(1, len(parts))]


def info(name: str) -> MethodInfo:
    """What a method (or a chain: any of its steps) trains, needs and reads; what its last step gives."""
    parts = [INFO.get(s, MethodInfo()) for s in steps(name)]
    return MethodInfo(trains=any(p.trains for p in parts), needs_rows=any(p.needs_rows for p in parts),
                      logits=any(p.logits for p in parts), gives_model=parts[-1].gives_model)


def applies(name: str, task: Optional[Task]) -> bool:
    """Whether method (or chain) ``name`` can compress a model of ``task`` (None: any task)."""
    return task is None or not (info(name).logits and task.forward is not None)


def method_names(*, trains: Optional[bool] = None, task: Optional[Task] = None) -> list[str]:
    """Every method in running order (training-free ones first, so their results exist early; the default chains
    last, after the steps they build on); with ``trains``, only the methods that do (or do not) train; with
    ``task``, only those that apply to it."""
    names = sorted(METHODS, key=lambda n: info(n).trains)  # stable: registration order within each group
    names += [c for c in DEFAULT_CHAINS if all(s in METHODS for s in steps(c))]
    return [n for n in names if (trains is None or info(n).trains == trains) and applies(n, task)]


def check_chain(name: str) -> Optional[str]:
    """Why chain ``name`` cannot run (unknown steps, a step that does not give a model a next one can start
    from), or None."""
    parts = steps(name)
    unknown = [s for s in parts if s not in METHODS]
    if unknown:
        return f"unknown compression method(s) {', '.join(map(repr, unknown))}"
    if len(set(parts)) != len(parts):
        return f"{name!r} repeats a step"
    ends = [s for s in parts[:-1] if not INFO[s].gives_model]
    if ends:
        starts = ", ".join(n for n in METHODS if INFO[n].gives_model)
        return (f"{ends[0]!r} writes a model no further step can start from (an ONNX graph or int8 weights), so it "
                f"can only end a chain; chains start from {starts}")
    return None


def resolve(names: Optional[list[str]], task: Optional[Task] = None) -> list[str]:
    """The methods to run, in running order when ``names`` is None (those that apply to ``task``). A chain brings
    its prefixes, each placed before it (``distill>int8-dynamic-ort`` runs ``distill`` first, once).

    Raises:
        ConfigError: an unknown name (listing the valid ones), a chain whose inner step gives no model to go on
            from, or a method that cannot apply to ``task`` (naming the task and the methods that can).
    """
    if not names:
        return method_names(task=task)
    problems = [why for n in names if (why := check_chain(n))]
    if problems:
        raise ConfigError(f"{problems[0]}; choose from {', '.join(METHODS)}, or chain them as "
                          f"{DEFAULT_CHAINS[0]!r}")
    refused = [n for n in names if not applies(n, task)]
    if refused:
        raise ConfigError(f"compress.methods: {', '.join(refused)} cannot compress a {task.name} model (they "
                          f"export or distil the model's logits, and {task.name} scores its own per-token "
                          f"outputs); choose from {', '.join(method_names(task=task))}")
    ordered: list[str] = []
    for n in names:
        n = CHAIN.join(steps(n))  # "distill > int8-dynamic-ort" is "distill>int8-dynamic-ort"
        ordered += [p for p in prefixes(n) if p not in ordered] + ([n] if n not in ordered else [])
    return ordered


def folder_name(name: str) -> str:
    """The variant folder of a method or chain: ``distill>int8-dynamic-ort`` -> ``distill+int8-dynamic-ort`` (no
    shell redirection character in a path)."""
    return "+".join(steps(name))


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
