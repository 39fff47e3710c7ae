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


async def _http_server(answers: list[tuple[int, bytes, bool]]):
    """A loopback HTTP/1.1 server that answers each request with the next (status, body, close) and records the
    requests and connections it saw."""
    import asyncio

    seen = {"requests": [], "connections": 0}

    async def handle(reader, writer):
        seen["connections"] += 1
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            seen["requests"].append((head.split(b"\r\n")[0], await reader.readexactly(length)))
            status, body, close = answers[min(len(seen["requests"]), len(answers)) - 1]
            writer.write(b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n%s"
                         % (status, len(body), b"connection: close\r\n" if close else b"", body))
            await writer.drain()
            if close:
                writer.close()
                return

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", seen


def test_the_load_client_keeps_its_connection_and_opens_another_when_closed(load):
    import asyncio

    async def run():
        server, url, seen = await _http_server([(200, b'{"a": 1}', False), (200, b'{"b": 2}', True),
                                                (503, b"{}", False)])
        connection = load.Connection(url)
        answers = [await connection.post("/predict", {"text": t}) for t in ("x", "y", "z")]
        connection.close()
        server.close()
        return answers, seen

    answers, seen = asyncio.run(run())
    assert answers == [(200, b'{"a": 1}'), (200, b'{"b": 2}'), (503, b"{}")]
    assert [r[1] for r in seen["requests"]] == [b'{"text": "x"}', b'{"text": "y"}', b'{"text": "z"}']
    assert seen["requests"][0][0] == b"POST /predict HTTP/1.1"
    assert seen["connections"] == 2  # one kept for two requests, one more after the server closed it


def test_the_load_counts_answers_errors_and_latencies(load):
    import asyncio

    async def run():
        server, url, seen = await _http_server([(200, b"{}", False), (500, b"{}", False), (200, b"{}", False)])
        result = await load.load(url, ["a", "b"], clients=1, warmup=0.0, duration=0.3, grace=5.0)
        server.close()
        return result, len(seen["requests"])

    result, sent = asyncio.run(run())
    assert result["errors"] == 1 and result["lost"] == 0
    assert result["answered"] == sent - 1 > 10  # every answer but the one 500 counted, in 0.3 s of one client
    assert 0 < result["p50_ms"] < 300
