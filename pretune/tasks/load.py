"""From a ``DataConfig`` to tokenized train and eval sets of the right task: ``load_task_data``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..config import DataConfig
from ..data import Encoded, read_table, stratified_split, subsample
from ..data.readers import Table
from ..errors import DataError
from .base import TaskSpec, get, infer


@dataclass
class TaskData:
    spec: TaskSpec
    train: Encoded
    eval: Encoded
    eval_source: str  # file name, or "<split of FILE>"


def task_of(cfg: DataConfig, table: Optional[Table] = None) -> str:
    """``cfg.task``, or the task inferred from the training file's labels (classification without a file)."""
    if cfg.task:
        return get(cfg.task).name
    if not cfg.train:
        return "classification"
    table = table or read_table(cfg.train)
    return infer(list(table.column(cfg.label, "label", "--label")))


def load_task_data(cfg: DataConfig, tokenizer, seed: int = 42, spec: Optional[TaskSpec] = None) -> TaskData:
    """Read train (and eval) files per ``cfg``; the task and its ``TaskSpec`` are inferred unless given.

    Raises:
        DataError: naming file, line and column for any bad row. ConfigError: an unknown ``data.task``.
    """
    if not cfg.train:
        raise DataError("no training data: pass --train FILE (or data.train in the config)")
    table = read_table(cfg.train)
    task = get(spec.task if spec else task_of(cfg, table))
    ex = task.read(table, cfg)
    spec = spec or task.spec(ex.labels, table, cfg.label)
    targets = task.labels(ex.labels, spec, table, cfg.label)
    enc = task.encode(ex, tokenizer, cfg, cfg.train).with_labels(targets)
    if cfg.eval:
        train = enc
        ev = load_labelled(cfg.eval, cfg, spec, tokenizer)
        eval_source = cfg.eval
    else:
        tr_idx, ev_idx = stratified_split(targets, cfg.val_fraction, seed, stratify=task.stratify)
        train, ev = enc.select(tr_idx), enc.select(ev_idx)
        eval_source = f"{cfg.val_fraction:.0%} stratified split of {cfg.train}"
    train = train.select(subsample(len(train), cfg.max_train_samples, seed))
    ev = ev.select(subsample(len(ev), cfg.max_eval_samples, seed))
    return TaskData(spec, train, ev, eval_source)


def load_labelled(path: str, cfg: DataConfig, spec: TaskSpec, tokenizer) -> Encoded:
    """Read a labelled file against a known ``TaskSpec`` (labels unseen in training are errors)."""
    task = get(spec.task)
    table = read_table(path)
    ex = task.read(table, cfg)
    return task.encode(ex, tokenizer, cfg, path).with_labels(task.labels(ex.labels, spec, table, cfg.label))


def load_unlabelled(path: str, cfg: DataConfig, spec: TaskSpec, tokenizer) -> Encoded:
    """Read a file to predict on: the inputs only (a label column, if any, is ignored)."""
    task = get(spec.task)
    return task.encode(task.read(read_table(path), cfg, labelled=False), tokenizer, cfg, path)


def spec_from_config(hf_cfg) -> TaskSpec:
    """The ``TaskSpec`` a saved model was trained for, from its Hugging Face config.

    pretune records the task as ``pretune_task`` in ``config.json``; folders without it are read as
    regression when they have one output or say so, else classification.
    """
    name = getattr(hf_cfg, "pretune_task", None)
    if name is None:
        name = "regression" if hf_cfg.problem_type == "regression" or hf_cfg.num_labels == 1 else "classification"
    labels = [] if name == "regression" else [hf_cfg.id2label[i] for i in range(hf_cfg.num_labels)]
    return TaskSpec(get(name).name, labels)
