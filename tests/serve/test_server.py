"""``pretune serve`` as a client sees it: a real server process on a free port, answered over HTTP.

Dynamic batching merges concurrent requests and gives each its own rows (the rows ``pretune predict`` writes for the
same texts); every bad request gets a 4xx with a one-line JSON error and the server goes on; the token guards every
route but /health; a client that leaves does not break its batch; a compress folder serves its recommended variant;
SIGTERM lets the requests in flight finish and exits 0.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from servekit import AUTH, TOKEN, metric  # noqa: E402

SHORT = ["good film", "bad plot", "the actor was very good", "awful", "a lovely story", "dull scene",
         "great great great", "poor movie", "fine", "terrible actor", "superb plot", "the film is quite bad"]
LONG = [" ".join(["good", "bad", "the", "film"] * 8), " ".join(["awful"] * 30 + ["superb"]),
        " ".join(["story", "lovely"] * 20), " ".join(["scene", "poor", "was"] * 9)]  # > 16 tokens: truncated
TEXTS = SHORT + LONG


@pytest.fixture(scope="module")
def expected(classifier, tmp_path_factory) -> dict[str, dict]:
    """What ``pretune predict`` writes for each text, at the main server's --max-length."""
    from conftest import write_csv

    from pretune.jobs.predict import predict_file

    path = write_csv(tmp_path_factory.mktemp("expected") / "texts.csv", [(t,) for t in TEXTS], header=("text",))
    rows = predict_file(str(classifier), str(path), max_length=16, threads=1, device="cpu", precision="fp32")
    return dict(zip(TEXTS, rows))


def same_row(got: dict, want: dict) -> bool:
    """The same probabilities (to 1e-4), and the same label unless the top two are a near tie."""
    p, q = got["probabilities"], want["probabilities"]
    top = sorted(q.values())
    return p.keys() == q.keys() and all(abs(p[k] - q[k]) < 1e-4 for k in q) and \
        (got["label"] == want["label"] or top[-1] - top[-2] < 1e-3)


def batches(text: str) -> tuple[float, float]:
    """(model calls, calls of one text) so far."""
    return metric(text, "pretune_serve_batch_size_count"), metric(text, "pretune_serve_batch_size_bucket", le="1")


def concurrently(fn, args: list, workers: int) -> list:
    """``fn(arg)`` for every arg, all released at once from their own threads."""
    barrier = threading.Barrier(min(workers, len(args)))

    def call(arg):
        barrier.wait(timeout=30)
        return fn(arg)

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(call, args))


def test_concurrent_requests_share_model_calls_and_each_gets_its_own_rows(main_server, expected):
    calls0, singles0 = batches(main_server.metrics())
    texts_before = metric(main_server.metrics(), "pretune_serve_texts_total")
    answers = concurrently(lambda t: main_server.predict({"text": t}), TEXTS, len(TEXTS))
    for text, (status, body) in zip(TEXTS, answers):
        assert status == 200, body
        assert same_row(body["result"], expected[text]), (text, body, expected[text])
        assert body["variant"] == "model"
    after = main_server.metrics()
    calls, singles = batches(after)
    assert metric(after, "pretune_serve_texts_total") - texts_before == len(TEXTS)
    assert (calls - singles) - (calls0 - singles0) >= 1, f"no model call held more than one text:\n{after}"
    assert calls - calls0 < len(TEXTS)  # fewer model calls than requests
    # several texts in one request come back in their order
    status, body = main_server.predict({"texts": TEXTS[:8]})
    assert status == 200 and len(body["results"]) == 8
    assert all(same_row(r, expected[t]) for r, t in zip(body["results"], TEXTS[:8]))


def chunks(data: bytes, size: int = 1024):
    for i in range(0, len(data), size):
        yield data[i:i + size]


JSON = {"Content-Type": "application/json"}
BAD = {  # name: (method, path, body, headers, status, words in the error)
    "malformed JSON": ("POST", "/predict", b'{"text": "good', JSON, 400, "not valid JSON"),
    "not UTF-8": ("POST", "/predict", b'{"text": "\xff\xfe"}', JSON, 400, "not valid JSON"),
    "missing field": ("POST", "/predict", {}, None, 422, '"text"'),
    "unknown field": ("POST", "/predict", {"txt": "good"}, None, 422, "unknown field 'txt'"),
    "both fields": ("POST", "/predict", {"text": "good", "texts": ["bad"]}, None, 422, "either"),
    "not an object": ("POST", "/predict", ["good"], None, 422, "JSON object"),
    "empty list": ("POST", "/predict", {"texts": []}, None, 422, "empty"),
    "texts not a list": ("POST", "/predict", {"texts": "good"}, None, 422, "list of strings"),
    "text not a string": ("POST", "/predict", {"text": 3}, None, 422, "must be a string"),
    "a number among texts": ("POST", "/predict", {"texts": ["good", 2]}, None, 422, "texts[1]"),
    "empty text": ("POST", "/predict", {"texts": ["good", "  "]}, None, 422, "empty text"),
    # a body longer than the event loop checks itself (INLINE_BYTES): checked in the thread pool, refused the same way
    "empty text in a long body": ("POST", "/predict", {"texts": ["good " * 220] * 2 + [""]}, None, 422, "empty text"),
    "too many texts": ("POST", "/predict", {"texts": ["good"] * 9}, None, 422, "limit is 8"),
    "pairs do not match": ("POST", "/predict", {"texts": ["a", "b"], "text_pairs": ["c"]}, None, 422, "pair"),
    "body too large": ("POST", "/predict", {"text": "good " * 1000}, None, 413, "4096"),
    # no Content-Length: http.client sends the chunks with Transfer-Encoding: chunked
    "chunked body too large": ("POST", "/predict", lambda: chunks(json.dumps({"text": "good " * 1000}).encode()),
                               JSON, 413, "4096"),
    "wrong content type": ("POST", "/predict", b'{"text": "good"}', {"Content-Type": "text/plain"}, 415,
                           "application/json"),
    "no content type": ("POST", "/predict", b'{"text": "good"}', {}, 415, "application/json"),
    "wrong method": ("GET", "/predict", None, None, 405, "GET /predict"),
    "no such route": ("GET", "/predict/../../etc/passwd", None, None, 404, "Not Found"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_request_gets_a_4xx_with_a_one_line_json_error_and_the_server_goes_on(main_server, case):
    method, path, body, headers, status, words = BAD[case]
    body = body() if callable(body) else body
    got, answer = main_server.request(method, path, body, headers={**AUTH, **(headers or {})})
    assert got == status, answer
    assert isinstance(answer, dict) and list(answer) == ["error"], answer
    assert words in answer["error"] and "\n" not in answer["error"], answer
    assert main_server.predict({"text": "good film"})[0] == 200


def test_the_token_guards_every_route_but_health(main_server):
    for method, path in (("POST", "/predict"), ("GET", "/metrics"), ("GET", "/docs"), ("GET", "/openapi.json"),
                         ("GET", "/nowhere")):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            status, body = main_server.request(method, path, {"text": "good"} if method == "POST" else None,
                                               headers=headers)
            assert status == 401 and "token" in body["error"], (method, path, headers, body)
    assert main_server.request("GET", "/health")[0] == 200  # a probe carries no token
    assert main_server.predict({"text": "good"})[0] == 200
    status, page = main_server.request("GET", "/docs", headers=AUTH)
    assert status == 200 and "swagger" in page.lower()  # the OpenAPI page stays on
    status, schema = main_server.request("GET", "/openapi.json", headers=AUTH)
    assert status == 200 and "texts" in json.dumps(schema["paths"]["/predict"])
    metrics = main_server.metrics()
    assert 'route="/predict",status="401"' in metrics
    assert metric(metrics, "pretune_serve_requests_total", route="/health", status="503") >= 1  # while loading


def test_a_client_that_leaves_does_not_break_the_batch_of_the_others(main_server, expected):
    """Two clients send a request and close at once, among six that wait for their answers. The six get their own
    rows, and each request is accounted for once: a departure the server noticed before the batch ran is a 499
    (its texts skipped: test_batching covers that path deterministically), one it noticed later was answered into
    a closed socket, a 200. Which of the two depends on the timing of the close; nothing else may happen."""
    def counts():
        text = main_server.metrics()
        return {status: metric(text, "pretune_serve_requests_total", route="/predict", status=status)
                for status in ("200", "499", "500")}

    before = counts()
    body = json.dumps({"text": SHORT[0]}).encode()

    def leave(_):
        with socket.create_connection(("127.0.0.1", main_server.port)) as s:
            s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      + f"Authorization: Bearer {TOKEN}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        return None  # closed before the 50 ms batch window ends

    answers = concurrently(lambda t: leave(t) if t is None else main_server.predict({"text": t}),
                           [None, *SHORT[:6], None], 8)
    for text, answer in zip(SHORT[:6], answers[1:7]):
        assert answer[0] == 200 and same_row(answer[1]["result"], expected[text]), answer
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the server notes the departures as it gets to them
        now = counts()
        delta = {k: now[k] - before[k] for k in now}
        if delta["200"] + delta["499"] == 8:
            break
        time.sleep(0.1)
    assert delta["200"] + delta["499"] == 8 and delta["200"] >= 6 and delta["500"] == 0, main_server.metrics()
    assert main_server.predict({"texts": SHORT[:3]})[0] == 200


def test_a_compress_folder_serves_its_recommended_variant(variant_server, compress_folder):
    import numpy as np

    from pretune.bench import load_runner
    from pretune.config import DataConfig
    from pretune.data import collate
    from pretune.tasks import get, load_unlabelled, spec_from_config
    from conftest import write_csv

    status, health = variant_server.request("GET", "/health")
    assert status == 200 and health["variant"] == "int8-dynamic-torch", health  # accepted and fastest
    assert health["format"] == "torch-int8-dynamic" and health["task"] == "classification"
    assert 'variant="int8-dynamic-torch"' in variant_server.metrics()
    # the rows are the variant's: its own runtime on the same texts
    runner, config, tok = load_runner(compress_folder / "int8-dynamic-torch", threads=1)
    spec = spec_from_config(config)
    path = write_csv(compress_folder / "texts.csv", [(t,) for t in SHORT[:4]], header=("text",))
    enc = load_unlabelled(str(path), DataConfig(max_length=64), spec, tok)
    rows = np.arange(len(enc))
    logits = runner.predict({k: v.numpy() for k, v in collate(enc, rows, tok.pad_token_id).items()})
    want = get("classification").rows(logits, enc, spec)
    status, body = variant_server.predict({"texts": SHORT[:4]})
    assert status == 200 and body["variant"] == "int8-dynamic-torch"
    assert all(same_row(g, w) for g, w in zip(body["results"], want)), (body, want)


def slow_upload(port: int, payload: dict) -> tuple[socket.socket, bytes]:
    """A /predict request whose client sent its headers and half its body: (the socket, the rest of the body).
    While its body is on its way the server holds the waiting texts for it (up to --max-wait-ms)."""
    body = json.dumps(payload).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body[:5])
    return sock, body[5:]


def test_sigterm_finishes_the_requests_in_flight_and_exits_0(variant_server):
    """The variant server holds texts up to 1.5 s for the requests on their way: a slowly uploading client keeps
    four requests' texts in the batch queue, and SIGTERM comes while they wait there."""
    sock, rest = slow_upload(variant_server.port, {"text": SHORT[0]})
    with ThreadPoolExecutor(4) as pool:
        time.sleep(0.2)  # the slow request is being read
        pending = [pool.submit(variant_server.predict, {"texts": [t, t + " film"]}) for t in SHORT[:4]]
        deadline = time.monotonic() + 20
        while metric(variant_server.metrics(), "pretune_serve_queue_depth") < 8:
            assert time.monotonic() < deadline and not any(p.done() for p in pending), variant_server.log
            time.sleep(0.02)
        t0 = time.monotonic()
        variant_server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        with pytest.raises(OSError):  # no new connections once SIGTERM came
            variant_server.request("GET", "/health", timeout=2)
        sock.sendall(rest)  # the slow client finishes its body after SIGTERM: it is answered too
        answers = [p.result(timeout=60) for p in pending]
        slow = sock.makefile("rb").read().decode()
        sock.close()
    assert all(status == 200 and len(body["results"]) == 2 for status, body in answers), answers
    assert slow.startswith("HTTP/1.1 200"), slow
    assert variant_server.proc.wait(60) == 0, variant_server.log
    assert time.monotonic() - t0 < 30
    assert "stopped" in variant_server.log and "Traceback" not in variant_server.log


def workers_of(pid: int) -> list[int]:
    """The processes multiprocessing spawned from ``pid`` to run code (not its resource tracker)."""
    out = []
    for proc in Path("/proc").iterdir():
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (proc / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid and b"spawn_main" in cmdline:
            out.append(int(proc.name))
    return out


@pytest.mark.slow
def test_two_workers_serve_one_port_and_all_stop_on_sigterm(workers_server):
    assert len(workers_of(workers_server.proc.pid)) == 2, workers_server.log
    answers = concurrently(lambda t: workers_server.predict({"texts": [t, "bad plot"]}), SHORT[:8], 8)
    assert all(status == 200 and len(body["results"]) == 2 for status, body in answers), answers
    assert 'variant="model"' in workers_server.metrics()
    assert workers_server.stop() == 0, workers_server.log
    assert "Traceback" not in workers_server.log
