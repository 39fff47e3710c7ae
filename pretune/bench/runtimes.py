"""Runtimes: any model or variant folder behind one small ``Runner`` interface.

A plain Hugging Face folder and the PyTorch variants (``pretune.compress.formats``) run in
``TorchRunner``; ONNX variants in ``OrtRunner`` (ONNX Runtime, the ``onnx`` extra). Every folder also
holds the tokenizer and ``config.json`` (labels, task).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from ..errors import ModelError, require
from ..runtime import CPU, Runtime
from ..files import VARIANT_MANIFEST
log = logging.getLogger("pretune")
WEIGHT_SUFFIXES = (".safetensors", ".onnx", ".onnx.data", ".bin", ".data")


class Runner(Protocol):
    """What the harness needs from a runtime: logits for a padded batch."""

    backend: str  # "pytorch" | "onnxruntime"

    def predict(self, batch: dict[str, np.ndarray], forward=None) -> np.ndarray:
        """(B, T) int64 inputs -> (B, C) logits, or what ``forward(model, batch)`` (a task's) gives."""
        ...

    def num_parameters(self) -> int:
        ...


def weights_size_bytes(folder: str | os.PathLike) -> int:
    """Bytes of the weight files (safetensors, onnx and its external data); tokenizer excluded."""
    return sum(f.stat().st_size for f in Path(folder).iterdir()
               if f.is_file() and f.name.endswith(WEIGHT_SUFFIXES))


# ------------------------------------------------------------------ PyTorch


@dataclass
class TorchRunner:
    model: nn.Module
    runtime: Runtime = CPU
    backend: str = "pytorch"

    def __post_init__(self) -> None:
        self.model.to(self.runtime.device)

    @torch.inference_mode()
    def predict(self, batch: dict[str, np.ndarray], forward=None) -> np.ndarray:
        inputs = self.runtime.to_device({k: torch.from_numpy(v) for k, v in batch.items()})
        with self.runtime.autocast():
            logits = self.model(**inputs).logits if forward is None else forward(self.model, inputs)
        return logits.float().cpu().numpy()  # the copy waits for the device: timings are whole

    def num_parameters(self) -> int:
        from ..compress.formats import torch_parameter_count  # bench reads what compress writes

        return torch_parameter_count(self.model)


# ------------------------------------------------------------------ ONNX Runtime


class OrtRunner:
    backend = "onnxruntime"

    def __init__(self, path: Path, threads: int, spin: bool = True):
        ort = require("onnxruntime", "onnx", f"running the ONNX model {path}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        if not spin:  # threads spin within a call only, then sleep: the server's other threads need the cores
            opts.add_session_config_entry("session.force_spinning_stop", "1")
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3  # errors only: keep the console clean
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own untyped errors
            raise ModelError(f"{path}: ONNX Runtime cannot load it ({str(e).splitlines()[0][:200]})") from None
        self.path = path
        self.inputs = [i.name for i in self.session.get_inputs()]

    def predict(self, batch: dict[str, np.ndarray], forward=None) -> np.ndarray:
        if forward is not None:
            raise ModelError(f"{self.path}: this task's outputs come from its own forward pass over a PyTorch model, "
                             "which an ONNX graph of the logits cannot give; bench the PyTorch model folder")
        feed = {k: batch[k] for k in self.inputs if k in batch}
        if "attention_mask" in self.inputs and "attention_mask" not in feed:
            feed["attention_mask"] = np.ones_like(batch["input_ids"])
        if "token_type_ids" in self.inputs and "token_type_ids" not in feed:
            feed["token_type_ids"] = np.zeros_like(batch["input_ids"])
        return self.session.run(None, feed)[0]

    def num_parameters(self) -> int:
        import onnx

        model = onnx.load(str(self.path), load_external_data=False)
        return int(sum(np.prod(t.dims, dtype=np.int64) for t in model.graph.initializer))


# ------------------------------------------------------------------ dispatch


def load_runner(folder: str | os.PathLike, threads: int = 2, runtime: Runtime = CPU, spin: bool = True):
    """Load ``folder`` with the runtime its manifest names; returns (Runner, HF config, tokenizer).

    ``folder`` may also be a ``pretune run`` or ``compress`` output folder: its recommended variant is loaded
    (``pretune.compress.formats.locate``).

    ``runtime`` is the device and precision of the PyTorch formats (int8 ones run on the CPU only). ``spin=False``
    stops ONNX Runtime's threads spinning as soon as a call returns, so that they sleep between calls (a server,
    whose other threads share the cores); within a call they still spin between operators. With ``spin=True``
    they keep spinning after a call too (the lowest latency of back-to-back calls, as bench times them).

    Raises:
        ModelError: the folder is missing, is not a model folder, or names an unknown format.
    """
    from transformers import AutoConfig

    from ..compress.formats import FORMATS, load_torch_variant, locate, read_manifest  # what compress writes
    from ..models import check_model_folder, load_finetuned, load_tokenizer

    located = locate(folder) if Path(folder).exists() else None
    if located is not None and located.why != "as given":
        log.info("%s: %s (%s)", folder, located.folder, located.why)
    folder = located.folder if located is not None else Path(folder)
    manifest = read_manifest(folder) if folder.is_dir() else {"format": "hf"}
    fmt = manifest.get("format")
    torch.set_num_threads(threads)
    if fmt == "hf":
        model, tokenizer, _ = load_finetuned(folder)
        return TorchRunner(model, runtime), model.config, tokenizer
    if not (folder / "config.json").is_file():
        raise ModelError(f"{folder}: variant folder lacks config.json; re-create it with pretune compress")
    config, tokenizer = AutoConfig.from_pretrained(str(folder)), load_tokenizer(folder)
    if fmt in ("torch-int8-dynamic", "hf-pruned"):
        on = runtime if fmt == "hf-pruned" else CPU  # torch's dynamic int8 kernels are CPU kernels
        return TorchRunner(load_torch_variant(folder, manifest), on), config, tokenizer
    if fmt == "onnx":
        path = folder / manifest.get("file", "model.onnx")
        if not path.is_file():
            raise ModelError(f"{folder}: {path.name} is missing; re-create the ONNX variant")
        return OrtRunner(path, threads, spin), config, tokenizer
    check_model_folder(folder)
    raise ModelError(f"{folder}/{VARIANT_MANIFEST}: unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
