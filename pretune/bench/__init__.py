"""Bench stage: one harness measuring accuracy, latency, throughput, size and memory of any model folder."""

from .._package import make_package_callable
from .harness import BenchConfig, bench, latency_rounds, load_eval, measure
from .runtimes import OrtRunner, Runner, TorchRunner, load_runner, weights_size_bytes

__all__ = ["bench", "measure", "latency_rounds", "BenchConfig", "load_eval", "load_runner", "weights_size_bytes",
           "Runner", "TorchRunner", "OrtRunner"]


make_package_callable(__name__, bench)
