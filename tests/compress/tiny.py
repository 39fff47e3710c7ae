"""Tiny models and data for the bench and compress tests: built here, never downloaded.

A 32-wide BERT, a word-level tokenizer over a 40-word vocabulary, and a synthetic
sentiment task (a row is positive when it holds more positive than negative words)
that the tiny model learns in a few dozen steps.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

POS = ["good", "great", "fine", "nice", "superb", "lovely"]
NEG = ["bad", "awful", "poor", "dull", "boring", "ugly"]
FILLER = ["the", "film", "was", "a", "story", "plot", "actor", "it", "and", "very", "quite", "scene",
          "music", "ending", "cast", "script", "long", "short", "this", "that"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def write_rows(path: Path, n: int, seed: int) -> Path:
    """A CSV of ``n`` synthetic rows with columns ``text`` and ``label`` (pos / neg)."""
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for i in range(n):
            positive = i % 2 == 0
            strong = POS if positive else NEG
            words = list(rng.choice(FILLER, size=rng.integers(3, 10)))
            words += list(rng.choice(strong, size=2))
            rng.shuffle(words)
            w.writerow([" ".join(words), "pos" if positive else "neg"])
    return path


def build_tokenizer(folder: Path):
    from transformers import BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    return BertTokenizer(vocab={w: i for i, w in enumerate(SPECIAL + POS + NEG + FILLER)})


def build_model(layers: int = 2, seed: int = 0):
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(SPECIAL) + len(POS) + len(NEG) + len(FILLER), hidden_size=32,
                     num_hidden_layers=layers, num_attention_heads=2, intermediate_size=64,
                     max_position_embeddings=64, num_labels=2, id2label={0: "neg", 1: "pos"},
                     label2id={"neg": 0, "pos": 1}, problem_type="single_label_classification",
                     hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)  # dropout on: catches train-mode leaks
    return BertForSequenceClassification(cfg)


def make_finetuned(folder: Path, train_csv: Path, layers: int = 2, steps: int = 60) -> Path:
    """Train a tiny BERT briefly on ``train_csv`` with pretune's loop and save it as a model folder."""
    from pretune.config import DataConfig, TrainConfig
    from pretune.tasks import TaskSpec, load_labelled
    from pretune.train import train

    tok = build_tokenizer(folder)
    model = build_model(layers)
    spec = TaskSpec("classification", ["neg", "pos"])
    enc = load_labelled(str(train_csv), DataConfig(max_length=32, cache_dir=str(folder.parent / "cache")),
                        spec, tok)
    cfg = TrainConfig(lr=3e-3, batch_size=16, max_steps=steps, warmup=0.0, progress=False, threads=1,
                      eval_every=steps)
    train(model, enc, enc, spec, cfg, pad_id=tok.pad_token_id)
    model.eval()
    model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


# ------------------------------------------------------------------ fixtures (imported by the conftests)

import pytest  # noqa: E402


# Both conftests register these fixtures; the cache makes one session build them once.
_BUILT: dict = {}


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> tuple[Path, Path]:
    """(train.csv, eval.csv): 240 training rows and 64 held-out rows."""
    if "data" not in _BUILT:
        root = tmp_path_factory.mktemp("compress-data")
        _BUILT["data"] = (write_rows(root / "train.csv", 240, seed=0), write_rows(root / "eval.csv", 64, seed=1))
    return _BUILT["data"]


@pytest.fixture(scope="session")
def teacher(tmp_path_factory, tiny_data) -> Path:
    """A fine-tuned 2-layer tiny BERT folder (accuracy ~1.0 on the synthetic task)."""
    if "teacher" not in _BUILT:
        _BUILT["teacher"] = make_finetuned(tmp_path_factory.mktemp("teacher") / "model", tiny_data[0])
    return _BUILT["teacher"]


def fast_config(**overrides):
    """A CompressConfig sized for tests: short recovery and distillation, few timed runs, no subprocess."""
    from pretune.config import CompressConfig

    base = dict(isolate=False, threads=1, bench_runs=5, max_length=32, lr=1e-3, batch_size=16, recovery_steps=10,
                distill_steps=30, importance_batches=4, calibration_samples=32, head_fraction=0.5,
                latency_rounds=2)
    base.update(overrides)
    return CompressConfig(**base)


def context(teacher_dir: Path, train_csv: Path, eval_csv: Path, **overrides):
    """A compress ``Context`` over the tiny teacher, for calling one method directly."""
    from pretune.compress import Context
    from pretune.config import DataConfig
    from pretune.tasks import load_labelled
    from pretune.models import load_finetuned

    model, tok, spec = load_finetuned(teacher_dir)
    dcfg = DataConfig(max_length=32)
    return Context(teacher_dir, model, tok, spec, load_labelled(str(train_csv), dcfg, spec, tok),
                   load_labelled(str(eval_csv), dcfg, spec, tok), fast_config(**overrides), tok.pad_token_id)


def logits_of(folder: Path, enc, pad_id: int):
    """Logits of any variant folder (through its own runtime) on every row of ``enc``, in row order."""
    from pretune.bench import load_runner
    from pretune.bench.harness import _eval_pass

    runner, _, _ = load_runner(folder, threads=2)
    return _eval_pass(runner, enc, pad_id, 16)[0]


def scramble_head(ctx, out):
    """A compress method that writes a deliberately bad variant: the classifier always prefers class 0."""
    import torch

    model = ctx.copy_model()
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([5.0, -5.0]))
    model.save_pretrained(str(out))
    ctx.save_tokenizer(out)
    return {}
