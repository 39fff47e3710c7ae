"""Name -> Optuna object: samplers, pruners, storages and objective directions.

Each registry maps a name to a small builder; an unknown name lists the valid ones.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import optuna

from .. import files
from ..errors import ConfigError
from .pruning import (PROGRESS_STEPS, GraceHyperbandPruner, GraceMedianPruner, GracePeriod, ScheduleHalvingPruner,
                      rungs)
from .space import Param, grid_values

log = logging.getLogger("pretune.search")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence Optuna's ExperimentalWarning for features used on purpose (heartbeat, grouped TPE)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def _tpe(seed: int, params: dict[str, Param], multi: bool) -> optuna.samplers.BaseSampler:
    # multivariate + group handle conditional spaces (lora.* only under method lora) jointly.
    with quiet():
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=5)


def _grid(seed: int, params: dict[str, Param], multi: bool) -> optuna.samplers.BaseSampler:
    return optuna.samplers.GridSampler(grid_values(params), seed=seed)


def _cmaes(seed: int) -> optuna.samplers.BaseSampler:
    try:
        import cmaes  # noqa: F401  (optional dependency of Optuna's CmaEsSampler)
    except ImportError:
        raise ConfigError("search.sampler cmaes needs the cmaes package: pip install cmaes") from None
    return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)


SAMPLERS: dict[str, Callable[[int, dict[str, Param], bool], optuna.samplers.BaseSampler]] = {
    "tpe": _tpe,
    "random": lambda seed, params, multi: optuna.samplers.RandomSampler(seed=seed),
    "grid": _grid,
    "cmaes": lambda seed, params, multi: _cmaes(seed),
    "qmc": lambda seed, params, multi: optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False),
    "gp": lambda seed, params, multi: optuna.samplers.GPSampler(seed=seed),
    "nsga2": lambda seed, params, multi: optuna.samplers.NSGAIISampler(seed=seed),
    "nsga3": lambda seed, params, multi: optuna.samplers.NSGAIIISampler(seed=seed),
    "bruteforce": lambda seed, params, multi: optuna.samplers.BruteForceSampler(seed=seed),
}

PRUNERS: dict[str, Callable[[GracePeriod], optuna.pruners.BasePruner]] = {
    # ASHA: stop a trial at each rung (1/81, 1/27, 1/9, 1/3 of its schedule) unless in the top 1/3 there.
    "asha": lambda grace: ScheduleHalvingPruner(reduction_factor=3, grace=grace),
    "hyperband": lambda grace: GraceHyperbandPruner(grace, min_resource=rungs()[0], max_resource=PROGRESS_STEPS,
                                                    reduction_factor=3),
    "median": lambda grace: GraceMedianPruner(grace, n_startup_trials=3, n_warmup_steps=0),
    "none": lambda grace: optuna.pruners.NopPruner(),
}

# Where each pruner reads a trial, as fractions of its schedule: trials evaluate there too (runner.trial_config).
# The median pruner compares at whatever steps trials report, so it needs no evaluations of its own.
_RUNG_FRACTIONS = [r / PROGRESS_STEPS for r in rungs()]  # 1/81, 1/27, 1/9, 1/3; Hyperband's brackets share them
PRUNER_RUNGS: dict[str, list[float]] = {"asha": _RUNG_FRACTIONS, "hyperband": _RUNG_FRACTIONS}


def pruner_name(name: Optional[str], multi: bool) -> str:
    """The pruner a search runs: ``None`` means none (pruning is opt-in; see ``SearchConfig.pruner``)."""
    return name if name is not None else "none"


# Metrics better when smaller; anything else is maximised unless marked ":min".
_MINIMISED = ("loss", "trainable_params", "total_params", "seconds", "train_samples", "latency", "size", "mse",
              "mae", "rmse", "perplexity")


def make_sampler(name: str, seed: int, params: dict[str, Param], multi: bool = False) -> optuna.samplers.BaseSampler:
    """Build a seeded sampler by name.

    Raises:
        ConfigError: unknown name, or a grid over a continuous parameter.
    """
    if name not in SAMPLERS:
        raise ConfigError(f"search.sampler: unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    with quiet():
        return SAMPLERS[name](seed, params, multi)


def make_pruner(name: Optional[str], multi: bool, grace: GracePeriod = GracePeriod()) -> optuna.pruners.BasePruner:
    """Build a pruner by name; ``None`` means none (pruning is opt-in: ``pruner_name``).

    Args:
        grace: how long each trial trains before the pruner may judge it.

    Raises:
        ConfigError: unknown name, or pruning asked of a multi-objective study (Optuna cannot prune those).
    """
    name = pruner_name(name, multi)
    if name not in PRUNERS:
        raise ConfigError(f"search.pruner: unknown pruner {name!r}; choose one of {', '.join(PRUNERS)}")
    if multi and name != "none":
        raise ConfigError(f"search.pruner: {name!r} cannot prune a multi-objective study; set search.pruner=none "
                          "or keep one objective")
    return PRUNERS[name](grace)


def parse_objectives(objectives: Optional[list[str]], default_metric: str) -> list[tuple[str, str]]:
    """``["accuracy", "trainable_params:min"]`` -> ``[("accuracy", "maximize"), ("trainable_params", "minimize")]``.

    Raises:
        ConfigError: an empty list, a repeated metric or a direction other than min/max.
    """
    names = objectives or [default_metric]
    out = []
    for item in names:
        metric, _, way = str(item).partition(":")
        metric = metric.strip()
        if not metric:
            raise ConfigError(f"search.objectives: empty metric name in {names!r}")
        if way in ("min", "minimize"):
            direction = "minimize"
        elif way in ("max", "maximize"):
            direction = "maximize"
        elif way == "":
            direction = "minimize" if any(m in metric for m in _MINIMISED) else "maximize"
        else:
            raise ConfigError(f"search.objectives: {item!r}: write METRIC, METRIC:min or METRIC:max")
        out.append((metric, direction))
    if len({m for m, _ in out}) < len(out):
        raise ConfigError(f"search.objectives: a metric is listed twice in {names!r}")
    return out


def default_storage_url(output: str | Path) -> str:
    """SQLite file ``study.db`` inside the search folder (created if missing)."""
    path = Path(output).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path / files.STUDY_DB}"


def make_storage(url: str, heartbeat: Optional[int]) -> optuna.storages.RDBStorage:
    """Open (and create the tables of) an Optuna RDB storage with heartbeat and retry of dead trials.

    Args:
        url: any SQLAlchemy URL (sqlite:///path, postgresql://user@host:port/db, ...).
        heartbeat: seconds between heartbeats; a running trial silent for twice this is failed and re-queued.

    Raises:
        ConfigError: the URL cannot be parsed or the database cannot be reached.
    """
    url = _with_driver(url)
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        # Several worker processes share one file: wait for the lock instead of failing at once.
        engine_kwargs = {"connect_args": {"timeout": 60}}
    else:
        engine_kwargs = {"pool_pre_ping": True}
    kwargs: dict[str, Any] = {}
    if heartbeat:
        with quiet():
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2)
        kwargs = dict(heartbeat_interval=heartbeat, grace_period=2 * heartbeat,
                      heartbeat_stale_trial_callback=retry)
    try:
        with quiet():
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)
    except Exception as e:  # sqlalchemy raises many kinds: bad URL, missing driver, refused connection
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"search.storage: cannot open {_redact(url)!r} ({reason}); check the URL, that the "
                          "database server is running and its driver is installed (PostgreSQL, psycopg 3: pip install "
                          "'pretune[postgres]')") from None


def _with_driver(url: str) -> str:
    """``postgresql://`` means psycopg 3 to SQLAlchemy 2.1; use psycopg2 when only that one is installed."""
    if not url.startswith("postgresql://"):
        return url
    import importlib.util

    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + url[len("postgresql://"):]
    return url


def _redact(url: str) -> str:
    # Never print a password from a URL like postgresql://user:secret@host/db.
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':')[0]}:***@{host}" if ":" in creds else url
    return url
