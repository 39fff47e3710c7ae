"""Compression across model families: what works is built, what cannot work is refused in one line before any work.

| method             | BERT, RoBERTa | DistilBERT | DeBERTa-v2 | ModernBERT | Llama, Qwen2 |
|--------------------|---------------|------------|------------|------------|--------------|
| onnx (+ fusion)    | fused         | fused      | unfused    | unfused    | unfused      |
| int8 torch / ORT   | yes           | yes        | yes        | yes        | yes          |
| prune-magnitude    | yes           | yes        | yes        | yes        | yes          |
| prune-structured   | yes           | refused    | refused    | refused    | refused      |
| distill            | yes           | yes        | yes        | yes        | yes          |
"""

from __future__ import annotations

import random

import pytest
import torch
from conftest import make_rows, write_csv
from families import FAMILIES

import pretune
from pretune.compress import compress
from pretune.compress import export as ex
from pretune.compress.distill import make_student
from pretune.compress.prune import check_bert_layout
from pretune.config import config_from_dict
from pretune.data import collate, tokenize
from pretune.errors import PretuneError
from pretune.models import load_for_task
from pretune.tasks import TaskSpec
from tiny import fast_config

pytestmark = pytest.mark.filterwarnings("ignore")
SPEC = TaskSpec("classification", ["neg", "pos"])
BERT_LIKE = ("bert", "roberta")  # the anatomy structured pruning slices


def _classifier(folder):
    torch.manual_seed(0)
    model, tok = load_for_task(config_from_dict({"model": {"path": str(folder)}}).model, SPEC)
    return model.eval(), tok


def _encoded(tok):
    texts = [" ".join(random.Random(i).choices(["good", "bad", "film", "the", "plot", "very"], k=2 + i % 7))
             for i in range(24)]
    return tokenize(texts, None, tok, 24)


@pytest.mark.parametrize("family", FAMILIES)
def test_structured_pruning_refuses_other_anatomies_in_one_line(family, family_dir):
    model, _ = _classifier(family_dir(family))
    if family in BERT_LIKE:
        check_bert_layout(model)
        return
    with pytest.raises(PretuneError, match=rf"^prune-structured: model type '{family}' has no BERT-style "
                                           r"attention.self.query/key/value and intermediate/output layers; use "
                                           r"prune-magnitude or distill$"):
        check_bert_layout(model)


@pytest.mark.parametrize("family", FAMILIES)
def test_onnx_export_matches_pytorch_and_fusion_is_bert_only(family, family_dir, tmp_path):
    pytest.importorskip("onnxruntime")
    model, tok = _classifier(family_dir(family))
    enc = _encoded(tok)
    ex.export_onnx(model, tmp_path / "m.onnx", ex.sample_batch(enc, tok.pad_token_id), 17)
    # every length and padding pattern of the rows, through the dynamic axes
    assert ex.max_logit_difference(model, tmp_path / "m.onnx", enc, tok.pad_token_id, threads=1) < 1e-4
    if model.config.model_type in ex.BERT_FUSION:
        ex.fuse_bert(tmp_path / "m.onnx", tmp_path / "fused.onnx", model)
    else:
        with pytest.raises(PretuneError, match=f"no ONNX Runtime fusion for model type '{family}'"):
            ex.fuse_bert(tmp_path / "m.onnx", tmp_path / "fused.onnx", model)


@pytest.mark.parametrize("family", FAMILIES)
def test_distillation_student_keeps_its_layers_and_reloads(family, family_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification

    teacher, tok = _classifier(family_dir(family))
    student = make_student(teacher, [1]).eval()
    assert student.config.num_hidden_layers == 1
    for key in ("layer_types",):  # one entry per layer: the kept layer keeps its own
        if getattr(teacher.config, key, None) is not None:
            assert getattr(student.config, key) == [getattr(teacher.config, key)[1]]
    student.save_pretrained(str(tmp_path))
    reloaded = AutoModelForSequenceClassification.from_pretrained(str(tmp_path)).eval()
    batch = collate(_encoded(tok), list(range(8)), tok.pad_token_id)
    with torch.no_grad():
        assert torch.allclose(reloaded(**batch).logits, student(**batch).logits, atol=1e-5)


def test_compress_a_tiny_llama_records_refusals_and_builds_the_rest(family_dir, tmp_path):
    pytest.importorskip("onnxruntime")
    train = write_csv(tmp_path / "train.csv", make_rows(64, seed=1))
    dev = write_csv(tmp_path / "dev.csv", make_rows(32, seed=2))
    fitted = pretune.fit({"model": {"path": str(family_dir("llama"))}, "data": {"train": str(train), "max_length": 24},
                          "train": {"max_steps": 4, "batch_size": 16, "lr": 1e-3, "progress": False, "threads": 1,
                                    "eval_every": 4},
                          "output": str(tmp_path / "run")})
    cfg = fast_config(recovery_steps=2, distill_steps=4, importance_batches=1, bench_runs=2, latency_rounds=0,
                      tolerance=100.0)
    r = compress(fitted.model_dir, str(dev), train=str(train), output=tmp_path / "out", cfg=cfg,
                 methods=["int8-dynamic-torch", "onnx", "int8-dynamic-ort", "prune-structured", "distill"])
    variants = {v["name"]: v for v in r["variants"]}
    refused = variants["prune-structured"]
    assert refused["status"] == "failed" and "\n" not in refused["error"]
    assert refused["error"].startswith("prune-structured: model type 'llama' has no BERT-style")
    for name in ("int8-dynamic-torch", "onnx", "int8-dynamic-ort", "distill"):
        assert variants[name]["status"] == "accepted", (name, variants[name].get("error"))
    assert "no ONNX Runtime fusion for model type 'llama'" in variants["onnx"]["facts"]["fusion_skipped"]
