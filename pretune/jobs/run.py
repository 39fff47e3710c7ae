"""``pretune run``: the whole job under one budget, resumable stage by stage.

    plan      estimate one trial (short probe), split the budget, choose the compress methods; saved in run.json
    search    many fits over the space (Optuna study in search/; a restart resumes it trial by trial)
    best      search/best: the best trial's model folder
    compress  variants of the best model, each benchmarked with the bench harness against the
              fp32 source (compress/results.json); a restart rebuilds this stage from its start
    generations  for a task whose models write text: the first eval prompts continued by the base and
              the best model, greedy (generations.json), shown side by side in the report
    report    report.html and report.md from the saved JSON (rebuilt on every run, seconds)

``run.json`` records what was asked, the plan, and each stage's status and seconds; running the same
command again skips finished stages.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

from .. import files
from ..config import RunConfig, as_config, config_diff, parse_duration
from ..errors import ConfigError, PretuneError

log = logging.getLogger("pretune")
STAGES = ("plan", "search", "compress", "generations", "report")
GENERATION_PROMPTS = 3  # eval prompts the report shows continued by the base and the tuned model
GENERATION_TOKENS = 32
SEARCH_SHARE = 0.75  # of the budget left after the probe; the rest goes to compress + bench + report
RESERVE_S = 10.0  # report writing and stage overheads (the report takes well under a second)
# The order the training-free compress methods run in when not all of them fit: ONNX Runtime's int8 was the
# fastest variant within the accuracy gate in every measurement of docs/benchmarks.md.
QUICK_FIRST = ("int8-dynamic-ort", "int8-static-ort", "onnx", "int8-dynamic-torch")
MIN_TRIALS = 3  # a budget is planned to fit the default trial and up to two portfolio entries
MIN_ROWS = 200  # the fewest training rows a lowered fidelity keeps
# Portfolio trials are planned only while every trial keeps this share of the default's epochs: the default is the
# best single bet (the matrix's mean gain of a portfolio's second entry is small), and on TREC two one-epoch trials
# (the default and c00) reached 92.2% where the default alone for three epochs reached 94.0%.
MIN_EPOCH_SHARE = 2 / 3


@dataclass
class RunResult:
    run_dir: Path
    plan: dict[str, Any]
    stages: dict[str, dict]
    best_dir: Optional[Path] = None
    best_values: dict[str, float] = field(default_factory=dict)
    compress: Optional[dict] = None  # compress/results.json
    report: dict[str, Path] = field(default_factory=dict)


def _read_state(run_dir: Path) -> dict:
    return files.read_json(run_dir / files.RUN_STATE) or {}


def _check_same_run(run_dir: Path, cfg: RunConfig, budget: Optional[float], state: dict) -> None:
    """A run folder holds one job: refuse to resume it with another config or budget."""
    saved = run_dir / files.CONFIG
    if saved.is_file():
        diff = config_diff(yaml.safe_load(saved.read_text()), cfg.to_dict(), ignore=("output",))
        if diff:
            raise ConfigError(f"{run_dir} holds a run with another config ({', '.join(diff[:5])} differ); "
                              "run it with the same config, pass --overwrite, or choose another --output")
    asked = state.get("asked", {}).get("budget_s")
    if state and asked != budget:
        raise ConfigError(f"{run_dir} was planned with budget {asked} s, not {budget} s; "
                          "use the same --budget, pass --overwrite, or choose another --output")


def _space_epochs(cfg: RunConfig) -> float:
    """Mean epochs over the search space (a trial's length scales with them); the config's when not searched."""
    from ..search.space import DEFAULT_SPACE

    spec = (cfg.search.space if cfg.search.space is not None else DEFAULT_SPACE).get("train.epochs")
    if isinstance(spec, list):
        return sum(spec) / len(spec)
    if isinstance(spec, dict):
        if "choices" in spec:
            return sum(spec["choices"]) / len(spec["choices"])
        return (spec["low"] + spec["high"]) / 2
    return cfg.train.epochs


def make_plan(cfg: RunConfig, budget: Optional[float], probe_steps: int = 8) -> dict[str, Any]:
    """Estimate one trial, split ``budget`` between the stages, lower the trials' fidelity when the budget
    asks for it (``lower_fidelity``), choose the compress methods.

    Raises:
        ConfigError: the budget is too small for any training (one epoch of ``MIN_ROWS`` rows).
    """
    from .estimate import estimate

    started = time.time()
    log.info("plan: timing %d training steps of the config to plan the budget ...", probe_steps)
    est = estimate(cfg, steps=probe_steps)
    probe_s = time.time() - started
    epochs = _space_epochs(cfg)
    trial_s = _trial_seconds(est, cfg, epochs, est.train_rows)
    plan = {"budget_s": budget, "probe_s": round(probe_s, 1), "trial_s": round(trial_s, 2),
            "trial_error_pct": round(est.error_pct, 1), "peak_memory_mb": round(est.peak_memory_mb),
            "first_trial_extra_s": round(est.first_setup_s - est.setup_s, 1), "device": est.device,
            "estimate": est.describe(), "n_trials_config": cfg.search.n_trials}
    if budget is None:
        plan.update(search_s=None, compress_s=None, n_trials=cfg.search.n_trials,
                    methods=cfg.compress.methods or _all_methods(_task(cfg)))
        return plan
    left = budget - probe_s - RESERVE_S
    search_s = left * SEARCH_SHARE
    want = _trials_owed(cfg)
    # The owed trials are the default (it runs train.epochs) and portfolio entries: plan for the longer of those
    # and the space's mean.
    owed = max(epochs, cfg.train.epochs)
    full = want * _trial_seconds(est, cfg, owed, est.train_rows) + plan["first_trial_extra_s"]
    if search_s < full:  # a tight budget: the owed trials come before compress's share, which keeps its floor
        search_s = max(search_s, min(full, left - _compress_floor_s(est)))
    usable = search_s - plan["first_trial_extra_s"]
    if usable < want * _trial_seconds(est, cfg, owed, est.train_rows):
        fidelity = lower_fidelity(est, cfg, owed, usable, want)
        if fidelity is None:
            one_epoch = _trial_seconds(est, cfg, 1, min(MIN_ROWS, est.train_rows))
            need = probe_s + RESERVE_S + (one_epoch + plan["first_trial_extra_s"]) / SEARCH_SHARE
            raise ConfigError(f"budget {budget:.0f} s is too small for any training: search gets {search_s:.0f} s "
                              f"and one epoch on {min(MIN_ROWS, est.train_rows)} rows takes about {one_epoch:.0f} s; "
                              f"raise --budget to at least {math.ceil(need)}s")
        trial_s = _trial_seconds(est, cfg, fidelity["epochs"] if "epochs" in fidelity else owed,
                                 fidelity.get("max_train_samples", est.train_rows))
        plan.update(fidelity=fidelity, trial_s=round(trial_s, 2))
    n_fit = math.floor(usable / trial_s) if trial_s > 0 else 0
    compress_s = left - search_s
    # The search's time share is what binds: pruned trials are shorter than the estimate, so capping the trial
    # count at n_fit would leave time unused. search.n_trials stays the user's upper bound.
    plan.update(search_s=round(search_s, 1), compress_s=round(compress_s, 1), n_trials_fit=n_fit,
                n_trials=cfg.search.n_trials,
                methods=cfg.compress.methods or _methods_for(cfg, est, compress_s))
    return plan


def _trials_owed(cfg: RunConfig) -> int:
    """The trials a budget is planned to fit: the default configuration and the first portfolio entries (up to
    ``MIN_TRIALS`` in all, at most ``search.n_trials``). With no portfolio only the default is owed: a sampler's
    draw is no better bet than the default's own training at a higher fidelity."""
    from ..search import portfolio
    from ..search.space import parse_space
    from ..train.defaults import fill_config

    entries = portfolio.resolve(cfg.search.portfolio)
    if not entries:
        return 1
    # The points the search will enqueue: an entry outside the space, or one that repeats the default (the
    # shipped portfolio starts with the recipe a small encoder already has as its default), is not run.
    filled = copy.deepcopy(cfg)
    fill_config(filled)
    points = portfolio.start_points(parse_space(cfg.search.space), filled.to_dict(), entries, limit=MIN_TRIALS,
                                      quiet=True)
    return max(1, min(MIN_TRIALS, len(points), cfg.search.n_trials or MIN_TRIALS))


def _trial_seconds(est, cfg: RunConfig, epochs: float, rows: int) -> float:
    """Predicted seconds of one trial of ``epochs`` epochs on ``rows`` training rows, from the probe of ``cfg``
    (which ran at ``cfg.train.epochs`` on ``est.train_rows`` rows): setup, steps, evaluations and saves."""
    if cfg.train.max_steps:  # a fixed step count: neither epochs nor rows change the work
        return est.trial_s
    steps = est.steps * (epochs / cfg.train.epochs) * (rows / max(est.train_rows, 1))
    per_epoch = est.steps / cfg.train.epochs * (rows / max(est.train_rows, 1))
    every = cfg.train.eval_every or per_epoch
    evals = math.ceil(steps / every - 1e-9) + len(cfg.train.eval_at or ()) if every > 0 else 1
    return est.setup_s + steps * est.step_s + (evals + 1) * (est.eval_s + est.save_s)


def lower_fidelity(est, cfg: RunConfig, epochs: float, usable_s: float, want: int) -> Optional[dict[str, Any]]:
    """The highest trial fidelity at which the default trial, and the portfolio trials owed while they fit, run in
    ``usable_s`` search seconds. In this order, each only when the one before is not enough:

    1. the epochs, to the most that fit in tenths of an epoch, for ``want`` trials, but not below
       ``MIN_EPOCH_SHARE`` of ``epochs`` (nor below one) while there is more than one trial;
    2. fewer trials, down to the default alone, each with the epochs of step 1 (the default alone: down to one
       epoch). The learning rate still decays to zero at the last step, the best use of a fixed budget; all rows
       seen once teach more than a subset seen several times for the same compute;
    3. a seeded subset of the training rows (at least ``MIN_ROWS``) for the default alone, at one epoch.

    ``max_length`` is not lowered: it truncates the eval rows too, so the scores would stop being comparable with
    a full-length run, and with length-grouped dynamic padding it saves time only on the rows longer than the cut.

    Returns:
        {"epochs": int (when lowered), "max_train_samples": int (when lowered), "trials": n, "lowered": [line]},
        or None when not even one trial of one epoch on ``MIN_ROWS`` rows fits.
    """
    rows = est.train_rows
    if cfg.train.max_steps:  # a fixed step count: neither the epochs nor the rows shorten a trial
        return None

    def at_epochs(n: int) -> Optional[dict[str, Any]]:
        least = 1.0 if n == 1 else max(1.0, MIN_EPOCH_SHARE * epochs)
        tenths = range(math.ceil(least * 10 - 1e-9), math.floor(epochs * 10 + 1e-9) + 1)
        fits = [k / 10 for k in tenths if _trial_seconds(est, cfg, k / 10, rows) * n <= usable_s]
        if not fits and not (epochs < 1 and _trial_seconds(est, cfg, epochs, rows) * n <= usable_s):
            return None
        out: dict[str, Any] = {"trials": n, "lowered": []}
        if fits and max(fits) < epochs:
            top = max(fits)
            out["epochs"] = int(top) if top == int(top) else top
            out["lowered"].append(f"epochs fixed at {out['epochs']:g} (the trials would have run {epochs:g})")
        return out

    for n in range(want, 0, -1):
        out = at_epochs(n)
        if out is not None:
            if n < want:
                out["lowered"].append(f"{n} trial{'s' if n > 1 else ''} planned rather than {want}, each on every "
                                      "training row")
            return out
    e = 1 if epochs >= 1 else epochs
    lo_s, hi_s = _trial_seconds(est, cfg, e, 0), _trial_seconds(est, cfg, e, rows)
    fit = math.floor(rows * (usable_s - lo_s) / (hi_s - lo_s)) if hi_s > lo_s else rows
    while fit > 0 and _trial_seconds(est, cfg, e, fit) > usable_s:  # evaluations are whole: step down
        fit = math.floor(fit * 0.95)
    if fit < min(MIN_ROWS, rows):
        return None
    out = {"trials": 1, "lowered": [], "max_train_samples": min(fit, rows)}
    if e < epochs:
        out["epochs"] = e
        out["lowered"].append(f"epochs fixed at {e} (the trials would have run {epochs:g})")
    if want > 1:
        out["lowered"].append(f"1 trial planned rather than {want}")
    out["lowered"].append(f"training rows: a seeded subset of {out['max_train_samples']:,} of {rows:,}")
    return out


def apply_fidelity(cfg: RunConfig, plan: dict[str, Any]) -> RunConfig:
    """``cfg`` with the plan's lowered fidelity: the subset of rows, and the epochs fixed (taken out of the
    search space, so every trial, portfolio entries included, runs that many)."""
    fidelity = plan.get("fidelity") or {}
    if not fidelity:
        return cfg
    from ..search.space import DEFAULT_SPACE

    data, train, search = cfg.data, cfg.train, cfg.search
    if "max_train_samples" in fidelity:
        data = replace(data, max_train_samples=fidelity["max_train_samples"])
    if "epochs" in fidelity:
        train = replace(train, epochs=fidelity["epochs"])
        space = dict(search.space if search.space is not None else DEFAULT_SPACE)
        space.pop("train.epochs", None)
        search = replace(search, space=space)
    return replace(cfg, data=data, train=train, search=search)


def _task(cfg: RunConfig):
    """The run's task (inferred from the labels when ``data.task`` is unset, as ``fit`` infers it)."""
    from .. import tasks
    return tasks.get(tasks.task_of(cfg.data))


def _all_methods(task=None) -> list[str]:
    from ..compress import method_names
    return method_names(task=task)


def quick_methods(task=None) -> list[str]:
    """The compress methods that train nothing: seconds each (those that apply to ``task``)."""
    from ..compress import method_names
    return method_names(trains=False, task=task)


def trained_methods(task=None) -> list[str]:
    """The compress methods that run optimizer steps: recovery after pruning, distillation."""
    from ..compress import method_names
    return method_names(trains=True, task=task)


def _bench_s(est) -> float:
    """Predicted seconds of one bench of a variant: an eval pass, batch-1 timing, a fresh process."""
    return 2 * est.eval_s + 10.0


def _compress_floor_s(est) -> float:
    """What compress keeps when the owed trials need the rest: the source's bench (the report's latency of the
    tuned model). A variant is then built only if the time left holds one (compress's own deadline)."""
    return _bench_s(est)


def _methods_for(cfg: RunConfig, est, compress_s: float) -> list[str]:
    """Training-free methods, as many as fit (``QUICK_FIRST`` first, at least one); the trained ones too when
    their steps fit in the compress share."""
    from ..compress.variants import ROUND_S_PER_FOLDER

    per_variant = _bench_s(est) + ROUND_S_PER_FOLDER * cfg.compress.latency_rounds
    step_s = est.step_s * cfg.compress.batch_size / cfg.train.batch_size
    # distillation runs teacher and student: about 1.5 steps of work per step
    trained = (2 * cfg.compress.recovery_steps + 1.5 * cfg.compress.distill_steps) * step_s
    task = _task(cfg)
    quick_names = quick_methods(task)
    quick = per_variant * (len(quick_names) + 1)
    if quick + trained + per_variant * len(trained_methods(task)) <= compress_s:
        return _all_methods(task)
    if quick <= compress_s:
        return quick_names
    ordered = [m for m in QUICK_FIRST if m in quick_names] + [m for m in quick_names if m not in QUICK_FIRST]
    fit = max(1, math.floor(compress_s / per_variant) - 1)  # the source is benched first
    return ordered[:fit]


def describe_plan(plan: dict[str, Any]) -> list[str]:
    """The plan as lines for the console."""
    lines = [f"plan: probe {plan['probe_s']:.0f} s: {plan['estimate']}"]
    if plan["budget_s"] is None:
        lines.append(f"plan: no budget: search runs {plan['n_trials']} trials (about "
                     f"{plan['n_trials'] * plan['trial_s'] / 60:.1f} min), then compress "
                     f"{', '.join(plan['methods'])}")
        return lines
    lines += [f"plan: budget {plan['budget_s'] / 60:.1f} min = search {plan['search_s'] / 60:.1f} min "
              f"(about {plan['n_trials_fit']} unpruned trials of {plan['trial_s']:.0f} s "
              f"+/- {plan['trial_error_pct']:.0f}%; pruned ones are shorter and more run, "
              f"{'up to ' + str(plan['n_trials']) if plan['n_trials'] else 'no cap on the count'}) + "
              f"compress and bench {plan['compress_s'] / 60:.1f} min + "
              f"report {RESERVE_S:.0f} s",
              f"plan: compress methods: {', '.join(plan['methods'])}"]
    fidelity = plan.get("fidelity")
    if fidelity:
        n = fidelity["trials"]
        lines.append(f"plan: fidelity lowered so that {n} trial{'s fit' if n != 1 else ' fits'} the search's share: "
                     + "; ".join(fidelity["lowered"]))
    return lines


def _stage_folder_mtime(folder: Path) -> Optional[float]:
    times = [p.stat().st_mtime for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else []
    return max(times) if times else None


class _Stages:
    """Status and seconds per stage in run.json, written atomically after every change."""

    def __init__(self, run_dir: Path, state: dict):
        self.run_dir, self.state = run_dir, state
        self.state.setdefault("stages", {})

    def done(self, name: str) -> bool:
        return self.state["stages"].get(name, {}).get("status") == "done"

    def spent(self, name: str) -> float:
        """Seconds already spent on ``name``, a killed attempt counted up to its folder's last write."""
        rec = self.state["stages"].get(name, {})
        spent = rec.get("seconds", 0.0)
        if rec.get("status") == "running" and rec.get("started"):
            last = _stage_folder_mtime(self.run_dir / name) or rec["started"]
            spent += max(last - rec["started"], 0.0)
        return spent

    def start(self, name: str) -> None:
        rec = self.state["stages"].setdefault(name, {})
        rec.update(seconds=self.spent(name), status="running", started=time.time(),
                   attempts=rec.get("attempts", 0) + 1)
        self.save()

    def finish(self, name: str, **facts: Any) -> None:
        rec = self.state["stages"][name]
        rec.update(seconds=round(rec["seconds"] + time.time() - rec["started"], 2), status="done", **facts)
        rec.pop("started", None)
        self.save()

    def save(self) -> None:
        files.write_json(self.run_dir / files.RUN_STATE, self.state)


def _search_stage(cfg: RunConfig, run_dir: Path, plan: dict, stages: _Stages, worker_init=None) -> dict:
    """Run or resume the search; returns its results.json summary."""
    from ..search import search

    out = run_dir / files.SEARCH
    if not stages.done("search"):
        timeout = None
        if plan["search_s"] is not None:
            timeout = max(plan["search_s"] - stages.spent("search"), 1.0)
        stages.start("search")
        log.info("search: up to %s trials%s", plan["n_trials"], f", {timeout:.0f} s" if timeout else "")
        scfg = replace(cfg, output=str(out), search=replace(cfg.search, n_trials=plan["n_trials"], timeout=timeout))
        result = search(scfg, worker_init=worker_init)
        if result.best_dir is None:
            raise PretuneError(f"search finished without a successful trial ({result.counts}); see "
                               f"{out / files.TRIALS_CSV} for the failure reasons")
        stages.finish("search", best_trial=result.best_trial, counts=result.counts)
    return files.read_json(out / files.RESULTS)


def _methods_left(cfg: RunConfig, plan: dict, stages: _Stages) -> list[str]:
    """The planned methods, less the trained ones when the search left less time than planned for compress.

    The search can overrun its share (a trial stops only at an evaluation; the machine may get busier than the
    probe saw), and compress has no deadline of its own, so this is where the budget is defended.
    """
    methods = list(plan["methods"])
    if plan["budget_s"] is None:
        return methods
    used = plan["probe_s"] + sum(stages.spent(s) for s in ("search", "compress"))
    left = plan["budget_s"] - used - RESERVE_S
    if left < plan["compress_s"]:
        log.warning("compress: %.0f s of the budget left, %.0f s planned", max(left, 0), plan["compress_s"])
        if cfg.compress.methods is None and any(m in trained_methods() for m in methods):
            methods = [m for m in methods if m not in trained_methods()]
            log.warning("compress: leaving out the methods that train; running %s", ", ".join(methods))
    return methods


def _compress_stage(cfg: RunConfig, run_dir: Path, plan: dict, best_dir: Path, stages: _Stages) -> dict:
    from ..compress import compress, load_results

    out = run_dir / files.COMPRESS
    if stages.done("compress"):
        return load_results(out)
    methods = _methods_left(cfg, plan, stages)
    deadline = None
    if plan["budget_s"] is not None:  # what the budget leaves for compress, less the report's reserve
        used = plan["probe_s"] + sum(stages.spent(s) for s in ("search", "compress"))
        deadline = time.time() + max(plan["budget_s"] - used - RESERVE_S, 0.0)
    stages.start("compress")
    d = cfg.data
    results = compress(best_dir, d.eval, train=d.train, text=d.text, text_pair=d.text_pair, label=d.label,
                       output=out, cfg=cfg.compress, methods=methods, deadline=deadline)
    stages.finish("compress", methods=methods,
                  accepted=[v["name"] for v in results["variants"] if v["status"] == "accepted"],
                  pareto_front=results.get("pareto_front"))
    return results


def _generations_stage(cfg: RunConfig, run_dir: Path, best_dir: Path, stages: _Stages) -> None:
    """The first eval prompts continued, greedy, by the base model and the best one: ``generations.json``."""
    from ..compress import find_model_folder
    from .generate import generate, read_prompts

    if stages.done("generations"):
        return
    stages.start("generations")
    prompts = read_prompts(cfg.data.eval)[:GENERATION_PROMPTS]
    options = dict(max_new_tokens=GENERATION_TOKENS, threads=cfg.train.threads, seed=cfg.train.seed,
                   device=cfg.train.device)
    base = generate(cfg.model.path, prompts, **options)
    tuned = generate(str(find_model_folder(best_dir)), prompts, **options)
    rows = [{"prompt": _prompt_text(p), "base": b["generated"], "tuned": t["generated"]}
            for p, b, t in zip(prompts, base, tuned)]
    files.write_json(run_dir / files.GENERATIONS, rows)
    stages.finish("generations", prompts=len(rows))


def _prompt_text(prompt) -> str:
    """A prompt as text: chat messages as ``role: content`` lines."""
    if isinstance(prompt, list):
        return "\n".join(f"{m['role']}: {m['content']}" for m in prompt)
    return str(prompt)


def _prepare_folder(cfg: RunConfig, budget: Optional[float], overwrite: bool) -> tuple[Path, dict]:
    import shutil

    run_dir = files.check_output_dir(cfg.output)
    if overwrite and run_dir.exists():
        shutil.rmtree(run_dir)
    state = _read_state(run_dir)
    _check_same_run(run_dir, cfg, budget, state)
    if run_dir.exists() and any(run_dir.iterdir()) and not state:
        raise ConfigError(f"{run_dir} holds something other than a pretune run; pass --overwrite or choose "
                          "another --output")
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / files.CONFIG).is_file():
        files.write_text(run_dir / files.CONFIG, cfg.to_yaml())
    return run_dir, state


def run(cfg: RunConfig | dict | str | Path, *, budget: str | float | None = None, overwrite: bool = False,
        probe_steps: int = 8, note: Optional[str] = None,
        worker_init: Optional[Callable[[], None]] = None) -> RunResult:
    """The whole job: plan, search, best model, compress (with bench), report; resumable per stage.

    Args:
        cfg: a ``RunConfig``, dict or YAML path; ``cfg.output`` is the run folder (``search/``, ``compress/``,
            ``run.json``, ``report.html``); ``data.eval`` is required (every variant is measured on it).
        budget: wall time for the whole job (seconds or ``"90s"``, ``"6m"``, ``"1h"``); None: the search's
            trial count alone bounds it.
        overwrite: delete the run folder first; otherwise an existing run folder is resumed.
        probe_steps: optimizer steps timed by the estimate that makes the plan.
        note: a line kept with what was asked and shown in the report (e.g. where the data came from).
        worker_init: run first in each spawned search worker (the CLI sets up its console there).

    Returns:
        RunResult: the plan, per-stage status and seconds, the best model, compress results, report paths.

    Raises:
        ConfigError: bad config, no eval file, a budget that cannot fit one trial, or a folder holding a
            different run. Other ``PretuneError``s from the stages (all before their stage writes).
    """
    from ..report import report
    from ..runtime import environment

    cfg = as_config(cfg)
    try:
        budget = parse_duration(budget)
    except ValueError as e:
        raise ConfigError(f"--budget: {e}") from None
    if budget is not None and budget <= 0:
        raise ConfigError(f"--budget must be > 0, got {budget!r}")
    if not cfg.data.eval:
        raise ConfigError("pretune run needs a held-out file for the compress and bench stages: pass --eval FILE "
                          "(or data.eval in the config)")
    run_dir, state = _prepare_folder(cfg, budget, overwrite)
    stages = _Stages(run_dir, state)
    if "plan" not in state:
        plan = make_plan(cfg, budget, probe_steps)
        state.update(asked={"model": cfg.model.path, "train": cfg.data.train, "eval": cfg.data.eval,
                            "budget_s": budget, "output": str(run_dir), "note": note},
                     plan=plan, environment=environment())
        stages.save()
    else:
        log.info("resuming %s: %s", run_dir, ", ".join(f"{k} {v.get('status')}" for k, v in state["stages"].items())
                 or "planned")
    plan = state["plan"]
    for line in describe_plan(plan):
        log.info("%s", line)

    search_summary = _search_stage(apply_fidelity(cfg, plan), run_dir, plan, stages, worker_init)
    best_dir = Path(search_summary["best_dir"])
    compressed = _compress_stage(cfg, run_dir, plan, best_dir, stages)
    if _task(cfg).generates:
        _generations_stage(cfg, run_dir, best_dir, stages)
    stages.start("report")
    paths = report(run_dir)
    stages.finish("report")
    paths = report(run_dir)  # again, so the page shows the report stage's own status and time
    objectives = [m for m, _ in search_summary["objectives"]]
    return RunResult(run_dir, plan, state["stages"], best_dir,
                     dict(zip(objectives, search_summary.get("best_values") or [])), compressed, paths)


__all__ = ["run", "make_plan", "describe_plan", "lower_fidelity", "apply_fidelity", "RunResult", "STAGES"]
