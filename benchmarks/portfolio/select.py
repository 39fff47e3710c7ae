r"""The portfolio from the score matrix: greedy forward selection over ``matrix.csv``, and how well it transfers.

    PYTHONPATH=. python -m benchmarks.portfolio.select                  # the matrix, the order, leave-one-task-out
    PYTHONPATH=. python -m benchmarks.portfolio.select --write          # and write pretune/search/portfolio.json

Which cells count: the rows of ``--model`` with status ok (a diverged or failed cell counts as no better than the
default on its task, which is what a search that tried it would keep); a candidate's score on a task is the mean
over the seeds it ran. Only candidates measured on every task take part (``--partial`` lets the others in, each
missing cell counting as no better than the default): a candidate half measured would look worse than it is.

The selection is ``pretune.search.portfolio.greedy``, the one ``pretune portfolio build`` uses: each task's scores
normalised as the gain over the default (``--default``, the configuration pretune fit uses with no settings) as a
share of the best gain on that task, then candidates added in the order that most raises the mean over tasks of the
set's best. The written file lists the default, then the chosen candidates, with where they came from. A search
runs the model's own default configuration as trial 1 and drops an entry that repeats it, so on the model the
matrix measured the file's first entry is skipped; on a model whose default recipe differs (``pretune.train.
defaults``: a larger encoder, a decoder) it is the first configuration tried after that model's own.

Leave-one-task-out (printed, and kept in the written file's ``source``): for each task, the portfolio is built
from the other tasks alone, and the held-out task's best normalised score among the first k trials (the default
and k - 1 entries) is read from its matrix cells, for k = 1, 2, 4, 8 and 16. Beside it, the same budgets drawn
at random from the Latin hypercube candidates (``lhs-*``: points spread over the space, not recipes), as the
expected best of k distinct ones, exactly, over every draw: a random search over the same space, seen through the
same cells. It has no default among its trials, so it can fall below 0. This reads only what the matrix holds;
the searches themselves (with TPE after the portfolio, and the other arms) are ``benchmarks/search_efficiency.py``'s.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import math
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a file rather than with -m
    sys.path.insert(0, str(ROOT))

from pretune.search import portfolio  # noqa: E402

HERE = Path(__file__).resolve().parent
MATRIX = HERE / "matrix.csv"
CANDIDATES = HERE / "candidates.json"
BUDGETS = (1, 2, 4, 8, 16)

Scores = dict[str, dict[str, Optional[float]]]  # task -> candidate -> score (None: failed or diverged)


def read_matrix(path: Path, model: str) -> Scores:
    """task -> candidate -> mean score over seeds of ``model``'s rows; None where a cell did not finish ok."""
    cells: dict[tuple[str, str], list[Optional[float]]] = defaultdict(list)
    with open(path, encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            if row["model"] != model:
                continue
            ok = row["status"] == "ok" and row["score"] not in ("", None) and math.isfinite(float(row["score"]))
            cells[row["task"], row["candidate"]].append(float(row["score"]) if ok else None)
    scores: Scores = defaultdict(dict)
    for (task, candidate), values in cells.items():
        good = [v for v in values if v is not None]
        scores[task][candidate] = sum(good) / len(good) if good else None
    return dict(scores)


def complete(scores: Scores, partial: bool = False) -> Scores:
    """The candidates measured on every task (all that ran anywhere, with ``partial``)."""
    if partial:
        return scores
    everywhere = set.intersection(*(set(row) for row in scores.values())) if scores else set()
    return {task: {c: s for c, s in row.items() if c in everywhere} for task, row in scores.items()}


def expected_random_best(norm: dict[str, float], pool: list[str], k: int) -> float:
    """The expected best of ``k`` candidates drawn at random without replacement from ``pool`` (exact: the j-th
    best of n is the best of a draw with probability C(n - j, k - 1) / C(n, k))."""
    values = sorted((norm.get(c, 0.0) for c in pool), reverse=True)
    n, k = len(values), min(k, len(values))
    if k == 0:
        return 0.0
    return sum(v * math.comb(n - 1 - j, k - 1) / math.comb(n, k) for j, v in enumerate(values))


def leave_one_out(scores: Scores, default: str, budgets=BUDGETS, pool: Optional[list[str]] = None) -> dict[str, dict]:
    """For each task: the portfolio built without it, and its normalised best at each budget, beside the expected
    best of random draws from ``pool`` (default: every candidate but the default; see the module)."""
    out = {}
    for task in scores:
        rest = {t: row for t, row in scores.items() if t != task}
        order = portfolio.greedy(rest, default)
        norm = portfolio.normalised({task: scores[task]}, default)[task]
        drawn = [c for c in scores[task] if c != default and (pool is None or c in pool)]
        # the same in points below the task's best cell; a failed cell scores as the default, as in ``norm``
        raw = {c: scores[task][default] if s is None else s for c, s in scores[task].items()}
        top = max(raw.values())
        gap = {c: 100 * (top - s) for c, s in raw.items()}
        out[task] = {
            "order": order,
            "portfolio": {k: max(norm.get(c, 0.0) for c in order[:k]) for k in budgets},
            "random": {k: expected_random_best(norm, drawn, k) for k in budgets},
            "default": 0.0,
            "gap": {"portfolio": {k: min(gap[c] for c in order[:k]) for k in budgets},
                    "random": {k: -expected_random_best({c: -g for c, g in gap.items()}, drawn, k)
                               for k in budgets},
                    "default": {k: gap[default] for k in budgets}},
        }
    return out


def table(scores: Scores, default: str, order: list[str]) -> str:
    tasks = sorted(scores)
    norm = portfolio.normalised(scores, default)
    lines = ["| candidate | " + " | ".join(tasks) + " | mean normalised |", "|---" * (len(tasks) + 2) + "|"]
    for c in order:
        cells = [f"{scores[t][c]:.3f}" if scores[t].get(c) is not None else "-" for t in tasks]
        mean = sum(norm[t].get(c, 0.0) for t in tasks) / len(tasks)
        lines.append(f"| {c} | " + " | ".join(cells) + f" | {mean:.3f} |")
    return "\n".join(lines)


def loo_table(loo: dict[str, dict], budgets=BUDGETS) -> str:
    lines = ["| held-out task | portfolio order (built without it) | "
             + " | ".join(f"k={k}: portfolio / random" for k in budgets) + " |",
             "|---" * (len(budgets) + 2) + "|"]
    for task, r in sorted(loo.items()):
        lines.append(f"| {task} | {' '.join(r['order'][:6])} | "
                     + " | ".join(f"{r['portfolio'][k]:.2f} / {r['random'][k]:.2f}" for k in budgets) + " |")
    mean = {arm: {k: sum(r[arm][k] for r in loo.values()) / len(loo) for k in budgets} for arm in ("portfolio",
                                                                                                    "random")}
    lines.append("| **mean** | | " + " | ".join(f"**{mean['portfolio'][k]:.2f}** / {mean['random'][k]:.2f}"
                                              for k in budgets) + " |")
    return "\n".join(lines)


def gap_table(loo: dict[str, dict], budgets=BUDGETS) -> str:
    """The leave-one-out in points below each held-out task's best cell: defined where the normalised score is
    not (a task whose best cell is the default) and not stretched where the default is a hair below the best."""
    arms = ("portfolio", "random", "default")
    lines = ["| held-out task | " + " | ".join(f"k={k}: portfolio / random" for k in budgets) + " | default |",
             "|---" * (len(budgets) + 2) + "|"]
    for task, r in sorted(loo.items()):
        g = r["gap"]
        lines.append(f"| {task} | " + " | ".join(f"{g['portfolio'][k]:.1f} / {g['random'][k]:.1f}" for k in budgets)
                     + f" | {g['default'][budgets[0]]:.1f} |")
    mean = {arm: {k: sum(r["gap"][arm][k] for r in loo.values()) / len(loo) for k in budgets} for arm in arms}
    lines.append("| **mean** | " + " | ".join(f"**{mean['portfolio'][k]:.1f}** / {mean['random'][k]:.1f}"
                                           for k in budgets) + f" | {mean['default'][budgets[0]]:.1f} |")
    return "\n".join(lines)


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--matrix", default=str(MATRIX))
    p.add_argument("--candidates", default=str(CANDIDATES))
    p.add_argument("--model", default="minilm")
    p.add_argument("--default", default="c04", help="the candidate that is pretune's default configuration for the "
                   "model (c04, the small-encoder recipe, for MiniLM; see pretune.train.defaults)")
    p.add_argument("--size", type=int, default=8, help="portfolio entries after the default at most")
    p.add_argument("--partial", action="store_true", help="let in candidates not measured on every task")
    p.add_argument("--write", nargs="?", const=str(portfolio.PACKAGED), metavar="PATH",
                   help=f"write the portfolio (default path: {portfolio.PACKAGED.relative_to(ROOT)})")
    args = p.parse_args(argv)

    scores = complete(read_matrix(Path(args.matrix), args.model), args.partial)
    measured = sorted({c for row in scores.values() for c in row})
    if len(scores) < 2 or args.default not in measured or len(measured) < 2:
        raise SystemExit(f"{args.matrix}: {len(scores)} tasks and {len(measured)} candidates measured on every "
                         f"task (the default {args.default} among them: {args.default in measured}); a portfolio "
                         "needs at least two of each")
    order = portfolio.greedy(scores, args.default)
    chosen = order[:args.size + 1]
    everywhere = complete(scores)
    print(f"{len(scores)} tasks x {len(measured)} candidates, {len(next(iter(everywhere.values())))} of them "
          f"measured on every task{' (the others let in with --partial)' if args.partial else ''}\n")
    print(table(scores, args.default, order + [c for c in measured if c not in order]) + "\n")
    if len(order) < len(measured):
        print(f"greedy stops after {len(order)}: {', '.join(c for c in measured if c not in order)} add nothing "
              "to the set's best on any task\n")
    print("mean best normalised score of the first k (default first): "
          + ", ".join(f"k={k} {portfolio.mean_best(scores, args.default, order[:k]):.3f}"
                      for k in range(1, len(order) + 1)) + "\n")
    configs = {c["name"]: c for c in json.loads(Path(args.candidates).read_text())["candidates"]}
    lhs = [c for c in measured if configs.get(c, {}).get("label", "").startswith("lhs-")]
    loo = leave_one_out(scores, args.default, pool=lhs or None) if len(scores) > 2 else {}
    if loo:
        print("leave-one-task-out, normalised best on the held-out task (0: the default alone, 1: the best cell); "
              f"random draws from {'the ' + str(len(lhs)) + ' Latin hypercube' if lhs else 'all'} candidates:")
        print(loo_table(loo) + "\n")
        print("the same in points below the held-out task's best cell (0: found the best; the default alone in the "
              "last column):")
        print(gap_table(loo) + "\n")
    if args.write:
        # The default leads: for the model measured it is trial 1 already and a search drops it as a repeat; for a
        # model whose own default recipe differs (pretune.train.defaults) it is the first entry tried.
        entries = [portfolio.Entry(c, configs[c]["config"]) for c in chosen]
        source = {
            "what": "greedy forward selection on the portfolio score matrix (benchmarks/portfolio/)",
            "command": "python -m benchmarks.portfolio.select " + " ".join(argv if argv is not None else
                                                                           sys.argv[1:]),
            "commit": _commit(), "made": datetime.date.today().isoformat(), "model": args.model,
            "default": args.default, "default_config": configs[args.default]["config"],
            "tasks": sorted(scores), "candidates_measured": measured,
            "labels": {c: configs[c].get("label", "") for c in chosen},
            "mean_normalised_score": {k: round(portfolio.mean_best(scores, args.default, order[:k]), 4)
                                      for k in range(1, len(chosen) + 1)},
            "leave_one_task_out": {t: {arm: {str(k): round(v, 4) for k, v in r[arm].items()}
                                       for arm in ("portfolio", "random")} for t, r in loo.items()},
            "leave_one_task_out_points_below_best": {
                t: {arm: {str(k): round(v, 2) for k, v in r["gap"][arm].items()} for arm in ("portfolio", "random")}
                for t, r in loo.items()},
        }
        path = portfolio.write(args.write, entries, source)
        print(f"wrote {path}: {len(entries)} entries, the default first ({', '.join(e.name for e in entries)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
