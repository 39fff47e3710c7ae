"""Stacked variants: ``distill>int8-dynamic-ort`` quantizes the distilled student; each prefix of a chain is a
variant of its own, built once and gated against the source; a chain never goes on from a rejected step."""

from __future__ import annotations

import json

import pytest

from pretune.compress import METHODS, compress
from pretune.compress.formats import read_manifest
from pretune.compress.registry import INFO, MethodInfo, resolve
from pretune.errors import ConfigError

from tiny import fast_config, scramble_head

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def chained(teacher, tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("chains")
    r = compress(teacher, str(tiny_data[1]), train=str(tiny_data[0]), output=out, cfg=fast_config(tolerance=100.0),
                 methods=["distill>int8-dynamic-ort", "prune-structured > onnx"])
    return {v["name"]: v for v in r["variants"]}, r, out


def test_a_chain_brings_its_prefix_first_and_builds_on_it(chained):
    v, r, out = chained
    assert list(v) == ["distill", "distill>int8-dynamic-ort", "prune-structured", "prune-structured>onnx"]
    assert all(e["status"] == "accepted" for e in v.values()), {k: e.get("error") for k, e in v.items()}
    chain = v["distill>int8-dynamic-ort"]
    assert chain["chain"] == ["distill", "int8-dynamic-ort"]
    assert chain["folder"] == str(out / "distill+int8-dynamic-ort")
    manifest = read_manifest(chain["folder"])
    assert manifest["format"] == "onnx" and manifest["source"] == v["distill"]["folder"]
    # the ONNX graph of the pruned model has the pruned model's parameters, not the source's
    source_params = r["source_bench"]["parameters"]
    pruned = v["prune-structured"]["bench"]["parameters"]
    assert pruned < source_params
    assert v["prune-structured>onnx"]["bench"]["parameters"] == pytest.approx(pruned, rel=0.02)
    # fp32 ONNX of the pruned model scores what the pruned model scores, on the same rows
    assert v["prune-structured>onnx"]["bench"]["eval"]["metrics"]["accuracy"] == \
        v["prune-structured"]["bench"]["eval"]["metrics"]["accuracy"]
    # each step is gated against the source, not against its prefix
    assert chain["ratios"]["latency_p50_speedup"] == pytest.approx(
        r["source_bench"]["latency_ms"]["p50"] / chain["bench"]["latency_ms"]["p50"], rel=1e-6)
    assert chain["points_lost"] == pytest.approx(100 * (r["source_bench"]["eval"]["metrics"]["accuracy"]
                                                        - chain["bench"]["eval"]["metrics"]["accuracy"]), abs=1e-9)
    saved = json.loads((out / "results.json").read_text())
    assert [e["name"] for e in saved["variants"]] == list(v)


def test_a_chain_does_not_go_on_from_a_rejected_step(teacher, tiny_data, tmp_path):
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(METHODS, "test-scramble", scramble_head)
        mp.setitem(INFO, "test-scramble", MethodInfo(gives_model=True))
        r = compress(teacher, str(tiny_data[1]), output=tmp_path, cfg=fast_config(),
                     methods=["test-scramble>int8-dynamic-torch"])
    v = {e["name"]: e for e in r["variants"]}
    assert v["test-scramble"]["status"] == "rejected"
    chain = v["test-scramble>int8-dynamic-torch"]
    assert chain["status"] == "skipped"
    assert chain["reason"].startswith("its step test-scramble did not pass the accuracy gate (accuracy")
    assert not (tmp_path / "test-scramble+int8-dynamic-torch").exists()


@pytest.mark.parametrize("names, match", [
    (["int8-dynamic-ort>distill"], "'int8-dynamic-ort' writes a model no further step can start from .* can only "
                                   "end a chain; chains start from distill, prune-magnitude, prune-structured"),
    (["distill>nope"], "unknown compression method.*'nope'"),
    (["distill>distill"], "repeats a step"),
])
def test_impossible_chains_are_one_line_errors(names, match):
    with pytest.raises(ConfigError, match=match) as e:
        resolve(names)
    assert "\n" not in str(e.value)


def test_prefixes_come_once_and_before_their_chains():
    assert resolve(["distill>onnx", "distill", "distill>int8-dynamic-ort"]) == \
        ["distill", "distill>onnx", "distill>int8-dynamic-ort"]


def test_the_report_shows_a_chain_as_its_steps(chained):
    from pretune.report.render import variant_table

    _, r, _ = chained
    _, rows = variant_table(r)
    assert [row[0] for row in rows] == ["source (PyTorch fp32)", "distill", "distill → int8-dynamic-ort",
                                        "prune-structured", "prune-structured → onnx"]
