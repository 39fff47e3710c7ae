"""ONNX export, ONNX Runtime graph fusion, and the check of an ONNX file against PyTorch.

The TorchScript-based exporter (``dynamo=False``) is used: for encoder classifiers it is
exact, takes a fraction of a second and prints nothing, while the dynamo exporter takes
seconds and narrates its passes. ``EXPORTER`` is the one function to swap if torch drops it.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..bench.runtimes import OrtRunner
from ..data import Encoded, collate, eval_batches
from ..errors import ModelError, PretuneError

INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class _LogitsOnly(nn.Module):
    """Positional inputs in, logits out: the signature ONNX needs."""

    def __init__(self, model: nn.Module, names: tuple[str, ...]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *args):
        return self.model(**dict(zip(self.names, args))).logits


@contextlib.contextmanager
def in_folder(path: Path):
    """Run with ``path`` as the working folder: ONNX Runtime's quantization tools drop temporary
    files (``sym_shape_infer_temp.onnx``, ``<uuid>.data``) into the current folder."""
    here = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(here)


@contextlib.contextmanager
def quiet():
    """Silence warnings and stray prints from exporters and quantizers (their log records are left to the
    application's logging set-up: the CLI shows libraries' warnings and errors only)."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def sample_batch(enc: Encoded, pad_id: int, rows: int = 2) -> dict[str, torch.Tensor]:
    """A small real batch with padding (the longest and a shorter row), for tracing."""
    order = eval_batches(enc.lengths, len(enc))[0]
    picked = [order[0], order[-1]] if rows == 2 and len(order) > 1 else list(order[:rows])
    batch = collate(enc, picked, pad_id)
    batch.pop("labels", None)
    return batch


def export_torchscript(model: nn.Module, path: Path, batch: dict[str, torch.Tensor], opset: int) -> None:
    names = tuple(n for n in INPUTS if n in batch)
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    # The wrapper must be in eval mode too: the exporter restores the wrapper's mode afterwards,
    # and a fresh Module is in training mode, which would switch dropout on in ``model``.
    wrapper = _LogitsOnly(model, names).eval()
    with torch.no_grad():
        per_token = wrapper(*(batch[n] for n in names)).dim() == 3  # (B, T, C): a tag per token
    axes["logits"] = {0: "batch", 1: "sequence"} if per_token else {0: "batch"}
    with quiet():
        torch.onnx.export(wrapper, tuple(batch[n] for n in names), str(path),
                          input_names=list(names), output_names=["logits"], dynamic_axes=axes,
                          opset_version=opset, dynamo=False, do_constant_folding=True)


EXPORTER: Callable[[nn.Module, Path, dict, int], None] = export_torchscript


def export_onnx(model: nn.Module, path: Path, batch: dict[str, torch.Tensor], opset: int) -> None:
    """Export ``model`` (a sequence or token classifier) to ``path`` with dynamic batch and sequence axes.

    Raises:
        ModelError: the architecture cannot be exported (one line naming the model type).
    """
    try:
        EXPORTER(model, path, batch, opset)
    except Exception as e:  # exporters raise many types; all mean "this model does not export"
        kind = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
        msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ModelError(f"cannot export model type {kind!r} to ONNX ({type(e).__name__}: {msg})") from None


# Model types whose graphs ONNX Runtime's BERT fusion recognises. DeBERTa's disentangled attention, ModernBERT's
# rotary and local attention and decoders' causal masks do not match its patterns; they run unfused.
BERT_FUSION = ("bert", "roberta", "distilbert", "xlm-roberta", "electra")


def fuse_bert(path: Path, out: Path, model: nn.Module) -> None:
    """Fuse attention, LayerNorm and GELU with ONNX Runtime's transformer optimizer (CPU kernels)."""
    from onnxruntime.transformers import optimizer

    cfg = model.config
    kind = "bert" if cfg.model_type in BERT_FUSION else None
    if kind is None:  # recorded as the variant's fusion_skipped fact; the plain graph is used
        raise PretuneError(f"no ONNX Runtime fusion for model type {cfg.model_type!r} (only {', '.join(BERT_FUSION)}); "
                           "the unfused graph is used")
    with quiet(), in_folder(out.parent):
        opt = optimizer.optimize_model(str(path), model_type=kind, num_heads=0, hidden_size=0, opt_level=0)
        opt.save_model_to_file(str(out))


@torch.inference_mode()
def max_logit_difference(model: nn.Module, onnx_path: Path, enc: Encoded, pad_id: int, rows: int = 64,
                         threads: int = 2) -> float:
    """Largest |logit| difference between PyTorch and ONNX Runtime over up to ``rows`` eval rows."""
    runner = OrtRunner(onnx_path, threads)
    model.eval()
    worst = 0.0
    picked = Encoded.select(enc, np.arange(min(rows, len(enc))))
    for batch_rows in eval_batches(picked.lengths, 16):
        batch = collate(picked, batch_rows, pad_id)
        batch.pop("labels", None)
        ref = model(**batch).logits.float().numpy()
        got = runner.predict({k: v.numpy() for k, v in batch.items()})
        worst = max(worst, float(np.abs(ref - got).max()))
    return worst
