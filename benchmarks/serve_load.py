"""Benchmark of issue 19, item 6: pretune serve under load, against a plain FastAPI endpoint on the fp32 model.

    python benchmarks/serve_load.py --model runs/sst2                    # a run folder: its recommended variant
    python benchmarks/serve_load.py --model runs/first/model --duration 30 --concurrency 1,8,32,128

Two servers run side by side on loopback, each in its own process with the same --threads:
  pretune   ``pretune serve MODEL`` (dynamic batching, the recommended variant of a run or compress folder)
  baseline  a plain FastAPI endpoint (this file, --baseline-server) that runs the fp32 ``transformers`` model of
            the same run one request at a time: ``torch.inference_mode``, a lock around the model, tokenized to
            the same --max-length (a sync route: the event loop keeps accepting while the model works)
For each concurrency level, asyncio clients (one process, each a keep-alive HTTP/1.1 connection on asyncio
streams) send SST-2 dev sentences, each client one request at a time, for --duration seconds after --warmup
seconds; the two servers are measured one after the other, their order alternating between levels (the machines
are shared: compare the ratios). Reported per server and level: requests/s, latency p50/p95/p99, errors (a
non-200 answer or a failed connection) and lost requests (sent, never answered within --grace seconds of the
end). Both servers' labels are compared on 200 sentences first (agreement: the variant's int8 or pruning error,
or 100% for the same model). Then the one-client gap: --gap-rounds alternating rounds of the served folder's
batch-1 p50 by ``pretune bench`` (the model alone, in its own process) and --gap-seconds of one client of pretune
serve; the gap is the median over rounds of served p50 minus bench p50.
Results: OUTPUT/serve_load.json and OUTPUT/serve_load.md (the tables and the command).

No ``from __future__ import annotations``: FastAPI reads the baseline route's annotation (a class made inside
``baseline_server``).
"""

import argparse
import asyncio
import csv
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "sst2" / "dev.tsv"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="what pretune serves: a run, compress, model or variant folder")
    p.add_argument("--baseline-model", help="the fp32 model folder of the plain endpoint (default: the source "
                   "model of --model's run or compress folder, or --model itself)")
    p.add_argument("--data", default=str(DATA), help="SST-2 dev.tsv (sentence, label; read with QUOTE_NONE)")
    p.add_argument("--concurrency", default="1,8,32,128", help="comma-separated client counts")
    p.add_argument("--duration", type=float, default=30.0, help="measured seconds per server and level")
    p.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds before each measurement")
    p.add_argument("--grace", type=float, default=30.0, help="seconds answers may take after the end")
    p.add_argument("--threads", type=int, default=2, help="model threads of each server")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--max-batch-size", type=int, default=32, help="pretune serve --max-batch-size")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="pretune serve --max-wait-ms")
    p.add_argument("--gap-rounds", type=int, default=5, help="alternating rounds of the model alone (pretune bench) "
                   "and one client of pretune serve, for the one-client gap")
    p.add_argument("--gap-seconds", type=float, default=5.0, help="seconds of one client per gap round")
    p.add_argument("--output", default="bench-out/serve_load")
    p.add_argument("--baseline-server", metavar="MODEL", help=argparse.SUPPRESS)  # internal: run the baseline
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ------------------------------------------------------------------ the baseline server (its own process)


def baseline_server(args) -> None:
    """A plain FastAPI endpoint: the fp32 model, one request at a time."""
    import threading

    import torch
    import uvicorn
    from fastapi import FastAPI
    from pydantic import BaseModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.set_num_threads(args.threads)
    model = AutoModelForSequenceClassification.from_pretrained(args.baseline_server).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.baseline_server)
    labels = model.config.id2label
    lock = threading.Lock()
    app = FastAPI()

    class Body(BaseModel):
        text: str

    @app.get("/health")
    def health():
        return {"status": "ok"}

    @app.post("/predict")
    def predict(body: Body):
        enc = tokenizer(body.text, truncation=True, max_length=args.max_length, return_tensors="pt")
        with lock, torch.inference_mode():
            probs = model(**enc).logits.float().softmax(-1)[0]
        return {"result": {"label": labels[int(probs.argmax())],
                           "probabilities": {labels[i]: round(float(p), 6) for i, p in enumerate(probs)}}}

    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


# ------------------------------------------------------------------ the driver


def sentences(path: str) -> list[str]:
    """The sentences of a GLUE SST-2 TSV (its quotes are text: QUOTE_NONE; a space ends every sentence)."""
    with open(path, encoding="utf-8", newline="") as f:
        return [row["sentence"].strip() for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]


def source_of(model: str) -> str:
    """The fp32 model behind a run or compress folder (the source the variants were made from)."""
    from pretune.compress.formats import locate

    p = Path(model)
    for results in (p / "compress" / "results.json", p / "results.json"):
        if results.is_file():
            source = json.loads(results.read_text()).get("source")
            if source and (Path(source) / "config.json").is_file():
                return source
    located = locate(model)
    if located.format != "hf":
        raise SystemExit(f"{model}: a {located.format} variant; give the fp32 model with --baseline-model")
    return str(located.folder)


def own_latency(model: str, data: str, threads: int, output: Path) -> float:
    """The served folder's batch-1 p50 (ms) by ``pretune bench`` in its own process (the model alone, no HTTP),
    measured now, beside the servers, on the same sentences."""
    out = output / "own-bench"
    cmd = [sys.executable, "-m", "pretune", "bench", model, "--data", data, "--text", "sentence", "--threads",
           str(threads), "--runs", "500", "--max-eval-samples", "200", "--output", str(out)]
    subprocess.run(cmd, env=child_env(), check=True, stdout=subprocess.DEVNULL)
    return json.loads((out / "bench.json").read_text())["latency_ms"]["p50"]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env() -> dict[str, str]:
    """The environment of the servers and the bench: this checkout's pretune, offline, no tokenizer threads."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def start(cmd: list[str], port: int, name: str) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, env=child_env(), stdout=subprocess.DEVNULL, stderr=sys.stderr)
    import httpx

    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name} server exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"{name} server not ready in 600 s")


class Connection:
    """One keep-alive HTTP/1.1 connection on asyncio streams, for the load: httpx costs about a millisecond of
    Python per request, on the same cores as the servers, which is what the one-client level would then measure.
    It sends a POST with a JSON body and reads the status and the ``Content-Length`` body of the answer (uvicorn
    always sends one); a dropped connection is opened again by the next request."""

    def __init__(self, url: str):
        host, port = url.removeprefix("http://").split(":")
        self.host, self.port = host, int(port)
        self.reader: Optional[asyncio.StreamReader] = None
        self.writer: Optional[asyncio.StreamWriter] = None

    async def post(self, path: str, payload: dict) -> tuple[int, bytes]:
        body = json.dumps(payload).encode()
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        try:
            self.writer.write(b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                              b"Content-Length: %d\r\n\r\n%s" % (path.encode(), self.host.encode(), len(body), body))
            status = int((await self.reader.readuntil(b"\r\n")).split(b" ", 2)[1])
            length, close = 0, False
            while (line := await self.reader.readuntil(b"\r\n")) != b"\r\n":
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and value.strip().lower() == b"close":
                    close = True
            answer = await self.reader.readexactly(length)
        except BaseException:
            self.close()
            raise
        if close:
            self.close()
        return status, answer

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def load(url: str, texts: list[str], clients: int, warmup: float, duration: float, grace: float) -> dict:
    """``clients`` loops sending one sentence at a time for warmup + duration seconds; the measured ones."""
    latencies: list[float] = []
    counts = {"ok": 0, "errors": 0, "lost": 0}
    loop = asyncio.get_running_loop()
    t_start = loop.time()
    t_measure, t_end = t_start + warmup, t_start + warmup + duration

    async def client(i: int, connection: Connection) -> None:
        k = i
        while loop.time() < t_end:
            text = texts[k % len(texts)]
            k += clients
            t0 = loop.time()
            measured = t0 >= t_measure
            try:
                status, _ = await connection.post("/predict", {"text": text})
                ok = status == 200
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError):
                ok = False  # refused, reset or garbled: an error
            if measured:
                counts["ok" if ok else "errors"] += 1
                if ok:
                    latencies.append(loop.time() - t0)

    connections = [Connection(url) for _ in range(clients)]
    tasks = [asyncio.ensure_future(client(i, c)) for i, c in enumerate(connections)]
    done, pending = await asyncio.wait(tasks, timeout=warmup + duration + grace)
    for task in pending:  # still waiting for an answer after the grace period: lost
        task.cancel()
        counts["lost"] += 1
    for c in connections:
        c.close()
    import numpy as np

    lat = np.asarray(latencies) * 1000 if latencies else np.zeros(1)
    return {"clients": clients, "requests_per_s": counts["ok"] / duration, "answered": counts["ok"],
            "errors": counts["errors"], "lost": counts["lost"],
            **{f"p{q}_ms": float(np.percentile(lat, q)) for q in (50, 95, 99)}}


async def agreement(urls: dict[str, str], texts: list[str]) -> float:
    """The share of ``texts`` both servers give the same label."""
    import httpx

    async with httpx.AsyncClient(timeout=120) as http:
        labels = {}
        for name, url in urls.items():
            answers = [await http.post(f"{url}/predict", json={"text": t}) for t in texts]
            labels[name] = [a.json()["result"]["label"] for a in answers]
    a, b = labels.values()
    return sum(x == y for x, y in zip(a, b)) / len(texts)


def table(rows: list[dict]) -> str:
    out = ["| clients | server | requests/s | vs baseline | p50 ms | p95 ms | p99 ms | errors | lost |",
           "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['clients']} | {r['server']} | {r['requests_per_s']:.1f} | {r.get('ratio', 1.0):.2f}x | "
                   f"{r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']} | {r['lost']} |")
    return "\n".join(out)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.baseline_server:
        baseline_server(args)
        return 0
    if not args.model:
        raise SystemExit("--model is required: a pretune run, compress or model folder")
    command = shlex.join([sys.executable, *sys.argv])
    baseline = args.baseline_model or source_of(args.model)
    texts = sentences(args.data)
    ports = {"pretune": free_port(), "baseline": free_port()}
    servers = {
        "pretune": start([sys.executable, "-m", "pretune", "serve", args.model, "--port", str(ports["pretune"]),
                          "--threads", str(args.threads), "--max-length", str(args.max_length),
                          "--max-batch-size", str(args.max_batch_size), "--max-wait-ms", str(args.max_wait_ms)],
                         ports["pretune"], "pretune"),
        "baseline": start([sys.executable, __file__, "--baseline-server", baseline, "--port", str(ports["baseline"]),
                           "--threads", str(args.threads), "--max-length", str(args.max_length)],
                          ports["baseline"], "baseline"),
    }
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    rows, gaps = [], []
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    try:
        import httpx

        variant = httpx.get(f"{urls['pretune']}/health").json().get("variant")
        agree = asyncio.run(agreement(urls, texts[:200]))
        for n, clients in enumerate(int(c) for c in args.concurrency.split(",")):
            order = ["pretune", "baseline"] if n % 2 == 0 else ["baseline", "pretune"]
            level = {}
            for name in order:
                level[name] = {"server": name, **asyncio.run(load(urls[name], texts, clients, args.warmup,
                                                                  args.duration, args.grace))}
            level["pretune"]["ratio"] = level["pretune"]["requests_per_s"] / max(level["baseline"]["requests_per_s"],
                                                                                 1e-9)
            rows += [level["pretune"], level["baseline"]]
            print("\n".join(table(rows[-2:]).splitlines()[2:]), flush=True)
        for r in range(args.gap_rounds):  # the model alone, then one client of pretune serve, side by side
            alone = own_latency(args.model, args.data, args.threads, out)
            served = asyncio.run(load(urls["pretune"], texts, 1, 1.0, args.gap_seconds, args.grace))
            gaps.append({"round": r + 1, "bench_p50_ms": alone, "served_p50_ms": served["p50_ms"],
                         "gap_ms": served["p50_ms"] - alone})
            print(f"one-client round {r + 1}: bench p50 {alone:.2f} ms, served p50 {served['p50_ms']:.2f} ms, "
                  f"{served['p50_ms'] - alone:+.2f} ms", flush=True)
    finally:
        for proc in servers.values():
            proc.send_signal(signal.SIGTERM)
        codes = {name: proc.wait(120) for name, proc in servers.items()}
    head = (f"pretune serve {args.model} (variant {variant}) against a plain FastAPI endpoint on {baseline} (fp32, "
            f"one request at a time); {args.threads} threads each, SST-2 dev sentences, {args.duration:.0f} s per "
            f"level after {args.warmup:.0f} s warm-up, clients in the same machine; labels agree on "
            f"{agree:.1%} of 200 sentences; pretune serve exited with {codes['pretune']} after SIGTERM; load average "
            f"{os.getloadavg()[0]:.1f} at the end")
    report = f"{head}\n\n{table(rows)}\n"
    if gaps:
        median = statistics.median(g["gap_ms"] for g in gaps)
        report += (f"\nOne client against the model alone, in {len(gaps)} alternating rounds (pretune bench's batch-1 "
                   f"p50 in its own process, then {args.gap_seconds:.0f} s of one client): median gap "
                   f"**{median:+.2f} ms**\n\n| round | bench p50 ms | served p50 ms | gap ms |\n|---:|---:|---:|---:|\n"
                   + "".join(f"| {g['round']} | {g['bench_p50_ms']:.2f} | {g['served_p50_ms']:.2f} | "
                             f"{g['gap_ms']:+.2f} |\n" for g in gaps))
    report += f"\n```\n{command}\n```\n"
    (out / "serve_load.json").write_text(json.dumps({"command": command, "model": args.model, "variant": variant,
                                                     "one_client_rounds": gaps, "baseline": baseline,
                                                     "agreement": agree, "rows": rows,
                                                     "threads": args.threads, "pretune_exit": codes["pretune"]},
                                                    indent=2) + "\n")
    (out / "serve_load.md").write_text(report)
    print("\n" + report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
