"""The benchmark harness: one measurement protocol for every model folder and runtime.

For a folder and a labelled eval file it measures
- task metrics on the eval set (the same metrics ``pretune fit`` reports);
- latency at batch 1: rows drawn once (seeded) from the eval set, pre-padded so only the model
  is timed, ``warmup`` untimed calls, then ``runs`` timed calls; p50, p95 and mean in ms;
- throughput: samples/s of the whole eval pass in length-sorted batches of ``batch_size``;
- size on disk of the weight files, parameter count;
- what the task measures besides (``Task.measure``): a language model's prompt and generated tokens/s and time to
  first token at batch 1, under ``generation``;
- peak memory: the process's peak resident set (``VmHWM``) and its growth over the
  pre-load baseline. It is only meaningful in a fresh process, which ``isolate=True`` gives.
Threads are fixed for every runtime, so numbers compare.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from .. import files
from ..errors import PretuneError

log = logging.getLogger("pretune")


@dataclass
class BenchConfig:
    threads: int = 2
    batch_size: int = 32  # throughput batch
    latency_rows: int = 64  # distinct eval rows used for batch-1 latency
    warmup: int = 10
    runs: int = 200  # timed batch-1 calls
    max_length: int = 128
    max_eval_samples: Optional[int] = None
    seed: int = 0
    isolate: bool = False  # measure in a fresh subprocess (honest peak memory)
    latency_only: bool = False  # batch-1 latency alone: no eval pass, throughput or memory
    # The PyTorch runtime's device and precision (as train.device and train.precision); ONNX Runtime runs on
    # the CPU in the precision of its graph. The deployment baseline is the CPU in fp32.
    device: str = "cpu"
    precision: str = "fp32"
    prompts: int = 4  # a task's own measurement (Task.measure): eval prompts timed at batch 1
    max_new_tokens: int = 16  # ... and the tokens generated for each


def _rss_mb(field: str) -> Optional[float]:
    """``VmRSS`` / ``VmHWM`` of this process in MiB, from /proc (Linux); None elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _pad_batch(enc, rows, pad_id: int) -> dict[str, np.ndarray]:
    from ..data import collate

    batch = collate(enc, rows, pad_id)
    batch.pop("labels", None)
    return {k: v.numpy() for k, v in batch.items()}


def _task_batch(task, enc, rows, pad_id: int) -> dict[str, np.ndarray]:
    """The task's batch; the labels stay only for a task whose outputs come from its own ``forward``."""
    if task is None:
        return _pad_batch(enc, rows, pad_id)
    batch = task.collate(enc, rows, pad_id)
    if task.forward is None:
        batch.pop("labels", None)
    return {k: v.numpy() for k, v in batch.items()}


def _eval_pass(runner, enc, pad_id: int, batch_size: int, task=None) -> tuple[np.ndarray, float]:
    """The task's outputs (logits, or what its ``forward`` gives; logits without a task) in row order and the
    seconds the model took."""
    from ..data import eval_batches, place_outputs

    forward = task.forward if task is not None else None
    batches = eval_batches(enc.lengths, batch_size)
    runner.predict(_task_batch(task, enc, batches[0], pad_id), forward)  # warm-up: first call allocates
    out, seconds = None, 0.0
    for rows in batches:
        feed = _task_batch(task, enc, rows, pad_id)
        t0 = time.perf_counter()
        logits = runner.predict(feed, forward)
        seconds += time.perf_counter() - t0
        out = place_outputs(out, enc, rows, logits)
    return out, seconds


def _latency(runner, enc, pad_id: int, cfg: BenchConfig) -> dict:
    rng = np.random.default_rng(cfg.seed)
    rows = rng.choice(len(enc), size=min(cfg.latency_rows, len(enc)), replace=False)
    feeds = [_pad_batch(enc, [r], pad_id) for r in rows]
    for i in range(cfg.warmup):
        runner.predict(feeds[i % len(feeds)])
    times = np.empty(cfg.runs)
    for i in range(cfg.runs):
        feed = feeds[i % len(feeds)]
        t0 = time.perf_counter()
        runner.predict(feed)
        times[i] = (time.perf_counter() - t0) * 1000
    return {"batch_size": 1, "p50": float(np.percentile(times, 50)), "p95": float(np.percentile(times, 95)),
            "mean": float(times.mean()), "runs": cfg.runs, "warmup": cfg.warmup, "rows": len(rows),
            "mean_tokens": float(enc.lengths[rows].mean())}


def load_eval(path: str, tokenizer, config, text: str, text_pair: Optional[str], label: str, max_length: int,
              max_samples: Optional[int] = None, seed: int = 0):
    """Tokenize a labelled eval file against the labels the model was trained for; (Encoded, TaskSpec)."""
    from ..config import DataConfig
    from ..data import subsample
    from ..models import spec_of
    from ..tasks import load_labelled

    spec = spec_of(config)
    cfg = DataConfig(text=text, text_pair=text_pair, label=label, max_length=max_length)
    enc = load_labelled(path, cfg, spec, tokenizer)
    if len(enc) == 0:
        raise PretuneError(f"{path}: no rows to evaluate")
    if max_samples:
        enc = enc.select_inputs(subsample(enc.n_inputs, max_samples, seed))
    return enc, spec


def measure(model_dir: str | os.PathLike, data: str, *, text: str = "text", text_pair: Optional[str] = None,
            label: str = "label", cfg: Optional[BenchConfig] = None) -> dict:
    """Benchmark ``model_dir`` in this process; see ``bench`` for the arguments and result."""
    from .. import tasks
    from ..compress.formats import locate, read_manifest
    from ..runtime import resolve
    from .runtimes import load_runner, weights_size_bytes

    cfg = cfg or BenchConfig()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    start_rss = _rss_mb("VmRSS")
    runner, config, tokenizer = load_runner(model_dir, cfg.threads, resolve(cfg.device, cfg.precision))
    enc, spec = load_eval(data, tokenizer, config, text, text_pair, label, cfg.max_length,
                          cfg.max_eval_samples, cfg.seed)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    if cfg.latency_only:
        return {"model": str(model_dir), "backend": runner.backend, "threads": cfg.threads,
                "latency_ms": _latency(runner, enc, pad_id, cfg), "environment": _environment()}
    task = tasks.get(spec.task)
    logits, seconds = _eval_pass(runner, enc, pad_id, cfg.batch_size, task)
    metrics = task.metrics(logits, enc, spec)
    latency = _latency(runner, enc, pad_id, cfg)
    extra = {task.measure_key: task.measure(runner, enc, cfg)} if task.measure is not None else {}
    peak = _rss_mb("VmHWM")
    folder = locate(model_dir).folder  # a run folder: the variant that was loaded
    return {
        "model": str(folder), "format": read_manifest(folder).get("format"), "backend": runner.backend,
        "threads": cfg.threads,
        "eval": {"file": str(data), "rows": enc.n_inputs, "metric": task.default_metric, "metrics": metrics,
                 "gate_metric": task.gate_metric or task.default_metric},
        "latency_ms": latency, **extra,
        "throughput": {"batch_size": cfg.batch_size, "samples_per_s": len(enc) / max(seconds, 1e-9),
                       "order": "length-sorted batches"},
        "size_mb": weights_size_bytes(folder) / 2**20,
        "folder_mb": sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20,
        "parameters": int(runner.num_parameters()),
        "memory": {"peak_rss_mb": peak, "start_rss_mb": start_rss,
                   "model_rss_mb": None if peak is None or start_rss is None else peak - start_rss,
                   "isolated": cfg.isolate},
        "environment": _environment(),
    }


def _environment() -> dict:
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "cpu": platform.processor() or
           platform.machine(), "cpu_count": os.cpu_count(),
           # other processes competing for the cores make latencies meaningless; keep the evidence
           "loadavg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
    try:
        import onnxruntime
        env["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return env


def bench(model_dir: str | os.PathLike, data: str, *, text: str = "text", text_pair: Optional[str] = None,
          label: str = "label", output: str | os.PathLike | None = None,
          cfg: Optional[BenchConfig] = None) -> dict:
    """Benchmark a model or variant folder on a labelled eval file.

    Args:
        model_dir: a fine-tuned Hugging Face folder, a ``pretune compress`` variant folder, or a run or compress
            folder (its recommended variant: ``pretune.compress.formats.locate``).
        data: labelled CSV/TSV/JSONL/Parquet file.
        text, text_pair, label: column names.
        output: folder for ``bench.json`` (written atomically); None writes nothing.
        cfg: threads, batch size, latency repeats, ``isolate`` (fresh subprocess).

    Returns:
        The result dict: eval metrics, latency_ms (p50/p95/mean at batch 1), throughput,
        size_mb, parameters, memory, environment.

    Raises:
        ModelError: not a model folder. DataError: bad eval file. PretuneError: the worker failed.
    """
    from ..compress.formats import locate, read_manifest
    from ..models import check_model_folder

    cfg = cfg or BenchConfig()
    folder = locate(model_dir).folder  # a run or compress folder: its recommended variant
    if not folder.is_dir() or read_manifest(folder).get("format") == "hf":
        check_model_folder(folder)  # one-line error before any subprocess starts
    if cfg.isolate:
        result = _measure_in_subprocess(folder, data, text, text_pair, label, cfg)
    else:
        result = measure(folder, data, text=text, text_pair=text_pair, label=label, cfg=cfg)
    if output is not None:
        files.write_json(Path(output) / files.BENCH, result)
    return result


def latency_rounds(folders: dict[str, str | os.PathLike], data: str, *, rounds: int = 3, text: str = "text",
                   text_pair: Optional[str] = None, label: str = "label", cfg: Optional[BenchConfig] = None,
                   deadline: Optional[float] = None) -> dict[str, dict]:
    """Batch-1 latency of several folders, measured in alternating rounds; name -> latency dict.

    On a shared machine the load changes between one measurement and the next minute's, so two
    folders timed minutes apart do not compare. Here every round times each folder once (the order
    rotates from round to round), and each folder's p50 and p95 are the medians over the rounds: a
    burst of load hits one round of every folder, not every round of one. With ``cfg.isolate`` each
    timing runs in a fresh process.

    Args:
        folders: name -> model or variant folder (the source among them, so its ratios are like for like).
        rounds: timings per folder (>= 1).
        cfg: threads, timed calls per round (``runs``), warm-up, rows, isolation.
        deadline: a ``time.time()``: a round starts only if the one before took less than the time left (the
            first always runs); the result then holds the rounds that ran.
    """
    from dataclasses import replace

    if rounds < 1:
        raise PretuneError(f"latency rounds must be at least 1, got {rounds}")
    cfg = replace(cfg or BenchConfig(), latency_only=True)
    names = list(folders)
    per_round: dict[str, list[dict]] = {n: [] for n in names}
    took = 0.0
    for r in range(rounds):
        if r and deadline is not None and time.time() + took > deadline:
            log.warning("latency: %d of %d rounds, the time budget leaves no room for another (%.0f s each)", r,
                        rounds, took)
            break
        started = time.time()
        for name in names[r % len(names):] + names[:r % len(names)]:
            result = bench(folders[name], data, text=text, text_pair=text_pair, label=label, cfg=cfg)
            load = result.get("environment", {}).get("loadavg_1m")
            per_round[name].append({**result["latency_ms"], "loadavg_1m": load})
        took = time.time() - started
    out = {}
    for name, timings in per_round.items():
        out[name] = {**timings[0],
                     "p50": float(np.median([t["p50"] for t in timings])),
                     "p95": float(np.median([t["p95"] for t in timings])),
                     "mean": float(np.mean([t["mean"] for t in timings])),
                     "runs": sum(t["runs"] for t in timings),
                     "rounds": len(timings), "round_p50s": [t["p50"] for t in timings],
                     "round_loadavg_1m": [t["loadavg_1m"] for t in timings]}
        out[name].pop("loadavg_1m", None)
    return out


def _measure_in_subprocess(folder: Path, data: str, text, text_pair, label, cfg: BenchConfig) -> dict:
    from ..workers import call

    payload = {"model_dir": str(folder), "data": str(data), "text": text, "text_pair": text_pair, "label": label,
               "cfg": asdict(cfg)}
    threads = {"OMP_NUM_THREADS": str(cfg.threads), "MKL_NUM_THREADS": str(cfg.threads)}
    return call("bench", payload, env=threads, what=f"benchmark of {folder}")


def measure_job(payload: dict) -> dict:
    """The ``bench`` worker job (``pretune.workers``): ``measure`` on a JSON payload."""
    args = dict(payload)
    cfg = BenchConfig(**args.pop("cfg"))
    return measure(args.pop("model_dir"), args.pop("data"), cfg=cfg, **args)
