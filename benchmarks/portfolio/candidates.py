"""Candidate configurations of the portfolio matrix, written to ``candidates.json`` beside this file.

Each candidate is a flat dict of dotted pretune config keys, the keys of pretune's search space
(``pretune.search.space.DEFAULT_SPACE``) plus ``train.layer_lr_decay``, with a stable name:

- ``c00`` ``generic``: pretune's generic recipe (``pretune.train.defaults.GENERIC``), what ``pretune fit`` trained
  every model with before this matrix showed ``c04`` better on small encoders (it still is for other models);
- ``c01``-``c07``: well-known recipes (BERT's and RoBERTa's GLUE settings, ELECTRA-small's, LoRA at 5e-4,
  the top two layers at 1e-4);
- ``c08``-``c31``: a seeded Latin hypercube of 8 points per method (full, lora, freeze), over the method's own
  keys, the one with the largest smallest distance between points of 500 seeded draws. Learning rates are
  log-uniform within the space's [1e-5, 1e-3], per method: full [1e-5, 3e-4] (above that a full fine-tune of a
  BERT-family model mostly collapses to one class), freeze [3e-5, 1e-3], LoRA [1e-4, 1e-3] (an adapter
  starts at zero and needs a larger step). Conditional keys appear only with their method;
- ``c32``, ``c33``: LoRA and freeze at the generic recipe's values (``APPENDED``), what ``pretune fit`` ran for
  those methods before the matrix gave them recipes of their own.

The generator is pure standard library (``random.Random`` with a fixed seed), so it writes the same file on
every machine and Python version::

    python -m benchmarks.portfolio.candidates            # write candidates.json
    python -m benchmarks.portfolio.candidates --check    # exit 1 if the file differs from the generator's
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
FILE = HERE / "candidates.json"
SEED = 20261201
PER_METHOD = 8  # Latin-hypercube points per method
DRAWS = 500  # hypercubes drawn per method; the most spread-out one is kept

# pretune's generic recipe (pretune.train.defaults.GENERIC) at the config's batch size, epochs and method.
DEFAULT = {"train.lr": 5e-5, "train.batch_size": 32, "train.epochs": 3, "train.warmup": 0.06,
           "train.weight_decay": 0.01, "train.layer_lr_decay": 1.0, "method.name": "full"}

RECIPES = [  # (label, note, settings over DEFAULT)
    ("bert-2e-5", "BERT (Devlin et al. 2019) GLUE grid: batch 32, 3 epochs, 2e-5, 10% warmup",
     {"train.lr": 2e-5, "train.warmup": 0.1}),
    ("bert-3e-5", "BERT GLUE grid: batch 32, 3 epochs, 3e-5, 10% warmup", {"train.lr": 3e-5, "train.warmup": 0.1}),
    ("roberta-1e-5", "RoBERTa (Liu et al. 2019) GLUE: batch 16, 1e-5, 6% warmup, weight decay 0.1 (4 epochs here)",
     {"train.lr": 1e-5, "train.batch_size": 16, "train.epochs": 4, "train.weight_decay": 0.1}),
    ("electra-small", "ELECTRA-small (Clark et al. 2020) GLUE: 3e-4, layer-wise lr decay 0.8, 10% warmup, no decay; "
     "pretune's default for small encoders",
     {"train.lr": 3e-4, "train.warmup": 0.1, "train.weight_decay": 0.0, "train.layer_lr_decay": 0.8}),
    ("lora-r8", "LoRA r 8, alpha 16 on the default targets (query, value) at 5e-4",
     {"method.name": "lora", "train.lr": 5e-4, "lora.r": 8, "lora.alpha": 16, "lora.target_modules": "auto"}),
    ("lora-r16-all", "LoRA r 16, alpha 32 on every Linear layer at 5e-4",
     {"method.name": "lora", "train.lr": 5e-4, "lora.r": 16, "lora.alpha": 32, "lora.target_modules": "all-linear"}),
    ("freeze-top2", "head plus the top 2 layers at 1e-4",
     {"method.name": "freeze", "train.lr": 1e-4, "method.train_top_layers": 2}),
]

# After the hypercube (the names above stay as they were measured): what `pretune fit` ran for these methods
# before their recipes had evidence, the generic recipe's values on the method's own defaults. Beside c05 and c07
# (the same with their own learning rates) they show which learning rate the method's default should have.
APPENDED = [
    ("lora-r8-generic", "LoRA r 8, alpha 16 on the default targets at the generic recipe's 5e-5 (c05 at 5e-4)",
     {"method.name": "lora", "lora.r": 8, "lora.alpha": 16, "lora.target_modules": "auto"}),
    ("freeze-top2-generic", "head plus the top 2 layers at the generic recipe's 5e-5 (c07 at 1e-4)",
     {"method.name": "freeze", "method.train_top_layers": 2}),
]

# The design: per method, (key, kind, range or choices). Every range lies inside DEFAULT_SPACE's.
COMMON = [("train.batch_size", "choice", [16, 32, 64]), ("train.epochs", "int", (1, 4)),
          ("train.warmup", "float", (0.0, 0.2)), ("train.weight_decay", "float", (0.0, 0.1)),
          ("train.layer_lr_decay", "choice", [1.0, 0.9, 0.8])]
DESIGN = {
    "full": [("train.lr", "log", (1e-5, 3e-4))] + COMMON,
    "lora": [("train.lr", "log", (1e-4, 1e-3))] + COMMON + [
        ("lora.r", "choice", [4, 8, 16, 32]), ("lora.alpha", "choice", [8, 16, 32, 64]),
        ("lora.target_modules", "choice", ["auto", "all-linear"])],
    "freeze": [("train.lr", "log", (3e-5, 1e-3))] + COMMON + [("method.train_top_layers", "int", (1, 4))],
}
CONDITIONAL = {"lora": ("lora.r", "lora.alpha", "lora.target_modules"), "freeze": ("method.train_top_layers",)}
KEYS = tuple(DEFAULT) + tuple(k for keys in CONDITIONAL.values() for k in keys)


def latin_hypercube(n: int, d: int, rng: random.Random) -> list[list[float]]:
    """``n`` points in [0, 1)^d, one in each of the ``n`` equal slices of every axis."""
    cols = []
    for _ in range(d):
        perm = list(range(n))
        rng.shuffle(perm)
        cols.append([(p + rng.random()) / n for p in perm])
    return [[col[i] for col in cols] for i in range(n)]


def _min_distance(points: list[list[float]]) -> float:
    return min(math.dist(a, b) for i, a in enumerate(points) for b in points[i + 1:])


def spread_hypercube(n: int, d: int, rng: random.Random, draws: int = DRAWS) -> list[list[float]]:
    """The most spread-out (largest smallest pairwise distance) of ``draws`` Latin hypercubes."""
    return max((latin_hypercube(n, d, rng) for _ in range(draws)), key=_min_distance)


def _value(u: float, kind: str, spec: Any) -> Any:
    if kind == "choice":
        return spec[min(int(u * len(spec)), len(spec) - 1)]
    if kind == "int":
        lo, hi = spec
        return min(lo + int(u * (hi - lo + 1)), hi)
    if kind == "log":
        lo, hi = spec
        return float(f"{math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo))):.3g}")
    lo, hi = spec
    return round(lo + u * (hi - lo), 3)


def generate() -> list[dict]:
    """Every candidate, in order: default, recipes, then the hypercube of each method."""
    out = [{"name": "c00", "label": "generic", "note": "pretune's generic recipe: its default for models other than "
            "small encoders", "config": dict(DEFAULT)}]
    for label, note, settings in RECIPES:
        out.append({"name": f"c{len(out):02d}", "label": label, "note": note, "config": {**DEFAULT, **settings}})
    for method, dims in DESIGN.items():
        rng = random.Random(f"portfolio-candidates/{SEED}/{method}")
        for i, point in enumerate(spread_hypercube(PER_METHOD, len(dims), rng)):
            values = {key: _value(u, kind, spec) for u, (key, kind, spec) in zip(point, dims)}
            config = {"method.name": method, **values}
            config = {k: config[k] for k in KEYS if k in config}  # one key order for every candidate
            out.append({"name": f"c{len(out):02d}", "label": f"lhs-{method}-{i}",
                        "note": f"Latin hypercube point {i} of {method}", "config": config})
    for label, note, settings in APPENDED:
        out.append({"name": f"c{len(out):02d}", "label": label, "note": note, "config": {**DEFAULT, **settings}})
    return out


def nested(config: dict) -> dict:
    """``{"train.lr": 1e-4}`` -> ``{"train": {"lr": 1e-4}}`` (pretune's config sections)."""
    out: dict = {}
    for key, value in config.items():
        section, name = key.split(".", 1)
        out.setdefault(section, {})[name] = value
    return out


def check(candidates: list[dict]) -> None:
    """Raise ``ValueError`` listing every candidate that breaks a rule: unique names and configs, the keys of
    its method and no others, values pretune accepts."""
    from pretune.config import config_from_dict
    from pretune.errors import ConfigError

    errors, names, seen = [], set(), {}
    for c in candidates:
        cfg, name = c.get("config", {}), c.get("name")
        if name in names:
            errors.append(f"{name}: name used twice")
        names.add(name)
        frozen = json.dumps(cfg, sort_keys=True)
        if frozen in seen:
            errors.append(f"{name}: same config as {seen[frozen]}")
        seen[frozen] = name
        expected = set(DEFAULT) | set(CONDITIONAL.get(cfg.get("method.name"), ()))
        if set(cfg) != expected:
            errors.append(f"{name}: keys {sorted(set(cfg) ^ expected)} are missing or do not belong to "
                          f"method {cfg.get('method.name')!r}")
        if not 1 <= cfg.get("train.epochs", 0) <= 4:
            errors.append(f"{name}: train.epochs must be 1..4, got {cfg.get('train.epochs')!r}")
        try:
            config_from_dict(nested(cfg))
        except ConfigError as e:
            errors.append(f"{name}: {e}")
    if errors:
        raise ValueError("bad candidates: " + "; ".join(errors))


def check_space(candidates: list[dict]) -> None:
    """Raise ``ValueError`` when a value lies outside pretune's ``DEFAULT_SPACE`` (imports pretune.search)."""
    from pretune.search.space import parse_space

    params = parse_space(None)
    errors = []
    for c in candidates:
        for key, value in c["config"].items():
            p = params.get(key)
            if key == "train.layer_lr_decay":
                ok = 0 < value <= 1
            elif p is None:
                ok = False
            elif p.type == "categorical":
                ok = value in p.choices
            else:
                ok = p.low <= value <= p.high
            if not ok:
                errors.append(f"{c['name']}: {key}={value!r} is outside the search space")
    if errors:
        raise ValueError("; ".join(errors))


def dumps(candidates: list[dict]) -> str:
    """The file's text: one candidate a line, so a diff shows which changed."""
    head = {"about": "portfolio candidates; written by benchmarks/portfolio/candidates.py, do not edit",
            "seed": SEED, "keys": "pretune.search.space.DEFAULT_SPACE + train.layer_lr_decay"}
    lines = [json.dumps(c) for c in candidates]
    body = json.dumps(head, indent=1)[:-2]  # reopen the object to add the list
    return body + ',\n "candidates": [\n  ' + ",\n  ".join(lines) + "\n ]\n}\n"


def load(path: Path = FILE) -> list[dict]:
    """The candidates of ``path``, checked (see ``check``)."""
    candidates = json.loads(Path(path).read_text(encoding="utf-8"))["candidates"]
    check(candidates)
    return candidates


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=FILE)
    ap.add_argument("--check", action="store_true", help="compare the file with the generator's output")
    args = ap.parse_args(argv)
    candidates = generate()
    check(candidates)
    check_space(candidates)
    text = dumps(candidates)
    if args.check:
        same = args.out.is_file() and args.out.read_text(encoding="utf-8") == text
        print(f"{args.out}: {'up to date' if same else 'differs from the generator; rerun without --check'}")
        return 0 if same else 1
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {len(candidates)} candidates to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
