"""benchmarks/serve_load.py's bookkeeping (the load run itself is the benchmark's, not the tests')."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from conftest import SHARED_DATA

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "serve_load.py"


@pytest.fixture(scope="module")
def load():
    spec = importlib.util.spec_from_file_location("serve_load", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sst2_dev_reads_every_sentence(load):
    path = SHARED_DATA / "sst2" / "dev.tsv"
    if not path.is_file():
        pytest.skip("no SST-2 copy in shared/data")
    texts = load.sentences(str(path))
    assert len(texts) == 872 and all(t and t == t.strip() for t in texts)  # the GLUE trailing space is gone


def test_the_baseline_is_the_fp32_source_of_a_compress_folder(load, compress_folder, classifier):
    assert load.source_of(str(compress_folder)) == str(classifier)
    assert load.source_of(str(classifier)) == str(classifier)
    with pytest.raises(SystemExit, match="--baseline-model"):
        load.source_of(str(compress_folder / "int8-dynamic-torch"))


def test_the_table_gives_the_ratio_to_the_baseline(load):
    row = {"clients": 8, "requests_per_s": 120.0, "p50_ms": 10.0, "p95_ms": 20.0, "p99_ms": 30.0, "errors": 0,
           "lost": 0}
    lines = load.table([{**row, "server": "pretune", "ratio": 2.0}, {**row, "server": "baseline",
                                                                   "requests_per_s": 60.0}]).splitlines()
    assert lines[2] == "| 8 | pretune | 120.0 | 2.00x | 10.0 | 20.0 | 30.0 | 0 | 0 |"
    assert lines[3].startswith("| 8 | baseline | 60.0 | 1.00x |")
