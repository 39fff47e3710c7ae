"""Bench stage: one harness measuring accuracy, latency, throughput, size and memory of any model folder."""

import sys
import types

from .harness import RESULT_FILE, BenchConfig, bench, load_eval, measure
from .runtimes import (MANIFEST, OrtRunner, Runner, TorchRunner, load_runner, read_manifest,
                       save_torch_int8, weights_size_bytes, write_manifest)

__all__ = ["bench", "measure", "BenchConfig", "load_eval", "load_runner", "read_manifest", "write_manifest",
           "save_torch_int8", "weights_size_bytes", "Runner", "TorchRunner", "OrtRunner", "MANIFEST",
           "RESULT_FILE"]


class _CallableModule(types.ModuleType):
    """``pretune.bench(...)`` calls ``bench``: the package and the API function share the name, and
    importing a submodule rebinds ``pretune.bench`` to this package, so the package itself is callable."""

    def __call__(self, *args, **kwargs):
        return bench(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
