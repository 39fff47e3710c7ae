"""One loader for every folder: each variant compress writes, and a run or compress folder (its recommended
variant), goes through ``pretune predict``, ``pretune eval`` and ``pretune bench`` and gives the same answers."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from pretune.bench import bench
from pretune.cli import main
from pretune.compress import compress
from pretune.compress.formats import locate
from pretune.errors import ModelError
from pretune.jobs.predict import evaluate_folder, predict_file

from tiny import fast_config

METHODS = ["onnx", "int8-dynamic-torch", "int8-dynamic-ort", "int8-static-ort", "distill", "prune-structured"]


@pytest.fixture(scope="module")
def compressed(teacher, tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("every-variant")
    results = compress(teacher, str(tiny_data[1]), train=str(tiny_data[0]), output=out,
                       cfg=fast_config(tolerance=100.0), methods=METHODS)
    return results, out


def labels_of(path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as f:
        return [row["label"] for row in csv.DictReader(f)]


@pytest.mark.parametrize("name", ["source"] + METHODS)
def test_every_variant_predicts_evaluates_and_benches_alike(compressed, tiny_data, name):
    results, _ = compressed
    if name == "source":
        folder, bench_result = results["source"], results["source_bench"]
    else:
        entry = next(v for v in results["variants"] if v["name"] == name)
        assert entry["status"] == "accepted", entry.get("error")
        folder, bench_result = entry["folder"], entry["bench"]
    rows = predict_file(folder, str(tiny_data[1]), max_length=32, threads=1, device="cpu", precision="fp32")
    truth = labels_of(tiny_data[1])
    assert len(rows) == len(truth)
    accuracy = float(np.mean([r["label"] == t for r, t in zip(rows, truth)]))
    # predict's labels score what bench measured on the same file, and eval says the same
    assert accuracy == pytest.approx(bench_result["eval"]["metrics"]["accuracy"], abs=1e-9)
    metrics = evaluate_folder(folder, str(tiny_data[1]), max_length=32, threads=1, device="cpu", precision="fp32")
    assert metrics["accuracy"] == pytest.approx(accuracy, abs=1e-9) and metrics["rows"] == len(truth)
    assert all(sum(r["probabilities"].values()) == pytest.approx(1.0, abs=1e-4) for r in rows)


def test_a_compress_or_run_folder_loads_its_recommended_variant(compressed, tiny_data, tmp_path, capsys):
    results, out = compressed
    accepted = [v for v in results["variants"] if v["status"] == "accepted"]
    fastest = min(accepted, key=lambda v: v["bench"]["latency_ms"]["p50"])
    located = locate(out)
    assert (located.folder, located.variant) == (out / fastest["name"], fastest["name"])
    assert "fastest variant within the accuracy gate" in located.why

    # a pretune run folder holds compress/ beside search/: the same choice
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "compress").symlink_to(out, target_is_directory=True)
    assert locate(run_dir).folder == out / fastest["name"]
    assert main(["predict", str(run_dir), "--input", str(tiny_data[1]), "--threads", "1", "--max-length", "32",
                 "--device", "cpu", "--precision", "fp32"]) == 0
    via_run = [json.loads(line)["label"] for line in capsys.readouterr().out.splitlines()]
    direct = [r["label"] for r in predict_file(str(out / fastest["name"]), str(tiny_data[1]), max_length=32,
                                               threads=1, device="cpu", precision="fp32")]
    assert via_run == direct
    measured = bench(run_dir, str(tiny_data[1]), cfg=_bench_cfg())
    assert measured["format"] == located.format and measured["size_mb"] > 0


def test_no_variant_accepted_means_the_source_model(compressed, tmp_path):
    results, out = compressed
    rejected = dict(results, variants=[dict(v, status="rejected") for v in results["variants"]])
    folder = tmp_path / "compress"
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps(rejected))
    located = locate(folder)
    assert str(located.folder) == str(results["source"]) and located.variant == "model"


def test_a_folder_without_a_model_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="not a Hugging Face model folder .no config.json., nor a run folder"):
        locate(tmp_path / "empty")
    with pytest.raises(ModelError, match="no such file or folder"):
        locate(tmp_path / "missing")


def _bench_cfg():
    from pretune.bench import BenchConfig

    return BenchConfig(threads=1, runs=5, warmup=2, max_length=32)
