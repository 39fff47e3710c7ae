"""Where and how a process computes: threads, seeds, and the environment saved with every result.

Read once by a job and passed down; the device and precision settings will live here too.
"""

from __future__ import annotations

import platform
import random
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators."""
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
    return {"versions": versions, "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
            "cuda": torch.cuda.is_available()}
