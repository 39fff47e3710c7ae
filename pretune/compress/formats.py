"""The formats of the variant folders ``pretune compress`` writes, and how each loads back.

A variant folder holds ``config.json``, the tokenizer, its weights and ``pretune_variant.json`` naming its
``format``:
- ``hf`` (no manifest): a plain Hugging Face folder; its task's ``AutoModelFor...`` class loads it;
- ``torch-int8-dynamic``: int8 weights and scales in safetensors, rebuilt into a dynamically quantized
  PyTorch model by ``load_torch_int8`` (``AutoModel...`` cannot load it);
- ``hf-pruned``: a structurally pruned model whose Linear shapes differ from its config's, rebuilt by
  ``load_pruned`` from the shapes in the manifest;
- ``onnx``: a ``.onnx`` file for ONNX Runtime (named by the manifest's ``file``).

The PyTorch int8 path goes through ``torch.ao.quantization``, deprecated in torch 2.13: it is reached only
through ``TORCH_INT8_BACKEND`` (a function that can be swapped when torch removes it) and its warnings are
silenced here.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from ..errors import ModelError
from ..files import VARIANT_MANIFEST

FORMATS = ("hf", "torch-int8-dynamic", "hf-pruned", "onnx")


def read_manifest(folder: str | os.PathLike) -> dict:
    """The variant manifest of ``folder``; ``{"format": "hf"}`` for a plain Hugging Face folder."""
    path = Path(folder) / VARIANT_MANIFEST
    if not path.is_file():
        return {"format": "hf"}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ModelError(f"{path}: not valid JSON ({e}); re-create the variant with pretune compress") from None


def write_manifest(folder: str | os.PathLike, **fields) -> None:
    Path(folder, VARIANT_MANIFEST).write_text(json.dumps(fields, indent=2) + "\n", encoding="utf-8")


def torch_parameter_count(model: nn.Module) -> int:
    """Parameters, counting the packed int8 weights of dynamically quantized Linears too."""
    n = sum(p.numel() for p in model.parameters())
    for mod in model.modules():
        if _is_int8_linear(mod):
            w, b = mod._weight_bias()
            n += w.numel() + (b.numel() if b is not None else 0)
    return n


def _quiet():
    """Silence torch.ao's deprecation chatter and the quantized-engine warnings."""
    ctx = warnings.catch_warnings()
    ctx.__enter__()
    warnings.simplefilter("ignore")
    return ctx


def quantize_dynamic_ao(model: nn.Module, modules: Optional[set[str]] = None, per_channel: bool = True) -> nn.Module:
    """Dynamic int8 Linear layers through ``torch.ao.quantization.quantize_dynamic`` (deprecated in 2.13).

    Args:
        model: an fp32 model; it is not modified.
        modules: qualified names of the Linear layers to quantize; None quantizes every Linear.
        per_channel: one scale per output row (more accurate than one per tensor, same speed).

    Returns:
        A new model whose chosen Linears run int8 matmuls with activations quantized on the fly.
    """
    ctx = _quiet()
    try:
        from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic
        qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
        spec = {nn.Linear: qconfig} if modules is None else {name: qconfig for name in modules}
        return quantize_dynamic(model, spec, dtype=torch.qint8, inplace=False)
    finally:
        ctx.__exit__(None, None, None)


# Swap this (e.g. for a torchao-based function) when torch.ao.quantization is removed;
# signature: (model, modules, per_channel) -> quantized model.
TORCH_INT8_BACKEND: Callable[..., nn.Module] = quantize_dynamic_ao


def _is_int8_linear(mod: nn.Module) -> bool:
    # The dynamic quantized Linear (not its inner packed-params holder) exposes weight() as a method.
    return hasattr(mod, "_packed_params") and callable(getattr(mod, "weight", None))


def int8_linear_names(model: nn.Module) -> list[str]:
    return [name for name, mod in model.named_modules() if _is_int8_linear(mod)]


def save_torch_int8(model: nn.Module, folder: str | os.PathLike) -> None:
    """Save a dynamically quantized model as safetensors: int8 weights + scales, fp32 for the rest."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    quantized = int8_linear_names(model)
    for name in quantized:
        w, b = model.get_submodule(name)._weight_bias()
        tensors[f"{name}.weight.int8"] = w.int_repr().contiguous()
        if w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
            tensors[f"{name}.weight.scale"] = w.q_per_channel_scales().float().contiguous()
            tensors[f"{name}.weight.zero_point"] = w.q_per_channel_zero_points().to(torch.int64).contiguous()
        else:
            tensors[f"{name}.weight.scale"] = torch.tensor([w.q_scale()], dtype=torch.float32)
            tensors[f"{name}.weight.zero_point"] = torch.tensor([w.q_zero_point()], dtype=torch.int64)
        if b is not None:
            tensors[f"{name}.bias"] = b.detach().contiguous()
    for key, value in model.state_dict().items():
        owned = any(key.startswith(name + ".") for name in quantized)  # saved above as int8 + scales
        if isinstance(value, torch.Tensor) and not value.is_quantized and not owned:
            tensors[key] = value.detach().contiguous()
    # Tied weights share storage; safetensors refuses shared tensors, so store copies.
    tensors = {k: v.clone() for k, v in tensors.items()}
    save_file(tensors, str(Path(folder) / "model.safetensors"), metadata={"format": "pt"})
    model.config.save_pretrained(str(folder))
    write_manifest(folder, format="torch-int8-dynamic", quantized_modules=quantized,
                   per_channel=any(k.endswith(".zero_point") and tensors[k].numel() > 1 for k in tensors))


def load_torch_int8(folder: Path, manifest: dict) -> nn.Module:
    """Rebuild a model saved by ``save_torch_int8``: quantize a skeleton, then set the saved int8 weights."""
    from safetensors.torch import load_file
    from transformers import AutoConfig

    from ..models import auto_class_of

    config = AutoConfig.from_pretrained(str(folder))
    # A randomly initialised skeleton (not meta tensors: non-persistent buffers such as
    # position ids must be real); every saved tensor then overwrites its init.
    model = auto_class_of(config).from_config(config)
    tensors = load_file(str(folder / "model.safetensors"))
    names = manifest["quantized_modules"]
    plain = {k: v for k, v in tensors.items() if not any(k.startswith(n + ".") for n in names)}
    missing = [k for k in model.state_dict() if k not in plain
               and not any(k.startswith(n + ".") for n in names)]
    model.load_state_dict(plain, strict=False)
    if missing:
        raise ModelError(f"{folder}: int8 weights file lacks {missing[:3]}; re-create the variant")
    model = TORCH_INT8_BACKEND(model, set(names), manifest.get("per_channel", True))
    ctx = _quiet()
    try:
        for name in names:
            q = tensors[f"{name}.weight.int8"]
            scale, zp = tensors[f"{name}.weight.scale"], tensors[f"{name}.weight.zero_point"]
            if scale.numel() > 1:
                w = torch._make_per_channel_quantized_tensor(q, scale.double(), zp, 0)
            else:
                w = torch._make_per_tensor_quantized_tensor(q, float(scale), int(zp))
            model.get_submodule(name).set_weight_bias(w, tensors.get(f"{name}.bias"))
    finally:
        ctx.__exit__(None, None, None)
    return model.eval()


def load_pruned(folder: Path, manifest: dict) -> nn.Module:
    """Rebuild a structurally pruned model: resize its Linears to the saved shapes, then load the weights."""
    from safetensors.torch import load_file
    from transformers import AutoConfig

    from ..models import auto_class_of

    config = AutoConfig.from_pretrained(str(folder))
    model = auto_class_of(config).from_config(config)
    for name, (out_f, in_f) in manifest.get("shapes", {}).items():
        old = model.get_submodule(name)
        model.set_submodule(name, nn.Linear(in_f, out_f, bias=old.bias is not None))
    state = load_file(str(folder / "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    # Tied or non-persistent entries may be absent from the file; real weights may not.
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ModelError(f"{folder}: pruned weights do not match the recorded shapes "
                         f"(missing {missing[:2]}, unexpected {unexpected[:2]}); re-create the variant")
    return model.eval()


def load_torch_variant(folder: str | os.PathLike, manifest: Optional[dict] = None) -> nn.Module:
    """The PyTorch model of a ``torch-int8-dynamic`` or ``hf-pruned`` folder (``manifest``: its
    ``pretune_variant.json``, read from the folder when not given)."""
    folder = Path(folder)
    manifest = manifest if manifest is not None else read_manifest(folder)
    fmt = manifest.get("format")
    if fmt == "torch-int8-dynamic":
        return load_torch_int8(folder, manifest)
    if fmt == "hf-pruned":
        return load_pruned(folder, manifest)
    raise ModelError(f"{folder}/{VARIANT_MANIFEST}: format {fmt!r} is not a PyTorch variant; expected "
                     "torch-int8-dynamic or hf-pruned")


# ------------------------------------------------------------------ what a path names


@dataclass(frozen=True)
class Located:
    """The model folder a path names, and which variant it is."""

    folder: Path  # holds config.json, the tokenizer and the weights (and pretune_variant.json for a variant)
    variant: str  # "model" for a tuned model folder, else the compress method (chain) that built it
    format: str  # one of FORMATS
    why: str  # how the folder was chosen, for a log line


def locate(path: str | os.PathLike) -> Located:
    """The folder to load for ``path``: a model or variant folder as it is; a ``pretune run`` folder or a
    ``compress`` output folder: its recommended variant, the accepted variant (within the accuracy gate) with the
    lowest batch-1 latency, or the source model when no variant was accepted; a ``pretune fit`` run folder: its
    ``model/``.

    Raises:
        ModelError: the path does not exist or holds no model.
    """
    p = Path(path)
    if not p.exists():
        raise ModelError(f"{p}: no such file or folder; pass a model folder, a variant folder that pretune "
                         "compress wrote, or a pretune run folder")
    if p.is_file() or (p / "config.json").is_file():
        fmt = read_manifest(p).get("format", "hf") if p.is_dir() else "hf"
        return Located(p, p.name if fmt != "hf" else "model", fmt, "as given")
    results_file = next((f for f in (p / "compress" / "results.json", p / "results.json") if f.is_file()), None)
    if results_file is not None:
        try:
            results = json.loads(results_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ModelError(f"{results_file}: not valid JSON ({e}); rerun pretune compress") from None
        if "variants" in results:
            accepted = [v for v in results["variants"] if v.get("status") == "accepted"
                        and Path(v.get("folder", "")).is_dir()]
            if accepted:
                best = min(accepted, key=lambda v: v["bench"]["latency_ms"]["p50"])
                folder = Path(best["folder"])
                return Located(folder, best["name"], read_manifest(folder).get("format", "hf"),
                               f"recommended by {results_file}: the fastest variant within the accuracy gate "
                               f"({best['bench']['latency_ms']['p50']:.2f} ms at batch 1)")
            source = Path(results.get("source", ""))
            if (source / "config.json").is_file():
                return Located(source, "model", "hf", f"{results_file} accepted no variant: the source model")
    for sub in (Path("search") / "best" / "model", Path("model")):
        if (p / sub / "config.json").is_file():
            return Located(p / sub, "model", "hf", f"the tuned model of the run folder {p}")
    raise ModelError(f"{p}: not a Hugging Face model folder (no config.json), nor a run folder (no "
                     "compress/results.json or model/); pass a model folder, a variant folder or a pretune run folder")
