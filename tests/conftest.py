"""Shared fixtures: a tiny randomly initialised BERT folder and small synthetic data sets.

Nothing here downloads: models are built from a config, the tokenizer from a
word list, and the data from a seeded generator with a learnable signal
(sentiment words decide the label).
"""

from __future__ import annotations

import csv
import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

POSITIVE = ["good", "great", "fine", "superb", "lovely"]
NEGATIVE = ["bad", "awful", "terrible", "dull", "poor"]
FILLER = ["movie", "film", "plot", "actor", "the", "a", "is", "was", "very", "quite", "story", "scene"]
WORDS = POSITIVE + NEGATIVE + FILLER
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def make_tiny_bert(folder: Path, layers: int = 2, hidden: int = 32, heads: int = 2, seed: int = 0,
                   max_positions: int = 64) -> Path:
    """Save a random BertModel (no head) and a word-level tokenizer into ``folder``."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)})
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=2 * hidden, max_position_embeddings=max_positions)
    torch.manual_seed(seed)
    BertModel(cfg).save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


def make_rows(n: int, seed: int = 0, classes: int = 2) -> list[tuple[str, str]]:
    """Sentences whose label is set by the sentiment words in them."""
    rng = random.Random(seed)
    names = ["neg", "pos", "mixed"][:classes]
    rows = []
    for _ in range(n):
        label = rng.randrange(classes)
        cue = {0: NEGATIVE, 1: POSITIVE, 2: POSITIVE + NEGATIVE}[label]
        words = rng.choices(cue, k=2) + rng.choices(FILLER, k=rng.randint(1, 6))
        if label == 2:
            words = [rng.choice(POSITIVE), rng.choice(NEGATIVE)] + words[2:]
        rng.shuffle(words)
        rows.append((" ".join(words), names[label]))
    return rows


def write_csv(path: Path, rows: list[tuple], header=("text", "label")) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("models") / "tiny-bert")


@pytest.fixture(scope="session")
def family_dir(tmp_path_factory):
    """``family_dir("llama")``: a tiny random base model of that family with its tokenizer (``tests/families.py``),
    built on first use and shared by the session."""
    from families import make_tiny

    built: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in built:
            built[family] = make_tiny(family, tmp_path_factory.mktemp("families") / family)
        return built[family]
    return get


@pytest.fixture(scope="session")
def sentiment_csv(tmp_path_factory) -> Path:
    return write_csv(tmp_path_factory.mktemp("data") / "train.csv", make_rows(240, seed=1))


@pytest.fixture(scope="session")
def sentiment_eval_csv(tmp_path_factory) -> Path:
    return write_csv(tmp_path_factory.mktemp("data") / "eval.csv", make_rows(60, seed=2))


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Each test gets its own tokenization cache, so tests never see each other's files."""
    monkeypatch.setenv("PRETUNE_CACHE", str(tmp_path / "cache"))


def tiny_config(model: Path, train_file: Path, output: Path, **sections) -> dict:
    """A fast config dict for the tiny model; ``sections`` are merged per section."""
    cfg = {
        "model": {"path": str(model)},
        "data": {"train": str(train_file), "max_length": 32},
        # fp32: the loop's equivalence tests compare exact updates (the default, auto, is bf16 on a bf16 CPU)
        "train": {"epochs": 2, "lr": 5e-3, "batch_size": 16, "progress": False, "seed": 0, "threads": 2,
                  "precision": "fp32"},
        "output": str(output),
    }
    for key, value in sections.items():
        if isinstance(value, dict):
            cfg.setdefault(key, {}).update(value)
        else:
            cfg[key] = value
    return cfg
