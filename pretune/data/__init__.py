"""Data stage: read tables, check their text, split, tokenize once (cached), batch with little padding.

What the labels mean, and so how a file becomes a task's train and eval sets, is ``pretune.tasks``.
"""

from .dataset import Examples, read_examples, stratified_split, subsample
from .encoded import (IGNORE, Encoded, cached, collate, epoch_batches, eval_batches, padding_fraction, place_outputs,
                      tokenize)
from .readers import Table, read_table

__all__ = ["Encoded", "Examples", "IGNORE", "Table", "read_examples", "read_table", "tokenize", "cached", "collate",
           "epoch_batches", "eval_batches", "padding_fraction", "place_outputs", "stratified_split", "subsample"]
