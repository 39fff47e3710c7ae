"""The task interface: one record of functions per task, registered by name.

A task decides, for every stage:

    data     read      rows of a table -> Examples (inputs checked, labels raw)
             columns   the column names tried when the default ones (text, label) are not in a file
             infer     whether a raw label column looks like this task (``data.task`` unset)
             spec      raw training labels -> TaskSpec (the label set, checked)
             labels    raw labels -> the targets, each bad value an error naming file, line and fix
             encode    Examples (+ targets) -> token ids and targets (``Encoded``), the ids cached
             stratify  split off a validation set per class
    model    head      the Hugging Face config fields of the head (``num_labels``, ``id2label``, ...)
             model_class  the ``transformers`` auto class that loads the saved model
             setup     (model, TaskData, RunConfig) -> None, once before training: what the task needs beyond
                       the model and the data (preference tuning: its settings, the reference model;
                       regression: a new head's bias at the targets' mean)
    train    collate   rows -> a padded batch;  loss (outputs, targets) -> mean loss;  soft_loss for distillation
             forward   (model, batch) -> outputs, when they are not the model's logits (a language model's
                       per-token loss: the vocabulary projection only where a token is scored)
    metrics  metrics   (outputs, Encoded) -> named scores;  default_metric selects, stops early and searches
    predict  rows      outputs -> one JSON-able dict per input row
    compress gate_metric  the metric a compressed variant is gated on (default: default_metric)
    bench    measure   (runner, Encoded, BenchConfig) -> more numbers for the bench result (a language model's
                       generation speed at batch 1), under the key ``measure_key``

Outputs are the model's logits laid out as ``pretune.data.place_outputs`` lays them: (N, C) for a head that reads
one vector per row, (total_tokens, C) for one that reads every token.
The stages call these through ``pretune.tasks.get(spec.task)``; none of them branches on a task's name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from ..errors import ConfigError


@dataclass
class TaskSpec:
    """What a model predicts: the task's name and, for classes, their names in id order."""

    task: str
    labels: list[str] = field(default_factory=list)  # empty when the task has no label set (regression)
    # what else the saved model must know to read its outputs (token classification: the tag scheme); saved in
    # config.json as pretune_settings
    settings: dict = field(default_factory=dict)

    @property
    def num_labels(self) -> int:
        """Outputs of the head: one per class, or one for a task without classes."""
        return len(self.labels) or 1


@dataclass(frozen=True)
class Task:
    """One task's behaviour at every stage; see the module docstring for what each function does."""

    name: str
    description: str
    read: Callable[..., Any]  # (table, cfg: DataConfig, labelled: bool) -> Examples
    spec: Callable[..., TaskSpec]  # (raw labels, table, column, cfg: DataConfig) -> TaskSpec
    labels: Callable[..., Any]  # (raw labels, spec, table, column, cfg: DataConfig) -> targets
    # (examples, tokenizer, cfg: DataConfig, source, targets or None, spec) -> Encoded with the targets as labels
    encode: Callable[..., Any]
    head: Callable[[TaskSpec], dict]  # -> Hugging Face config fields of the head
    loss: Callable[..., Any]  # (outputs (..., C), targets (...)) -> mean loss, fp32
    soft_loss: Callable[..., Any]  # (student outputs, teacher outputs, temperature, attention mask) -> loss
    metrics: Callable[..., dict]  # (outputs, Encoded with labels, spec) -> {name: value}
    default_metric: str
    rows: Callable[..., list]  # (outputs, Encoded, spec, examples) -> one dict per input row for predict
    collate: Callable[..., dict]  # (encoded, rows, pad_id) -> batch of tensors
    model_class: str = "AutoModelForSequenceClassification"
    stratify: bool = False  # a validation split keeps each class's share
    infer: Optional[Callable[[list], bool]] = None  # whether raw labels look like this task; None: never inferred
    text_columns: tuple[str, ...] = ()  # tried in turn when the default text column (text) is not in a file
    label_columns: tuple[str, ...] = ()  # tried in turn when the default label column (label) is not in a file
    # (model, batch) -> outputs laid out per input row, (B, C) or (B, T, C); None: ``model(**inputs).logits``
    forward: Optional[Callable[..., Any]] = None
    setup: Optional[Callable[..., None]] = None  # (model, TaskData, RunConfig) before training; None: nothing
    classes: bool = True  # the outputs are classes, named in the saved config's id2label
    pretrained_head: bool = False  # the model's own head (a language model's) is used: no new head, adapters skip it
    gate_metric: Optional[str] = None  # compress gates variants on it; None: default_metric
    # (runner with .model and .runtime, eval Encoded, BenchConfig) -> dict saved in the bench result as measure_key
    measure: Optional[Callable[..., dict]] = None
    measure_key: str = "measure"
    generates: bool = False  # the model writes text: a run's report shows the base and tuned models' generations


REGISTRY: dict[str, Task] = {}


def register(task: Task) -> Task:
    """Add ``task`` to the registry; the order of registration is the order in which ``infer`` tries them."""
    REGISTRY[task.name] = task
    return task


def names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def get(name: str) -> Task:
    """The task called ``name``.

    Raises:
        ConfigError: no such task; the message lists the registered ones.
    """
    if name not in REGISTRY:
        raise ConfigError(f"data.task: unknown task {name!r}; choose one of {', '.join(REGISTRY)}")
    return REGISTRY[name]


def infer(raw_labels: list) -> str:
    """The first registered task whose ``infer`` accepts these labels."""
    for task in REGISTRY.values():
        if task.infer is not None and task.infer(raw_labels):
            return task.name
    raise ConfigError("cannot tell the task from the labels; set data.task (--task) to one of "
                      + ", ".join(REGISTRY))
