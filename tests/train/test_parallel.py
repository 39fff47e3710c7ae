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


@pytest.mark.slow
@pytest.mark.parametrize("task,distributed", [("causal_lm", "ddp"), ("dpo", "fsdp")])
def test_llm_tasks_under_two_ranks_make_the_update_of_one_process(task, distributed, family_dir, tmp_path):
    """SFT with LoRA under DDP, and DPO with LoRA (its reference: the same weights, adapter off) under FSDP2: two
    gloo ranks give the merged weights of one process accumulating their two micro-batches."""
    from dpo import pair_rows
    from sft import alpaca_rows, make_causal_lm, write_jsonl

    lm = make_causal_lm(family_dir("llama"), tmp_path / "lm")
    rows = alpaca_rows(40, 1) if task == "causal_lm" else pair_rows(40, 1)
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    common = ["fit", "--model", str(lm), "--train", str(train), "--task", task, "--method", "lora", "--epochs", "1",
              "--batch-size", "4", "--lr", "1e-2", "train.threads=1", "train.restore_best=false",
              "train.progress=false", "train.precision=fp32", "lora.dropout=0.0", "data.max_length=32",
              "train.eval_every=3", f"train.distributed={distributed}"]
    assert main([*common, "--output", str(tmp_path / "one"), "train.grad_accum=2"]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "pretune.cli", *common, "--output", str(tmp_path / "two")],
                         env=env, capture_output=True, text=True, timeout=300, check=False)
    assert two.returncode == 0, two.stderr[-3000:]

    one_r, two_r = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("one", "two"))
    assert (one_r["world_size"], two_r["world_size"]) == (1, 2)
    assert (two_r["steps"], two_r["train_tokens"]) == (one_r["steps"], one_r["train_tokens"])
    assert two_r["eval"] == pytest.approx(one_r["eval"], rel=1e-4, abs=1e-6)
    w1 = load_file(str(tmp_path / "one" / "model" / "model.safetensors"))
    w2 = load_file(str(tmp_path / "two" / "model" / "model.safetensors"))
    initial = load_file(str(lm / "model.safetensors"))
    assert w1.keys() == w2.keys()
    assert any(not torch.equal(w1[n], initial[n]) for n in w1 if n in initial), "training changed nothing"
    for name in w1:
        assert torch.allclose(w1[name], w2[name], atol=1e-5), name
