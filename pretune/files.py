"""The run folder's on-disk contract: file and folder names, atomic writes, JSON and JSONL.

Every stage reads and writes its files through the names here, so the layout of a run folder is
defined once and the report (which reads them) needs no torch. Nothing in this module imports torch.

    RUN/config.yaml                    resolved config              CONFIG
    RUN/results.json                   a stage's results            RESULTS
    RUN/metrics.jsonl                  training and eval lines      METRICS
    RUN/checkpoints/step-N/            a checkpoint                 CHECKPOINTS, checkpoint_dir(step), CKPT_*
    RUN/checkpoints/best.safetensors   the best evaluation's weights BEST_WEIGHTS
    RUN/model/                         the final model              MODEL
    RUN/run.json                       pretune run's plan and stages RUN_STATE
    RUN/search/                        the search stage             SEARCH
        study.db, trials.csv, trials.json, importances.json, trials/NNNN/, best/
    RUN/compress/                      the compress stage           COMPRESS
        results.json, source.bench.json, VARIANT/{pretune_variant.json, bench.json}
    RUN/generations.json               base and tuned generations   GENERATIONS
    RUN/report.html, RUN/report.md     the report                   REPORT_HTML, REPORT_MD
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

# ----------------------------------------------------------------------------- names

CONFIG = "config.yaml"
RESULTS = "results.json"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
BEST_WEIGHTS = "best.safetensors"
CKPT_GLOB = "step-*"
CKPT_TRAINABLE = "trainable.safetensors"  # inside a checkpoint: the trained weights
CKPT_AVERAGE = "average.safetensors"  # the weight average (train.ema_decay)
CKPT_STATE = "state.pt"  # optimizer, scheduler, RNG (tensors only: loaded with weights_only)
CKPT_POSITION = "position.json"  # the loop's position; written last, so its presence marks a whole checkpoint
# train.distributed=fsdp: weights, optimizer and weight average as torch.distributed.checkpoint shards (one file
# per rank), in place of trainable.safetensors, average.safetensors and state.pt's optimizer
CKPT_SHARDS = "shards"
MODEL = "model"
RUN_STATE = "run.json"
SEARCH = "search"
COMPRESS = "compress"
STUDY_DB = "study.db"
TRIALS = "trials"
TRIALS_CSV = "trials.csv"
TRIALS_JSON = "trials.json"
IMPORTANCES = "importances.json"
BEST = "best"
SOURCE_BENCH = "source.bench.json"
BENCH = "bench.json"
VARIANT_MANIFEST = "pretune_variant.json"
GENERATIONS = "generations.json"  # a run of a task whose models write text: [{prompt, base, tuned}]
REPORT_HTML = "report.html"
REPORT_MD = "report.md"


def trial_dir(search_dir: str | os.PathLike, number: int) -> Path:
    """``SEARCH/trials/0007``: the folder of trial ``number``."""
    return Path(search_dir) / TRIALS / f"{number:04d}"


def checkpoint_dir(ckpt_dir: str | os.PathLike, step: int) -> Path:
    """``checkpoints/step-00000123``."""
    return Path(ckpt_dir) / f"step-{step:08d}"


def checkpoint_rng(rank: int) -> str:
    """``rng-0.pt``: inside a sharded checkpoint, the random generators of rank ``rank``."""
    return f"rng-{rank}.pt"


# ----------------------------------------------------------------------------- writing


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place on success.

    Works for files and folders. A crash at any moment leaves either the old
    ``path`` or the new one, never a half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    target = tmp / path.name
    try:
        yield target
        _fsync_tree(target)
        if path.is_dir() and not path.is_symlink():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(target, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fsync_tree(path: Path) -> None:
    if path.is_file():
        with open(path, "rb") as f:
            os.fsync(f.fileno())
    elif path.is_dir():
        for child in path.rglob("*"):
            if child.is_file():
                with open(child, "rb") as f:
                    os.fsync(f.fileno())


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def append_jsonl(path: str | os.PathLike, obj: Any) -> None:
    """Append one JSON line and flush it to disk (a torn last line is skipped on read)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(obj, default=_json_default) + "\n")
        f.flush()
        os.fsync(f.fileno())


# ----------------------------------------------------------------------------- reading


def read_json(path: str | os.PathLike) -> Any:
    """The JSON in ``path``; None when the file does not exist."""
    p = Path(path)
    return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else None


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSONL file, skipping a torn trailing line left by a kill."""
    rows = []
    p = Path(path)
    if not p.exists():
        return rows
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _json_default(o: Any) -> Any:
    if type(o).__module__ == "numpy" and hasattr(o, "item"):  # numpy scalars, without importing numpy
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def check_output_dir(path: str | os.PathLike) -> Path:
    """``path`` as a Path, or a one-line error when it names something other than a folder."""
    from .errors import ConfigError

    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"output {p} is a file, not a folder; choose another --output")
    for parent in p.parents:
        if parent.exists() and not parent.is_dir():
            raise ConfigError(f"output {p}: {parent} is a file, not a folder; choose another --output")
    return p
