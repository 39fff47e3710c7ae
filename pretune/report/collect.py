"""Read what a run left on disk (JSON, JSONL, YAML only) into one plain dict for the renderers.

Accepted folders: a ``pretune run`` folder (``run.json``, ``search/``, ``compress/``), or a bare
``pretune search`` or ``pretune compress`` output folder. Missing parts become missing sections,
never invented numbers.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Optional

import yaml

from .. import files
from ..errors import PretuneError
from ..files import read_jsonl

CURVES = 3  # learning curves drawn for this many of the best trials


def _json(path: Path) -> Optional[Any]:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PretuneError(f"{path}: not valid JSON ({e}); re-run the stage that wrote it") from None


def _folders(run_dir: Path) -> tuple[Optional[Path], Optional[Path]]:
    """(search folder, compress folder) inside ``run_dir``, or ``run_dir`` itself when it is one."""
    search = run_dir / files.SEARCH if (run_dir / files.SEARCH / files.TRIALS_JSON).is_file() else None
    compress = run_dir / files.COMPRESS if (run_dir / files.COMPRESS / files.RESULTS).is_file() else None
    top = _json(run_dir / files.RESULTS) or {}
    if search is None and (run_dir / files.TRIALS_JSON).is_file():
        search = run_dir
    if compress is None and "variants" in top and "source_bench" in top:
        compress = run_dir
    return search, compress


def collect(run_dir: str | Path) -> dict[str, Any]:
    """Everything the report shows, read from ``run_dir``.

    Returns:
        ``{"run_dir", "run", "config", "search", "variants", "environment"}``; a part that is
        absent on disk is None.

    Raises:
        PretuneError: the folder does not exist or holds no search or compress results.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise PretuneError(f"{run_dir}: no such run folder")
    search_dir, compress_dir = _folders(run_dir)
    if search_dir is None and compress_dir is None:
        raise PretuneError(f"{run_dir}: no search (trials.json) or compress (results.json with variants) results "
                           "to report on; pass a pretune run, search or compress output folder")
    run = _json(run_dir / files.RUN_STATE)
    config = None
    for candidate in (run_dir / files.CONFIG, (search_dir or run_dir) / files.CONFIG):
        if candidate.is_file():
            config = yaml.safe_load(candidate.read_text(encoding="utf-8"))
            break
    search = _search(search_dir) if search_dir else None
    variants = _json(compress_dir / files.RESULTS) if compress_dir else None
    return {"run_dir": str(run_dir), "run": run, "config": config, "search": search, "variants": variants,
            "generations": _json(run_dir / files.GENERATIONS), "environment": _environment(run, search, variants)}


def _search(folder: Path) -> dict[str, Any]:
    trials = _json(folder / files.TRIALS_JSON) or []
    results = _json(folder / files.RESULTS) or {}
    objectives = [tuple(o) for o in results.get("objectives") or []] or [("accuracy", "maximize")]
    metric, direction = objectives[0]
    done = [t for t in trials if t.get("state") == "complete" and _finite(t.get(metric))]
    done.sort(key=lambda t: t[metric], reverse=direction == "maximize")
    curves = [_curve(files.trial_dir(folder, t["number"]), t["number"], metric) for t in done[:CURVES]]
    best = results.get("best_trial")
    best_fit = _json(files.trial_dir(folder, best) / files.RESULTS) if best is not None else None
    return {"folder": str(folder), "objectives": objectives, "metric": metric, "direction": direction,
            "trials": trials, "results": results, "importances": _json(folder / files.IMPORTANCES) or {},
            "curves": [c for c in curves if c["eval"] or c["loss"]],
            "best_eval": (best_fit or {}).get("eval")}  # the best trial's final metrics on the eval set


def _curve(trial_dir: Path, number: int, metric: str) -> dict[str, Any]:
    """Eval metric and training loss against training samples, from the trial's metrics.jsonl."""
    path = trial_dir / files.METRICS
    rows = read_jsonl(path) if path.is_file() else []
    evals = [(r.get("samples", r.get("step")), r.get(metric)) for r in rows if r.get("type") == "eval"]
    results = _json(trial_dir / files.RESULTS) or {}
    # Train lines carry steps, not samples; convert with the run's samples per step so both share an axis.
    per_step = (results.get("train_samples") or 0) / max(results.get("steps") or 0, 1) or None
    loss = [(r["step"] * per_step if per_step else r["step"], r.get("loss")) for r in rows if r.get("type") == "train"]
    return {"trial": number, "eval": [(x, y) for x, y in evals if _finite(y) and x is not None],
            "loss": [(x, y) for x, y in loss if _finite(y)], "x": "training samples" if per_step else "step"}


def _environment(run: Optional[dict], search: Optional[dict], variants: Optional[dict]) -> dict[str, Any]:
    """Merge the environment records the stages saved (fit results, bench results, the run itself)."""
    env: dict[str, Any] = {}
    if search:
        for row in search["trials"]:
            number = row.get("number")
            if number is None:
                continue
            res = _json(files.trial_dir(search["folder"], number) / files.RESULTS)
            if res and res.get("environment"):
                fit_env = res["environment"]
                env.update({f"fit.{k}": v for k, v in fit_env.items() if k != "versions"})
                env.update(fit_env.get("versions", {}))
                break
    if variants and variants.get("source_bench", {}).get("environment"):
        env.update({f"bench.{k}": v for k, v in variants["source_bench"]["environment"].items()
                    if k in ("cpu", "cpu_count", "loadavg_1m")})
        env["bench.threads"] = variants["source_bench"].get("threads")
    if run and run.get("environment"):  # the process that ran the job (same shape as fit's record)
        run_env = run["environment"]
        env.update({f"run.{k}": v for k, v in run_env.items() if k != "versions"})
        env.update(run_env.get("versions", {}))
    return env


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
