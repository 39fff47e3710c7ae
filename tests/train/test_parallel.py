"""``pretune fit`` under ``torchrun``: two gloo ranks make the update of one process accumulating two batches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_rows, make_tiny_bert, write_csv
from safetensors.torch import load_file

from pretune.cli import main

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_two_ranks_give_the_update_of_one_process_with_double_accumulation(tmp_path):
    model = make_tiny_bert(tmp_path / "bert", seed=1)
    config = json.loads((model / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # dropout differs across ranks
    (model / "config.json").write_text(json.dumps(config))
    train = write_csv(tmp_path / "train.csv", make_rows(90, seed=3))  # 81 training rows: a partial last step
    common = ["fit", "--model", str(model), "--train", str(train), "--epochs", "2", "--batch-size", "4",
              "--lr", "3e-3", "train.threads=1", "train.restore_best=false", "train.progress=false",
              "train.eval_every=5", "data.max_length=32"]

    assert main([*common, "--output", str(tmp_path / "one"), "train.grad_accum=2"]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "pretune.cli", *common, "--output", str(tmp_path / "two")],
                         env=env, capture_output=True, text=True, timeout=300, check=False)
    assert ddp.returncode == 0, ddp.stderr[-3000:]

    one = json.loads((tmp_path / "one" / "results.json").read_text())
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert two["steps"] == one["steps"] and two["train_samples"] == one["train_samples"]
    assert two["train_tokens"] == one["train_tokens"]
    assert [h["step"] for h in two["history"]] == [h["step"] for h in one["history"]]
    w1 = load_file(str(tmp_path / "one" / "model" / "model.safetensors"))
    w2 = load_file(str(tmp_path / "two" / "model" / "model.safetensors"))
    assert w1.keys() == w2.keys()
    initial = load_file(str(model / "model.safetensors"))
    moved = [n for n in w1 if n.removeprefix("bert.") in initial
             and not torch.equal(w1[n], initial[n.removeprefix("bert.")])]
    assert moved, "training changed nothing: the comparison would be vacuous"
    for name in w1:
        assert torch.allclose(w1[name], w2[name], atol=1e-5), name
    # Rank 1 wrote nothing of its own: one metrics log, no stray files.
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
