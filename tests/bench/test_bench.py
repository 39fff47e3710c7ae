"""The bench harness: the same measurements for PyTorch and ONNX Runtime folders, honest and complete."""

from __future__ import annotations

import json

import pytest

from pretune.bench import BenchConfig, bench
from pretune.errors import DataError, ModelError

pytestmark = pytest.mark.filterwarnings("ignore")
FAST = BenchConfig(threads=1, runs=10, warmup=2, max_length=32)


@pytest.fixture(scope="module")
def torch_result(teacher, tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    return bench(teacher, str(tiny_data[1]), output=out, cfg=FAST), out


def test_metrics_match_the_training_loop_evaluation(teacher, tiny_data, torch_result):
    from pretune.config import DataConfig
    from pretune.tasks import load_labelled
    from pretune.models import load_finetuned
    from pretune.train import evaluate

    r, _ = torch_result
    model, tok, spec = load_finetuned(teacher)
    enc = load_labelled(str(tiny_data[1]), DataConfig(max_length=32), spec, tok)
    expected = evaluate(model, enc, spec, 16, tok.pad_token_id)
    assert r["eval"]["rows"] == 64
    assert r["eval"]["metric"] == "accuracy"
    assert r["eval"]["metrics"]["accuracy"] == pytest.approx(expected["accuracy"])


def test_result_holds_every_measurement(teacher, torch_result):
    from pretune.models import count_parameters, load_finetuned

    r, out = torch_result
    assert r["backend"] == "pytorch" and r["format"] == "hf" and r["threads"] == 1
    lat = r["latency_ms"]
    assert 0 < lat["p50"] <= lat["p95"] and lat["runs"] == 10 and lat["batch_size"] == 1
    assert r["throughput"]["samples_per_s"] > 0 and r["throughput"]["batch_size"] == 32
    assert r["size_mb"] * 2**20 == pytest.approx((teacher / "model.safetensors").stat().st_size)
    model, _, _ = load_finetuned(teacher)
    assert r["parameters"] == count_parameters(model)[1]
    assert r["memory"]["peak_rss_mb"] > 0
    assert json.loads((out / "bench.json").read_text())["eval"] == r["eval"]


def test_onnx_runtime_backend_gives_the_same_accuracy(teacher, tiny_data, torch_result, tmp_path):
    from tiny import context

    from pretune.compress import METHODS

    ctx = context(teacher, *tiny_data)
    METHODS["onnx"](ctx, tmp_path)
    r = bench(tmp_path, str(tiny_data[1]), cfg=FAST)
    assert r["backend"] == "onnxruntime" and r["format"] == "onnx"
    assert r["eval"]["metrics"] == pytest.approx(torch_result[0]["eval"]["metrics"])
    assert r["parameters"] == pytest.approx(torch_result[0]["parameters"], rel=0.05)


def test_isolated_run_measures_memory_in_a_fresh_process(teacher, tiny_data, torch_result):
    r = bench(teacher, str(tiny_data[1]), cfg=BenchConfig(threads=1, runs=5, warmup=1, max_length=32, isolate=True))
    assert r["memory"]["isolated"] is True
    assert r["memory"]["model_rss_mb"] > 0
    assert r["eval"]["metrics"] == torch_result[0]["eval"]["metrics"]


def test_worker_errors_come_back_as_the_same_exception(teacher, tiny_data, monkeypatch):
    """The bench job answers a bad input as JSON; the parent re-raises it with its class (no subprocess here)."""
    import subprocess
    from dataclasses import asdict

    from pretune.workers import serve

    payload = {"model_dir": str(teacher), "data": str(tiny_data[1]), "text": "text", "text_pair": None,
               "label": "nope", "cfg": asdict(FAST)}
    status, line = serve("bench", payload)
    assert status == 2 and json.loads(line)["type"] == "DataError"
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 2, stdout=line, stderr=""))
    with pytest.raises(DataError, match="no label column 'nope'"):
        bench(teacher, str(tiny_data[1]), label="nope", cfg=BenchConfig(threads=1, runs=2, isolate=True))


def test_not_a_model_folder(tmp_path, tiny_data):
    with pytest.raises(ModelError, match="not a Hugging Face model folder"):
        bench(tmp_path, str(tiny_data[1]), cfg=FAST)


def test_cli(teacher, tiny_data, tmp_path, capsys):
    from pretune.cli import main

    code = main(["bench", str(teacher), "--data", str(tiny_data[1]), "--threads", "1", "--runs", "5",
                 "--no-isolate", "--max-length", "32", "--output", str(tmp_path)])
    assert code == 0
    shown = capsys.readouterr().out
    assert "latency batch 1: p50" in shown and "accuracy" in shown
    assert (tmp_path / "bench.json").is_file()
    assert main(["bench", str(teacher), "--data", str(tiny_data[1]), "--runs", "0"]) == 2
    assert "--runs: must be >= 1" in capsys.readouterr().err


def test_package_is_callable_as_the_api_function(teacher, tiny_data, torch_result):
    import pretune.bench

    r = pretune.bench(teacher, str(tiny_data[1]), cfg=FAST)  # pretune.bench(...) as the issue spells it
    assert r["eval"]["metrics"] == torch_result[0]["eval"]["metrics"]
