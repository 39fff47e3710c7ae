"""Tiny model folders to serve, and a real ``pretune serve`` process driven over HTTP (stdlib http.client only)."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import pretune
from conftest import WORDS

TREE = str(Path(pretune.__file__).resolve().parents[1])
TOKEN = "test-token-1234"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


# ------------------------------------------------------------------ model folders


def tokenizer():
    from transformers import BertTokenizer

    return BertTokenizer(vocab={w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS)})


def save_model(folder: Path, head: str, task: str, labels: Optional[list[str]] = None, settings=None,
               seed: int = 0) -> Path:
    """A random 2-layer, 32-wide BERT with ``head`` (``transformers`` class name) saved as pretune fit saves it."""
    import torch
    import transformers

    labels = labels or []
    cfg = transformers.BertConfig(vocab_size=5 + len(WORDS), hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
                                  num_labels=len(labels) or 1, id2label=dict(enumerate(labels or ["LABEL_0"])),
                                  label2id={n: i for i, n in enumerate(labels or ["LABEL_0"])})
    cfg.pretune_task = task
    if settings:
        cfg.pretune_settings = settings
    if task == "regression":
        cfg.problem_type = "regression"
    torch.manual_seed(seed)
    getattr(transformers, head)(cfg).eval().save_pretrained(str(folder))
    tokenizer().save_pretrained(str(folder))
    return folder


def save_compress_folder(root: Path, source: Path) -> Path:
    """A ``pretune compress`` output folder over ``source``: an accepted torch int8 variant (the recommended one), a
    slower accepted copy of the source, and a faster rejected variant."""
    import shutil

    from pretune.compress.formats import TORCH_INT8_BACKEND, read_manifest, save_torch_int8, write_manifest
    from pretune.models import load_finetuned

    model, tok, _ = load_finetuned(source)
    int8 = root / "int8-dynamic-torch"
    int8.mkdir(parents=True)
    save_torch_int8(TORCH_INT8_BACKEND(model, None, True), int8)
    tok.save_pretrained(str(int8))
    write_manifest(int8, **read_manifest(int8), method="int8-dynamic-torch", source=str(source))
    shutil.copytree(source, root / "prune-structured")
    shutil.copytree(source, root / "distill")

    def entry(name, status, p50):
        return {"name": name, "folder": str(root / name), "status": status, "bench": {"latency_ms": {"p50": p50}}}

    results = {"source": str(source), "variants": [entry("prune-structured", "accepted", 2.0),
                                                   entry("int8-dynamic-torch", "accepted", 1.0),
                                                   entry("distill", "rejected", 0.5)]}
    (root / "results.json").write_text(json.dumps(results))
    return root


# ------------------------------------------------------------------ a server process


class Server:
    """``python -m pretune serve PATH FLAGS...`` on a free port; its stderr is collected in ``lines``."""

    def __init__(self, path: Path, *flags: str, env: Optional[dict] = None):
        env = {**os.environ, "PYTHONPATH": TREE, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
               **(env or {})}
        self.proc = subprocess.Popen([sys.executable, "-m", "pretune", "serve", str(path), "--port", "0",
                                      "--threads", "1", *flags], env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.port: Optional[int] = None
        self._listening = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            m = re.search(r"listening on http://[^:]+:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                self._listening.set()
        self._listening.set()  # the process ended

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def wait_ready(self, timeout: float = 240) -> "Server":
        """Until GET /health answers 200 (the model loaded and warmed up)."""
        deadline = time.monotonic() + timeout
        self._listening.wait(timeout)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited with {self.proc.returncode}:\n{self.log}")
            if self.port is not None:
                try:
                    if self.request("GET", "/health")[0] == 200:
                        return self
                except OSError:
                    pass
            time.sleep(0.1)
        raise AssertionError(f"the server was not ready in {timeout} s:\n{self.log}")

    def request(self, method: str, path: str, body=None, headers: Optional[dict] = None,
                timeout: float = 60) -> tuple[int, object]:
        """(status, parsed JSON body or text); a dict ``body`` is sent as JSON."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            headers = dict(headers or {})
            if isinstance(body, (dict, list)):
                body = json.dumps(body).encode()
                headers.setdefault("Content-Type", "application/json")
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            raw = response.read().decode()
            kind = response.getheader("content-type") or ""
            return response.status, json.loads(raw) if kind.startswith("application/json") else raw
        finally:
            conn.close()

    def predict(self, payload, headers: Optional[dict] = None, **kwargs) -> tuple[int, object]:
        return self.request("POST", "/predict", payload, headers={**AUTH, **(headers or {})}, **kwargs)

    def metrics(self, headers: Optional[dict] = None) -> str:
        status, text = self.request("GET", "/metrics", headers=headers or AUTH)
        assert status == 200, text
        return text

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, then the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


def metric(text: str, name: str, **labels) -> float:
    """The value of one sample of a Prometheus text exposition (0 when absent)."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        m = re.match(r"^([a-z_]+)(\{(.*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if all(found.get(k) == str(v) for k, v in labels.items()):
            return float(m.group(4))
    return 0.0
