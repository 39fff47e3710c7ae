"""Where and how a process computes: device, precision, threads, seeds, and the environment saved with results.

A job reads ``train.device``, ``train.precision`` and ``train.tf32`` once (``resolve``) and passes the
``Runtime`` down; nothing below hard-codes a device or a dtype.

    device     auto: CUDA when torch sees a GPU, else the CPU; cpu, cuda, cuda:N, mps
    precision  auto: bf16 autocast where the device runs bf16 natively (a GPU with bf16; a CPU with
               AVX512-BF16 or AMX), else fp32; fp32, bf16, fp16 (autocast with a gradient scaler)
"""

from __future__ import annotations

import contextlib
import os
import platform
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from .config import PRECISIONS
from .errors import ConfigError

_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


@dataclass(frozen=True)
class Runtime:
    """The device a job computes on and the precision of its forward and backward passes."""

    device: torch.device
    precision: str  # fp32 | bf16 | fp16 (resolved; never auto)

    @property
    def amp_dtype(self) -> Optional[torch.dtype]:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision for a forward pass (and the backward that follows); nothing in fp32."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def scaler(self) -> Optional["torch.amp.GradScaler"]:
        """fp16 needs its loss scaled so that small gradients do not flush to zero; bf16 and fp32 do not."""
        return torch.amp.GradScaler(self.device.type) if self.precision == "fp16" else None

    def place(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model on the device (in place), unless it is a 4-bit (QLoRA) base, which loads onto its device and
        cannot be moved."""
        if not getattr(model, "is_loaded_in_4bit", False):
            model.to(self.device)
        return model

    def to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The batch on the device; host-to-GPU copies from pinned memory, without waiting for them."""
        if self.device.type == "cpu":
            return batch
        pin = self.device.type == "cuda"
        return {k: (v.pin_memory() if pin else v).to(self.device, non_blocking=True) for k, v in batch.items()}

    def synchronize(self) -> None:
        """Wait for the device's queued work (for honest timings)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def describe(self) -> str:
        where = str(self.device)
        if self.device.type == "cuda":
            where += f" ({torch.cuda.get_device_name(self.device)})"
        elif self.device.type == "cpu":
            where += f", {torch.get_num_threads()} threads"
        return f"{where}, {self.precision}"


CPU = Runtime(torch.device("cpu"), "fp32")


def cpu_runs_bf16() -> bool:
    """Whether this CPU has native bf16 matmuls (AVX512-BF16 or AMX); Linux only, False elsewhere."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))


def _device(name: str) -> torch.device:
    if not _DEVICE.match(name or ""):
        raise ConfigError(f"train.device: expected auto, cpu, cuda, cuda:N or mps, got {name!r}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))  # under torchrun: this rank's own GPU
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device={name}, but torch sees no CUDA device on this machine (torch "
                              f"{torch.__version__}); use train.device=auto or cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"train.device={name}, but this machine has {torch.cuda.device_count()} CUDA "
                              f"device(s): cuda:0..cuda:{torch.cuda.device_count() - 1}")
    if device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError("train.device=mps, but torch has no MPS backend here; use train.device=auto or cpu")
    return device


def _native_bf16(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu_runs_bf16()
    return False


def resolve(device: str = "auto", precision: str = "auto", tf32: bool = True) -> Runtime:
    """The ``Runtime`` for these settings, checked against this machine.

    Raises:
        ConfigError: an unknown name, a device this machine lacks, or bf16 on a GPU without it.
    """
    dev = _device(device)
    if precision not in PRECISIONS:
        raise ConfigError(f"train.precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        precision = "bf16" if _native_bf16(dev) else "fp32"
    if precision == "bf16" and dev.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"train.precision=bf16, but {torch.cuda.get_device_name(dev)} has no bf16; use "
                          "train.precision=fp16 (with loss scaling) or fp32")
    if dev.type == "cuda":
        # TF32 matmuls: fp32 storage with a 10-bit mantissa product, about 8x faster on Ampere and later
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    return Runtime(dev, precision)


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process on ``device``: allocated tensors on a GPU, resident memory on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return peak_rss_mb()


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (every device's)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_threads(n: Optional[int]) -> None:
    """Use ``n`` CPU threads for torch's kernels; None keeps torch's default."""
    if n:
        torch.set_num_threads(n)


def peak_rss_mb() -> float:
    """This process's peak resident memory in MiB (``VmHWM`` on Linux, ``ru_maxrss`` elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def environment() -> dict[str, Any]:
    """Versions and hardware, saved with every result so numbers can be compared later."""
    import transformers

    versions = {"python": platform.python_version(), "torch": torch.__version__,
                "transformers": transformers.__version__}
    for name in ("peft", "optuna", "onnxruntime"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            pass
    env = {"versions": versions, "threads": torch.get_num_threads(),
           "cpu": platform.processor() or platform.machine(), "cpu_bf16": cpu_runs_bf16(),
           "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        env["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return env
