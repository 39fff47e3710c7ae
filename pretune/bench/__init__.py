"""Bench stage: one harness measuring accuracy, latency, throughput, size and memory of any model folder."""

from ..utils import make_package_callable
from .harness import RESULT_FILE, BenchConfig, bench, load_eval, measure
from .runtimes import (MANIFEST, OrtRunner, Runner, TorchRunner, load_runner, read_manifest,
                       save_torch_int8, weights_size_bytes, write_manifest)

__all__ = ["bench", "measure", "BenchConfig", "load_eval", "load_runner", "read_manifest", "write_manifest",
           "save_torch_int8", "weights_size_bytes", "Runner", "TorchRunner", "OrtRunner", "MANIFEST",
           "RESULT_FILE"]


make_package_callable(__name__, bench)
