r"""The portfolio score matrix: every (task, candidate, seed) cell a ``pretune fit`` of MiniLM, one CSV row each.

The evidence for a hyperparameter portfolio (Auto-sklearn 2.0: Feurer et al. 2022): the dev score of each
candidate configuration (``candidates.json``) on each training task (``tasks.py``), so that a small set of
configurations that covers the tasks can be chosen greedily and tried first by a search.

Run from the repository root (``PYTHONPATH=.`` or an installed pretune)::

    PY=python
    PYTHONPATH=. $PY -m benchmarks.portfolio.candidates --check        # candidates.json matches its generator
    PYTHONPATH=. $PY -m benchmarks.portfolio.run_matrix --dry-run      # subsets, token lengths, the cells; no training
    mkdir -p bench-out
    PYTHONPATH=. nohup $PY -m benchmarks.portfolio.run_matrix --seeds 0 --threads 2 \
        > bench-out/portfolio.log 2>&1 &                                # the whole matrix, resumable
    tail -f bench-out/portfolio.log                                    # one line per cell

A killed run loses at most the cell that was running: rerun the same command and it continues. Later:
``--seeds 0,1`` adds the seed-1 cells, ``--tasks wnli,sick_r,imdb`` the opt-in tasks; ``--bf16`` trains in bf16
autocast (``matrix.meta.json`` records the precision of each invocation: keep one per matrix); ``--max-cells 20``
stops after 20 cells; ``--retry-failed`` reruns cells whose newest row failed. 14 default tasks x 34 candidates
= 476 cells a seed. The subsets are sized for about a minute a cell on 2 cores in fp32 (1 to 4 epochs of 2,000
rows); measured, a cell took 40 s to 6 minutes (a median of about 110 s; MRPC's pairs the longest), so the 8 tasks
of the committed matrix take about 8 hours a seed and all 14 about 14.

Each cell runs in a fresh process (``python -m benchmarks.portfolio.run_matrix --worker CELL_DIR``), so a crash or
an out-of-memory kill costs that cell only (recorded as failed). Its files: ``WORK/runs/MODEL/TASK/CANDIDATE/
seedN/`` with ``config.json`` (what was fitted), ``worker.log``, ``outcome.json`` and ``fit/`` (pretune's run
folder: ``results.json``, ``metrics.jsonl``, ``config.yaml``; the saved model is deleted unless
``--keep-models``, 90 MB a cell). The subsets are in ``WORK/data/TASK/seedN/``.

Matrix columns: model, task, candidate, seed, metric (the one pretune selects on), score (that metric of the final
model: ``results.json``'s ``eval``, i.e. the best epoch's weights, restored, on the same dev set, so it is the
score a search would see, not an unbiased test score), status (ok | diverged | failed), reason (one line),
eval (every eval metric, JSON), train_seconds, train_samples, wall_seconds (the worker process, start to end),
steps, trainable_params, finished (UTC). ``matrix.meta.json`` beside it lists every invocation: commit, command
line, machine and date.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import fcntl
import io
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a file rather than with -m
    sys.path.insert(0, str(ROOT))

from benchmarks.portfolio import candidates as candlib  # noqa: E402
from benchmarks.portfolio import tasks as tasklib  # noqa: E402

HERE = Path(__file__).resolve().parent
COLUMNS = ["model", "task", "candidate", "seed", "metric", "score", "status", "reason", "eval", "train_seconds",
           "train_samples", "wall_seconds", "steps", "trainable_params", "finished"]
CELL_CONFIG, OUTCOME, LOG, FIT = "config.json", "outcome.json", "worker.log", "fit"
MAX_FAILED_IN_A_ROW = 3


@dataclass(frozen=True)
class Cell:
    model: str
    task: tasklib.Task
    candidate: dict
    seed: int

    @property
    def key(self) -> tuple:
        return (self.model, self.task.name, self.candidate["name"], self.seed)

    def folder(self, work: Path) -> Path:
        return work / "runs" / self.model / self.task.name / self.candidate["name"] / f"seed{self.seed}"

    def __str__(self) -> str:
        return f"{self.task.name} {self.candidate['name']} seed {self.seed}"


# ----------------------------------------------------------------------------- the matrix file


class Matrix:
    """The CSV, appended one fsynced line per finished cell; a torn last line (a kill mid-write) is cut off."""

    def __init__(self, path: Path):
        self.path = path

    def read(self, repair: bool = True) -> list[dict]:
        """Every row; a torn last line is ignored, and cut off the file when ``repair``."""
        if not self.path.is_file() or self.path.stat().st_size == 0:
            return []
        raw = self.path.read_bytes()
        if not raw.endswith(b"\n"):
            keep = raw.rfind(b"\n") + 1
            print(f"{self.path}: {'cut off' if repair else 'ignoring'} a torn last line ({len(raw) - keep} bytes)",
                  flush=True)
            if repair:
                with open(self.path, "r+b") as f:
                    f.truncate(keep)
            raw = raw[:keep]
        rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8"), newline="")))
        header = raw.decode("utf-8").split("\n", 1)[0].split(",")
        if header != COLUMNS:
            raise SystemExit(f"{self.path} has the columns {header}, not {COLUMNS}; choose another --matrix")
        return rows

    def append(self, row: dict) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, COLUMNS, lineterminator="\n")
        new = not self.path.is_file() or self.path.stat().st_size == 0
        if new:
            writer.writeheader()
        writer.writerow(row)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, buf.getvalue().encode("utf-8"))  # one write: the line lands whole or torn, never mixed
            os.fsync(fd)
        finally:
            os.close(fd)
        if new:  # the new file's name, too, must survive a crash
            dfd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)


def done_keys(rows: list[dict], retry_failed: bool) -> set[tuple]:
    """Cells with a row; with ``retry_failed``, those whose newest row failed count as not done."""
    newest = {(r["model"], r["task"], r["candidate"], int(r["seed"])): r["status"] for r in rows}
    return {k for k, status in newest.items() if not (retry_failed and status == "failed")}


def lock(path: Path):
    """An exclusive lock beside the matrix, held while this process lives: two runners would run cells twice."""
    f = open(path.with_name(path.name + ".lock"), "w")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise SystemExit(f"another run_matrix is writing {path}; wait for it or choose another --matrix") from None
    return f


# ----------------------------------------------------------------------------- provenance


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=30,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _version(package: str) -> Optional[str]:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine() -> dict:
    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"host": platform.node(), "cpu": cpu, "cores": os.cpu_count(),
            "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "python": platform.python_version(), "torch": _version("torch"),
            "transformers": _version("transformers"), "peft": _version("peft"), "platform": platform.platform()}


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _in_repo(path: Path) -> str:
    """``path`` relative to the repository when it lies inside it (the record reads the same on every checkout)."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def record_invocation(meta_path: Path, args: argparse.Namespace, planned: int) -> dict:
    from pretune.files import read_json, write_json

    meta = read_json(meta_path) or {"matrix": _in_repo(args.matrix), "columns": COLUMNS, "invocations": []}
    meta["matrix"] = _in_repo(Path(meta["matrix"]))
    entry = {"started": _now(), "commit": _git("rev-parse", "HEAD"),
             "changed_files": _git("diff", "--name-only", "HEAD").splitlines()[:50],
             "command": ["python", "-m", "benchmarks.portfolio.run_matrix", *sys.argv[1:]],
             "machine": machine(), "threads": args.threads,
             "precision": "bf16" if args.bf16 else "fp32", "model": args.model, "work": _in_repo(args.work),
             "cells_planned": planned}
    meta["invocations"].append(entry)
    write_json(meta_path, meta)
    return meta


# ----------------------------------------------------------------------------- one cell


def cell_config(cell: Cell, subset: tasklib.Subset, args: argparse.Namespace) -> dict:
    """The pretune config of ``cell`` (``model.path`` ``minilm`` is resolved by the worker)."""
    from pretune.config import merge

    base = {"model": {"path": args.model},
            "data": tasklib.data_config(subset, args.work / "cache"),
            "train": {"threads": args.threads, "precision": "bf16" if args.bf16 else "fp32", "progress": False,
                      "checkpoint_every": 0, "device": "cpu", "seed": cell.seed, "metric": cell.task.metric},
            "output": str(cell.folder(args.work) / FIT)}
    return merge(base, candlib.nested(cell.candidate["config"]))


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _die_with_parent() -> None:
    """In the child: SIGKILL when the runner dies, so a killed runner leaves no orphan training (Linux)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


def run_cell(cell: Cell, config: dict, args: argparse.Namespace) -> dict:
    """Fit ``cell`` in a fresh process and return its matrix row."""
    from pretune.files import MODEL, read_json, write_json

    folder = cell.folder(args.work)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / OUTCOME).unlink(missing_ok=True)
    write_json(folder / CELL_CONFIG, config)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS=str(args.threads),
               MKL_NUM_THREADS=str(args.threads))
    command = [sys.executable, "-m", "benchmarks.portfolio.run_matrix", "--worker", str(folder)]
    started = time.time()
    rc: Optional[int] = None
    with open(folder / LOG, "w", encoding="utf-8") as log:
        try:
            rc = subprocess.run(command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, timeout=args.cell_timeout,
                                preexec_fn=_die_with_parent).returncode
        except subprocess.TimeoutExpired:  # the child was killed
            pass
    wall = time.time() - started
    outcome = read_json(folder / OUTCOME)
    if outcome is None:
        if rc is None:
            reason = f"killed after the {args.cell_timeout:g} s --cell-timeout"
        else:
            reason = f"worker exited with status {rc}" + (" (SIGKILL: out of memory?)" if rc == -9 else "")
        last = _last_line(folder / LOG)
        outcome = {"status": "failed", "reason": _one_line(f"{reason}; {last}" if last else reason)}
    if not args.keep_models:
        shutil.rmtree(folder / FIT / MODEL, ignore_errors=True)
    res = outcome.get("results") or {}
    metric = cell.task.metric
    score = (res.get("eval") or {}).get(metric)
    status, reason = outcome["status"], outcome.get("reason", "")
    if status == "ok" and score is None:
        status, reason = "failed", f"no {metric} in results.json"
    elif status == "ok" and not math.isfinite(score):
        status, reason = "diverged", f"{metric} is {score}"
    return {"model": cell.model, "task": cell.task.name, "candidate": cell.candidate["name"], "seed": cell.seed,
            "metric": metric, "score": f"{score:.6f}" if status == "ok" else "", "status": status,
            "reason": reason, "eval": json.dumps(res.get("eval") or {}, sort_keys=True),
            "train_seconds": _round(res.get("train_seconds"), 2), "train_samples": res.get("train_samples", ""),
            "wall_seconds": f"{wall:.1f}", "steps": res.get("steps", ""),
            "trainable_params": res.get("trainable_params", ""), "finished": _now()}


def _round(value, digits: int):
    return "" if value is None else round(float(value), digits)


def worker(folder: Path) -> int:
    """The child process: fit ``folder/config.json``, write ``folder/outcome.json`` (status, reason, results)."""
    import logging
    import traceback

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from pretune.errors import TrainingDiverged
    from pretune.files import RESULTS, read_json, write_json

    config = json.loads((folder / CELL_CONFIG).read_text(encoding="utf-8"))
    try:
        import pretune
        from pretune.models import packaged_minilm

        if config["model"]["path"] == "minilm":
            config["model"]["path"] = packaged_minilm()
        pretune.fit(config, overwrite=True)
        results = read_json(Path(config["output"]) / RESULTS) or {}
        keep = ("eval", "metric", "train_seconds", "train_samples", "steps", "trainable_params", "total_params",
                "best_step", "stopped_early", "wall_seconds", "precision", "device", "train_rows", "eval_rows")
        outcome = {"status": "ok", "results": {k: results.get(k) for k in keep}}
    except TrainingDiverged as e:
        outcome = {"status": "diverged", "reason": _one_line(e)}
    except Exception as e:  # any failure is this cell's result; the traceback goes to worker.log
        traceback.print_exc()
        outcome = {"status": "failed", "reason": _one_line(f"{type(e).__name__}: {e}")}
    write_json(folder / OUTCOME, outcome)
    return 0


# ----------------------------------------------------------------------------- planning and the dry run


def plan(args: argparse.Namespace) -> tuple[list[tasklib.Task], list[dict], list[int]]:
    tasks = tasklib.select(args.tasks)
    candidates = candlib.load(args.candidates_file)
    if args.candidates:
        wanted = [n.strip() for n in args.candidates.split(",") if n.strip()]
        by_name = {c["name"]: c for c in candidates}
        unknown = [n for n in wanted if n not in by_name]
        if unknown:
            raise SystemExit(f"unknown candidate(s) {', '.join(unknown)}; known: c00..c{len(candidates) - 1:02d}")
        candidates = [by_name[n] for n in wanted]
    seeds = [int(s) for s in str(args.seeds).split(",") if s.strip()]
    return tasks, candidates, seeds


def model_name(spec: str) -> str:
    return spec if spec == "minilm" else Path(spec.rstrip("/")).name


def describe_subsets(subsets: dict, with_tokens: bool) -> None:
    """One line per task and seed: rows, classes, max_length, metric, token lengths, what was dropped."""
    tokenizer = None
    if with_tokens:
        from transformers import AutoTokenizer
        from pretune.models import packaged_minilm

        tokenizer = AutoTokenizer.from_pretrained(packaged_minilm())
        tokenizer.model_max_length = 1 << 20  # lengths past 512 are measured, not warned about
    print(f"{'task':16} {'seed':>4} {'train':>6} {'dev':>5} {'classes':>7} {'max_len':>7} {'metric':9} "
          f"{'tokens p99/max':>14}  dropped / source")
    for (name, seed), s in subsets.items():
        c = s.counts
        tokens = ""
        if tokenizer is not None:
            lengths = sorted(tasklib.token_lengths(s, tokenizer))
            p99 = lengths[min(len(lengths) - 1, math.ceil(0.99 * len(lengths)) - 1)]
            over = sum(n > s.task.max_length for n in lengths)
            tokens = f"{p99}/{lengths[-1]}" + (f" ({over} cut)" if over else "")
        dropped = ", ".join(f"{k.removesuffix('_dropped')} {v}" for k, v in c.items() if k.endswith("_dropped"))
        print(f"{name:16} {seed:>4} {c['train']:>6} {c['dev']:>5} {c.get('classes', '-'):>7} "
              f"{s.task.max_length:>7} {s.task.metric:9} {tokens:>14}  {dropped or '-'} / {c['origin']}")


# ----------------------------------------------------------------------------- main


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", help="comma-separated task names, 'default' or 'all' (default: the default set: "
                    + ", ".join(t.name for t in tasklib.TASKS.values() if t.default) + ")")
    ap.add_argument("--candidates", help="comma-separated candidate names, e.g. c00,c05 (default: all)")
    ap.add_argument("--candidates-file", type=Path, default=candlib.FILE)
    ap.add_argument("--seeds", default="0", help="comma-separated; a seed picks the subsets and the training seed")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of each cell (train.threads)")
    ap.add_argument("--bf16", action="store_true", help="train.precision=bf16 (default fp32)")
    ap.add_argument("--model", default="minilm", help="minilm (the packaged all-MiniLM-L6-v2) or a model folder")
    ap.add_argument("--work", type=Path, default=ROOT / "bench-out" / "portfolio", help="subsets, cells, caches")
    ap.add_argument("--matrix", type=Path, default=HERE / "matrix.csv")
    ap.add_argument("--data", type=Path, default=tasklib.DATA, help="the shared data folder (or PRETUNE_DATA)")
    ap.add_argument("--dry-run", action="store_true", help="write the subsets, list the cells, train nothing")
    ap.add_argument("--max-cells", type=int, help="stop after this many cells")
    ap.add_argument("--cell-timeout", type=float, help="seconds before a cell is killed and recorded as failed")
    ap.add_argument("--retry-failed", action="store_true", help="rerun cells whose newest row failed")
    ap.add_argument("--keep-models", action="store_true", help="keep each cell's saved model (90 MB a cell)")
    ap.add_argument("--no-tokens", action="store_true", help="dry run: skip the token-length column")
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.work, args.matrix = args.work.resolve(), args.matrix.resolve()
    return args


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker(args.worker)
    from pretune.config import config_from_dict

    tasks, candidates, seeds = plan(args)
    model = model_name(args.model)
    subsets = {(t.name, s): tasklib.write_subset(t, s, args.work, args.data) for s in seeds for t in tasks}
    # seeds, then candidates, then tasks: a partial matrix holds whole candidate rows over every task
    cells = [Cell(model, t, c, s) for s in seeds for c in candidates for t in tasks]
    configs = {cell.key: cell_config(cell, subsets[cell.task.name, cell.seed], args) for cell in cells}
    for config in configs.values():  # every cell's config is valid before the first one runs
        config_from_dict(config)
    guard = None if args.dry_run else lock(args.matrix)
    done = done_keys(Matrix(args.matrix).read(repair=not args.dry_run), args.retry_failed)
    todo = [c for c in cells if c.key not in done]
    if args.max_cells is not None:
        todo = todo[: args.max_cells]
    print(f"{len(tasks)} tasks x {len(candidates)} candidates x {len(seeds)} seed(s) = {len(cells)} cells; "
          f"{len(cells) - sum(c.key not in done for c in cells)} already in {args.matrix}; {len(todo)} to run now",
          flush=True)
    if args.dry_run:
        describe_subsets(subsets, not args.no_tokens)
        for i, cell in enumerate(todo, 1):
            print(f"[{i}/{len(todo)}] {cell}")
        return 0
    args.matrix.parent.mkdir(parents=True, exist_ok=True)
    record_invocation(args.matrix.with_name(args.matrix.stem + ".meta.json"), args, len(todo))
    matrix, tally, started = Matrix(args.matrix), {"ok": 0, "diverged": 0, "failed": 0}, time.time()
    failed_in_a_row = 0
    try:
        for i, cell in enumerate(todo, 1):
            row = run_cell(cell, configs[cell.key], args)
            matrix.append(row)
            tally[row["status"]] += 1
            what = f"{row['metric']} {float(row['score']):.4f}" if row["status"] == "ok" else \
                f"{row['status']} ({row['reason']})"
            print(f"[{i}/{len(todo)}] {cell}: {what} in {float(row['wall_seconds']):.0f} s", flush=True)
            failed_in_a_row = failed_in_a_row + 1 if row["status"] == "failed" else 0
            if failed_in_a_row == MAX_FAILED_IN_A_ROW:  # the set-up is broken, not the cells
                print(f"stopping: {failed_in_a_row} cells in a row failed (see {cell.folder(args.work) / LOG}); "
                      "fix the cause and rerun with --retry-failed", flush=True)
                return 1
    except KeyboardInterrupt:
        print("interrupted: the running cell is not recorded; run the same command to continue", flush=True)
        return 130
    finally:
        guard.close()  # releases the lock
    print(f"done: {sum(tally.values())} cells ({', '.join(f'{k} {v}' for k, v in tally.items())}) in "
          f"{(time.time() - started) / 60:.1f} min; matrix {args.matrix}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
