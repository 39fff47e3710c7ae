"""Fixtures for search tests: a fast run config on the shared tiny BERT and sentiment CSVs."""

from __future__ import annotations

import pytest


@pytest.fixture()
def base_config(tiny_bert, sentiment_csv, sentiment_eval_csv, tmp_path) -> dict:
    """A run config that trains the tiny model in about a second; tests add a ``search`` section."""
    return {"model": {"path": str(tiny_bert)},
            "data": {"train": str(sentiment_csv), "eval": str(sentiment_eval_csv), "max_train_samples": 64,
                     "cache_dir": str(tmp_path / "cache")},
            "train": {"epochs": 1, "batch_size": 16, "eval_every": 2, "threads": 1, "progress": False},
            "output": str(tmp_path / "search")}
