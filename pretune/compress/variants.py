"""``pretune compress``: source model -> one folder per method -> the same bench for each -> gate -> Pareto front.

    check inputs (config, model folder, data) before writing anything
    bench the source model (the baseline every variant is compared with)
    for each method: build its folder atomically, bench it; a failure is recorded, the rest go on
    time batch-1 latency again in alternating rounds (source and variants side by side)
    gate each variant against the source; Pareto front over accuracy, latency and size
    write results.json
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Optional

from .. import files, tasks
from ..bench import BenchConfig, bench
from ..bench.harness import latency_rounds
from ..config import CompressConfig, DataConfig
from ..errors import ConfigError, PretuneError
from ..files import atomic_path, write_json
from ..metrics import higher_is_better
from ..tasks import load_labelled
from .gate import gate, gate_metric, pareto_front
from .registry import CHAIN, METHODS, Context, folder_name, info, prefixes, resolve, steps

log = logging.getLogger("pretune")
ROUND_S_PER_FOLDER = 8.0  # a latency round's timing of one folder, as planned: a fresh process, warm-up, the calls


def check_config(cfg: CompressConfig) -> None:
    """Raise one ``ConfigError`` listing every out-of-range value."""
    errors = []

    def within(key: str, lo: float, hi: float, lo_open: bool = False, hi_open: bool = False) -> None:
        v = getattr(cfg, key)
        if v is None:
            return
        if (v < lo or (lo_open and v == lo)) or (v > hi or (hi_open and v == hi)):
            errors.append(f"compress.{key}: must be in {'(' if lo_open else '['}{lo}, {hi}"
                          f"{')' if hi_open else ']'}, got {v!r}")

    within("tolerance", 0, float("inf"))
    within("sparsity", 0, 1, hi_open=True)
    within("head_fraction", 0, 1, hi_open=True)
    within("ffn_fraction", 0, 1, hi_open=True)
    within("alpha", 0, 1)
    within("temperature", 0, float("inf"), lo_open=True)
    within("lr", 0, float("inf"), lo_open=True)
    within("hidden_weight", 0, float("inf"))
    for key in ("threads", "batch_size", "calibration_samples", "importance_batches", "bench_runs",
                "max_length", "distill_steps"):
        within(key, 1, float("inf"))
    within("recovery_steps", 0, float("inf"))
    within("latency_rounds", 0, float("inf"))
    if errors:
        raise ConfigError("invalid compress config: " + "; ".join(errors))


def find_model_folder(path: str | os.PathLike) -> Path:
    """Accept a model folder or a ``pretune fit`` run folder holding ``model/``."""
    p = Path(path)
    if not (p / "config.json").exists() and (p / files.MODEL / "config.json").exists():
        return p / files.MODEL
    return p


def _run_train_file(model_dir: Path) -> Optional[str]:
    """The training file recorded in the run folder that produced ``model_dir``, if any."""
    import yaml

    cfg_path = model_dir.parent / files.CONFIG
    try:
        train = yaml.safe_load(cfg_path.read_text())["data"]["train"]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return None
    return train if train and Path(train).is_file() else None


def _bench_cfg(cfg: CompressConfig) -> BenchConfig:
    return BenchConfig(threads=cfg.threads, runs=cfg.bench_runs, max_length=cfg.max_length, isolate=cfg.isolate,
                       seed=cfg.seed)


def compress(model_dir: str | os.PathLike, data: str, *, train: Optional[str] = None, text: str = "text",
             text_pair: Optional[str] = None, label: str = "label", output: str | os.PathLike = "runs/compress",
             cfg: Optional[CompressConfig] = None, methods: Optional[list[str]] = None,
             deadline: Optional[float] = None) -> dict:
    """Make, benchmark and gate compressed variants of a fine-tuned model.

    Args:
        model_dir: fine-tuned model folder (or the ``pretune fit`` run folder holding ``model/``).
        data: labelled held-out file: every variant and the source are measured on it.
        train: labelled training file for calibration, importance scores, recovery and distillation;
            default: the training file recorded in the run folder, if any.
        text, text_pair, label: column names (shared by both files).
        output: folder for one sub-folder per variant and ``results.json``.
        cfg: method settings, accuracy tolerance, threads; ``methods`` overrides ``cfg.methods``.
        deadline: a ``time.time()`` after which no further method starts; those left are recorded as
            ``skipped`` (a method already running finishes, so the overshoot is at most one method).

    Returns:
        The results dict (also written to ``OUTPUT/results.json``): source bench, one record per
        method with status accepted / rejected / failed, ratios, and the Pareto front.

    Raises:
        ConfigError, ModelError, DataError: bad settings, model folder or data (before any work).
    """
    from ..models import load_finetuned

    cfg = replace(cfg or CompressConfig(), methods=methods or (cfg.methods if cfg else None))
    check_config(cfg)
    resolve(cfg.methods)  # unknown names, before the model loads
    folder = find_model_folder(model_dir)
    model, tokenizer, spec = load_finetuned(folder)
    names = resolve(cfg.methods, tasks.get(spec.task))  # and the methods that cannot apply to its task
    dcfg = DataConfig(text=text, text_pair=text_pair, label=label, max_length=cfg.max_length)
    eval_set = load_labelled(data, dcfg, spec, tokenizer)
    train = train or _run_train_file(folder)
    train_set = load_labelled(train, dcfg, spec, tokenizer) if train else eval_set.select([])
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ctx = Context(folder, model, tokenizer, spec, train_set, eval_set, cfg, pad_id)

    out = files.check_output_dir(output).resolve()
    out.mkdir(parents=True, exist_ok=True)
    log.info("compress %s: %d methods, eval on %s (%d rows), training rows %s", folder, len(names), data,
             len(eval_set), f"from {train} ({len(train_set)})" if train else "none")
    started = time.time()
    source = bench(folder, data, text=text, text_pair=text_pair, label=label, cfg=_bench_cfg(cfg))
    write_json(out / files.SOURCE_BENCH, source)
    _log_bench("source (pytorch fp32)", source)
    took = [time.time() - started]  # seconds of each step so far: a method builds a variant and benches it
    variants: list[dict] = []
    for name in names:
        why = _no_time(deadline, took)
        if why:
            log.warning("%s: skipped: %s", name, why)
            variants.append({"name": name, "folder": str(out / folder_name(name)), "status": "skipped",
                             "reason": why})
            continue
        step_ctx = ctx
        if CHAIN in name:  # the last step starts from the chain's prefix, a variant built and gated before it
            base = next(v for v in variants if v["name"] == prefixes(name)[-1])
            why = _cannot_go_on(base, source, cfg.tolerance)
            if why:
                log.warning("%s: skipped: %s", name, why)
                variants.append({"name": name, "folder": str(out / folder_name(name)), "status": "skipped",
                                 "reason": why, "chain": steps(name)})
                continue
            step_ctx = _from_variant(ctx, Path(base["folder"]))
        started = time.time()
        variants.append(_run_method(name, step_ctx, out, data, text, text_pair, label, bool(train)))
        took.append(time.time() - started)
    cols = {"text": text, "text_pair": text_pair, "label": label}
    _retime_latency(source, variants, data, cols, cfg, out, deadline)
    results = {"source": str(folder), "data": str(data), "train": train,
               "columns": cols, "metric": gate_metric(source),
               "tolerance_points": cfg.tolerance, "config": asdict(cfg), "source_bench": source,
               "variants": variants}
    return _decide_and_write(results, out)


def _no_time(deadline: Optional[float], took: list[float]) -> Optional[str]:
    """Why the next method should not start before ``deadline`` (None: it may): the time left is less than the
    median of the steps so far (``took``: the source's bench, then each method's build and bench)."""
    if deadline is None:
        return None
    left, typical = deadline - time.time(), statistics.median(took) if took else 0.0
    if left <= 0:
        return "the time budget ran out before it started"
    if left < typical:
        return f"{left:.0f} s of the time budget left, and a method takes about {typical:.0f} s here"
    return None


def _decide_and_write(results: dict, out: Path) -> dict:
    """Gate every variant against the source, mark the Pareto front, write results.json."""
    source = results["source_bench"]
    for entry in results["variants"]:
        gate(entry, source, results["tolerance_points"])
    results["pareto_front"] = _front(source, results["variants"])
    for entry in results["variants"]:
        entry["pareto"] = entry["name"] in results["pareto_front"]
    write_json(out / files.RESULTS, results)
    return results


def rebench(output: str | os.PathLike, *, threads: Optional[int] = None, runs: Optional[int] = None,
            columns: Optional[dict] = None, latency_rounds: Optional[int] = None) -> dict:
    """Measure the source and every built variant of a compress run again, then re-gate.

    Latency on a shared machine depends on what else runs; this repeats the measurements (same
    harness, same data) when the machine is quieter, without rebuilding the variants.

    Args:
        output: a ``compress`` output folder holding ``results.json``.
        threads, runs, latency_rounds: override the saved thread count, timed calls and latency rounds.
        columns: ``{"text", "text_pair", "label"}`` when ``results.json`` does not record them.

    Returns:
        The updated results (also written back to ``results.json``).
    """
    out = Path(output).resolve()
    results = load_results(out)
    saved = CompressConfig(**results["config"])
    cfg = replace(saved, threads=threads or saved.threads, bench_runs=runs or saved.bench_runs,
                  latency_rounds=saved.latency_rounds if latency_rounds is None else latency_rounds)
    cols = columns or results.get("columns") or {"text": "text", "text_pair": None, "label": "label"}
    results["columns"] = cols
    results["source_bench"] = bench(results["source"], results["data"], **cols, cfg=_bench_cfg(cfg))
    write_json(out / files.SOURCE_BENCH, results["source_bench"])
    _log_bench("source (pytorch fp32)", results["source_bench"])
    for entry in results["variants"]:
        if "bench" in entry:
            entry["bench"] = bench(entry["folder"], results["data"], **cols, output=entry["folder"],
                                   cfg=_bench_cfg(cfg))
            entry["status"] = "measured"
            _log_bench(entry["name"], entry["bench"])
    _retime_latency(results["source_bench"], results["variants"], results["data"], cols, cfg, out)
    results["config"] = asdict(cfg)
    results["rebenched"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return _decide_and_write(results, out)


def _retime_latency(source: dict, variants: list[dict], data: str, cols: dict, cfg: CompressConfig,
                    out: Path, deadline: Optional[float] = None) -> None:
    """Replace every batch-1 latency by the median of ``cfg.latency_rounds`` alternating rounds (in place), as
    many rounds as ``deadline`` leaves time for (none: each latency stays its single timing).

    Each variant was first timed right after it was built, minutes apart from the source and from each
    other; on a shared machine those timings do not compare. The rounds time them side by side.
    """
    measured = [v for v in variants if "bench" in v]
    if not cfg.latency_rounds or not measured:
        return
    folders = {"source": source["model"], **{v["name"]: v["folder"] for v in measured}}
    if deadline is not None and deadline - time.time() < ROUND_S_PER_FOLDER * len(folders):
        log.warning("latency rounds skipped: %.0f s of the time budget left, a round over %d folders takes about "
                    "%.0f s; each latency is a single timing", max(deadline - time.time(), 0), len(folders),
                    ROUND_S_PER_FOLDER * len(folders))
        return
    log.info("batch-1 latency: %d rounds over the source and %d variants", cfg.latency_rounds, len(measured))
    timed = latency_rounds(folders, data, rounds=cfg.latency_rounds, **cols, cfg=_bench_cfg(cfg), deadline=deadline)
    source["latency_ms"] = timed["source"]
    write_json(out / files.SOURCE_BENCH, source)
    for v in measured:
        v["bench"]["latency_ms"] = timed[v["name"]]
        write_json(Path(v["folder"]) / files.BENCH, v["bench"])
    for name, lat in timed.items():
        log.info("  %-20s p50 %.2f ms (rounds: %s)", name, lat["p50"], ", ".join(f"{x:.2f}" for x in lat["round_p50s"]))


def _cannot_go_on(base: dict, source: dict, tolerance: float) -> Optional[str]:
    """Why a chain cannot go on from its prefix ``base`` (gated here against the source), or None."""
    if base.get("status") in ("failed", "skipped"):
        return f"its step {base['name']} {base['status']} ({base.get('error') or base.get('reason')})"
    gate(base, source, tolerance)
    if base["status"] == "rejected":
        return f"its step {base['name']} did not pass the accuracy gate ({base['reason']})"
    return None


def _from_variant(ctx: Context, folder: Path) -> Context:
    """``ctx`` with the model of a variant folder as the one to compress (a chain's next step starts there)."""
    from ..models import load_finetuned
    from .formats import load_torch_variant, read_manifest

    manifest = read_manifest(folder)
    model = load_finetuned(folder)[0] if manifest["format"] == "hf" else load_torch_variant(folder, manifest)
    return replace(ctx, source=folder, model=model.eval())


def _run_method(name: str, ctx: Context, out: Path, data: str, text, text_pair, label, has_train: bool) -> dict:
    """Build and bench one variant (a method, or a chain's last step on ``ctx``, its prefix's model); any failure
    becomes a one-line record instead of an exception."""
    folder = out / folder_name(name)
    entry: dict = {"name": name, "folder": str(folder)}
    if CHAIN in name:
        entry["chain"] = steps(name)
    started = time.time()
    try:
        if info(name).needs_rows and not has_train:
            raise PretuneError(f"{name} needs training rows: pass --train FILE")
        with atomic_path(folder) as tmp:
            tmp.mkdir()
            entry["facts"] = METHODS[steps(name)[-1]](ctx, tmp)
        entry["build_seconds"] = time.time() - started
        entry["bench"] = bench(folder, data, text=text, text_pair=text_pair, label=label,
                               output=folder, cfg=_bench_cfg(ctx.cfg))
        entry["status"] = "measured"
        _log_bench(name, entry["bench"])
    except Exception as e:  # one method's failure must not stop the others; a bug keeps its type name
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        entry.update(status="failed", error=msg if isinstance(e, PretuneError) else f"{type(e).__name__}: {msg}")
        log.warning("%s: failed: %s", name, entry["error"])
    return entry


def _front(source: dict, variants: list[dict]) -> list[str]:
    metric = gate_metric(source)
    sign = 1 if higher_is_better(metric) else -1

    def point(b: dict) -> tuple[float, float, float]:
        return sign * b["eval"]["metrics"][metric], b["latency_ms"]["p50"], b["size_mb"]

    points = {"source": point(source)}
    points.update({v["name"]: point(v["bench"]) for v in variants if v["status"] == "accepted"})
    return pareto_front(points)


def _log_bench(name: str, b: dict) -> None:
    metric = gate_metric(b)
    log.info("  %-20s %s %.4f  p50 %.2f ms  %.1f MiB", name, metric, b["eval"]["metrics"][metric],
             b["latency_ms"]["p50"], b["size_mb"])


def load_results(output: str | os.PathLike) -> dict:
    """Read ``results.json`` from a compress output folder."""
    path = Path(output) / files.RESULTS
    results = files.read_json(path)
    if results is None:
        raise PretuneError(f"{path}: no compress results; run pretune compress first")
    return results


__all__ = ["compress", "rebench", "check_config", "find_model_folder", "load_results"]
