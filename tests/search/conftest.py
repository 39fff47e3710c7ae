"""Fixtures for search tests: a tiny random BERT, its tokenizer and a tiny labelled CSV, all in tmp_path."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORDS = ["good", "great", "fine", "love", "nice", "bad", "awful", "poor", "hate", "dull", "the", "movie", "was",
         "a", "plot", "very", "not"]
POSITIVE, NEGATIVE = WORDS[:5], WORDS[5:10]


def make_tiny_bert(folder: Path) -> Path:
    """A 2-layer, 32-wide BERT with random weights and a word-level vocabulary, saved as safetensors."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    tok.save_pretrained(str(folder))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, num_labels=2)
    BertForSequenceClassification(config).save_pretrained(str(folder), safe_serialization=True)
    return folder


def make_tiny_data(folder: Path, n_train: int = 64, n_eval: int = 32, seed: int = 0) -> tuple[Path, Path]:
    """Sentences whose label is whether they contain a positive word: learnable in a few steps."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)

    def rows(n: int) -> list[str]:
        out = []
        for i in range(n):
            label = i % 2
            word = rng.choice(POSITIVE if label else NEGATIVE)
            filler = rng.sample(WORDS[10:], 3)
            out.append(f"{' '.join(filler[:2])} {word} {filler[2]},{label}")
        return out

    train, dev = folder / "train.csv", folder / "dev.csv"
    train.write_text("text,label\n" + "\n".join(rows(n_train)) + "\n")
    dev.write_text("text,label\n" + "\n".join(rows(n_eval)) + "\n")
    return train, dev


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> tuple[Path, Path]:
    return make_tiny_data(tmp_path_factory.mktemp("tiny-data"))


@pytest.fixture()
def base_config(tiny_bert, tiny_data, tmp_path) -> dict:
    """A fast run config on the tiny model; tests add a ``search`` section."""
    train, dev = tiny_data
    return {"model": {"path": str(tiny_bert)}, "data": {"train": str(train), "eval": str(dev),
                                                        "cache_dir": str(tmp_path / "cache")},
            "train": {"epochs": 1, "batch_size": 16, "eval_every": 2, "threads": 1, "progress": False},
            "output": str(tmp_path / "search")}
