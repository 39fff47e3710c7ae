"""compress(): failures are isolated and recorded, the gate rejects bad variants, the Pareto front, CLI errors."""

from __future__ import annotations

import json

import pytest

from pretune.compress import METHODS, compress, pareto_front
from pretune.compress.gate import points_lost
from pretune.errors import ConfigError, DataError, ModelError
from tiny import fast_config, scramble_head

pytestmark = pytest.mark.filterwarnings("ignore")


def crash(ctx, out):
    raise RuntimeError("simulated crash inside a method")


@pytest.fixture(scope="module")
def results(teacher, tiny_data, tmp_path_factory):
    """One compress run: a good method, a deliberately bad one, a crashing one."""
    mp = pytest.MonkeyPatch()
    mp.setitem(METHODS, "test-scramble", scramble_head)
    mp.setitem(METHODS, "test-crash", crash)
    out = tmp_path_factory.mktemp("compress-out")
    try:
        r = compress(teacher, str(tiny_data[1]), train=str(tiny_data[0]), output=out, cfg=fast_config(),
                     methods=["test-crash", "test-scramble", "int8-dynamic-ort"])
    finally:
        mp.undo()
    return r, out


def by_name(r):
    return {v["name"]: v for v in r["variants"]}


def test_gate_rejects_a_deliberately_bad_variant(results):
    r, _ = results
    bad = by_name(r)["test-scramble"]
    assert bad["status"] == "rejected"
    assert bad["points_lost"] > r["tolerance_points"]
    assert "below the source" in bad["reason"]
    assert by_name(r)["int8-dynamic-ort"]["status"] == "accepted"
    assert "test-scramble" not in r["pareto_front"] and not bad["pareto"]


def test_failed_method_is_recorded_and_others_still_run(results):
    r, out = results
    failed = by_name(r)["test-crash"]
    assert failed["status"] == "failed"
    assert failed["error"] == "RuntimeError: simulated crash inside a method"
    assert not (out / "test-crash").exists()  # no half-made folder
    assert by_name(r)["int8-dynamic-ort"]["bench"]["backend"] == "onnxruntime"


def test_results_file_and_bench_json_beside_each_variant(results):
    r, out = results
    saved = json.loads((out / "results.json").read_text())
    assert [v["status"] for v in saved["variants"]] == [v["status"] for v in r["variants"]]
    for name in ("test-scramble", "int8-dynamic-ort"):
        bench = json.loads((out / name / "bench.json").read_text())
        assert bench["eval"]["metrics"] == by_name(r)[name]["bench"]["eval"]["metrics"]
    ratios = by_name(r)["int8-dynamic-ort"]["ratios"]
    assert ratios["latency_p50_speedup"] > 0 and ratios["size_reduction"] > 0


def test_pareto_front():
    points = {"a": (0.90, 10.0, 80.0), "b": (0.89, 5.0, 20.0), "c": (0.88, 6.0, 30.0), "d": (0.90, 10.0, 90.0)}
    assert pareto_front(points) == ["a", "b"]  # c is beaten by b; d by a


def test_points_lost_direction():
    assert points_lost(0.90, 0.88, "accuracy") == pytest.approx(2.0)
    assert points_lost(0.10, 0.12, "mse") == pytest.approx(2.0)  # lower is better for mse


def test_methods_needing_training_rows_fail_alone_without_them(teacher, tiny_data, tmp_path):
    r = compress(teacher, str(tiny_data[1]), output=tmp_path, cfg=fast_config(),
                 methods=["int8-static-ort", "int8-dynamic-torch"])
    v = by_name(r)
    assert v["int8-static-ort"]["status"] == "failed"
    assert "pass --train FILE" in v["int8-static-ort"]["error"]
    assert v["int8-dynamic-torch"]["status"] == "accepted"


def test_methods_after_the_deadline_are_skipped_and_recorded(teacher, tiny_data, tmp_path):
    import time

    deadline = time.time() + 3  # room for the source's measurement on a loaded machine

    def slow(ctx, out):  # a method that uses up the time left
        time.sleep(max(0.0, deadline - time.time()) + 0.1)
        return scramble_head(ctx, out)

    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(METHODS, "test-slow", slow)
        r = compress(teacher, str(tiny_data[1]), output=tmp_path, cfg=fast_config(),
                     methods=["test-slow", "int8-dynamic-torch"], deadline=deadline)
    v = by_name(r)
    assert v["test-slow"]["status"] == "rejected"  # started in time, so it finished and was measured
    assert v["int8-dynamic-torch"]["status"] == "skipped" and "budget" in v["int8-dynamic-torch"]["reason"]
    assert not (tmp_path / "int8-dynamic-torch").exists()
    assert json.loads((tmp_path / "results.json").read_text())["variants"][1]["status"] == "skipped"


@pytest.mark.parametrize("kwargs, error, match", [
    ({"methods": ["nope"]}, ConfigError, "unknown compression method.*choose from.*onnx"),
    ({"cfg_overrides": {"sparsity": 1.5}}, ConfigError, r"compress.sparsity: must be in \[0, 1\)"),
])
def test_bad_settings_are_one_line_errors(teacher, tiny_data, tmp_path, kwargs, error, match):
    cfg = fast_config(**kwargs.pop("cfg_overrides", {}))
    with pytest.raises(error, match=match) as e:
        compress(teacher, str(tiny_data[1]), output=tmp_path, cfg=cfg, **kwargs)
    assert "\n" not in str(e.value)
    assert not any(tmp_path.iterdir())  # nothing written


def test_not_a_model_folder(tiny_data, tmp_path):
    with pytest.raises(ModelError, match="not a Hugging Face model folder"):
        compress(tmp_path, str(tiny_data[1]), output=tmp_path / "out", cfg=fast_config())


def test_missing_label_column(teacher, tiny_data, tmp_path):
    with pytest.raises(DataError, match="label"):
        compress(teacher, str(tiny_data[1]), label="sentiment", output=tmp_path, cfg=fast_config())


def test_cli_prints_one_line_errors(teacher, tiny_data, tmp_path, capsys):
    from pretune.cli import main

    assert main(["compress", str(tmp_path), "--data", str(tiny_data[1])]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pretune compress: error:") and "\n" not in err
    assert main(["compress", str(teacher), "--data", str(tiny_data[1]), "--set", "bogus=1"]) == 2
    assert "unknown key 'compress.bogus'" in capsys.readouterr().err


def test_cli_runs_and_prints_table(teacher, tiny_data, tmp_path, capsys):
    from pretune.cli import main

    out = tmp_path / "out"
    code = main(["compress", str(teacher), "--data", str(tiny_data[1]), "--methods", "onnx", "--output", str(out),
                 "--threads", "1", "--set", "isolate=false", "--set", "bench_runs=5", "--set", "max_length=32"])
    assert code == 0
    table = capsys.readouterr().out
    assert "source (fp32)" in table and "onnx" in table and "accepted" in table
    assert (out / "onnx" / "model.onnx").is_file()


def test_rebench_measures_again_and_keeps_the_decisions(results):
    from pretune.compress import rebench

    r, out = results
    again = rebench(out, runs=3)
    assert again["config"]["bench_runs"] == 3 and "rebenched" in again
    for old, new in zip(r["variants"], again["variants"]):
        assert new["status"] == old["status"]  # accuracy is deterministic: the gate decides the same
        if "bench" in old:
            assert new["bench"]["eval"]["metrics"] == old["bench"]["eval"]["metrics"]
            assert new["bench"]["latency_ms"]["runs"] == 3 * 2  # 3 timed calls in each of 2 rounds
            assert new["bench"]["latency_ms"]["rounds"] == 2
    assert json.loads((out / "results.json").read_text())["rebenched"] == again["rebenched"]


def test_gate_accepts_a_loss_exactly_at_the_tolerance():
    from pretune.compress.gate import gate

    def bench_of(acc):
        return {"eval": {"metric": "accuracy", "metrics": {"accuracy": acc}}, "latency_ms": {"p50": 1.0, "p95": 2.0},
                "throughput": {"samples_per_s": 10.0}, "size_mb": 1.0, "parameters": 100}

    at, over = {"bench": bench_of(0.84)}, {"bench": bench_of(0.8399)}
    gate(at, bench_of(0.85), tolerance=1.0)  # 0.85 - 0.84 is 1.0000000000000009 points in floats
    gate(over, bench_of(0.85), tolerance=1.0)
    assert at["status"] == "accepted" and over["status"] == "rejected"


def test_latencies_are_retimed_side_by_side_in_rounds(results):
    r, out = results
    timed = [r["source_bench"]] + [v["bench"] for v in r["variants"] if "bench" in v]
    for b in timed:
        lat = b["latency_ms"]
        assert lat["rounds"] == 2 and len(lat["round_p50s"]) == 2
        assert lat["p50"] == pytest.approx(sum(lat["round_p50s"]) / 2)  # the median of two
    saved = json.loads((out / "results.json").read_text())  # the files agree (rebench may have re-written them)
    on_disk = json.loads((out / "int8-dynamic-ort" / "bench.json").read_text())
    assert on_disk["latency_ms"] == by_name(saved)["int8-dynamic-ort"]["bench"]["latency_ms"]
    assert json.loads((out / "source.bench.json").read_text())["latency_ms"] == saved["source_bench"]["latency_ms"]


def test_latency_rounds_rotate_the_order_and_take_medians(monkeypatch):
    from pretune.bench import harness

    calls = []
    fake_p50 = {"a": [10.0, 30.0, 11.0], "b": [5.0, 6.0, 50.0], "c": [1.0, 2.0, 3.0]}

    def fake_bench(folder, data, **kwargs):
        assert kwargs["cfg"].latency_only
        calls.append(folder)
        p50 = fake_p50[folder][sum(1 for f in calls if f == folder) - 1]
        return {"latency_ms": {"p50": p50, "p95": 2 * p50, "mean": p50, "runs": 4}}

    monkeypatch.setattr(harness, "bench", fake_bench)
    out = harness.latency_rounds({"a": "a", "b": "b", "c": "c"}, "data.csv", rounds=3,
                                 cfg=harness.BenchConfig(runs=4))
    assert calls == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]  # each round starts one later
    assert out["a"]["p50"] == 11.0 and out["b"]["p50"] == 6.0 and out["c"]["p95"] == 4.0
    assert out["b"]["round_p50s"] == [5.0, 6.0, 50.0] and out["a"]["runs"] == 12
    with pytest.raises(harness.PretuneError, match="at least 1"):
        harness.latency_rounds({"a": "a"}, "data.csv", rounds=0)


def test_latency_rounds_stop_when_the_last_round_would_not_fit_before_the_deadline(monkeypatch):
    """Each timing takes 0.1 s, a round of two folders 0.2 s: with 0.45 s in all, the second round starts (0.25 s
    left) and the third does not (0.05 s left); the result holds the two rounds that ran."""
    import time

    from pretune.bench import harness

    def fake_bench(folder, data, **kwargs):
        time.sleep(0.1)
        return {"latency_ms": {"p50": 1.0, "p95": 2.0, "mean": 1.0, "runs": 4}}

    monkeypatch.setattr(harness, "bench", fake_bench)
    out = harness.latency_rounds({"a": "a", "b": "b"}, "data.csv", rounds=5, cfg=harness.BenchConfig(runs=4),
                                 deadline=time.time() + 0.45)
    assert out["a"]["rounds"] == out["b"]["rounds"] == 2


def test_a_compress_method_starts_only_when_a_typical_step_fits_before_the_deadline(monkeypatch):
    from pretune.compress import variants

    now = 1000.0
    monkeypatch.setattr(variants.time, "time", lambda: now)
    assert variants._no_time(None, [50.0]) is None
    assert variants._no_time(now + 60, [10.0, 50.0, 40.0]) is None  # the median step, 40 s, fits in 60
    assert variants._no_time(now + 30, [10.0, 50.0, 40.0]) == ("30 s of the time budget left, and a method "
                                                                "takes about 40 s here")
    assert variants._no_time(now - 1, [1.0]) == "the time budget ran out before it started"
