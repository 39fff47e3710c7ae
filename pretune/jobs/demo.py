"""``demo``: the whole job offline on the packaged MiniLM, in minutes on a laptop-class CPU.

Data, first that applies:
1. files the user gives (``--train`` and ``--eval``);
2. GLUE SST-2 from the Hugging Face hub, when online and the ``datasets`` package is installed;
3. a small sentiment task generated here from a seeded template grammar (no dataset text is shipped).
The demo says which one it used, in its log and in the report.
"""

from __future__ import annotations

import csv
import logging
import os
import random
from pathlib import Path
from typing import Any, Optional

log = logging.getLogger("pretune")

# A template grammar: the label is set by the opinion word, optionally flipped by a negation,
# with a little label noise so that the task is learnable but not trivially perfect.
SUBJECTS = ["the film", "this movie", "the plot", "the acting", "the soundtrack", "the ending", "the script",
            "the cast", "the director's work", "the story", "the dialogue", "the pacing"]
POSITIVE = ["wonderful", "moving", "clever", "delightful", "gripping", "beautiful", "funny", "brilliant",
            "charming", "memorable"]
NEGATIVE = ["boring", "clumsy", "dull", "tedious", "predictable", "awkward", "shallow", "forgettable",
            "painful", "messy"]
ADVERBS = ["", "really ", "quite ", "truly ", "rather ", "surprisingly "]
TAILS = ["", " from start to finish", " for most of its length", " in every scene", ", as expected",
         " despite the hype"]
NOISE = 0.05  # fraction of labels flipped at random


def generated_rows(n: int, seed: int) -> list[tuple[str, int]]:
    """``n`` (sentence, label) rows of the demo task; label 1 is positive."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        positive = rng.random() < 0.5
        negated = rng.random() < 0.25
        word = rng.choice(POSITIVE if positive else NEGATIVE)
        verb = "is not" if negated else rng.choice(["is", "was", "feels"])
        text = f"{rng.choice(SUBJECTS)} {verb} {rng.choice(ADVERBS)}{word}{rng.choice(TAILS)}"
        label = int(positive != negated)
        if rng.random() < NOISE:
            label = 1 - label
        rows.append((text, label))
    return rows


def _write(path: Path, rows: list[tuple[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["sentence", "label"])
        writer.writerows(rows)
    return path


def _from_hub(folder: Path, train_rows: int) -> Optional[tuple[Path, Path]]:
    """GLUE SST-2 from the hub into CSV files; None when offline or ``datasets`` is missing."""
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        return None
    try:
        import datasets
    except ImportError:
        return None
    try:
        ds = datasets.load_dataset("nyu-mll/glue", "sst2")
    except Exception as e:  # no network, hub down: fall back to the generated task
        log.info("demo: SST-2 from the hub unavailable (%s); using the generated task", str(e).splitlines()[0])
        return None
    train = ds["train"].shuffle(seed=0).select(range(min(train_rows, len(ds["train"]))))
    return (_write(folder / "train.csv", list(zip(train["sentence"], train["label"]))),
            _write(folder / "dev.csv", list(zip(ds["validation"]["sentence"], ds["validation"]["label"]))))


def demo_data(folder: Path, train: Optional[str] = None, eval: Optional[str] = None,
              train_rows: int = 800, eval_rows: int = 200) -> tuple[str, str, str]:
    """Choose the demo's data.

    Returns:
        (train file, eval file, a sentence saying which data it is).
    """
    if train:
        return train, eval, f"your files ({train}, {eval or 'a split of it'})"
    hub = _from_hub(folder, train_rows)
    if hub:
        return str(hub[0]), str(hub[1]), f"GLUE SST-2 from the Hugging Face hub ({train_rows} training rows)"
    tr = _write(folder / "train.csv", generated_rows(train_rows, seed=1))
    ev = _write(folder / "dev.csv", generated_rows(eval_rows, seed=2))
    return str(tr), str(ev), (f"a generated sentiment task ({train_rows} training, {eval_rows} eval rows; "
                              "offline, so no hub data)")


def demo_config(train: str, eval: str, output: str) -> dict[str, Any]:
    """The demo's run config: small search over learning rate and method, quick compression."""
    return {
        "model": {"path": "minilm"},
        "data": {"train": train, "eval": eval, "text": "sentence", "label": "label", "max_length": 64},
        "train": {"epochs": 1, "batch_size": 32, "progress": False},  # lr, warmup, decays: the model's recipe
        "search": {"space": {"train.lr": {"type": "float", "low": 3e-5, "high": 3e-4, "log": True},
                             "method.name": ["full", "lora"],
                             "lora.r": {"choices": [8, 16], "when": {"method.name": "lora"}}},
                   "n_trials": 8, "pruner": "asha"},
        "compress": {"methods": ["onnx", "int8-dynamic-torch", "int8-dynamic-ort"], "bench_runs": 50},
        "output": output,
    }
