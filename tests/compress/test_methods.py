"""Each compression method on the tiny teacher: the variant loads with its runtime and behaves."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pretune.compress import METHODS
from pretune.compress.distill import distill_loss, make_student, student_layers
from pretune.errors import ConfigError, ModelError
from tiny import context, logits_of

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def ctx(teacher, tiny_data):
    return context(teacher, *tiny_data)


@pytest.fixture(scope="module")
def fp32_logits(ctx):
    return logits_of(ctx.source, ctx.eval, ctx.pad_id)


def build(ctx, name, tmp_path):
    out = tmp_path / name
    out.mkdir()
    facts = METHODS[name](ctx, out)
    return out, facts


@pytest.mark.parametrize("name, atol", [("int8-dynamic-torch", 0.15), ("int8-dynamic-ort", 0.15),
                                        ("int8-static-ort", 0.3)])
def test_int8_logits_close_to_fp32(ctx, fp32_logits, tmp_path, monkeypatch, name, atol):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # the ONNX Runtime tools drop temporary files in the working folder
    out, _ = build(ctx, name, tmp_path)
    assert not any(cwd.iterdir())
    q = logits_of(out, ctx.eval, ctx.pad_id)
    spread = float(np.abs(fp32_logits).max())
    assert np.abs(q - fp32_logits).max() < atol * spread  # int8 error is a small fraction of the logit range
    assert (q.argmax(1) == fp32_logits.argmax(1)).mean() >= 0.95
    assert not np.allclose(q, fp32_logits, atol=1e-6)  # it really is quantized, not the fp32 model again


def test_torch_int8_folder_is_smaller_and_reloads_identically(ctx, tmp_path):
    from pretune.bench import load_runner, weights_size_bytes

    out, facts = build(ctx, "int8-dynamic-torch", tmp_path)
    assert facts["quantized_linears"] > 0
    assert weights_size_bytes(out) < 0.6 * weights_size_bytes(ctx.source)
    a = logits_of(out, ctx.eval, ctx.pad_id)
    b = logits_of(out, ctx.eval, ctx.pad_id)  # rebuilt from the int8 file each time
    np.testing.assert_array_equal(a, b)
    runner, _, _ = load_runner(out)
    assert runner.num_parameters() >= sum(p.numel() for p in ctx.model.parameters()) * 0.99


def test_onnx_matches_pytorch(ctx, fp32_logits, tmp_path):
    out, facts = build(ctx, "onnx", tmp_path)
    assert (out / "model.onnx").is_file() and (out / "tokenizer_config.json").is_file()
    assert facts["onnx_max_abs_diff"] <= ctx.cfg.onnx_tolerance
    np.testing.assert_allclose(logits_of(out, ctx.eval, ctx.pad_id), fp32_logits, atol=1e-4)


def test_onnx_export_failure_is_one_line_model_error(ctx, tmp_path, monkeypatch):
    from pretune.compress import export

    def broken(*args, **kwargs):
        raise RuntimeError("Unsupported: aten::weird_op\nlong traceback text")

    monkeypatch.setattr(export, "EXPORTER", broken)
    with pytest.raises(ModelError, match=r"cannot export model type 'bert' to ONNX") as err:
        build(ctx, "onnx", tmp_path)
    assert "\n" not in str(err.value)


def test_prune_structured_shrinks_and_runs(ctx, fp32_logits, tmp_path):
    from pretune.bench import load_runner

    out, facts = build(ctx, "prune-structured", tmp_path)
    assert facts["parameters_after"] < facts["parameters_before"]
    assert all(len(h) == 1 for h in facts["kept_heads"])  # head_fraction 0.5 of 2 heads
    runner, _, _ = load_runner(out)
    assert runner.num_parameters() == facts["parameters_after"]
    q = logits_of(out, ctx.eval, ctx.pad_id)
    assert q.shape == fp32_logits.shape
    assert (q.argmax(1) == ctx.eval.labels).mean() >= 0.8  # recovery keeps the task


def test_prune_magnitude_reaches_sparsity(ctx, tmp_path):
    from pretune.models import load_finetuned

    out, facts = build(ctx, "prune-magnitude", tmp_path)
    assert facts["sparsity"] == pytest.approx(ctx.cfg.sparsity, abs=0.01)
    model, _, _ = load_finetuned(out)
    w = [m.weight for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".encoder." in n]
    assert sum(int((x == 0).sum()) for x in w) / sum(x.numel() for x in w) >= ctx.cfg.sparsity - 0.01


def test_distilled_student_has_fewer_layers_and_loss_falls(ctx, tmp_path):
    from pretune.models import load_finetuned

    out, facts = build(ctx, "distill", tmp_path)
    student, _, _ = load_finetuned(out)  # a plain transformers folder
    assert student.config.num_hidden_layers == 1 < ctx.model.config.num_hidden_layers
    assert facts["loss_last"] < facts["loss_first"]


def test_distill_loss_with_hidden_matching_is_zero_for_identical_models(ctx):
    from pretune.data import collate

    batch = collate(ctx.train, np.arange(8), ctx.pad_id)
    student = make_student(ctx.model, [0, 1])  # all layers: the same function as the teacher
    plain = distill_loss(ctx.copy_model(), ctx.spec, 2.0, 1.0)(student, batch)[0]
    hidden = distill_loss(ctx.copy_model(), ctx.spec, 2.0, 1.0, 1.0, [0, 1])(student, batch)[0]
    assert float(plain) == pytest.approx(0.0, abs=1e-6)
    assert float(hidden) == pytest.approx(0.0, abs=1e-6)
    shallow = make_student(ctx.model, [1])
    assert float(distill_loss(ctx.copy_model(), ctx.spec, 2.0, 1.0, 1.0, [1])(shallow, batch)[0]) > 1e-4


def test_student_layers_choice_and_errors():
    assert student_layers(6, None) == [1, 3, 5]
    assert student_layers(2, None) == [1]
    assert student_layers(6, [0, 5]) == [0, 5]
    with pytest.raises(ConfigError, match="layers 0..5"):
        student_layers(6, [7])
    with pytest.raises(ConfigError, match="fewer than 2"):
        student_layers(2, [0, 1])
