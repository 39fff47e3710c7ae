"""Where a search starts: the run's default configuration, then a portfolio of configurations that did well on
other tasks, then the sampler (TPE by default), which has all of them as its history.

A portfolio is an ordered list of configurations in a JSON file::

    {"format": "pretune-portfolio/1",
     "source": {"what": "...", "command": "...", "commit": "..."},       # free-form: where it came from
     "entries": [{"name": "c07", "config": {"train.lr": 0.0001, "train.epochs": 3, "method.name": "full"}}, ...]}

``auto`` is the one shipped with pretune (``portfolio.json`` beside this module, built by
``benchmarks/portfolio/``); ``pretune portfolio build`` makes one from a team's own studies.

How a portfolio is chosen (``greedy``): greedy forward selection on a task x configuration score matrix, as
Auto-sklearn 2.0 (Feurer et al., 2022) and AutoGluon build theirs. Each task's scores are first normalised as the
gain over the default configuration, as a share of the largest gain any configuration reached on that task::

    n(t, c) = (s(t, c) - s(t, default)) / (max_c' s(t, c') - s(t, default))      (0 where no one beats the default)

so 0 is the default's score and 1 the best seen, whatever the metric's scale. A task where nothing beats the
default weighs nothing, and a task where the default already does well does not drown the rest. Starting from
the default (trial 1 of every search), the configuration added next is the one that most raises the mean over
tasks of ``max`` over the set of ``n(t, c)``: the set's score on a task is that of its best member, which is what a
search that tries them all keeps. Ties go to the better mean of ``n``, then to the earlier candidate.

How a portfolio is used (``start_points``): each entry is projected on the search space. A searched key the entry
sets must lie inside the space (else the entry is skipped, with a log line); one it does not set takes the run's
own value; keys the space does not search keep the run's value. Entries that project to the same values are kept
once. The points are enqueued (``optuna.Study.enqueue_trial``) before the first trial, once per study, tagged with
their source (``default``, ``portfolio:NAME``); the sampler's own trials are ``sampler``.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..errors import ConfigError
from .space import Param, is_active, sampling_order

log = logging.getLogger("pretune.search")

FORMAT = "pretune-portfolio/1"
PACKAGED = Path(__file__).with_name("portfolio.json")
SOURCE_ATTR = "pretune:source"  # a trial's user attribute: default | portfolio:NAME (absent: sampler)
ENQUEUED_ATTR = "pretune:start_points"  # a study's user attribute: the points enqueued, so a resume adds none
NO_PORTFOLIO = ("none", None, "")
# samplers that choose every point themselves: a grid covers the space, enqueued points would only repeat some
OWN_POINTS = ("grid", "bruteforce")


@dataclass(frozen=True)
class Entry:
    name: str
    config: dict[str, Any]  # dotted config key -> value


def greedy(scores: dict[str, dict[str, Optional[float]]], default: str, size: Optional[int] = None) -> list[str]:
    """Candidates in the order greedy forward selection adds them, ``default`` first.

    Args:
        scores: task -> candidate -> score, higher better (negate a loss first); None or a missing cell: the
            candidate failed or did not run on that task, and counts as no better than the default there.
        default: the candidate every search starts with; every task must have its score.
        size: this many (default: as many as add something). Ties, and the places left once nothing adds to the
            set, go to the best mean normalised score, then to the earlier candidate.

    Raises:
        ValueError: a task without a score for ``default``.
    """
    norm = normalised(scores, default)
    candidates = sorted({c for row in scores.values() for c in row} - {default})
    mean = {c: sum(norm[t].get(c, 0.0) for t in norm) / max(len(norm), 1) for c in candidates}
    chosen, best = [default], {t: 0.0 for t in norm}
    while candidates and (size is None or len(chosen) < size):
        def gain(c: str) -> float:
            return sum(max(best[t], norm[t].get(c, 0.0)) - best[t] for t in norm) / max(len(norm), 1)

        # once nothing adds to the set, a given size is filled with the best all-rounders (mean normalised score)
        pick = max(candidates, key=lambda c: (gain(c), mean[c], -candidates.index(c)))
        if size is None and gain(pick) <= 0:
            break
        chosen.append(pick)
        candidates.remove(pick)
        best = {t: max(best[t], norm[t].get(pick, 0.0)) for t in norm}
    return chosen


def normalised(scores: dict[str, dict[str, Optional[float]]], default: str) -> dict[str, dict[str, float]]:
    """task -> candidate -> gain over ``default`` as a share of the best gain on that task (see the module)."""
    out = {}
    for task, row in scores.items():
        base = row.get(default)
        if base is None or not math.isfinite(base):
            raise ValueError(f"task {task!r} has no score for the default candidate {default!r}")
        valid = {c: s for c, s in row.items() if s is not None and math.isfinite(s)}
        top = max(valid.values())
        span = top - base
        out[task] = {c: (s - base) / span if span > 0 else 0.0 for c, s in valid.items()}
    return out


def mean_best(scores: dict[str, dict[str, Optional[float]]], default: str, chosen: list[str]) -> float:
    """The mean over tasks of the best normalised score among ``chosen`` (0: the default alone; 1: the best seen
    on every task)."""
    norm = normalised(scores, default)
    return sum(max([0.0] + [norm[t].get(c, 0.0) for c in chosen]) for t in norm) / max(len(norm), 1)


# ----------------------------------------------------------------------------- files


def read(path: str | Path) -> list[Entry]:
    """The entries of a portfolio file, checked against the config's keys.

    Raises:
        ConfigError: the file is missing or not a portfolio, or an entry sets a key no config has (one line,
            naming the file, the entry and the valid keys of that section).
    """
    from .space import config_keys

    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"search.portfolio: {p} not found; give a file made by `pretune portfolio build`, "
                          "auto (the packaged one) or none") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"search.portfolio: {p} is not JSON ({e})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("entries"), list):
        raise ConfigError(f"search.portfolio: {p} is not a portfolio file (expected format {FORMAT!r} and a list "
                          "of entries); make one with `pretune portfolio build`")
    valid = config_keys()
    entries = []
    for i, e in enumerate(data["entries"], 1):
        if not isinstance(e, dict) or not isinstance(e.get("config"), dict):
            raise ConfigError(f"{p}, entry {i}: expected {{\"name\": ..., \"config\": {{dotted key: value}}}}")
        name = str(e.get("name", i))
        for key in e["config"]:
            if key not in valid:
                section = key.split(".")[0]
                hint = sorted(k for k in valid if k.startswith(section + ".")) or sorted({k.split(".")[0]
                                                                                           for k in valid})
                raise ConfigError(f"{p}, entry {i} ({name}): unknown config key {key!r}; valid: {', '.join(hint)}")
        entries.append(Entry(name, dict(e["config"])))
    return entries


def write(path: str | Path, entries: list[Entry], source: dict[str, Any]) -> Path:
    from .. import files

    body = {"format": FORMAT, "source": source,
            "entries": [{"name": e.name, "config": e.config} for e in entries]}
    files.write_text(Path(path), json.dumps(body, indent=1) + "\n")
    return Path(path)


def resolve(setting: Optional[str]) -> list[Entry]:
    """``search.portfolio``: auto (the packaged file), none, or a path."""
    if setting in NO_PORTFOLIO:
        return []
    if setting == "auto" and not PACKAGED.is_file():
        log.info("search: this build of pretune ships no portfolio; starting from the default configuration")
        return []
    return read(PACKAGED if setting == "auto" else setting)


# ----------------------------------------------------------------------------- start points


def _flat(base: dict[str, Any]) -> dict[str, Any]:
    return {f"{section}.{k}": v for section, values in base.items() if isinstance(values, dict)
            for k, v in values.items()}


def _as_choice(key: str, value: Any) -> Any:
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if value is None and key == "lora.target_modules":
        return "auto"  # None and [auto] both mean the architecture's default
    return value


def _inside(p: Param, value: Any) -> bool:
    if p.type == "categorical":
        return value in p.choices
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if p.type == "int" and (value != int(value) or (p.step and (value - p.low) % p.step)):
        return False
    tol = 1e-12 * max(abs(p.low), abs(p.high), 1.0)
    return p.low - tol <= value <= p.high + tol


def project(config: dict[str, Any], params: dict[str, Param], base: dict[str, Any]) -> tuple[Optional[dict], str]:
    """``config`` as values of the searched parameters: (values, "") or (None, why it does not fit)."""
    values: dict[str, Any] = {}
    for p in sampling_order(params):
        if not is_active(p, values):
            continue
        value = _as_choice(p.key, config[p.key] if p.key in config else base.get(p.key))
        if not _inside(p, value):
            where = (f"not among the space's choices {list(p.choices)}" if p.type == "categorical"
                     else f"outside the space's range [{p.low:g}, {p.high:g}]")
            return None, f"{p.key}={value!r} is {where}"
        values[p.key] = value if p.type != "int" else int(value)
    return values, ""


def start_points(params: dict[str, Param], base: dict[str, Any], entries: list[Entry],
                 limit: Optional[int] = None, quiet: bool = False) -> list[tuple[str, dict[str, Any]]]:
    """The points a search enqueues, in order: (source, values). The run's own configuration first (``base``,
    the run config as a dict of sections), then each portfolio entry that fits ``params``; at most ``limit``.
    ``quiet``: no log line for a skipped entry (a planner counting them; the search itself says it)."""
    flat = _flat(base)
    points: list[tuple[str, dict[str, Any]]] = []
    for source, config in [("default", {})] + [(f"portfolio:{e.name}", e.config) for e in entries]:
        if limit is not None and len(points) >= limit:
            break
        values, why = project(config, params, flat)
        if values is None and not quiet:
            log.info("search: %s skipped: %s", "the run's default configuration" if source == "default"
                     else f"portfolio entry {source.split(':', 1)[1]}", why)
        elif values is not None and all(values != v for _, v in points):
            points.append((source, values))
    return points


def enqueue(study, points: list[tuple[str, dict[str, Any]]]) -> int:
    """Enqueue ``points`` as the study's first trials unless it has trials or had them enqueued before (a resumed
    or shared study); returns how many were enqueued now."""
    if study.user_attrs.get(ENQUEUED_ATTR) is not None or study.get_trials(deepcopy=False):
        return 0
    for source, values in points:
        study.enqueue_trial(values, user_attrs={SOURCE_ATTR: source}, skip_if_exists=True)
    study.set_user_attr(ENQUEUED_ATTR, [s for s, _ in points])
    return len(points)


def source_of(trial) -> str:
    """Where a trial's configuration came from: default, portfolio:NAME or sampler."""
    return trial.user_attrs.get(SOURCE_ATTR, "sampler")


# ----------------------------------------------------------------------------- from a team's own studies


NEAR = 0.1  # a trial stands for a configuration within this mean normalised distance (see ``from_searches``)


def read_search(folder: str | Path) -> tuple[str, str, list[dict[str, Any]]]:
    """(name, direction, complete trials as {"source", "params", "value"}) of a search folder or a run folder.

    Raises:
        ConfigError: no finished search there, or one with several objectives.
    """
    from .. import files

    p = Path(folder)
    for where in (p, p / files.SEARCH):
        if (where / files.TRIALS_JSON).is_file() and (where / files.RESULTS).is_file():
            break
    else:
        raise ConfigError(f"{p}: no finished search here (no {files.TRIALS_JSON} and {files.RESULTS}); give the "
                          "output folder of `pretune search` or `pretune run`")
    summary = json.loads((where / files.RESULTS).read_text(encoding="utf-8"))
    objectives = summary.get("objectives") or []
    if len(objectives) != 1:
        raise ConfigError(f"{where}: a portfolio is built from single-objective searches; this one has "
                          f"{len(objectives)} objectives")
    metric, direction = objectives[0]
    rows = json.loads((where / files.TRIALS_JSON).read_text(encoding="utf-8"))
    trials = [{"source": r.get("source", "sampler"), "value": float(r[metric]),
               "params": {k.removeprefix("params."): v for k, v in r.items()
                          if k.startswith("params.") and v is not None}}
              for r in rows if r.get("state") == "complete" and r.get(metric) is not None]
    return str(where), direction, trials


def _distance(a: dict[str, Any], b: dict[str, Any], scale: dict[str, tuple[float, float, bool]]) -> float:
    """Mean over the keys of either of the per-key distances in [0, 1]: numbers by their share of the range seen
    (log-scaled where the range spans a factor of 10 or more), anything else 0 when equal, else 1."""
    keys = set(a) | set(b)
    total = 0.0
    for k in keys:
        x, y = a.get(k), b.get(k)
        if k in scale and isinstance(x, (int, float)) and isinstance(y, (int, float)):
            lo, hi, log_ = scale[k]
            if log_:
                x, y, lo, hi = math.log(x), math.log(y), math.log(lo), math.log(hi)
            total += abs(x - y) / (hi - lo) if hi > lo else 0.0
        else:
            total += 0.0 if x == y else 1.0
    return total / max(len(keys), 1)


def from_searches(searches: list[tuple[str, str, list[dict[str, Any]]]], size: int = 8,
                  per_search: int = 3) -> tuple[list[Entry], dict[str, Any]]:
    """A portfolio from finished searches on other tasks (``read_search``'s records): (entries, how it was made).

    Candidates are the ``per_search`` best trials of each search. A search is one task of the score matrix; its
    cell for a candidate is the value of its own trial nearest to that candidate (``_distance`` at most
    ``NEAR``: about the same configuration), else empty. Its default is its ``default`` trial (pretune starts
    every search with it), else its first trial. Then ``greedy`` as for the packaged portfolio.

    Raises:
        ConfigError: fewer than two searches with complete trials (nothing to learn across).
    """
    searches = [s for s in searches if s[2]]
    if len(searches) < 2:
        raise ConfigError("pretune portfolio build needs at least two finished searches with complete trials "
                          "(one per task); a portfolio is what worked across tasks")
    numbers: dict[str, list[float]] = {}
    for _, _, trials in searches:
        for t in trials:
            for k, v in t["params"].items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    numbers.setdefault(k, []).append(float(v))
    scale = {k: (min(v), max(v), min(v) > 0 and max(v) >= 10 * min(v)) for k, v in numbers.items()}
    candidates: dict[str, dict[str, Any]] = {}
    for i, (where, direction, trials) in enumerate(searches):
        sign = 1.0 if direction.startswith("max") else -1.0
        for j, t in enumerate(sorted(trials, key=lambda t: -sign * t["value"])[:per_search]):
            if all(t["params"] != c for c in candidates.values()):
                candidates[f"s{i}t{j}"] = t["params"]
    scores: dict[str, dict[str, Optional[float]]] = {}
    for i, (where, direction, trials) in enumerate(searches):
        sign = 1.0 if direction.startswith("max") else -1.0
        default = next((t for t in trials if t["source"] == "default"), trials[0])
        row: dict[str, Optional[float]] = {"default": sign * default["value"]}
        for name, params in candidates.items():
            near = min(trials, key=lambda t: _distance(t["params"], params, scale))
            if _distance(near["params"], params, scale) <= NEAR:
                row[name] = sign * near["value"]
        scores[f"search {i}"] = row
    order = [c for c in greedy(scores, "default", size=size + 1) if c != "default"]
    entries = [Entry(f"p{k:02d}", candidates[c]) for k, c in enumerate(order)]
    how = {"what": "pretune portfolio build", "searches": [w for w, _, _ in searches],
           "candidates": len(candidates), "mean_normalised_score": round(mean_best(scores, "default",
                                                                                     ["default", *order]), 4)}
    return entries, how
