"""One job in a fresh Python process, its answer (or its error, with its class) sent back.

Used where a measurement must be a process's own: the bench harness (peak memory, allocator and thread
state per variant) and the estimate probe (peak memory of one trial). The parent calls ``call(job,
payload)``; the child is ``python -m pretune.cli.worker JOB`` reading the payload as JSON on stdin, which
runs ``serve``. The child's last stdout line is the answer: ``{"result": ...}``, or ``{"error": message,
"type": class name}`` for a ``PretuneError``, which ``call`` raises again as the same class.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from typing import Any, Callable, Optional

from .errors import PretuneError, WorkerFailed, by_name

# job name -> "module:function"; the function takes the payload dict and returns a JSON-able answer.
JOBS = {
    "bench": "pretune.bench.harness:measure_job",
    "estimate": "pretune.jobs.estimate:probe_job",
}


def _function(job: str) -> Callable[[dict], Any]:
    if job not in JOBS:
        raise WorkerFailed(f"unknown worker job {job!r}; known: {', '.join(JOBS)}")
    module, _, name = JOBS[job].partition(":")
    return getattr(importlib.import_module(module), name)


def call(job: str, payload: dict, *, env: Optional[dict[str, str]] = None, what: str = "") -> Any:
    """Run ``job`` on ``payload`` in a fresh interpreter and return its answer.

    Args:
        job: a name in ``JOBS``.
        payload: JSON-able arguments for the job's function.
        env: extra environment variables for the child (e.g. thread counts).
        what: a few words for the message if the child dies (e.g. "benchmark of runs/x/model").

    Raises:
        PretuneError: the same class and message the job raised in the child.
        WorkerFailed: the child died without an answer (a crash, a kill, a bug's traceback).
    """
    child_env = dict(os.environ, TOKENIZERS_PARALLELISM="false", PYTHONWARNINGS="ignore", **(env or {}))
    proc = subprocess.run([sys.executable, "-m", "pretune.cli.worker", job], input=json.dumps(payload),
                          env=child_env, capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        answer = None
    if isinstance(answer, dict) and "error" in answer:
        raise by_name(answer.get("type", ""))(answer["error"])
    if proc.returncode != 0 or not isinstance(answer, dict) or "result" not in answer:
        tail = [ln for ln in (proc.stdout + proc.stderr).strip().splitlines() if ln.strip()]
        raise WorkerFailed(f"{what or job} failed in its worker process (exit {proc.returncode}): "
                           f"{tail[-1] if tail else 'no output'}")
    return answer["result"]


def serve(job: str, payload: dict) -> tuple[int, str]:
    """Run ``job`` here; (exit status, the answer line). Called by the worker entry point only."""
    try:
        result = _function(job)(payload)
    except PretuneError as e:
        return 2, json.dumps({"error": str(e), "type": type(e).__name__})
    return 0, json.dumps({"result": result})
