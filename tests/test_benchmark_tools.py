"""The benchmarks' bookkeeping: the search benchmark's arrivals within 0.5 point and how well early evaluations
rank trials; the throughput benchmark's arguments, MFU and parameter counts; the GPU check's script."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import SHARED_DATA, make_tiny_bert

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _load("search_efficiency")
throughput = _load("train_throughput")
llm = _load("llm_throughput")


def test_a_pruned_trial_never_counts_as_arriving():
    """The Trainer arm's MedianPruner-stopped trials keep their best evaluation but are not complete trials."""
    arms = {"trainer": [{"state": "pruned", "accuracy": 0.90, "samples": 300, "duration_s": 1.0},
                        {"state": "complete", "accuracy": 0.80, "samples": 1000, "duration_s": 1.0}],
            "tpe": [{"state": "complete", "accuracy": 0.85, "samples": 2000, "duration_s": 1.0}]}
    summary = bench.summarise(arms)
    assert summary["overall_best"] == 0.85
    assert summary["arms"]["tpe"]["samples_to_within_0.5pt"] == 2000
    assert summary["arms"]["trainer"]["samples_to_within_0.5pt"] is None  # 0.90 was a pruned trial's


def _run(folder: Path, trials: list[tuple[int, list[tuple[float, float, float]], float]]) -> Path:
    """A finished run with a tpe arm: per trial (epochs, [(epoch, accuracy, loss), ...], final accuracy)."""
    arm = folder / "tpe"
    table = []
    for n, (epochs, evals, final) in enumerate(trials):
        (arm / "trials" / f"{n:04d}").mkdir(parents=True)
        lines = [json.dumps({"type": "eval", "epoch": e, "accuracy": a, "loss": loss}) for e, a, loss in evals]
        (arm / "trials" / f"{n:04d}" / "metrics.jsonl").write_text("\n".join(lines) + "\n")
        table.append({"number": n, "state": "complete", "accuracy": final, "params.train.epochs": epochs})
    (arm / "trials.json").write_text(json.dumps(table))
    return folder


def test_curves_read_each_trial_at_the_same_fraction_of_its_own_schedule(tmp_path):
    """At a tenth of each schedule, accuracy ranks the trials as they end and loss the other way round. The
    3-epoch trials' first evaluation (a thirtieth of their schedule) is no such reading and would break both."""
    finals = [0.60, 0.70, 0.80, 0.85, 0.90]
    trials = []
    for epochs, early, final in zip((1, 3, 1, 3, 1), (0.51, 0.55, 0.60, 0.62, 0.70), finals):
        first = [(0.1, 0.95, 0.05)] if epochs == 3 else []
        trials.append((epochs, [*first, (0.1 * epochs, early, 1 - early), (epochs, final, 0.3)], final))
    result = bench.curves([str(_run(tmp_path / "s1", trials))], fractions=(0.1,))
    assert result == {"runs": 1, "mean_spearman": {"accuracy@0.10": pytest.approx(1.0),
                                                   "-loss@0.10": pytest.approx(1.0)}}


def _recorded(folder: Path, seed: int, best: float, trials: list[tuple[list[tuple[float, float]], float]]) -> str:
    """A finished run with an unpruned tpe arm of 1-epoch trials on 1000 rows (40 steps of 25):
    per trial [(epoch, accuracy), ...] of its evaluations, and its final accuracy."""
    arm = folder / "tpe"
    table = []
    for n, (evals, final) in enumerate(trials):
        (arm / "trials" / f"{n:04d}").mkdir(parents=True)
        lines = [json.dumps({"type": "eval", "step": round(40 * e), "epoch": e, "samples": round(1000 * e),
                             "accuracy": a, "loss": 1 - a}) for e, a in [*evals, (1.0, final)]]
        (arm / "trials" / f"{n:04d}" / "metrics.jsonl").write_text("\n".join(lines) + "\n")
        table.append({"number": n, "state": "complete", "accuracy": final, "train_samples": 1000,
                      "params.train.epochs": 1})
    (arm / "trials.json").write_text(json.dumps(table))
    (folder / "search_efficiency.json").write_text(json.dumps({"settings": {"seed": seed},
                                                               "summary": {"overall_best": best}}))
    return str(folder)


def test_replay_runs_recorded_trials_through_the_search_pruner(tmp_path):
    """Trials 1 and 2 end within 0.5 point of the best. ASHA judging from the start cuts trial 1 at 0.4 of an
    epoch (0.50 against trial 0's 0.90 at the rung of a third) and trial 3; from half an epoch it first
    judges trial 1 at 0.7, where its 0.92 leads the rung, and cuts trial 3 there."""
    trials = [([(0.4, 0.90), (0.7, 0.90)], 0.80), ([(0.4, 0.50), (0.7, 0.92)], 0.85),
              ([(0.4, 0.95), (0.7, 0.95)], 0.85), ([(0.4, 0.60), (0.7, 0.60)], 0.70)]
    run = _recorded(tmp_path / "s1", 1, 0.85, trials)
    result = bench.replay([run], rules=(("none", 0.0), ("asha", 0.0), ("asha", 0.5)))
    assert result["rules"] == {
        "none": {"samples": 4000, "arrivals_kept": 2, "arrivals": 2, "samples_per_arrival": 2000, "vs_none": 1.0},
        "asha, prune_after 0": {"samples": 2800, "arrivals_kept": 1, "arrivals": 2, "samples_per_arrival": 2800,
                                "vs_none": 1.4},
        "asha, prune_after 0.5": {"samples": 3700, "arrivals_kept": 2, "arrivals": 2, "samples_per_arrival": 1850,
                                  "vs_none": 0.925}}


def test_replay_takes_a_seeds_bar_from_its_last_run(tmp_path):
    """An older run of seed 1 found 0.90; the later one, whose summary holds every arm compared, 0.85."""
    older = _recorded(tmp_path / "old", 1, 0.90, [([(0.5, 0.9)], 0.88)])
    later = _recorded(tmp_path / "new", 1, 0.85, [([(0.5, 0.9)], 0.85)])
    rule = bench.replay([older, later], rules=(("none", 0.0),))["rules"]["none"]
    assert (rule["arrivals"], rule["samples_per_arrival"]) == (2, 1000)


def test_throughput_arguments_keep_the_cpu_defaults_and_hold_a_gpu_arm_to_its_own_precision():
    cpu = throughput.parse_args([])
    assert (cpu.device, cpu.matmul_dtype, cpu.max_length, cpu.precision_list) == ("cpu", "fp32", 128, ["fp32"])
    gpu = throughput.parse_args(["--device", "cuda", "--precisions", "bf16", "--max-length", "256"])
    assert (gpu.matmul_dtype, gpu.max_length, throughput.matmul_dtypes(gpu)) == ("arm", 256, ["bf16"])
    with pytest.raises(SystemExit):
        throughput.parse_args(["--precisions", "fp8"])


def test_mfu_is_six_flops_per_parameter_and_token_over_the_rate_of_the_arms_precision():
    assert throughput.model_flops_utilisation(10_000_000, 2_000, 240e9) == pytest.approx(0.5)
    run = {"samples_per_s": 100.0, "tokens": 20_000, "train_seconds": 10.0, "accuracy": 0.9, "peak_rss_mb": 1.0,
           "nonemb_params": 10_000_000, "peak_gpu_mb": 5.0}
    runs = {"pretune-bf16": [run], "trainer-fp32": [run]}
    rates = {"fp32": [100e9, 120e9, 140e9], "bf16": [480e9]}
    arm = throughput.summarise(throughput.parse_args(["--device", "cuda"]), runs, rates)
    assert arm["pretune-bf16"]["mfu"] == pytest.approx(6 * 1e7 * 2_000 / 480e9)  # against bf16
    assert arm["trainer-fp32"]["mfu"] == pytest.approx(6 * 1e7 * 2_000 / 120e9)  # the median fp32 rate
    assert arm["pretune-bf16"]["mfu_against"] == "bf16"
    named = throughput.summarise(throughput.parse_args(["--matmul-dtype", "fp32"]), runs, rates)
    assert named["pretune-bf16"]["mfu"] == pytest.approx(6 * 1e7 * 2_000 / 120e9)  # the CPU's way: fp32 for all


@pytest.mark.parametrize("family, tables", [("llama", ["model.embed_tokens"]),
                                            ("bert", ["bert.embeddings"])])
def test_non_embedding_parameters_leave_out_the_token_tables_of_a_llama_as_of_a_bert(family, tables, family_dir):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(family_dir(family)), num_labels=2)
    params = dict(model.named_parameters())
    table = sum(p.numel() for n, p in params.items() if any(n.startswith(t + ".") for t in tables))
    assert table > 0
    assert throughput.non_embedding_params(model) == sum(p.numel() for p in params.values()) - table


def test_the_trainer_arm_on_the_cpu_keeps_its_settings():
    args = throughput.parse_args(["--precisions", "bf16"])
    args.precision = "fp32"
    targs = throughput.trainer_arguments(args, "/tmp/unused-trainer-out", 100)
    assert targs.use_cpu and targs.optim == "adamw_torch_fused" and targs.warmup_steps == 6
    assert getattr(targs, "train_sampling_strategy", None) == "group_by_length" or targs.group_by_length


def test_the_bundle_stores_minilm_in_fp16_and_it_loads_as_fp32(tiny_bert, tmp_path):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModel

    bundle = _load("gpu_bundle")
    bundle.bundle_minilm(tiny_bert, tmp_path / "m")
    stored = load_file(str(tmp_path / "m" / "model.safetensors"))
    assert {t.dtype for t in stored.values()} == {torch.float16}
    model = AutoModel.from_pretrained(str(tmp_path / "m"))
    original = AutoModel.from_pretrained(str(tiny_bert))
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    for (name, p), q in zip(model.named_parameters(), original.parameters()):
        assert torch.equal(p, q.half().float()), name


def _gpu_check(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(BENCHMARKS / "gpu_check.sh"), *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=900, check=False)


def test_gpu_check_refuses_an_unknown_device_in_one_line(tmp_path):
    out = _gpu_check("--device", "tpu", str(tmp_path / "o"))
    assert out.returncode == 2 and out.stderr.strip() == "gpu_check.sh: --device tpu: expected cpu or cuda"


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "sst2" / "train.tsv").is_file(), reason="needs ../shared/data/sst2")
def test_gpu_check_runs_end_to_end_on_the_cpu(family_dir, tmp_path):
    """Every step at toy sizes, with a tiny BERT for MiniLM (128 positions: the benchmark's max length) and, for
    SmolLM2, a tiny Llama's config and tokenizer without weights, as gpu_bundle.py leaves it: the script gives it
    random ones."""
    import sys

    tiny_bert = make_tiny_bert(tmp_path / "bert", max_positions=128)
    llama = tmp_path / "llama"
    shutil.copytree(family_dir("llama"), llama)
    (llama / "model.safetensors").unlink()
    out = _gpu_check("--device", "cpu", str(tmp_path / "out"),
                     env={"PYTHON": sys.executable, "MINILM": str(tiny_bert), "SMOLLM2": str(llama),
                          "PRETUNE_DATA": str(SHARED_DATA)})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["env.txt", "minilm.json", "minilm.log", "smollm2.json", "smollm2.log", "summary.txt",
                     "tests.log"]
    assert "skipped" in (tmp_path / "out" / "tests.log").read_text()  # no GPU here
    for name in ("minilm", "smollm2"):
        summary = json.loads((tmp_path / "out" / f"{name}.json").read_text())["summary"]
        assert set(summary) == {"pretune-bf16", "trainer-bf16"}
        assert all(arm["samples_per_s"] > 0 and arm["mfu"] > 0 for arm in summary.values())
    assert "failed: none" in (tmp_path / "out" / "summary.txt").read_text()


@pytest.mark.skipif(not (SHARED_DATA / "instructions" / "alpaca_small").is_dir()
                    or not (SHARED_DATA / "preferences" / "hh_rlhf_harmless_base_test").is_dir(),
                    reason="shared instruction and preference data not present")
def test_llm_throughput_rows_are_a_seeded_disjoint_split_and_ratios_compare_like_with_like(tmp_path, monkeypatch):
    """Both arms read the same files: --eval-rows held out, one epoch of steps x batch size for training, the same
    rows for the same seed; the ratios put pretune over each TRL arm."""
    monkeypatch.setattr(llm, "SFT_SOURCE", SHARED_DATA / "instructions" / "alpaca_small" / "alpaca_small.json")
    monkeypatch.setattr(llm, "DPO_SOURCE", SHARED_DATA / "preferences" / "hh_rlhf_harmless_base_test"
                        / "test.prompt_chosen_rejected.jsonl")
    args = llm.parse_args(["--steps", "3", "--batch-size", "4", "--eval-rows", "5", "--workdir", str(tmp_path)])
    assert args.targets[0] == "q_proj" and "lm_head" not in args.targets
    for task in ("sft", "dpo"):
        assert llm.write_rows(args, task) == (12, 5)
        train, ev = (p.read_text() for p in llm.files(args, task))
        rows = (json.loads(train), json.loads(ev)) if task == "sft" else \
            ([json.loads(x) for x in train.splitlines()], [json.loads(x) for x in ev.splitlines()])
        assert not {json.dumps(r) for r in rows[0]} & {json.dumps(r) for r in rows[1]}
        assert llm.write_rows(args, task) == (12, 5) and next(iter(llm.files(args, task))).read_text() == train
    run = {"response_tokens": 100, "tokens": 300, "train_seconds": 10.0, "peak_train_mb": 1000.0,
           "trainable_params": 7, "eval_loss": 2.0}
    summary = llm.summarise({"pretune": [run], "trl": [{**run, "train_seconds": 20.0, "peak_train_mb": 1250.0,
                                                         "eval_loss": 2.02}]})
    r = llm.ratios("sft", summary)["pretune / trl"]
    assert r["tokens_per_s"] == pytest.approx(2.0) and r["peak_train_mb"] == pytest.approx(0.8)
    assert r["eval_loss_relative"] == pytest.approx(2.0 / 2.02 - 1)
