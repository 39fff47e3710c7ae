"""causal_lm through search, compress, bench and run on a tiny random Llama: the eval loss is the objective and
minimised, int8 is gated on perplexity, the methods that need logits are refused in one line, bench times prefill
and decode with the tokens greedy ``generate`` gives, and the report shows base and tuned generations side by side."""

from __future__ import annotations

import json
import math

import pytest
import torch
from sft import alpaca_rows, make_causal_lm, write_jsonl

from pretune.cli import main

COMMON = ["--threads", "1", "data.max_length=48", "train.progress=false", "train.precision=fp32"]


@pytest.fixture(scope="module")
def setup(family_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("llm")
    lm = make_causal_lm(family_dir("llama"), folder / "llama-lm")
    return lm, write_jsonl(folder / "train.jsonl", alpaca_rows(48, 1)), write_jsonl(folder / "dev.jsonl",
                                                                                    alpaca_rows(12, 2))


@pytest.fixture(scope="module")
def fitted(setup, tmp_path_factory):
    """A full fine-tune of one epoch: the run folder."""
    lm, train, dev = setup
    out = tmp_path_factory.mktemp("fit") / "run"
    assert main(["fit", "--model", str(lm), "--train", str(train), "--eval", str(dev), "--task", "causal_lm",
                 "--output", str(out), "--epochs", "1", "--lr", "1e-3", "--batch-size", "8", "--seed", "0",
                 "--method", "full", *COMMON]) == 0
    return out


def test_search_minimises_the_eval_loss_over_the_default_space(setup, tmp_path):
    import optuna

    lm, train, dev = setup
    out = tmp_path / "search"
    assert main(["search", "--model", str(lm), "--train", str(train), "--eval", str(dev), "--task", "causal_lm",
                 "--output", str(out), "search.n_trials=3", "search.pruner=median", "search.prune_after=0",
                 "train.eval_every=3", *COMMON]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["objectives"] == [["loss", "minimize"]]
    study = optuna.load_study(study_name="pretune", storage=f"sqlite:///{out / 'study.db'}")
    assert [d.name for d in study.directions] == ["MINIMIZE"]
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert done and results["best_values"][0] == pytest.approx(min(t.value for t in done))
    # the pruner sees the eval loss at every evaluation: it is what trials report
    reported = [v for t in study.trials for v in t.intermediate_values.values()]
    assert reported and all(0 < v < 20 for v in reported)
    assert (out / "best" / "config.json").is_file()


def test_bench_times_prefill_and_decode_with_greedy_generates_tokens(fitted, setup):
    from transformers import AutoModelForCausalLM

    from pretune.bench import BenchConfig, bench
    from pretune.config import DataConfig
    from pretune.models import load_tokenizer
    from pretune.tasks import TaskSpec, load_labelled
    from pretune.tasks.generation import prompts

    _, _, dev = setup
    result = bench(fitted / "model", str(dev), cfg=BenchConfig(threads=1, runs=3, warmup=1, max_length=48,
                                                               prompts=3, max_new_tokens=6))
    trained = json.loads((fitted / "results.json").read_text())["eval"]
    assert result["eval"]["metrics"]["loss"] == pytest.approx(trained["loss"], rel=1e-4)  # the task's own forward
    assert result["eval"]["gate_metric"] == "perplexity"
    gen = result["generation"]
    for key in ("prompt_tokens_per_s", "generated_tokens_per_s"):
        assert gen[key] > 0 and math.isfinite(gen[key]), key
    assert gen["ttft_ms"]["p50"] > 0 and gen["prompts"] == 3 and gen["batch_size"] == 1
    from pretune.cli.bench import format_result

    assert "generation batch 1: prompt" in format_result(result)
    model = AutoModelForCausalLM.from_pretrained(str(fitted / "model")).eval()
    tok = load_tokenizer(fitted / "model")
    enc = load_labelled(str(dev), DataConfig(max_length=48), TaskSpec("causal_lm"), tok)
    for ids, got in zip(prompts(enc, 3), gen["ids"]):
        x = torch.tensor([ids])
        with torch.no_grad():
            want = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=6, do_sample=False,
                                  pad_token_id=tok.pad_token_id)
        assert got == want[0, len(ids):].tolist()


def test_compress_gates_int8_on_perplexity_and_refuses_logit_methods_in_one_line(fitted, setup, tmp_path, capsys):
    _, _, dev = setup
    out = tmp_path / "compress"
    assert main(["compress", str(fitted), "--data", str(dev), "--output", str(out), "--threads", "1",
                 "--tolerance", "2", "compress.bench_runs=3", "compress.latency_rounds=0",
                 "compress.max_length=48"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["metric"] == "perplexity"
    [variant] = results["variants"]  # the methods that apply to causal_lm by default
    assert variant["name"] == "int8-dynamic-torch" and variant["status"] in ("accepted", "rejected")
    src = results["source_bench"]["eval"]["metrics"]["perplexity"]
    var = variant["bench"]["eval"]["metrics"]["perplexity"]
    within = 100 * (var - src) / src <= 2
    assert variant["status"] == ("accepted" if within else "rejected")  # as measured, relative to the source
    assert variant["points_lost"] == pytest.approx(100 * (var - src) / src)
    assert variant["bench"]["generation"]["generated_tokens_per_s"] > 0  # bench times the variant's decoding too
    for methods in ("onnx", "distill,int8-dynamic-torch", "prune-structured"):
        capsys.readouterr()
        assert main(["compress", str(fitted), "--data", str(dev), "--output", str(tmp_path / "refused"),
                     "--methods", methods, "--threads", "1"]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "Traceback" not in err
        assert "causal_lm" in err and "choose from int8-dynamic-torch" in err, err
    assert not (tmp_path / "refused").exists()


def test_run_searches_compresses_benches_and_reports_base_and_tuned_generations(setup, tmp_path):
    lm, train, dev = setup
    run_dir = tmp_path / "run"
    space = json.dumps({"train.lr": [1e-3, 3e-3], "train.epochs": [1], "method.name": ["full"]})
    assert main(["run", "--model", str(lm), "--train", str(train), "--eval", str(dev), "--task", "causal_lm",
                 "--output", str(run_dir), "--n-trials", "2", "--probe-steps", "2", f"search.space={space}",
                 "compress.threads=1", "compress.bench_runs=3", "compress.latency_rounds=0",
                 "compress.isolate=false", "compress.max_length=48", *COMMON]) == 0
    state = json.loads((run_dir / "run.json").read_text())
    assert all(state["stages"][s]["status"] == "done" for s in ("search", "compress", "generations", "report"))
    results = json.loads((run_dir / "compress" / "results.json").read_text())
    assert [v["name"] for v in results["variants"]] == ["int8-dynamic-torch"]  # the plan keeps what applies
    assert results["source_bench"]["generation"]["prompt_tokens_per_s"] > 0
    rows = json.loads((run_dir / "generations.json").read_text())
    assert len(rows) == 3 and all({"prompt", "base", "tuned"} <= set(r) for r in rows)
    html, md = (run_dir / "report.html").read_text(), (run_dir / "report.md").read_text()
    for page in (html, md):
        assert "Generations: base and tuned model" in page and "base model" in page and "tuned model" in page
        assert "generated tokens/s" in page
    assert "| prompt | base model | tuned model |" in md
    assert "<th>base model</th><th>tuned model</th>" in html
