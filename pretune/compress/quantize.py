"""ONNX export and int8 quantization methods (PyTorch dynamic, ONNX Runtime dynamic and static)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Optional

import numpy as np
from torch import nn

from ..errors import PretuneError, require
from . import export as ex
from . import formats
from .formats import int8_linear_names, read_manifest, save_torch_int8, write_manifest
from .registry import Context, register

ONNX_FILE = "model.onnx"


def _need_onnx(method: str) -> None:
    """A one-line error naming the extra when the ONNX packages are missing."""
    for module in ("onnx", "onnxruntime"):
        require(module, "onnx", f"compress method {method}")


def _finish_onnx_variant(ctx: Context, out: Path, method: str, **facts) -> None:
    ctx.model.config.save_pretrained(str(out))
    ctx.save_tokenizer(out)
    write_manifest(out, format="onnx", file=ONNX_FILE, method=method, source=str(ctx.source), **facts)


def _export_fp32(ctx: Context, work: Path, fuse: bool) -> tuple[Path, dict]:
    """Export the source model, optionally fuse it, and check it against PyTorch; (path, facts).

    A fusion that fails, or that moves logits beyond ``onnx_tolerance``, is dropped (recorded in
    the facts) and the plain export is used: fusion is an optimisation, never a correctness risk.

    Raises:
        ModelError: the model does not export. PretuneError: the plain export disagrees with PyTorch.
    """
    cfg = ctx.cfg
    plain = work / "plain.onnx"
    ex.export_onnx(ctx.model, plain, ex.sample_batch(ctx.eval, ctx.pad_id), cfg.onnx_opset)
    diff = ex.max_logit_difference(ctx.model, plain, ctx.eval, ctx.pad_id, threads=cfg.threads)
    if diff > cfg.onnx_tolerance:
        raise PretuneError(f"ONNX export differs from PyTorch by {diff:.2e} (tolerance onnx_tolerance="
                           f"{cfg.onnx_tolerance:g})")
    facts = {"onnx_max_abs_diff": diff, "onnx_tolerance": cfg.onnx_tolerance, "fused": False}
    if not fuse:
        return plain, facts
    fused = work / "fused.onnx"
    try:
        ex.fuse_bert(plain, fused, ctx.model)
        fused_diff = ex.max_logit_difference(ctx.model, fused, ctx.eval, ctx.pad_id, threads=cfg.threads)
    except Exception as e:  # the optimizer's many failure types all mean "keep the plain graph"
        facts["fusion_skipped"] = f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
        return plain, facts
    if fused_diff > cfg.onnx_tolerance:
        facts["fusion_skipped"] = f"fused graph differs by {fused_diff:.2e}"
        return plain, facts
    facts.update(fused=True, onnx_max_abs_diff=fused_diff)
    return fused, facts


def _node_names(path: Path, patterns: Optional[list[str]]) -> list[str]:
    """Nodes whose name contains one of ``patterns`` (left in fp32)."""
    if not patterns:
        return []
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return [n.name for n in graph.node if any(p in n.name for p in patterns)]


@register("onnx", logits=True)
def onnx_fp32(ctx: Context, out: Path) -> dict:
    """fp32 ONNX export (fused for ONNX Runtime when possible), checked against PyTorch."""
    _need_onnx("onnx")
    with tempfile.TemporaryDirectory() as tmp:
        path, facts = _export_fp32(ctx, Path(tmp), ctx.cfg.ort_optimize)
        path.replace(out / ONNX_FILE)
    _finish_onnx_variant(ctx, out, "onnx", **facts)
    return facts


@register("int8-dynamic-torch")
def int8_dynamic_torch(ctx: Context, out: Path) -> dict:
    """PyTorch dynamic int8: Linear weights in int8, activations quantized per call."""
    model = ctx.copy_model().eval()
    keep = ctx.cfg.keep_fp32 or []
    names = {name for name, mod in model.named_modules()
             if isinstance(mod, nn.Linear) and not any(k in name for k in keep)}
    qmodel = formats.TORCH_INT8_BACKEND(model, names, ctx.cfg.per_channel)
    quantized = int8_linear_names(qmodel)
    if not quantized:
        raise PretuneError("no Linear layer was quantized; check compress.keep_fp32")
    save_torch_int8(qmodel, out)
    ctx.save_tokenizer(out)
    _annotate_manifest(out, method="int8-dynamic-torch", source=str(ctx.source))
    return {"quantized_linears": len(quantized), "per_channel": ctx.cfg.per_channel}


def _annotate_manifest(out: Path, **fields) -> None:
    write_manifest(out, **{**read_manifest(out), **fields})


@register("int8-dynamic-ort", logits=True)
def int8_dynamic_ort(ctx: Context, out: Path) -> dict:
    """ONNX Runtime dynamic int8 on the fused graph (int8 weights; activations quantized per call)."""
    _need_onnx("int8-dynamic-ort")
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    cfg, out = ctx.cfg, out.resolve()  # absolute: the quantizers run in a temporary folder
    with tempfile.TemporaryDirectory() as tmp:
        path, facts = _export_fp32(ctx, Path(tmp), cfg.ort_optimize)
        exclude = _node_names(path, cfg.keep_fp32)
        with ex.quiet(), ex.in_folder(Path(tmp)):
            quantize_dynamic(str(path), str(out / ONNX_FILE), per_channel=cfg.per_channel,
                             reduce_range=cfg.reduce_range, weight_type=QuantType.QInt8,
                             nodes_to_exclude=exclude or None,
                             # fused ops (Attention, SkipLayerNorm) hide output types from shape inference
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    facts.update(per_channel=cfg.per_channel, reduce_range=cfg.reduce_range, fp32_nodes=len(exclude))
    _finish_onnx_variant(ctx, out, "int8-dynamic-ort", **facts)
    return facts


class _Calibration:
    """Feeds ``n`` training rows one at a time (batch 1, no padding) to the calibrator."""

    def __init__(self, ctx: Context, n: int, input_names: list[str]):
        from ..data import collate

        rng = np.random.default_rng(ctx.cfg.seed)
        rows = rng.choice(len(ctx.train), size=min(n, len(ctx.train)), replace=False)
        self.feeds = []
        for r in rows:
            batch = collate(ctx.train, [r], ctx.pad_id)
            self.feeds.append({k: batch[k].numpy() for k in input_names if k in batch})
        self.i = 0

    def get_next(self) -> Optional[dict]:
        if self.i >= len(self.feeds):
            return None
        self.i += 1
        return self.feeds[self.i - 1]

    def rewind(self) -> None:
        self.i = 0


@register("int8-static-ort", needs_rows=True, logits=True)
def int8_static_ort(ctx: Context, out: Path) -> dict:
    """ONNX Runtime static int8 (QDQ): activation ranges calibrated on training rows."""
    _need_onnx("int8-static-ort")
    import onnx
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType, quant_pre_process,
                                          quantize_static)

    cfg, out = ctx.cfg, out.resolve()  # absolute: the quantizers run in a temporary folder
    if len(ctx.train) == 0:
        raise PretuneError("static int8 needs training rows for calibration; pass --train FILE")
    with tempfile.TemporaryDirectory() as tmp:
        # Static QDQ runs on the unfused graph: ONNX Runtime fuses QDQ pairs into int8 kernels at load.
        path, facts = _export_fp32(ctx, Path(tmp), fuse=False)
        prep = Path(tmp) / "prep.onnx"
        with ex.quiet(), ex.in_folder(Path(tmp)):
            try:
                quant_pre_process(str(path), str(prep))
            except Exception:  # symbolic shape inference fails on some graphs; ONNX's own is enough here
                quant_pre_process(str(path), str(prep), skip_symbolic_shape=True)
        names = [i.name for i in onnx.load(str(prep), load_external_data=False).graph.input]
        reader = _Calibration(ctx, cfg.calibration_samples, names)
        exclude = _node_names(prep, cfg.keep_fp32)
        with ex.quiet(), ex.in_folder(Path(tmp)):
            quantize_static(str(prep), str(out / ONNX_FILE), reader, quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=["MatMul", "Gemm"], per_channel=cfg.per_channel,
                            reduce_range=cfg.reduce_range, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, nodes_to_exclude=exclude or None,
                            calibrate_method=CalibrationMethod.MinMax,
                            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    facts.update(calibration_rows=len(reader.feeds), per_channel=cfg.per_channel, fp32_nodes=len(exclude))
    _finish_onnx_variant(ctx, out, "int8-static-ort", **facts)
    return facts
