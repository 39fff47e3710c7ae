"""Data stage: read tables, check them, infer the task, split, tokenize, batch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..config import DataConfig
from ..errors import DataError
from .dataset import (
    Examples,
    TaskSpec,
    build_spec,
    encode_labels,
    infer_task,
    read_examples,
    stratified_split,
    subsample,
)
from .encoded import Encoded, collate, epoch_batches, eval_batches, padding_fraction, tokenize
from .readers import Table, read_table

__all__ = ["TaskData", "TaskSpec", "Encoded", "Examples", "Table", "load_task_data", "load_labelled",
           "read_examples", "read_table", "tokenize", "collate", "epoch_batches", "eval_batches",
           "padding_fraction", "infer_task"]


@dataclass
class TaskData:
    spec: TaskSpec
    train: Encoded
    eval: Encoded
    eval_source: str  # file name, or "<split of FILE>"


def _columns(cfg: DataConfig) -> tuple:
    return (cfg.text, cfg.text_pair)


def load_task_data(cfg: DataConfig, tokenizer, seed: int = 42, spec: Optional[TaskSpec] = None) -> TaskData:
    """Read train (and eval) files per ``cfg``; infer the ``TaskSpec`` unless given.

    Raises:
        DataError: naming file, line and column for any bad row.
    """
    if not cfg.train:
        raise DataError("no training data: pass --train FILE (or data.train in the config)")
    ex, table = read_examples(cfg.train, cfg.text, cfg.text_pair, cfg.label)
    if spec is None:
        spec = build_spec(ex.labels, cfg.task, table, cfg.label)
    labels = encode_labels(ex.labels, spec, table, cfg.label)
    regression = spec.task == "regression"
    enc = tokenize(ex.texts, ex.pairs, tokenizer, cfg.max_length, cfg.cache_dir, cfg.train,
                   _columns(cfg)).with_labels(labels, regression)
    if cfg.eval:
        train = enc
        ev = load_labelled(cfg.eval, cfg, spec, tokenizer)
        eval_source = cfg.eval
    else:
        tr_idx, ev_idx = stratified_split(labels, cfg.val_fraction, seed, stratify=not regression)
        train, ev = enc.select(tr_idx), enc.select(ev_idx)
        eval_source = f"{cfg.val_fraction:.0%} stratified split of {cfg.train}"
    train = train.select(subsample(len(train), cfg.max_train_samples, seed))
    ev = ev.select(subsample(len(ev), cfg.max_eval_samples, seed))
    return TaskData(spec, train, ev, eval_source)


def load_labelled(path: str, cfg: DataConfig, spec: TaskSpec, tokenizer) -> Encoded:
    """Read a labelled file against a known ``TaskSpec`` (unseen labels are errors)."""
    ex, table = read_examples(path, cfg.text, cfg.text_pair, cfg.label)
    labels = encode_labels(ex.labels, spec, table, cfg.label)
    return tokenize(ex.texts, ex.pairs, tokenizer, cfg.max_length, cfg.cache_dir, path,
                    _columns(cfg)).with_labels(labels, spec.task == "regression")
