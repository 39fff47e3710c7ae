"""What every sentence-level task shares: a text (and optional second text) per row, one target per row, the
head reading one vector per sequence."""

from __future__ import annotations

from ..config import DataConfig
from ..data import Encoded, Examples, Table, collate, read_examples, tokenize


def read(table: Table, cfg: DataConfig, labelled: bool = True) -> Examples:
    """The text, text-pair and (if ``labelled``) label columns of ``table``, texts checked."""
    return read_examples(table, cfg.text, cfg.text_pair, cfg.label if labelled else None)


def encode(examples: Examples, tokenizer, cfg: DataConfig, source: str | None, targets=None,
           spec=None) -> Encoded:
    """Token ids of every row, truncated to ``cfg.max_length`` (cached when ``source`` is a file), with
    ``targets`` (one per row) as the labels."""
    return tokenize(examples.texts, examples.pairs, tokenizer, cfg.max_length, cfg.cache_dir, source,
                    (cfg.text, cfg.text_pair)).with_labels(targets)


COMMON = dict(read=read, encode=encode, collate=collate, model_class="AutoModelForSequenceClassification")
