"""causal_lm through the stages on a tiny random Llama: fit with LoRA (merged or not), eval of a base and a tuned
model, generate, exact resume, and the error for a model without a causal-LM head."""

from __future__ import annotations

import json

import pytest
import torch
from sft import TEMPLATE, alpaca_rows, make_causal_lm, resumed_equals_uninterrupted, write_jsonl

from pretune.cli import main


@pytest.fixture(scope="module")
def setup(family_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("sft")
    lm = make_causal_lm(family_dir("llama"), folder / "llama-lm")
    return lm, write_jsonl(folder / "train.jsonl", alpaca_rows(96, 1)), write_jsonl(folder / "dev.jsonl",
                                                                                    alpaca_rows(24, 2))


def _fit(setup, out, *extra):
    lm, train, dev = setup
    assert main(["fit", "--model", str(lm), "--train", str(train), "--eval", str(dev), "--task", "causal_lm",
                 "--output", str(out), "--epochs", "2", "--lr", "1e-2", "--batch-size", "8", "--seed", "0",
                 "--threads", "1", "--method", "lora", "data.max_length=64", "train.progress=false",
                 "train.precision=fp32", "lora.dropout=0.0", *extra]) == 0
    return json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def fitted(setup, tmp_path_factory):
    """The same LoRA run saved merged and as an adapter: (merged run folder, adapter run folder)."""
    folder = tmp_path_factory.mktemp("runs")
    _fit(setup, folder / "merged", f"data.chat_template={json.dumps(TEMPLATE)}")
    _fit(setup, folder / "adapter", "lora.merge=false")
    return folder / "merged", folder / "adapter"


def test_merged_model_loads_as_a_causal_lm_with_the_adapter_models_logits(fitted, setup):
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    merged, adapter = fitted
    results = json.loads((merged / "results.json").read_text())
    assert results["task"] == "causal_lm" and results["metric"] == "loss"
    assert results["trainable_params"] < results["total_params"] / 5  # adapters only, the LM head untouched
    lm = AutoModelForCausalLM.from_pretrained(str(merged / "model")).eval()
    peft = AutoPeftModelForCausalLM.from_pretrained(str(adapter / "model")).eval()
    assert (adapter / "model" / "adapter_config.json").is_file()
    ids = torch.tensor([[1, 5, 9, 12, 20, 7, 3]])
    with torch.no_grad():
        assert torch.allclose(lm(input_ids=ids).logits, peft(input_ids=ids).logits, atol=1e-5)
    assert AutoTokenizer.from_pretrained(str(merged / "model")).chat_template == TEMPLATE


def test_eval_scores_base_and_tuned_models_alike(fitted, setup, capsys):
    lm, _, dev = setup
    merged, _ = fitted
    trained = json.loads((merged / "results.json").read_text())["eval"]
    capsys.readouterr()
    assert main(["eval", str(merged / "model"), "--data", str(dev), "--threads", "1", "--max-length", "64",
                 "--precision", "fp32"]) == 0
    tuned = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert tuned["loss"] == pytest.approx(trained["loss"], rel=1e-4) and tuned["rows"] == 24
    assert tuned["perplexity"] == pytest.approx(float(torch.tensor(tuned["loss"]).exp()), rel=1e-4)
    assert main(["eval", str(lm), "--task", "causal_lm", "--data", str(dev), "--threads", "1", "--max-length", "64",
                 "--precision", "fp32"]) == 0
    base = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert base["loss"] > tuned["loss"]  # tuning lowered the loss on the responses


def test_generate_streams_greedy_text_from_prompts_and_files(fitted, setup, tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, adapter = fitted
    merged = fitted[0] / "model"
    capsys.readouterr()
    assert main(["generate", str(merged), "--prompt", "good film", "--raw", "--max-new-tokens", "4",
                 "--threads", "1", "--output", str(tmp_path / "g.jsonl")]) == 0
    [row] = [json.loads(line) for line in (tmp_path / "g.jsonl").read_text().splitlines()]
    assert row["generated"].strip() in capsys.readouterr().out  # streamed as it came
    tok, lm = AutoTokenizer.from_pretrained(str(merged)), AutoModelForCausalLM.from_pretrained(str(merged))
    ids = tok("good film", return_tensors="pt")["input_ids"]
    greedy = lm.generate(input_ids=ids, max_new_tokens=4, do_sample=False, pad_token_id=tok.eos_token_id)
    assert row["generated"] == tok.decode(greedy[0, ids.shape[1]:], skip_special_tokens=True)
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"messages": [{"role": "user", "content": "good"}]},
                                                 {"messages": [{"role": "user", "content": "bad"}]}])
    assert main(["generate", str(adapter / "model"), "--input", str(prompts), "--max-new-tokens", "3",
                 "--no-stream", "--threads", "1"]) == 2  # the adapter run's tokenizer has no chat template
    assert "chat template" in capsys.readouterr().err
    assert main(["generate", str(merged), "--input", str(prompts), "--max-new-tokens", "3", "--threads", "1",
                 "--output", str(tmp_path / "m.jsonl")]) == 0  # the merged run saved data.chat_template
    assert len((tmp_path / "m.jsonl").read_text().splitlines()) == 2


def test_resumed_sft_run_equals_an_uninterrupted_one(setup, tmp_path):
    from pretune.config import config_from_dict
    from pretune.jobs.fit import prepare

    lm, train_file, dev = setup

    def fresh():
        cfg = config_from_dict({
            "model": {"path": str(lm)}, "method": {"name": "lora"}, "lora": {"dropout": 0.0},
            "data": {"train": str(train_file), "eval": str(dev), "task": "causal_lm", "max_length": 64,
                     "packing": True},
            "train": {"epochs": 2, "lr": 1e-2, "batch_size": 8, "progress": False, "seed": 0, "threads": 1,
                      "precision": "fp32", "eval_every": 4, "checkpoint_every": 4, "restore_best": False},
            "output": str(tmp_path / "run")})
        tok, data, model = prepare(cfg)
        return cfg, tok, data, model

    assert resumed_equals_uninterrupted(fresh, tmp_path / "r", kill_at=12) == 24


def test_a_model_without_a_causal_lm_head_is_a_one_line_error(family_dir, setup, tmp_path, capsys):
    _, train_file, _ = setup
    assert main(["fit", "--model", str(family_dir("distilbert")), "--train", str(train_file), "--task", "causal_lm",
                 "--output", str(tmp_path / "run"), "train.progress=false"]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot build a CausalLM model for model type 'distilbert'" in err and "causal_lm needs a model" in err
    assert "\n" not in err and not (tmp_path / "run").exists()
