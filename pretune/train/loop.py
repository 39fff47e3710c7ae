"""The training loop: one function, top to bottom.

    for each optimizer step:
        for each micro-batch in the accumulation group:   # same update as one big batch
            forward (autocast in train.precision), loss * rows / rows_in_step, backward
        clip, AdamW step, schedule step
        with train.ema_decay: fold the weights into their moving average, which is what gets evaluated and saved
        every eval_every steps and at train.eval_at: evaluate, callback (search prunes here), early stopping,
            best weights
        every checkpoint_every steps: atomic checkpoint (weights, optimizer, scheduler, RNG, position)

The data order of every epoch is a pure function of (seed, epoch), so a resumed
run replays exactly the batches an uninterrupted one would have seen. Under
``torchrun`` each rank runs a share of every step's micro-batches and the
gradients are summed (``distributed``): the same update as one process with
``grad_accum x world_size`` accumulation, with the model replicated (DDP) or, with
``train.distributed=fsdp``, sharded over the ranks (FSDP2) and gathered whole again
when training ends. The step itself is ``step.optimizer_step``.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .. import files, tasks
from ..config import TrainConfig
from ..data import Encoded, epoch_batches
from ..errors import ConfigError
from ..files import append_jsonl, atomic_path, read_jsonl
from ..metrics import higher_is_better
from ..tasks import TaskSpec
from ..runtime import Runtime, resolve, seed_everything, set_threads
from . import distributed
from .average import WeightAverage
from .checkpoint import (
    list_checkpoints,
    load_checkpoint,
    load_trainable,
    save_checkpoint,
    save_sharded_checkpoint,
    trainable_state,
)
from .evaluate import evaluate, task_outputs
from .optim import build_optimizer, build_scheduler
from .step import LossFn, optimizer_step

Callback = Callable[[int, dict], None]
log = logging.getLogger("pretune")


@dataclass
class TrainState:
    """Everything about progress that a checkpoint must restore."""

    step: int = 0
    samples: int = 0
    tokens: int = 0
    train_seconds: float = 0.0
    best_value: Optional[float] = None
    best_step: Optional[int] = None
    bad_evals: int = 0
    history: list = field(default_factory=list)  # one dict per evaluation


@dataclass
class TrainResult:
    step: int
    samples: int  # training rows processed (the compute budget unit of search)
    tokens: int  # real (non-padding) tokens processed
    seconds: float  # training time, evaluation excluded
    history: list[dict]
    best: Optional[dict]  # metrics of the best evaluation
    best_step: Optional[int]
    metric: str
    stopped_early: bool


def grouped(cfg: TrainConfig, train_set: Encoded) -> bool:
    """Whether an epoch's batches are length-grouped: ``train.group_by_length``, unless the rows are packed
    (``data.packing``). Packed rows carry no padding to save, and grouping would put the longest examples of the
    data in one step: the memory peak of the run (SmolLM2 with LoRA on 8 Alpaca rows of 256 tokens takes 5 GB of
    activations, 8 random rows about 2)."""
    return cfg.group_by_length and not getattr(train_set, "pack", 0)


def default_loss(spec: TaskSpec) -> LossFn:
    """The task's own loss on the outputs it reads (the model's logits unless the task has a ``forward``)."""
    task = tasks.get(spec.task)

    def loss_fn(model: nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = task_outputs(task, model, batch)  # (B, C), (B, T, C)
        return task.loss(outputs, batch["labels"]), outputs
    return loss_fn


def plan_steps(n_rows: int, cfg: TrainConfig, world_size: int = 1) -> tuple[int, int]:
    """(optimizer steps per epoch, total optimizer steps); ``world_size`` processes share each step."""
    micro_per_epoch = math.ceil(n_rows / cfg.batch_size)
    per_epoch = math.ceil(micro_per_epoch / (cfg.grad_accum * world_size))
    total = cfg.max_steps or max(1, math.ceil(cfg.epochs * per_epoch))
    return per_epoch, total


def train(model: nn.Module, train_set: Encoded, eval_set: Encoded, spec: TaskSpec, cfg: TrainConfig, *,
          pad_id: int, run_dir: str | Path | None = None, callback: Callback | None = None,
          loss_fn: LossFn | None = None, resume: bool = False, runtime: Runtime | None = None) -> TrainResult:
    """Train ``model`` in place on ``train_set``, evaluating on ``eval_set``.

    Args:
        pad_id: token id used to pad batches.
        run_dir: where ``metrics.jsonl`` and ``checkpoints/`` go; None keeps everything in memory.
        callback: called as ``callback(step, metrics)`` after each evaluation; an exception it raises
            (e.g. ``optuna.TrialPruned``) stops training and propagates.
        loss_fn: ``loss_fn(model, batch) -> (loss, logits)``; default: the task's loss.
        resume: continue from the newest checkpoint in ``run_dir`` if there is one (saved on any device).
        runtime: device and precision; default resolved from ``cfg.device``, ``cfg.precision``, ``cfg.tf32``.
            The model is moved to the device.

    Returns:
        TrainResult; the model ends with the best evaluation's weights when ``cfg.restore_best``, and
        with the weight average rather than the raw weights when ``cfg.ema_decay``. With
        ``cfg.distributed == "fsdp"`` under torchrun the model is sharded while it trains and a plain module
        with the full weights on every rank again when this returns.

    Raises:
        TrainingDiverged: the loss became NaN or infinite.
        ConfigError: ``cfg.distributed == "fsdp"`` with fp16 under torchrun.
    """
    rank, world = distributed.acquire()  # fit releases it
    writer = rank == 0  # only rank 0 writes metrics and checkpoints; every rank reads them to resume
    fsdp = cfg.distributed == "fsdp"  # sharded checkpoints whatever the world size, so any world size resumes
    sharded = fsdp and world > 1  # the model itself is sharded
    set_threads(cfg.threads)
    seed_everything(cfg.seed + rank)  # dropout differs across ranks; the weights come from rank 0 (DDP, FSDP)
    runtime = runtime or resolve(cfg.device, cfg.precision, cfg.tf32)
    if sharded and runtime.precision == "fp16":
        raise ConfigError("train.distributed=fsdp does not train in fp16 (the loss scaler would check one "
                          "shard's gradients only): set train.precision=bf16 (or fp32), or train.distributed=ddp")
    if fsdp and world == 1 and writer:
        log.info("train.distributed=fsdp in one process: nothing to shard, training as a single process "
                 "(start it with torchrun --nproc-per-node N to shard over N)")
    runtime.place(model)  # before the optimizer is built: its state lives where the parameters do
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    loss_fn = loss_fn or default_loss(spec)
    collate = tasks.get(spec.task).collate
    metric = cfg.metric or tasks.get(spec.task).default_metric
    per_epoch, total = plan_steps(len(train_set), cfg, world)
    micro_per_step = cfg.grad_accum * world
    eval_every = cfg.eval_every or per_epoch
    # The first step at or past each fraction: a pruner's rung is then read at its place, not an interval on.
    eval_steps = {max(1, math.ceil(f * total - 1e-9)) for f in cfg.eval_at or ()}
    ckpt_every = eval_every if cfg.checkpoint_every is None else cfg.checkpoint_every  # 0: never
    if sharded:
        distributed.shard(model, runtime.device)  # before the optimizer: it updates the shards
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, total)
    average = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay else None
    scaler = runtime.scaler()  # fp16 only

    run_dir = Path(run_dir) if run_dir else None
    if run_dir and writer:
        run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = run_dir / files.CHECKPOINTS if run_dir and ckpt_every else None
    metrics_path = run_dir / files.METRICS if run_dir and writer else None
    st = TrainState()
    if resume and ckpt_dir and list_checkpoints(ckpt_dir):
        st = TrainState(**load_checkpoint(list_checkpoints(ckpt_dir)[-1], model, optimizer, scheduler,
                                          average, scaler))
        _truncate_log(metrics_path, st.step)  # lines logged after the checkpoint are replayed
    elif metrics_path and metrics_path.exists():
        metrics_path.unlink()
    trained = [p for g in optimizer.param_groups for p in g["params"]]
    # The model the steps run: under torchrun, DDP around it (after a resume has loaded the weights, so that its
    # broadcast of rank 0's copy carries them); evaluation and saving use the model itself. FSDP shards the
    # model in place.
    stepped = distributed.wrap(model, runtime.device) if world > 1 and not sharded else model
    best_file = ckpt_dir / files.BEST_WEIGHTS if ckpt_dir else None
    best_state = load_file(str(best_file)) if best_file and st.best_step is not None and best_file.exists() else None

    bar = _progress(cfg, total, st.step, enabled=writer)
    model.train()
    batches, batches_epoch = None, -1
    stopped_early = False
    window = {"loss": 0.0, "rows": 0, "t": st.train_seconds}
    while st.step < total:
        epoch, k = divmod(st.step, per_epoch)
        if epoch != batches_epoch:
            batches = epoch_batches(train_set.lengths, cfg.batch_size, cfg.seed, epoch, grouped(cfg, train_set))
            batches_epoch = epoch
        group = batches[k * micro_per_step:(k + 1) * micro_per_step]
        rows_in_step = sum(len(b) for b in group)

        t0 = time.perf_counter()
        step_loss, step_tokens = optimizer_step(stepped, optimizer, train_set, group[rank::world], rows_in_step,
                                                loss_fn=loss_fn, pad_id=pad_id, cfg=cfg, params=trained,
                                                step=st.step + 1, world=world,
                                                passes=math.ceil(len(group) / world) if sharded else 0,
                                                collate=collate, runtime=runtime, scaler=scaler)
        st.tokens += step_tokens
        scheduler.step()
        st.step += 1
        if average is not None:
            average.update(st.step)
        st.samples += rows_in_step
        st.train_seconds += time.perf_counter() - t0
        window["loss"] += step_loss
        window["rows"] += rows_in_step

        if st.step % cfg.log_every == 0 or st.step == total:
            _log_train(st, window, scheduler, epoch, metrics_path, bar, cfg.log_every)
        if st.step % eval_every == 0 or st.step == total or st.step in eval_steps:
            with average.applied() if average is not None else nullcontext():
                record = {"step": st.step, "epoch": round(st.step / per_epoch, 4), "samples": st.samples,
                          **evaluate(model, eval_set, spec, cfg.eval_batch_size, pad_id, runtime)}
                improved = _is_better(record.get(metric), st.best_value, metric)
                if improved:
                    best_state = trainable_state(model)
            st.history.append(record)
            if metrics_path:
                append_jsonl(metrics_path, {"type": "eval", **record})
            if improved:
                st.best_value, st.best_step, st.bad_evals = record[metric], st.step, 0
                if ckpt_dir and (writer or sharded):
                    whole = distributed.full_tensors(best_state) if sharded else best_state  # every rank gathers
                    if writer:
                        with atomic_path(ckpt_dir / files.BEST_WEIGHTS) as tmp:
                            save_file({k: v.cpu() for k, v in whole.items()}, str(tmp))
            else:
                st.bad_evals += 1
            if cfg.progress and writer:
                bar.write(_eval_line(record, metric))
            if callback:
                callback(st.step, record)
            if cfg.early_stopping_patience is not None and st.bad_evals > cfg.early_stopping_patience:
                stopped_early = True
        if ckpt_dir and (st.step % ckpt_every == 0) and st.step < total and not stopped_early:
            if fsdp:  # every rank writes its shard
                save_sharded_checkpoint(ckpt_dir, st.step, model, optimizer, scheduler, asdict(st),
                                        cfg.keep_checkpoints, average, scaler)
            elif writer:
                save_checkpoint(ckpt_dir, st.step, model, optimizer, scheduler, asdict(st), cfg.keep_checkpoints,
                                average, scaler)
        bar.update(1)
        if stopped_early:
            break
    bar.close()

    if average is not None:
        average.copy_to_model()
    if cfg.restore_best and best_state is not None and st.best_step != st.step:
        load_trainable(model, best_state)
    if sharded:
        distributed.unshard(model)  # the full weights on every rank, a plain module for evaluation and saving
    best = next((h for h in st.history if h["step"] == st.best_step), None)
    return TrainResult(st.step, st.samples, st.tokens, st.train_seconds, st.history, best, st.best_step,
                       metric, stopped_early)


def _is_better(value, best, metric: str) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    if best is None:
        return True
    return value > best if higher_is_better(metric) else value < best


def _progress(cfg: TrainConfig, total: int, initial: int, enabled: bool = True):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="step", desc="train", disable=not (cfg.progress and enabled),
                dynamic_ncols=True, file=sys.stderr, mininterval=1.0)


def _log_train(st: TrainState, window: dict, scheduler, epoch: int, metrics_path, bar, log_every: int) -> None:
    rate = window["rows"] / max(1e-9, st.train_seconds - window["t"])  # training time only
    line = {"type": "train", "step": st.step, "epoch": epoch, "loss": window["loss"] / max(1, window["rows"]),
            "lr": scheduler.get_last_lr()[0], "samples_per_s": rate}
    if metrics_path:
        append_jsonl(metrics_path, line)
    bar.set_postfix(loss=f"{line['loss']:.4f}", lr=f"{line['lr']:.2e}", samples_s=f"{rate:.1f}", refresh=False)
    window.update(loss=0.0, rows=0, t=st.train_seconds)


def _eval_line(record: dict, metric: str) -> str:
    shown = ", ".join(f"{k} {v:.4f}" for k, v in record.items()
                      if k not in ("step", "epoch", "samples") and isinstance(v, float))
    return f"eval @ step {record['step']}: {shown}"


def _truncate_log(path: Path | None, step: int) -> None:
    if not path or not path.exists():
        return
    rows = [r for r in read_jsonl(path) if r.get("step", 0) <= step]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
