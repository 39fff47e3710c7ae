"""Search space: parse and check the YAML declaration, sample it with an Optuna trial.

A space maps a dotted config key to a spec::

    train.lr:        {type: float, low: 1e-5, high: 1e-3, log: true}
    train.warmup:    {type: float, low: 0.0, high: 0.2}            # linear
    train.epochs:    {type: int, low: 1, high: 4}
    method.name:     {type: categorical, choices: [full, lora, freeze]}
    lora.r:          {type: int, low: 4, high: 32, log: true, when: {method.name: lora}}
    train.batch_size: [16, 32, 64]                                 # shorthand for categorical

``when`` makes a parameter conditional: it is sampled only when the named
parameters (declared in the same space) took one of the listed values.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Optional

from ..config import RunConfig
from ..errors import ConfigError

TYPES = ("float", "int", "categorical")
# Keys a trial may not change: the search itself and where it writes.
_FORBIDDEN_SECTIONS = ("search", "output")


@dataclass(frozen=True)
class Param:
    """One searchable config key."""
    key: str
    type: str
    low: Optional[float] = None
    high: Optional[float] = None
    log: bool = False
    step: Optional[float] = None
    choices: Optional[tuple] = None
    when: dict[str, tuple] = field(default_factory=dict)  # parent key -> values that enable this one


# A sensible default: the knobs that matter most for fine-tuning a small model, of any family.
DEFAULT_SPACE: dict[str, Any] = {
    "train.lr": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True},
    "train.batch_size": {"type": "categorical", "choices": [16, 32, 64]},
    "train.epochs": {"type": "int", "low": 1, "high": 4},
    "train.warmup": {"type": "float", "low": 0.0, "high": 0.2},
    "train.weight_decay": {"type": "float", "low": 0.0, "high": 0.1},
    # lower layers move less (Clark et al., 2020); the small-encoder recipe and portfolio entries set 0.8
    "train.layer_lr_decay": {"type": "categorical", "choices": [0.8, 0.9, 1.0]},
    "method.name": {"type": "categorical", "choices": ["full", "lora", "freeze"]},
    "lora.r": {"type": "categorical", "choices": [4, 8, 16, 32], "when": {"method.name": "lora"}},
    "lora.alpha": {"type": "categorical", "choices": [8, 16, 32, 64], "when": {"method.name": "lora"}},
    # names that fit every architecture: peft's default for it, or every Linear layer of the body
    "lora.target_modules": {"type": "categorical", "choices": ["auto", "all-linear"],
                            "when": {"method.name": "lora"}},
    "method.train_top_layers": {"type": "int", "low": 1, "high": 4, "when": {"method.name": "freeze"}},
}


def config_keys() -> dict[str, Any]:
    """Every ``section.name`` a trial may set, with its annotation."""
    hints = typing.get_type_hints(RunConfig)
    keys = {}
    for section, tp in hints.items():
        if section in _FORBIDDEN_SECTIONS or not dataclasses.is_dataclass(tp):
            continue
        for name, sub in typing.get_type_hints(tp).items():
            keys[f"{section}.{name}"] = sub
    return keys


def _number(key: str, name: str, value: Any, errors: list[str]) -> Optional[float]:
    # YAML 1.1 reads 1e-5 as a string; accept it as the number it means.
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        errors.append(f"search.space.{key}.{name}: expected a number, got {value!r}")
        return None
    return value


def _scalar_choice(value: Any) -> Any:
    # Optuna stores categorical choices as None/bool/int/float/str; lists travel as "a,b".
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return value


def _parse_one(key: str, spec: Any, errors: list[str]) -> Optional[Param]:
    if isinstance(spec, list):
        spec = {"type": "categorical", "choices": spec}
    if not isinstance(spec, dict):
        errors.append(f"search.space.{key}: expected a mapping like {{type: float, low: 1e-5, high: 1e-3}} "
                      f"or a list of choices, got {spec!r}")
        return None
    unknown = set(spec) - {"type", "low", "high", "log", "step", "choices", "when"}
    if unknown:
        errors.append(f"search.space.{key}: unknown field(s) {sorted(unknown)}; valid: type, low, high, log, "
                      "step, choices, when")
    kind = spec.get("type", "categorical" if "choices" in spec else None)
    if kind not in TYPES:
        errors.append(f"search.space.{key}.type: expected one of {', '.join(TYPES)}, got {kind!r}")
        return None
    when = {}
    for parent, values in (spec.get("when") or {}).items():
        when[parent] = tuple(_scalar_choice(v) for v in (values if isinstance(values, list) else [values]))
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            errors.append(f"search.space.{key}.choices: expected a non-empty list, got {choices!r}")
            return None
        return Param(key, kind, choices=tuple(_scalar_choice(c) for c in choices), when=when)
    low = _number(key, "low", spec.get("low"), errors)
    high = _number(key, "high", spec.get("high"), errors)
    step = _number(key, "step", spec["step"], errors) if spec.get("step") is not None else None
    log = bool(spec.get("log", False))
    if low is None or high is None:
        return None
    if low > high:
        errors.append(f"search.space.{key}: low must be <= high, got low={low!r}, high={high!r}")
    if log and low <= 0:
        errors.append(f"search.space.{key}: a log scale needs low > 0, got low={low!r}")
    if log and step is not None:
        errors.append(f"search.space.{key}: choose log or step, not both")
    if kind == "int":
        if low != int(low) or high != int(high):
            errors.append(f"search.space.{key}: an int range needs whole bounds, got {low!r}..{high!r}")
        low, high, step = int(low), int(high), int(step) if step else None
    return Param(key, kind, low=low, high=high, log=log, step=step, when=when)


def _check_conditions(params: dict[str, Param], errors: list[str]) -> None:
    for p in params.values():
        for parent, values in p.when.items():
            if parent == p.key:
                errors.append(f"search.space.{p.key}.when: a parameter cannot depend on itself")
            elif parent not in params:
                errors.append(f"search.space.{p.key}.when: {parent!r} is not in the space; declare it or "
                              "drop the condition")
            elif params[parent].type == "categorical":
                bad = [v for v in values if v not in params[parent].choices]
                if bad:
                    errors.append(f"search.space.{p.key}.when: {parent} can never be {bad}; its choices are "
                                  f"{list(params[parent].choices)}")
    # Sampling order: parents before children; a cycle never resolves.
    if not errors and len(sampling_order(params)) < len(params):
        errors.append("search.space: conditions form a cycle; make one parameter unconditional")


def sampling_order(params: dict[str, Param]) -> list[Param]:
    """Parameters ordered so each comes after every parameter its ``when`` names."""
    done: list[Param] = []
    names: set[str] = set()
    pending = list(params.values())
    while pending:
        ready = [p for p in pending if all(parent in names for parent in p.when)]
        if not ready:
            break
        for p in ready:
            done.append(p)
            names.add(p.key)
            pending.remove(p)
    return done


def parse_space(space: Optional[dict[str, Any]]) -> dict[str, Param]:
    """Check a declared space and return its parameters by key.

    Args:
        space: the ``search.space`` mapping; ``None`` means ``DEFAULT_SPACE``.

    Returns:
        ``{dotted key: Param}`` in declaration order.

    Raises:
        ConfigError: an empty space, an unknown key, a bad range or an unsatisfiable condition,
            all problems listed in one message.
    """
    if space is None:
        space = DEFAULT_SPACE
    if not space:
        raise ConfigError("search.space is empty: declare at least one parameter, or remove search.space to "
                          "use the default space")
    valid = config_keys()
    errors: list[str] = []
    params: dict[str, Param] = {}
    for key, spec in space.items():
        if key not in valid:
            section = key.split(".")[0]
            hint = [k for k in valid if k.startswith(section + ".")] or sorted({k.split('.')[0] for k in valid})
            errors.append(f"search.space: unknown config key {key!r}; valid here: {', '.join(hint)}")
            continue
        p = _parse_one(key, spec, errors)
        if p is not None:
            params[key] = p
    if not errors:
        _check_conditions(params, errors)
    if errors:
        raise ConfigError("invalid search space: " + "; ".join(errors))
    return params


def is_active(p: Param, values: dict[str, Any]) -> bool:
    """Whether ``p``'s conditions hold for the values sampled so far."""
    return all(parent in values and values[parent] in allowed for parent, allowed in p.when.items())


def suggest(trial: Any, params: dict[str, Param]) -> dict[str, Any]:
    """Sample every active parameter with an Optuna trial (or anything with its ``suggest_*``).

    Args:
        trial: an ``optuna.Trial``.
        params: from ``parse_space``.

    Returns:
        ``{dotted key: value}`` for the active parameters only.
    """
    values: dict[str, Any] = {}
    for p in sampling_order(params):
        if not is_active(p, values):
            continue
        if p.type == "categorical":
            values[p.key] = trial.suggest_categorical(p.key, list(p.choices))
        elif p.type == "int":
            values[p.key] = trial.suggest_int(p.key, p.low, p.high, step=p.step or 1, log=p.log)
        else:
            values[p.key] = trial.suggest_float(p.key, p.low, p.high, step=p.step, log=p.log)
    return values


def grid_values(params: dict[str, Param]) -> dict[str, list]:
    """The grid for ``GridSampler``: categorical choices, or every step of an int range.

    Raises:
        ConfigError: a float parameter without ``step`` (a grid needs finite values).
    """
    grid = {}
    for p in params.values():
        if p.type == "categorical":
            grid[p.key] = list(p.choices)
        elif p.step is not None or p.type == "int":
            step = p.step or 1
            n = int(round((p.high - p.low) / step)) + 1
            grid[p.key] = [p.low + i * step for i in range(n)]
        else:
            raise ConfigError(f"search.sampler grid needs finite values: give search.space.{p.key} a step "
                              "or choices, or use sampler tpe/random")
    return grid


def to_overrides(values: dict[str, Any]) -> dict[str, Any]:
    """``{"train.lr": 1e-4}`` -> ``{"train": {"lr": 1e-4}}`` for ``config.merge``."""
    nested: dict[str, Any] = {}
    for key, value in values.items():
        section, name = key.split(".", 1)
        nested.setdefault(section, {})[name] = value
    return nested
