"""``pretune fit``: data -> model -> method -> train -> saved model folder and results.

Everything that can be wrong with the input (config, data, model folder) is
checked before the run folder is created, so bad input leaves nothing behind.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .. import files, tasks
from ..config import RunConfig, as_config, config_diff
from ..tasks import TaskData, load_task_data
from ..errors import ConfigError, ResumeError
from ..metrics import chance_level
from ..models import (
    apply_method,
    check_model_folder,
    check_qlora,
    count_parameters,
    load_for_task,
    load_tokenizer,
    resolve_model_path,
    unwrap_for_saving,
)
from ..models.fastpath import fast_path_status, first_token_only
from ..models.sources import model_source
from ..runtime import environment, resolve, seed_everything, set_threads
from ..train import Callback, defaults, distributed, evaluate, train

log = logging.getLogger("pretune")


@dataclass
class FitResult:
    run_dir: Path
    model_dir: Path
    eval: dict[str, float]  # final metrics of the saved model on the eval set
    history: list[dict] = field(default_factory=list)
    best_step: Optional[int] = None
    steps: int = 0
    train_samples: int = 0
    train_tokens: int = 0
    seconds: float = 0.0
    trainable_params: int = 0
    total_params: int = 0

    @classmethod
    def from_json(cls, run_dir: Path, data: dict[str, Any]) -> "FitResult":
        return cls(run_dir, run_dir / files.MODEL, data["eval"], data.get("history", []), data.get("best_step"),
                   data.get("steps", 0), data.get("train_samples", 0), data.get("train_tokens", 0),
                   data.get("train_seconds", 0.0), data.get("trainable_params", 0), data.get("total_params", 0))


def prepare(cfg: RunConfig, device=None):
    """Load and check everything a fit needs: (tokenizer, TaskData, model ready to train).

    ``device`` (the run's ``torch.device``) is needed by method qlora only, whose 4-bit base loads onto it."""
    if not cfg.model.path:
        raise ConfigError("no model: pass --model DIR or set model.path")
    cfg.model.path = resolve_model_path(cfg.model.path, cfg.model.allow_pickle, cfg.model.trust_remote_code)
    check_model_folder(cfg.model.path, cfg.model.allow_pickle)
    defaults.fill(cfg)  # the recipe for the train settings left unset (fit has filled and logged them)
    four_bit = cfg.method.name == "qlora"
    if four_bit:
        import torch

        device = device if device is not None else torch.device("cpu")
        check_qlora(device, cfg.train.distributed)
    tokenizer = load_tokenizer(cfg.model.path, cfg.model.trust_remote_code)
    data = load_task_data(cfg.data, tokenizer, seed=cfg.train.seed)
    seed_everything(cfg.train.seed)  # the new head and adapters are initialised from the seed
    model, tokenizer = load_for_task(cfg.model, data.spec, four_bit_on=device if four_bit else None)
    if cfg.data.chat_template and not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = cfg.data.chat_template  # saved with the model: generate renders as training did
    model = apply_method(model, cfg)
    task = tasks.get(data.spec.task)
    if task.setup is not None:  # e.g. DPO's reference model or its precomputed log-probs
        task.setup(model, data, cfg)
    return tokenizer, data, model


# Settings a resumed run may change: they move no number of the result.
RESUMABLE_CHANGES = ("output", "train.progress", "train.threads", "data.cache_dir", "search", "compress")


def _check_same_config(run_dir: Path, cfg: RunConfig) -> None:
    """Resuming continues the same run: another config would end with a result no config describes."""
    import yaml

    saved = yaml.safe_load((run_dir / files.CONFIG).read_text(encoding="utf-8")) or {}
    diff = config_diff(saved, cfg.to_dict(), ignore=RESUMABLE_CHANGES)
    if diff:
        raise ResumeError(f"{run_dir} was started with another config ({', '.join(diff[:5])} differ); resume with "
                          f"--config {run_dir / files.CONFIG}, pass --overwrite to start afresh, or choose another "
                          "--output")


def _claim_run_dir(run_dir: Path, cfg: RunConfig, resume: bool, overwrite: bool,
                   writer: bool = True) -> Optional[dict]:
    """Return the finished results when resuming a finished run; refuse to clobber another run.

    Under ``torchrun`` every rank checks, and only the writer (rank 0) clears an overwritten folder.
    """
    files.check_output_dir(run_dir)
    if resume and (done := files.read_json(run_dir / files.RESULTS)) is not None:
        return done
    if resume and (run_dir / files.CONFIG).is_file():
        _check_same_config(run_dir, cfg)
    if run_dir.exists() and any(run_dir.iterdir()) and not resume:
        if not overwrite:
            raise ConfigError(f"output folder {run_dir} already holds a run; pass --resume to continue it, "
                              "--overwrite to replace it, or choose another --output")
        if writer:
            shutil.rmtree(run_dir)
    return None


def fit(cfg: RunConfig | dict | str | Path | None = None, *, callback: Callback | None = None,
        resume: bool = False, overwrite: bool = False) -> FitResult:
    """Fine-tune ``cfg.model.path`` on ``cfg.data`` and save the result under ``cfg.output``.

    Args:
        cfg: a ``RunConfig``, a dict of sections, or a YAML path.
        callback: ``callback(step, metrics)`` after each evaluation (search uses it to prune).
        resume: continue from the newest checkpoint in the run folder.
        overwrite: replace an existing run folder.

    Returns:
        FitResult with the run folder, the saved model folder and the final eval metrics.

    Raises:
        PretuneError: bad config, data or model folder (before anything is written).
    """
    cfg = as_config(cfg)
    run_dir = Path(cfg.output)
    writer = distributed.is_writer()  # under torchrun only rank 0 writes; every rank trains
    asked, filled = cfg.model.path, None
    if cfg.model.path:  # as saved in config.yaml, so that a resume compares like with like
        # a Hub id becomes its snapshot folder, named by commit: a resume loads the very same files
        cfg.model.path = resolve_model_path(cfg.model.path, cfg.model.allow_pickle, cfg.model.trust_remote_code)
        filled = defaults.fill(cfg)  # before the resume check: config.yaml records the values used
    done = _claim_run_dir(run_dir, cfg, resume, overwrite, writer)
    if done is not None:
        log.info("run %s is already finished; nothing to resume", run_dir)
        return FitResult.from_json(run_dir, done)
    set_threads(cfg.train.threads)
    rt = resolve(cfg.train.device, cfg.train.precision, cfg.train.tf32)
    tokenizer, data, model = prepare(cfg, rt.device)  # raises on bad input before the folder exists
    trainable, total = count_parameters(model)
    if writer:
        _describe(cfg, data, trainable, total)
        if filled is not None:
            log.info("%s", filled.describe())
        log.info("on %s; %s", rt.describe(), fast_path_status(model, cfg.train.first_token_only)[1])
        run_dir.mkdir(parents=True, exist_ok=True)
        files.write_text(run_dir / files.CONFIG, cfg.to_yaml())
    started = time.time()
    try:
        with first_token_only(model, cfg.train.first_token_only):
            result = train(model, data.train, data.eval, data.spec, cfg.train, pad_id=tokenizer.pad_token_id,
                           run_dir=run_dir, callback=callback, resume=resume, runtime=rt)
    finally:
        distributed.release()  # no-op in one process
    final = unwrap_for_saving(model, merge=cfg.lora.merge,  # qlora: merged into the unquantized base
                              full_precision_base=lambda: load_for_task(cfg.model, data.spec)[0].to(rt.device))
    metrics = _evaluated(result, cfg) if final is model else None
    if metrics is None:  # a merged adapter computes in another order: score the weights that are saved
        with first_token_only(final, cfg.train.first_token_only):
            metrics = evaluate(final, data.eval, data.spec, cfg.train.eval_batch_size, tokenizer.pad_token_id, rt)
    warning = _chance_level(metrics, data)
    model_dir = run_dir / files.MODEL
    if not writer:
        return FitResult(run_dir, model_dir, metrics, result.history, result.best_step, result.step,
                         result.samples, result.tokens, result.seconds, trainable, total)
    with files.atomic_path(model_dir) as tmp:
        final.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
    out = {
        "eval": metrics, "metric": result.metric, "best_step": result.best_step, "steps": result.step,
        "stopped_early": result.stopped_early, "train_samples": result.samples, "train_tokens": result.tokens,
        "train_seconds": result.seconds, "samples_per_s": result.samples / max(result.seconds, 1e-9),
        "wall_seconds": time.time() - started, "trainable_params": trainable, "total_params": total,
        "task": data.spec.task, "labels": data.spec.labels, "method": cfg.method.name,
        "train_rows": len(data.train), "eval_rows": len(data.eval), "eval_source": data.eval_source,
        "model_dir": str(model_dir), "model_source": model_source(asked, cfg.model.path),
        "history": result.history, "environment": environment(),
        "world_size": distributed.world_size(), "device": str(rt.device), "precision": rt.precision,
        "warning": warning,
    }
    files.write_json(run_dir / files.RESULTS, out)
    shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
    log.info("done: %s; model saved to %s", shown, model_dir)
    if warning and callback is None:  # a search's trial: the search warns about the best trial only
        log.warning("%s", warning)
    return FitResult(run_dir, model_dir, metrics, result.history, result.best_step, result.step, result.samples,
                     result.tokens, result.seconds, trainable, total)


def _evaluated(result, cfg: RunConfig) -> Optional[dict]:
    """The metrics of the weights the model ends with, when the loop has already evaluated exactly those: the
    best evaluation's (restored) or the last one's (the loop always evaluates its last step). Evaluating them
    again would repeat the same computation on the same batches."""
    record = result.best if cfg.train.restore_best else (result.history[-1] if result.history else None)
    if record is None or (not cfg.train.restore_best and record["step"] != result.step):
        return None
    return {k: v for k, v in record.items() if k not in ("step", "epoch", "samples")}


def _chance_level(metrics: dict, data: TaskData) -> Optional[str]:
    """``metrics.chance_level``, unless the eval set's labels cannot tell: one class (an MCC of 0 whatever the
    model) or one value."""
    labels = getattr(data.eval, "labels", None)
    if labels is None or len(np.unique(np.asarray(labels))) < 2:
        return None
    return chance_level(metrics)


def _describe(cfg: RunConfig, data: TaskData, trainable: int, total: int) -> None:
    task = data.spec.task
    if data.spec.labels:
        task += f" over {len(data.spec.labels)} labels ({', '.join(data.spec.labels[:8])})"
    log.info("%s; train %d rows, eval %d rows (%s)", task, len(data.train), len(data.eval), data.eval_source)
    log.info("method %s: %s of %s parameters train (%.2f%%)", cfg.method.name, f"{trainable:,}", f"{total:,}",
             100 * trainable / max(total, 1))
