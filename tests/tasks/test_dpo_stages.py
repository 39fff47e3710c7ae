"""dpo through the stages on a tiny random Llama: the LoRA reference at init, learning a preference, a
precomputed reference against a frozen copy, exact resume after a kill, and a model without a causal-LM head."""

from __future__ import annotations

import json
import math

import pytest
import torch
from dpo import pair_rows
from sft import make_causal_lm, resumed_equals_uninterrupted, write_jsonl

from pretune.cli import main


@pytest.fixture(scope="module")
def setup(family_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("dpo")
    lm = make_causal_lm(family_dir("llama"), folder / "llama-lm")
    return lm, write_jsonl(folder / "train.jsonl", pair_rows(64, 1)), write_jsonl(folder / "dev.jsonl",
                                                                                  pair_rows(32, 2))


def _config(setup, out, method="lora", **dpo):
    from pretune.config import config_from_dict

    lm, train_file, dev = setup
    return config_from_dict({
        "model": {"path": str(lm)}, "method": {"name": method}, "lora": {"dropout": 0.0}, "dpo": dpo,
        "data": {"train": str(train_file), "eval": str(dev), "task": "dpo", "max_length": 32},
        "train": {"epochs": 2, "lr": 1e-2, "batch_size": 8, "progress": False, "seed": 0, "threads": 1,
                  "precision": "fp32", "eval_every": 4, "checkpoint_every": 4, "restore_best": False},
        "output": str(out)})


def test_lora_reference_is_the_base_so_the_loss_starts_at_log_2(setup, tmp_path):
    from pretune.jobs.fit import prepare
    from pretune.tasks import dpo

    tok, data, model = prepare(_config(setup, tmp_path / "run"))
    batch = dpo.collate(data.train, list(range(8)), tok.pad_token_id)
    with torch.no_grad():
        out = dpo.forward(model, batch)
        with model.disable_adapter():
            base = dpo.sequence_logps(model, batch).reshape(2, -1).T
    assert torch.allclose(out[:, 3:5], base) and torch.allclose(out[:, 1:3], base, atol=1e-6)
    assert torch.allclose(out[:, 0], torch.full((8,), math.log(2)), atol=1e-6)
    assert model.config.pretune_settings["dpo"] == {"loss_type": "sigmoid", "beta": 0.1, "label_smoothing": 0.0,
                                                     "reference": str(setup[0])}


def test_lora_dpo_learns_the_preference_and_saves_a_causal_lm(setup, tmp_path):
    from transformers import AutoModelForCausalLM

    lm, train_file, dev = setup
    out = tmp_path / "run"
    assert main(["fit", "--model", str(lm), "--train", str(train_file), "--eval", str(dev), "--task", "dpo",
                 "--output", str(out), "--epochs", "3", "--lr", "2e-2", "--batch-size", "8", "--seed", "0",
                 "--threads", "1", "--method", "lora", "data.max_length=32", "train.progress=false",
                 "train.precision=fp32", "lora.dropout=0.0", "dpo.beta=0.5"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["metric"] == "reward_accuracy"
    first, final = results["history"][0], results["eval"]
    assert final["reward_accuracy"] >= 0.9 and final["reward_margin"] > 0.2  # held-out pairs
    assert final["loss"] < math.log(2) - 0.1 and final["reward_margin"] >= first["reward_margin"]
    model = AutoModelForCausalLM.from_pretrained(str(out / "model"))  # LoRA merged
    assert model.config.pretune_task == "dpo" and model.config.pretune_settings["dpo"]["beta"] == 0.5


def test_precomputed_reference_gives_the_frozen_copys_training(setup, tmp_path):
    from pretune.jobs.fit import prepare
    from pretune.train import train

    runs = []
    for precompute in (False, True):
        cfg = _config(setup, tmp_path / "run", method="full", precompute_reference=precompute)
        cfg.train.max_steps, cfg.train.eval_every, cfg.train.lr = 3, 3, 1e-3
        tok, data, model = prepare(cfg)
        assert (data.train.reference is not None) == precompute and data.eval.reference is not None
        result = train(model, data.train, data.eval, data.spec, cfg.train, pad_id=tok.pad_token_id)
        runs.append((result.history[-1], {n: p.detach().clone() for n, p in model.named_parameters()}))
    (frozen, w_frozen), (pre, w_pre) = runs
    assert frozen["loss"] == pytest.approx(pre["loss"], rel=1e-4) and frozen["loss"] != pytest.approx(math.log(2))
    for name, value in w_frozen.items():
        assert torch.allclose(value, w_pre[name], atol=1e-5), name


def test_resumed_dpo_run_equals_an_uninterrupted_one(setup, tmp_path):
    from pretune.jobs.fit import prepare

    def fresh():
        cfg = _config(setup, tmp_path / "run")
        tok, data, model = prepare(cfg)
        return cfg, tok, data, model

    assert resumed_equals_uninterrupted(fresh, tmp_path / "r", kill_at=12) == 16


def test_a_model_without_a_causal_lm_head_is_a_one_line_error(family_dir, setup, tmp_path, capsys):
    _, train_file, _ = setup
    assert main(["fit", "--model", str(family_dir("distilbert")), "--train", str(train_file), "--task", "dpo",
                 "--output", str(tmp_path / "run"), "train.progress=false"]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot build a CausalLM model for model type 'distilbert'" in err and "dpo needs a model" in err
    assert "\n" not in err and not (tmp_path / "run").exists()


def test_run_on_preference_pairs_gates_int8_on_reward_accuracy_and_shows_generations(family_dir, tmp_path):
    """pretune run --task dpo on HH-RLHF-style dialogues: the search maximises reward accuracy, int8 is gated on
    it, bench times the variant's decoding, and the report shows base and tuned answers to the eval rows' prompts
    (the dialogue before the last assistant turn)."""
    from dpo import hh_rows

    lm = make_causal_lm(family_dir("llama"), tmp_path / "lm")
    train = write_jsonl(tmp_path / "hh.jsonl", hh_rows(pair_rows(60, 1)))
    dev = write_jsonl(tmp_path / "hh_dev.jsonl", hh_rows(pair_rows(16, 2)))
    run_dir = tmp_path / "run"
    space = json.dumps({"train.lr": [1e-2, 3e-3], "train.epochs": [1], "method.name": ["lora"]})
    assert main(["run", "--model", str(lm), "--train", str(train), "--eval", str(dev), "--task", "dpo",
                 "--output", str(run_dir),
                 "--n-trials", "2", "--probe-steps", "2", f"search.space={space}", "--threads", "1",
                 "data.max_length=48", "train.progress=false", "train.precision=fp32", "compress.threads=1",
                 "compress.bench_runs=3", "compress.latency_rounds=0", "compress.isolate=false",
                 "compress.max_length=48", "compress.tolerance=100"]) == 0
    state = json.loads((run_dir / "run.json").read_text())
    assert all(state["stages"][s]["status"] == "done" for s in ("search", "compress", "generations", "report"))
    search = json.loads((run_dir / "search" / "results.json").read_text())
    assert search["objectives"] == [["reward_accuracy", "maximize"]]
    results = json.loads((run_dir / "compress" / "results.json").read_text())
    assert results["metric"] == "reward_accuracy"
    [variant] = results["variants"]
    assert variant["name"] == "int8-dynamic-torch" and variant["status"] == "accepted"  # tolerance 100 points
    src = results["source_bench"]["eval"]["metrics"]["reward_accuracy"]
    assert variant["points_lost"] == pytest.approx(100 * (src - variant["bench"]["eval"]["metrics"]["reward_accuracy"]))
    assert variant["bench"]["generation"]["generated_tokens_per_s"] > 0
    rows = json.loads((run_dir / "generations.json").read_text())
    assert len(rows) == 3 and all(r["prompt"].startswith("\n\nHuman: ") and r["prompt"].endswith("Assistant:")
                                  for r in rows)
    assert "Generations: base and tuned model" in (run_dir / "report.md").read_text()
