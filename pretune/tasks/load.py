"""From a ``DataConfig`` to tokenized train and eval sets of the right task: ``load_task_data``."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Optional

from ..config import DataConfig
from ..data import Encoded, read_table, stratified_split, subsample
from ..data.readers import Table
from ..errors import DataError
from .base import REGISTRY, Task, TaskSpec, get, infer


@dataclass
class TaskData:
    spec: TaskSpec
    train: Encoded
    eval: Encoded
    eval_source: str  # file name, or "<split of FILE>"


def columns_for(cfg: DataConfig, table: Table, task: Optional[Task] = None) -> DataConfig:
    """``cfg`` with the columns ``table`` has: where the default text or label column (text, label) is not in the
    file, the first of ``task``'s usual names that is (every task's when ``task`` is None)."""
    candidates = [task] if task else list(REGISTRY.values())
    default = DataConfig()
    text, label = cfg.text, cfg.label
    if text == default.text and text not in table.columns:
        text = next((c for t in candidates for c in t.text_columns if c in table.columns), text)
    if label == default.label and label not in table.columns:
        label = next((c for t in candidates for c in t.label_columns if c in table.columns), label)
    return cfg if (text, label) == (cfg.text, cfg.label) else replace(cfg, text=text, label=label)


def task_of(cfg: DataConfig, table: Optional[Table] = None) -> str:
    """``cfg.task``, or the task inferred from the training file's labels (classification without a file)."""
    if cfg.task:
        return get(cfg.task).name
    if not cfg.train:
        return "classification"
    table = table or read_table(cfg.train)
    return infer(list(table.column(columns_for(cfg, table).label, "label", "--label")))


def load_task_data(cfg: DataConfig, tokenizer, seed: int = 42, spec: Optional[TaskSpec] = None) -> TaskData:
    """Read train (and eval) files per ``cfg``; the task and its ``TaskSpec`` are inferred unless given.

    Raises:
        DataError: naming file, line and column for any bad row. ConfigError: an unknown ``data.task``.
    """
    if not cfg.train:
        raise DataError("no training data: pass --train FILE (or data.train in the config)")
    table = read_table(cfg.train)
    task = get(spec.task if spec else task_of(cfg, table))
    tcfg = columns_for(cfg, table, task)
    ex = task.read(table, tcfg)
    spec = spec or task.spec(ex.labels, table, tcfg.label, tcfg)
    targets = task.labels(ex.labels, spec, table, tcfg.label, tcfg)
    enc = task.encode(ex, tokenizer, tcfg, cfg.train, targets, spec)
    if cfg.eval:
        train = enc
        ev = load_labelled(cfg.eval, cfg, spec, tokenizer)
        eval_source = cfg.eval
    else:
        # split input rows, not encoded ones: the windows of a long sentence stay on one side
        tr_idx, ev_idx = stratified_split(targets, cfg.val_fraction, seed, stratify=task.stratify)
        train, ev = enc.select_inputs(tr_idx), enc.select_inputs(ev_idx)
        eval_source = f"{cfg.val_fraction:.0%} {'stratified' if task.stratify else 'seeded'} split of {cfg.train}"
    train = train.select_inputs(subsample(train.n_inputs, cfg.max_train_samples, seed))
    ev = ev.select_inputs(subsample(ev.n_inputs, cfg.max_eval_samples, seed))
    return TaskData(spec, train, ev, eval_source)


def load_labelled(path: str, cfg: DataConfig, spec: TaskSpec, tokenizer) -> Encoded:
    """Read a labelled file against a known ``TaskSpec`` (labels unseen in training are errors)."""
    task = get(spec.task)
    table = read_table(path)
    cfg = columns_for(cfg, table, task)
    ex = task.read(table, cfg)
    return task.encode(ex, tokenizer, cfg, path, task.labels(ex.labels, spec, table, cfg.label, cfg), spec)


def read_unlabelled(path: str, cfg: DataConfig, spec: TaskSpec, tokenizer) -> tuple[Any, Encoded]:
    """Read a file to predict on: (the task's examples, their encoding); a label column, if any, is ignored."""
    task = get(spec.task)
    table = read_table(path)
    cfg = columns_for(cfg, table, task)
    ex = task.read(table, cfg, labelled=False)
    return ex, task.encode(ex, tokenizer, cfg, path, None, spec)


def load_unlabelled(path: str, cfg: DataConfig, spec: TaskSpec, tokenizer) -> Encoded:
    """The encoding of a file to predict on (see ``read_unlabelled``)."""
    return read_unlabelled(path, cfg, spec, tokenizer)[1]


def spec_from_config(hf_cfg) -> TaskSpec:
    """The ``TaskSpec`` a saved model was trained for, from its Hugging Face config.

    pretune records the task as ``pretune_task`` in ``config.json`` (and what else reading its outputs needs as
    ``pretune_settings``); folders without it are read as regression when they have one output or say so, else
    classification.
    """
    name = getattr(hf_cfg, "pretune_task", None)
    if name is None:
        name = "regression" if hf_cfg.problem_type == "regression" or hf_cfg.num_labels == 1 else "classification"
    labels = [hf_cfg.id2label[i] for i in range(hf_cfg.num_labels)] if get(name).classes else []
    return TaskSpec(get(name).name, labels, dict(getattr(hf_cfg, "pretune_settings", None) or {}))
