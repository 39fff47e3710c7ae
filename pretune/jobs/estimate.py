"""``pretune estimate``: a short probe that predicts one training run's time and peak memory on this machine.

    setup:  load the model and data exactly as ``fit`` does (timed)
    warmup: one step on the longest batch (untimed; it sets the memory peak a trial will reach)
    probe:  ``steps`` optimizer steps on batches drawn as training draws them (timed one by one)
    eval:   one evaluation pass over up to ``eval_rows`` rows, scaled to the eval set (timed)

Predicted trial seconds = setup + steps x mean step + evaluations x eval pass + saves. Batches differ in length,
and a few timed steps are a noisy sample of them, but every batch's padded size is known before training: the
timed steps fit step seconds = fixed + per-token x padded tokens (``step_model``), and the mean step is that line
averaged over every step of an epoch. The stated error is two standard errors of that mean (the residuals of the
fit) plus the spread of the fixed costs, as a percentage. It cannot see what else the machine will be running
later.
By default the probe runs in a fresh process so its peak memory is its own.
"""

from __future__ import annotations

import gc
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..config import RunConfig, as_config, config_from_dict
from ..errors import PretuneError


@dataclass
class Estimate:
    trial_s: float  # predicted wall seconds of one fit with this config
    error_pct: float  # stated relative error of trial_s (percent)
    step_s: float  # mean seconds per optimizer step over an epoch, from the timed steps (``step_model``)
    steps: int  # optimizer steps one trial takes
    evals: int  # evaluations one trial makes
    eval_s: float  # seconds per evaluation pass over the whole eval set
    setup_s: float  # model + data load as a trial after the first sees it (imports done, tokens cached)
    first_setup_s: float  # the same in a fresh process: imports and tokenization included
    save_s: float  # one checkpoint write, measured
    peak_memory_mb: float  # peak resident memory (CPU) or peak allocated memory (CUDA) of the probe
    device: str
    probe_steps: int
    train_rows: int
    eval_rows: int

    def describe(self) -> str:
        return (f"about {_dur(self.trial_s)} per trial (+/- {self.error_pct:.0f}%): {self.steps} steps x "
                f"{self.step_s * 1000:.1f} ms + {self.evals} evaluations x {self.eval_s:.2f} s + setup "
                f"{self.setup_s:.1f} s (first trial +{self.first_setup_s - self.setup_s:.1f} s); "
                f"peak memory {self.peak_memory_mb:,.0f} MiB ({self.device})")


def _dur(s: float) -> str:
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


def _timed_step(model, optimizer, train_set, rows_groups, pad_id, cfg, loss_fn, collate, rt, scaler) -> float:
    """One optimizer step, the loop's own (``train.step.optimizer_step``); seconds."""
    from ..train import optimizer_step

    params = [p for g in optimizer.param_groups for p in g["params"]]
    t0 = time.perf_counter()
    optimizer_step(model, optimizer, train_set, rows_groups, sum(len(r) for r in rows_groups), loss_fn=loss_fn,
                   pad_id=pad_id, cfg=cfg, params=params, step=1, collate=collate, runtime=rt, scaler=scaler)
    rt.synchronize()
    return time.perf_counter() - t0


def step_model(tokens, times, epoch_tokens) -> tuple[float, float]:
    """(mean step seconds over the epoch, its standard error) from the timed steps' padded ``tokens`` and
    ``times``, and the padded tokens of every step of the epoch (``epoch_tokens``).

    A least-squares line, seconds = fixed + per-token x tokens, when the timed steps span enough lengths for one
    and it comes out with both parts non-negative; otherwise seconds in proportion to tokens (a noisy line's
    slope can come out negative). With all timed steps the same size, their plain mean. The error is the fit's
    residual spread over the square root of the steps timed.
    """
    import numpy as np

    tokens, times = np.asarray(tokens, dtype=float), np.asarray(times, dtype=float)
    n = len(times)
    if n < 2 or np.ptp(tokens) < 0.05 * tokens.mean():
        return float(times.mean()), float(times.std(ddof=1) / math.sqrt(n)) if n > 1 else float(times.mean())
    mean_tokens = float(np.mean(epoch_tokens))
    slope, fixed = np.polyfit(tokens, times, 1) if n >= 3 else (-1.0, 0.0)
    if slope > 0 and fixed >= 0:
        predicted, dof = fixed + slope * tokens, max(n - 2, 1)
        mean = fixed + slope * mean_tokens
    else:
        per_token = times.sum() / tokens.sum()
        predicted, dof = per_token * tokens, n - 1
        mean = per_token * mean_tokens
    spread = math.sqrt(float(((times - predicted) ** 2).sum()) / dof)
    return float(mean), spread / math.sqrt(n)


def probe(cfg: RunConfig, steps: int = 8, eval_rows: int = 256) -> Estimate:
    """Run the probe in this process; see ``estimate``."""
    import numpy as np

    from .. import tasks
    from ..data import epoch_batches
    from ..models.fastpath import first_token_only
    from ..runtime import peak_memory_mb, resolve, set_threads
    from ..train import build_optimizer, default_loss, evaluate, plan_steps
    from ..train.loop import grouped
    from .fit import prepare

    set_threads(cfg.train.threads)
    rt = resolve(cfg.train.device, cfg.train.precision, cfg.train.tf32)
    t0 = time.perf_counter()
    prepare(cfg, rt.device)  # the first load pays for imports and tokenization, which later trials find done
    cold_s = time.perf_counter() - t0
    gc.collect()
    t0 = time.perf_counter()
    tokenizer, data, model = prepare(cfg, rt.device)
    setup_s = time.perf_counter() - t0
    tc, pad_id = cfg.train, tokenizer.pad_token_id or 0
    rt.place(model)
    optimizer, loss_fn, scaler = build_optimizer(model, tc), default_loss(data.spec), rt.scaler()
    collate = tasks.get(data.spec.task).collate
    with first_token_only(model, tc.first_token_only):  # time what fit will run
        model.train()
        batches = epoch_batches(data.train.lengths, tc.batch_size, tc.seed, 0, grouped(tc, data.train))
        longest = max(batches, key=lambda b: int(data.train.lengths[b].max()) * len(b))
        # warm-up on the longest batch, untimed: it sets the memory peak a trial reaches
        _timed_step(model, optimizer, data.train, [longest] * tc.grad_accum, pad_id, tc, loss_fn, collate, rt, scaler)
        groups = [batches[i * tc.grad_accum:(i + 1) * tc.grad_accum] for i in range(len(batches) // tc.grad_accum)]
        # Spread the probe over the epoch so it sees short and long batches as training will.
        picks = np.linspace(0, len(groups) - 1, num=min(steps, len(groups))).round().astype(int)
        times = np.array([_timed_step(model, optimizer, data.train, groups[i], pad_id, tc, loss_fn, collate, rt, scaler)
                          for i in picks])
        # Padded tokens per step: what a step's time follows, known for every step before it runs.
        padded = [sum(len(b) * int(data.train.lengths[b].max()) for b in g) for g in groups]
        step_s, sem = step_model([padded[i] for i in picks], times, padded)

        sub = data.eval.select(list(range(min(eval_rows, len(data.eval)))))
        t0 = time.perf_counter()
        evaluate(model, sub, data.spec, tc.eval_batch_size, pad_id, rt)
        eval_s = (time.perf_counter() - t0) * len(data.eval) / max(len(sub), 1)
    save_s = _save_seconds(model, optimizer)

    per_epoch, total = plan_steps(len(data.train), tc)
    evals = math.ceil(total / (tc.eval_every or per_epoch)) + len(tc.eval_at or ())
    # evaluations + checkpoints (one per evaluation by default) + the final eval and model save
    trial_s = setup_s + total * step_s + (evals + 1) * eval_s + (evals + 1) * save_s
    err_s = 2 * sem * total + 0.2 * (setup_s + (evals + 1) * (eval_s + save_s))  # fixed costs vary ~20% run to run
    peak = peak_memory_mb(rt.device)  # allocated tensors on a GPU, resident memory on the CPU
    device = rt.describe()
    return Estimate(trial_s=float(trial_s), error_pct=float(100 * err_s / trial_s), step_s=step_s,
                    steps=total, evals=evals, eval_s=float(eval_s), setup_s=float(setup_s), save_s=float(save_s),
                    first_setup_s=float(cold_s),
                    peak_memory_mb=float(peak), device=device, probe_steps=len(times), train_rows=len(data.train),
                    eval_rows=len(data.eval))


def _save_seconds(model, optimizer) -> float:
    """Time one checkpoint-sized write (trainable weights + optimizer state) to a temporary folder."""
    import torch

    with tempfile.TemporaryDirectory(prefix="pretune-estimate-") as tmp:
        t0 = time.perf_counter()
        torch.save({"model": {k: v for k, v in model.state_dict().items()}, "optim": optimizer.state_dict()},
                   os.path.join(tmp, "ckpt.pt"))
        return time.perf_counter() - t0


def estimate(cfg: RunConfig | dict | str | Path, *, steps: int = 8, isolate: bool = True) -> Estimate:
    """Predict the time and peak memory of one ``fit`` of ``cfg`` on this machine from a short probe.

    Args:
        cfg: the run config (model, data, method, train); nothing is written to ``cfg.output``.
        steps: optimizer steps to time (after one warm-up step on the longest batch).
        isolate: probe in a fresh Python process (``pretune.workers``), so peak memory is the probe's own.

    Returns:
        Estimate: predicted seconds per trial with a stated error, peak memory, and the parts.

    Raises:
        PretuneError: bad config, data or model (the same checks as ``fit``, with the same classes), or the
            probe process failed.
    """
    from ..workers import call

    cfg = as_config(cfg)
    if steps < 2:
        raise PretuneError(f"estimate needs at least 2 probe steps to state an error, got {steps=}")
    if not isolate:
        return probe(cfg, steps)
    return Estimate(**call("estimate", {"cfg": cfg.to_dict(), "steps": steps}, what="estimate probe"))


def probe_job(payload: dict) -> dict:
    """The ``estimate`` worker job (``pretune.workers``): ``probe`` on a JSON payload."""
    cfg = config_from_dict(payload["cfg"])
    cfg.train.progress = False
    return asdict(probe(cfg, payload["steps"]))
