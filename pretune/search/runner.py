"""The search loop: one trial = one ``fit`` of a sampled config; budgets; worker processes.

Each worker process opens the shared storage and runs ``study.optimize``; Optuna
hands out trials, so workers never collide. Budgets are counted from the storage,
so they hold over restarts and over all workers (a worker may overshoot
``n_trials`` by the trials already running elsewhere: at most workers - 1).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing as mp
import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import optuna
import torch
from optuna.trial import TrialState

from .. import files
from ..config import config_from_dict, merge
from ..errors import BudgetStop, ConfigError, PretuneError, TrialOutOfMemory, WorkerFailed
from . import ranks
from .factories import PRUNER_RUNGS, make_storage, pruner_name, quiet
from .plan import SearchPlan, open_study
from .pruning import PROGRESS_STEPS
from .space import suggest, to_overrides

log = logging.getLogger("pretune.search")

TrainFn = Callable[..., Any]  # fit(cfg, *, callback=None, overwrite=False) -> FitResult-like
BUDGET_STOP = "stopped by the search budget"
INTERRUPTED = "interrupted (Ctrl-C)"
NOT_COUNTED = (BUDGET_STOP, INTERRUPTED)  # failed for reasons unrelated to the parameters


# Exceptions that fail one trial but not the study: bad combinations, NaN loss, out of memory.
_OOM = (torch.OutOfMemoryError, MemoryError)
TRIAL_ERRORS = (PretuneError, *_OOM)


def _default_train_fn(cfg, **kwargs):
    from ..jobs.fit import fit
    return fit(cfg, **kwargs)


# ----------------------------------------------------------------------------- counting


def is_counted(t: optuna.trial.FrozenTrial) -> bool:
    """Whether a finished trial uses up ``n_trials``: not one killed (heartbeat) and re-run, not one cut by budget."""
    if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    reason = t.user_attrs.get("fail_reason")
    return t.state == TrialState.FAIL and reason is not None and reason not in NOT_COUNTED


def counts(trials: list[optuna.trial.FrozenTrial]) -> dict[str, int]:
    """Trials by outcome; ``done`` is what counts toward ``n_trials``."""
    c = {"done": 0, "complete": 0, "pruned": 0, "failed": 0, "retried": 0, "running": 0, "waiting": 0}
    for t in trials:
        if t.state == TrialState.COMPLETE:
            c["complete"] += 1
        elif t.state == TrialState.PRUNED:
            c["pruned"] += 1
        elif t.state == TrialState.FAIL:
            c["failed" if is_counted(t) else "retried"] += 1
        elif t.state == TrialState.RUNNING:
            c["running"] += 1
        elif t.state == TrialState.WAITING:
            c["waiting"] += 1
        c["done"] += int(is_counted(t))
    return c


def samples_used(trials: list[optuna.trial.FrozenTrial]) -> int:
    return sum(int(t.user_attrs.get("train_samples", 0)) for t in trials)


def budget_left(plan: SearchPlan, trials: list, deadline: Optional[float], in_flight: bool = True) -> Optional[str]:
    """None while there is budget for another trial, else why not.

    ``in_flight`` counts running trials toward ``n_trials`` (other workers will finish them). At start-up it is
    off: a running trial may be one whose worker was killed and whose heartbeat has not yet expired.
    """
    c = counts(trials)
    if plan.n_trials is not None and c["done"] + (c["running"] if in_flight else 0) >= plan.n_trials:
        return f"{plan.n_trials} trials"
    if plan.budget_samples is not None and samples_used(trials) >= plan.budget_samples:
        return f"{plan.budget_samples:,} training samples"
    if deadline is not None and time.time() >= deadline:
        return "wall time"
    return None


def time_for_another(trials: list, deadline: Optional[float]) -> bool:
    """Whether a new trial can finish before ``deadline``, judged by the median wall time of the complete trials so
    far (with none yet, it can). A trial that starts without that time left overruns the budget or, stopped at the
    deadline, is lost, and the stages after the search lose the time it took."""
    if deadline is None:
        return True
    took = sorted((t.datetime_complete - t.datetime_start).total_seconds() for t in trials
                  if t.state == TrialState.COMPLETE and t.datetime_start and t.datetime_complete)
    if not took:
        return True
    median = took[len(took) // 2]
    left = deadline - time.time()
    if median > left:
        log.info("search: stopping: a trial takes about %.0f s and %.0f s of the search's time are left", median,
                 max(left, 0.0))
        return False
    return True


# ----------------------------------------------------------------------------- one trial


def trial_config(plan: SearchPlan, values: dict[str, Any], trial_dir: Path):
    """The run config of one trial: base config + sampled values, quiet, writing into ``trial_dir``.

    Raises:
        ConfigError: the sampled values are an invalid combination.
    """
    data = merge(plan.base, to_overrides(values))
    data["output"] = str(trial_dir)
    # Trials are re-run, never resumed: checkpointing one at every evaluation would only cost time and disk.
    data["train"] = dict(data["train"], progress=False, checkpoint_every=0)
    cfg = config_from_dict(data)
    rungs = _rung_evaluations(plan, cfg)
    if rungs:
        cfg.train.eval_at = sorted({*(cfg.train.eval_at or ()), *rungs})
    return cfg


def _rung_evaluations(plan: SearchPlan, cfg) -> list[float]:
    """The pruner's rungs this trial may be judged on: those at or past ``search.prune_after`` in its schedule.

    Evaluated exactly there, every trial is read at the same places in its schedule. Otherwise, with an
    evaluation every 15 steps, "a third of the way" was read at 48% of one trial and 36% of another, and a
    trial was checked only at the first evaluation past its grace period (72% of a 1-epoch schedule for
    prune_after 0.5). Rungs before the grace period are not evaluated: the pruner does not judge there.
    """
    fractions = PRUNER_RUNGS.get(pruner_name(plan.pruner, plan.multi), [])  # multi-objective: "none"
    if cfg.train.max_steps:  # epochs per step depend on the data; evaluate every rung
        return list(fractions)
    first = plan.grace.fraction(cfg.train.epochs)
    return [f for f in fractions if round(PROGRESS_STEPS * f) >= round(PROGRESS_STEPS * first)]


LATENCY_METRICS = {"latency_ms": "p50", "latency_p50_ms": "p50", "latency_p95_ms": "p95"}


def _measured_latency(cfg, result: Any) -> dict[str, float]:
    """Batch-1 latency of the trial's saved model, measured by the bench harness on a few eval rows."""
    from ..bench.harness import BenchConfig, measure

    data = cfg.data.eval or cfg.data.train
    bench_cfg = BenchConfig(threads=cfg.train.threads or 2, latency_rows=16, warmup=5, runs=50,
                            max_length=cfg.data.max_length, max_eval_samples=64, seed=cfg.train.seed)
    out = measure(result.model_dir, data, text=cfg.data.text, text_pair=cfg.data.text_pair, label=cfg.data.label,
                  cfg=bench_cfg)
    return {name: float(out["latency_ms"][key]) for name, key in LATENCY_METRICS.items()}


def _objective_values(plan: SearchPlan, cfg, result: Any) -> list[float]:
    extra: dict[str, float] = {}
    if any(m in LATENCY_METRICS for m, _ in plan.objectives):
        extra = _measured_latency(cfg, result)
    out = []
    for metric, _ in plan.objectives:
        if metric in result.eval:
            out.append(float(result.eval[metric]))
        elif metric in extra:
            out.append(extra[metric])
        elif isinstance(getattr(result, metric, None), (int, float)):
            out.append(float(getattr(result, metric)))
        else:
            have = sorted(result.eval) + ["trainable_params", "total_params", "train_samples", "seconds",
                                          *LATENCY_METRICS]
            raise ConfigError(f"search.objectives: metric {metric!r} not produced; available: {', '.join(have)}")
    return out


def _is_last_evaluation(cfg, step: int, metrics: dict) -> bool:
    """Whether training ends at this evaluation (its metrics are then the trial's full result)."""
    if cfg.train.max_steps:
        return step >= cfg.train.max_steps
    return float(metrics.get("epoch", 0.0)) >= cfg.train.epochs - 1e-3  # epoch is rounded to 4 places


def progress_step(cfg, step: int, metrics: dict) -> int:
    """Where an evaluation falls in its trial's own schedule, in ``PROGRESS_STEPS`` parts (the pruners' step).

    Pruners compare trials at equal steps. Samples seen would compare a 3-epoch trial a third of the way
    through its schedule (learning rate still high) with a 1-epoch trial at its end (decayed), and cut the
    long schedules that often end best. Schedule fractions compare like with like; when every trial trains
    the same length, they order evaluations exactly as samples do.
    """
    if cfg.train.max_steps:
        fraction = step / cfg.train.max_steps
    else:
        fraction = float(metrics.get("epoch", 0.0)) / cfg.train.epochs
    return max(0, min(PROGRESS_STEPS, round(PROGRESS_STEPS * fraction)))


def judge_evaluation(trial: optuna.Trial, plan: SearchPlan, cfg, step: int, metrics: dict,
                     reported: list[int]) -> bool:
    """Report one evaluation to the pruner at its place in the trial's schedule; whether the pruner stops it.

    ``reported`` holds the last step reported: two evaluations rounding to one step would drop the second.
    The pruner decides (its grace period included); the last evaluation is never judged: pruning there would
    discard a finished trial for no saving. ``benchmarks/search_efficiency.py --replay`` runs recorded trials
    through this.
    """
    metric = plan.objectives[0][0]
    if plan.multi or metric not in metrics:
        return False
    reported[0] = max(progress_step(cfg, step, metrics), reported[0] + 1)
    trial.report(float(metrics[metric]), reported[0])
    return not _is_last_evaluation(cfg, step, metrics) and trial.should_prune()


def _make_callback(trial: optuna.Trial, plan: SearchPlan, deadline: Optional[float], cfg) -> Callable:
    metric = plan.objectives[0][0]
    reported = [-1]

    def callback(step: int, metrics: dict) -> None:
        samples = int(metrics.get("samples", 0))  # all ranks' rows under torchrun
        trial.set_user_attr("train_samples", samples)
        # Stopping at the last evaluation would discard a finished trial for no saving.
        stop = deadline is not None and time.time() >= deadline and not _is_last_evaluation(cfg, step, metrics)
        prune = judge_evaluation(trial, plan, cfg, step, metrics, reported)
        prune, stop = ranks.agree(prune, stop)
        if stop:
            raise BudgetStop(BUDGET_STOP)
        if prune:
            raise optuna.TrialPruned(f"pruned at step {step} ({metric}={metrics.get(metric)})")
    return callback


def _fail_reason(e: BaseException) -> str:
    if isinstance(e, _OOM) or "out of memory" in str(e).lower():
        return f"out of memory: {e}".strip()[:500]
    return str(e).splitlines()[0][:500] if str(e) else type(e).__name__


@contextlib.contextmanager
def _quiet_fit() -> Iterator[None]:
    """fit's own INFO lines (data, method, done) would drown the search's progress lines."""
    fit_log = logging.getLogger("pretune")
    level = fit_log.level
    if fit_log.getEffectiveLevel() > logging.DEBUG:
        fit_log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        fit_log.setLevel(level)


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _beat_now(trial: optuna.Trial, storage: Optional[optuna.storages.RDBStorage], study_id: Optional[int]) -> None:
    """Record the first heartbeat before any work: Optuna never fails a running trial that has none, so a
    worker killed before its heartbeat thread's first write would leave the trial running forever
    (``tests/search/test_processes.py`` kills one there)."""
    if storage is not None and study_id is not None and storage.get_heartbeat_interval():
        storage.record_heartbeat(storage.get_trial_id_from_study_id_trial_number(study_id, trial.number))


def run_trial(trial: optuna.Trial, plan: SearchPlan, train_fn: TrainFn, deadline: Optional[float],
              storage: Optional[optuna.storages.RDBStorage] = None, study_id: Optional[int] = None):
    """Sample, train and score one trial; record its samples, metrics and, on failure, the reason.

    Returns:
        The objective value (one objective) or values.

    Raises:
        optuna.TrialPruned: the pruner stopped it. Any ``TRIAL_ERRORS``: the trial failed (reason recorded).
    """
    _beat_now(trial, storage, study_id)
    trial.set_user_attr("train_samples", 0)  # a re-run of a killed trial inherits the old attrs
    trial.set_user_attr("fail_reason", None)
    trial_dir = files.trial_dir(plan.output, trial.number)
    trial.set_user_attr("dir", str(trial_dir))
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    started = time.time()
    try:
        values = ranks.share_trial(suggest(trial, plan.params), str(trial_dir))
        cfg = trial_config(plan, values, trial_dir)
        with _quiet_fit():
            result = train_fn(cfg, callback=_make_callback(trial, plan, deadline, cfg), overwrite=True)
        scores = _objective_values(plan, cfg, result)
    except optuna.TrialPruned:
        raise
    except TRIAL_ERRORS as e:
        trial.set_user_attr("fail_reason", _fail_reason(e))
        raise
    except KeyboardInterrupt:
        trial.set_user_attr("fail_reason", INTERRUPTED)
        raise
    except RuntimeError as e:
        if "out of memory" not in str(e).lower():
            raise  # a bug, not a property of this trial's parameters
        trial.set_user_attr("fail_reason", _fail_reason(e))
        raise TrialOutOfMemory(str(e)) from e
    finally:
        trial.set_user_attr("seconds", round(time.time() - started, 3))
        # Trials are re-run, never resumed: their checkpoints are dead weight.
        shutil.rmtree(trial_dir / files.CHECKPOINTS, ignore_errors=True)
        _free_memory()
    trial.set_user_attr("train_samples", int(result.train_samples))
    trial.set_user_attr("metrics", {k: float(v) for k, v in result.eval.items()})
    trial.set_user_attr("trainable_params", int(result.trainable_params))
    trial.set_user_attr("total_params", int(result.total_params))
    trial.set_user_attr("model_dir", str(result.model_dir))
    return scores[0] if len(scores) == 1 else scores


# ----------------------------------------------------------------------------- workers


def follow(plan: SearchPlan, train_fn: TrainFn) -> None:
    """Ranks > 0 under torchrun: train each trial rank 0 sends, with rank 0's parameters and prune decisions."""
    def callback(step: int, metrics: dict) -> None:
        prune, stop = ranks.agree(False, False)
        if stop:
            raise BudgetStop(BUDGET_STOP)
        if prune:
            raise optuna.TrialPruned()

    while (msg := ranks.next_trial()) is not None:
        values, trial_dir = msg
        try:
            train_fn(trial_config(plan, values, Path(trial_dir)), callback=callback, overwrite=True)
        except (optuna.TrialPruned, *TRIAL_ERRORS):
            pass  # rank 0 records the outcome
        gc.collect()
    ranks.finish()


def _keep_set(study: optuna.Study) -> set[int]:
    """Trials whose model must stay: the best, or the Pareto set. Once out, a trial never comes back in."""
    try:
        return {t.number for t in study.best_trials}
    except ValueError:
        return set()


def _drop_models(study: optuna.Study, plan: SearchPlan) -> None:
    if plan.keep_models == "all" or ranks.rank() != 0:
        return
    keep = _keep_set(study)
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.number not in keep and t.user_attrs.get("model_dir"):
            shutil.rmtree(t.user_attrs["model_dir"], ignore_errors=True)


def work(plan: SearchPlan, train_fn: Optional[TrainFn] = None, index: int = 0, deadline: Optional[float] = None,
         progress: Optional[Callable] = None) -> None:
    """One worker: run trials until a budget is spent. Safe to run in several processes at once.

    Args:
        plan: from ``make_plan``.
        train_fn: ``fit``-like function; default ``pretune.fit``.
        index: worker number, to decorrelate samplers.
        deadline: ``time.time()`` at which to stop.
        progress: called as ``progress(study)`` after each trial.
    """
    train_fn = train_fn or _default_train_fn
    if ranks.rank() != 0:
        return follow(plan, train_fn)
    storage = make_storage(plan.storage_url, plan.heartbeat)
    probe = open_study(plan, storage=storage)
    with quiet():
        optuna.storages.fail_stale_trials(probe)  # a trial killed with its worker: fail it and queue a re-run
    # A restarted or parallel sampler must not replay the same random draws.
    study = open_study(plan, seed_offset=1000 * index + len(probe.get_trials(deepcopy=False)), storage=storage)
    study_id = storage.get_study_id_from_name(plan.study_name)

    def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        _drop_models(study, plan)
        if progress:
            progress(study)
        trials = study.get_trials(deepcopy=False)
        if budget_left(plan, trials, deadline) or not time_for_another(trials, deadline):
            study.stop()

    try:
        if budget_left(plan, study.get_trials(deepcopy=False), deadline, in_flight=False) is None:
            timeout = None if deadline is None else max(deadline - time.time(), 0.0)
            study.optimize(lambda t: run_trial(t, plan, train_fn, deadline, storage, study_id), timeout=timeout,
                           catch=TRIAL_ERRORS, callbacks=[after_trial], gc_after_trial=True)
    finally:
        ranks.release_followers()


def _die_with_parent(parent: int) -> None:
    """Linux: have the kernel SIGKILL this worker when the process that spawned it dies, even by SIGKILL.

    Without it a killed ``pretune search --workers N`` leaves N - 1 orphans training on. The trial such a worker
    had running is then marked failed by the heartbeat and re-run when the search is resumed. Elsewhere a no-op.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    PR_SET_PDEATHSIG = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _spawned(plan: SearchPlan, train_fn: Optional[TrainFn], index: int, deadline: Optional[float],
             parent: int, worker_init: Optional[Callable[[], None]]) -> None:
    _die_with_parent(parent)
    if worker_init is not None:  # a spawned worker is a fresh interpreter: the caller sets up its console
        worker_init()
    work(plan, train_fn, index, deadline)


def run_workers(plan: SearchPlan, train_fn: Optional[TrainFn], deadline: Optional[float],
                worker_init: Optional[Callable[[], None]], progress: Optional[Callable]) -> None:
    """Run ``plan.workers`` workers: this process plus ``workers - 1`` spawned processes.

    Args:
        worker_init: picklable; run first in each spawned process.

    Raises:
        WorkerFailed: a spawned worker exited with an error.
    """
    ctx = mp.get_context("spawn")  # fork would copy torch threads and open DB connections
    procs = [ctx.Process(target=_spawned, args=(plan, train_fn, i, deadline, os.getpid(), worker_init),
                         daemon=False)
             for i in range(1, plan.workers)]
    for p in procs:
        p.start()
    try:
        work(plan, train_fn, 0, deadline, progress)
    finally:
        for p in procs:
            p.join()
    bad = [p.exitcode for p in procs if p.exitcode]
    if bad:
        raise WorkerFailed(f"{len(bad)} search worker(s) exited with status {bad}; run again to resume the study")
