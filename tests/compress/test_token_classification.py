"""Compress and bench a token classifier: every method builds a variant measured and gated on entity F1, the
ONNX graphs give PyTorch's logits at every token, and distillation learns the teacher's per-token outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tagging import write_conll, write_jsonl
from tiny import fast_config, logits_of

from pretune.cli import main


@pytest.fixture(scope="module")
def tagger(tiny_bert, tmp_path_factory):
    """(model folder, train file, dev file) of a tiny BERT fitted to tag sentiment words."""
    import pretune

    folder = tmp_path_factory.mktemp("tagger")
    train, dev = write_jsonl(folder / "train.jsonl", 240, 1), write_jsonl(folder / "dev.jsonl", 48, 2)
    result = pretune.fit({"model": {"path": str(tiny_bert)},
                          "data": {"train": str(train), "eval": str(dev), "max_length": 32},
                          "train": {"epochs": 4, "lr": 5e-3, "batch_size": 16, "progress": False, "seed": 0,
                                    "threads": 1, "precision": "fp32"},
                          "output": str(folder / "run")})
    return result.model_dir, train, dev


@pytest.mark.slow
def test_every_method_builds_a_variant_gated_on_entity_f1(tagger, tmp_path):
    from pretune.compress import METHODS, compress
    from pretune.compress.registry import DEFAULT_CHAINS

    model_dir, train, dev = tagger
    results = compress(model_dir, str(dev), train=str(train), output=tmp_path / "c", cfg=fast_config())
    assert results["metric"] == "f1" and results["source_bench"]["eval"]["rows"] == 48
    variants = {v["name"]: v for v in results["variants"]}
    assert set(variants) == set(METHODS) | set(DEFAULT_CHAINS)
    # a chain goes on only from a step that passed the gate
    assert all(v["status"] in ("accepted", "rejected") or (">" in n and "did not pass the accuracy gate" in
                                                           v["reason"]) for n, v in variants.items()), \
        {n: v.get("error") for n, v in variants.items()}
    for v in (v for v in variants.values() if "bench" in v):  # the gate compared entity F1, per-type scores kept
        metrics = v["bench"]["eval"]["metrics"]
        assert v["points_lost"] == pytest.approx(100 * (results["source_bench"]["eval"]["metrics"]["f1"]
                                                        - metrics["f1"]))
        assert {"f1_POS", "f1_NEG", "strict_f1", "accuracy"} <= set(metrics)
    assert variants["onnx"]["facts"]["onnx_max_abs_diff"] < 1e-3 and variants["onnx"]["status"] == "accepted"
    facts = variants["distill"]["facts"]
    assert facts["student_layers"] == [1] and facts["loss_last"] < facts["loss_first"]
    assert variants["prune-structured"]["facts"]["parameters_after"] < \
        variants["prune-structured"]["facts"]["parameters_before"]
    from transformers import AutoModelForTokenClassification
    assert AutoModelForTokenClassification.from_pretrained(tmp_path / "c" / "distill").config.num_hidden_layers == 1


@pytest.mark.slow
def test_onnx_and_int8_variants_give_a_logit_per_token(tagger, tmp_path):
    from pretune.compress import compress
    from pretune.config import DataConfig
    from pretune.models import load_finetuned
    from pretune.runtime import CPU
    from pretune.tasks import load_labelled
    from pretune.train import predict_outputs

    model_dir, train, dev = tagger
    compress(model_dir, str(dev), train=str(train), output=tmp_path / "c", cfg=fast_config(latency_rounds=0),
             methods=["onnx", "int8-dynamic-torch"])
    model, tok, spec = load_finetuned(model_dir)
    enc = load_labelled(str(dev), DataConfig(max_length=32), spec, tok)
    reference = predict_outputs(model, enc, spec, 16, tok.pad_token_id, CPU)  # (total_tokens, C)
    assert reference.shape == (len(enc.ids), 5)
    np.testing.assert_allclose(logits_of(tmp_path / "c" / "onnx", enc, tok.pad_token_id), reference, atol=1e-3)
    int8 = logits_of(tmp_path / "c" / "int8-dynamic-torch", enc, tok.pad_token_id)
    assert int8.shape == reference.shape and (int8.argmax(-1) == reference.argmax(-1)).mean() > 0.9


def test_bench_reads_a_conll_file_by_its_tag_column(tagger, tmp_path, capsys):
    model_dir, _, _ = tagger
    conll = tmp_path / "dev.conll"
    lines = write_conll(tmp_path / "plain.conll", 48, 2).read_text().splitlines()
    conll.write_text("\n".join(f"{line.split()[0]} {line.split()[1]} X" if line else "" for line in lines) + "\n")
    assert main(["bench", str(model_dir), "--data", str(conll), "--conll-column", "1", "--threads", "1",
                 "--runs", "5", "--no-isolate", "--output", str(tmp_path / "b")]) == 0
    bench = json.loads((tmp_path / "b" / "bench.json").read_text())
    assert bench["eval"]["metric"] == "f1" and bench["eval"]["rows"] == 48
