"""What a search leaves behind: trials table (CSV, JSON), importances, ``best/``, results.json."""

from __future__ import annotations

import csv
import logging
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import optuna
from optuna.trial import FrozenTrial, TrialState

from .. import files
from ..files import atomic_path, read_json, write_json
from .factories import quiet
from .plan import SearchPlan
from .portfolio import source_of
from .runner import counts, samples_used

log = logging.getLogger("pretune.search")


@dataclass
class SearchResult:
    output: Path
    study_name: str
    storage: str
    objectives: list[tuple[str, str]]
    best_trial: Optional[int]  # number of the best trial (first objective on the Pareto set when several)
    best_params: dict[str, Any]
    best_values: Optional[list[float]]
    best_dir: Optional[Path]  # the best trial's model, copied to ``output/best``
    pareto: list[dict[str, Any]] = field(default_factory=list)  # rows of the Pareto set (multi-objective)
    trials: list[dict[str, Any]] = field(default_factory=list)
    importances: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    train_samples: int = 0
    stopped_by: Optional[str] = None
    warning: Optional[str] = None  # the best trial's eval metrics at chance level (``metrics.chance_level``)


def trial_row(t: FrozenTrial, plan: SearchPlan, reruns: dict[int, int]) -> dict[str, Any]:
    """One trial as a flat record: number, state, objective values, samples, duration, reason, params."""
    values = t.values or [None] * len(plan.objectives)
    row: dict[str, Any] = {"number": t.number, "state": t.state.name.lower(), "source": source_of(t)}
    for (metric, _), v in zip(plan.objectives, values):
        row[metric] = v
    duration = t.duration.total_seconds() if t.duration else t.user_attrs.get("seconds")
    row.update({"duration_s": round(duration, 3) if duration is not None else None,
                "train_samples": t.user_attrs.get("train_samples", 0),
                "fail_reason": t.user_attrs.get("fail_reason"),
                "retry_of": t.system_attrs.get("failed_trial"),
                "last_step": t.last_step})
    if t.state == TrialState.FAIL and row["fail_reason"] is None:
        again = f"re-run as trial {reruns[t.number]}" if t.number in reruns else "not re-run yet"
        row["fail_reason"] = f"worker died mid-trial (heartbeat stopped); {again}"
    for key, value in t.params.items():
        row[f"params.{key}"] = value
    for key, value in (t.user_attrs.get("metrics") or {}).items():
        row.setdefault(f"metrics.{key}", value)
    return row


def write_table(rows: list[dict[str, Any]], output: Path) -> None:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with atomic_path(output / files.TRIALS_CSV) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
    write_json(output / files.TRIALS_JSON, rows)


def importances(study: optuna.Study, plan: SearchPlan) -> dict[str, Any]:
    """fANOVA importance of each parameter per objective; a reason instead when there is too little data."""
    out: dict[str, Any] = {}
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    for i, (metric, _) in enumerate(plan.objectives):
        if len(complete) < 2:
            out[metric] = {"error": f"needs at least 2 complete trials, have {len(complete)}"}
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                imp = optuna.importance.get_param_importances(
                    study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=plan.seed),
                    target=(lambda t, i=i: t.values[i]) if plan.multi else None)
            out[metric] = {k: round(float(v), 4) for k, v in imp.items()}
        except (ValueError, RuntimeError) as e:  # e.g. no parameter shared by all complete trials
            out[metric] = {"error": str(e).splitlines()[0]}
    return out


def _copy_best(trial: FrozenTrial, output: Path) -> Optional[Path]:
    src = trial.user_attrs.get("model_dir")
    if not src or not Path(src).is_dir():
        log.warning("best trial %d has no saved model folder to copy", trial.number)
        return None
    dest = output / files.BEST
    with atomic_path(dest) as tmp:
        shutil.copytree(src, tmp)
    return dest


def _best_warning(best: Optional[FrozenTrial]) -> Optional[str]:
    """The best trial's warning that its eval metrics are at chance level (fit's results.json), logged."""
    folder = best.user_attrs.get("dir") if best is not None else None
    path = Path(folder) / files.RESULTS if folder else None
    try:
        warning = read_json(path).get("warning") if path is not None and path.is_file() else None
    except (OSError, ValueError):
        return None
    if warning:
        log.warning("search: best trial %d: %s", best.number, warning)
    return warning


def _best(study: optuna.Study, plan: SearchPlan) -> tuple[Optional[FrozenTrial], list[FrozenTrial]]:
    try:
        front = study.best_trials
    except ValueError:
        return None, []
    if not front:
        return None, []
    sign = 1 if plan.directions[0] == "maximize" else -1
    best = max(front, key=lambda t: sign * t.values[0])
    return best, sorted(front, key=lambda t: t.number)


def collect(study: optuna.Study, plan: SearchPlan, stopped_by: Optional[str] = None) -> SearchResult:
    """Write trials.csv/json, importances.json, ``best/`` and results.json; return them as a SearchResult."""
    with quiet():
        optuna.storages.fail_stale_trials(study)  # so a dead worker's trial is not listed as running
    trials = study.get_trials(deepcopy=False)
    # retry copy -> the trial it re-runs (the last one in its retry history)
    reruns = {t.system_attrs["retry_history"][-1]: t.number for t in trials if t.system_attrs.get("retry_history")}
    rows = [trial_row(t, plan, reruns) for t in trials]
    plan.output.mkdir(parents=True, exist_ok=True)
    write_table(rows, plan.output)
    imp = importances(study, plan)
    write_json(plan.output / files.IMPORTANCES, imp)
    best, front = _best(study, plan)
    best_dir = _copy_best(best, plan.output) if best is not None else None
    warning = _best_warning(best)
    pareto = [r for r in rows if r["number"] in {t.number for t in front}] if plan.multi else []
    result = SearchResult(
        output=plan.output, study_name=plan.study_name, storage=plan.storage_url.split("@")[-1],
        objectives=plan.objectives, best_trial=best.number if best else None,
        best_params=dict(best.params) if best else {}, best_values=list(best.values) if best else None,
        best_dir=best_dir, pareto=pareto, trials=rows, importances=imp, counts=counts(trials),
        train_samples=samples_used(trials), stopped_by=stopped_by, warning=warning)
    summary = {k: v for k, v in result.__dict__.items() if k != "trials"}
    write_json(plan.output / files.RESULTS, summary)
    return result
