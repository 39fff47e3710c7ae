r"""Issue 18, item 4: a search that starts from a portfolio against searches from scratch, on tasks the portfolio
never saw (leave-one-task-out over the score matrix's tasks).

For each held-out task and seed, five arms search the task's seeded subset (the matrix's, ``tasks.py``):

    a  pretune   the default configuration, then the portfolio built by greedy selection on ``matrix.csv`` without
                 this task (``select.py``'s selection, written as a portfolio file), then TPE
    b  tpe       pretune's search with TPE from its first trial: nothing enqueued
    c  random    pretune's search with random sampling from its first trial
    d  trainer   transformers' ``Trainer.hyperparameter_search`` (Optuna backend, TPE), on the full-fine-tuning keys
                 of the same space (its search cannot set adapters or layer-wise decay), each trial's best
                 evaluation kept, as pretune's trials keep theirs
    e  default   the default configuration alone: trial 1 of arm a (the same configuration, data and seed)

Arms a to c search the same space: pretune's default space, with ``train.layer_lr_decay`` (0.8, 0.9, 1.0), so that
every matrix candidate lies in it. Each arm runs ``--trials`` trials (16); the best dev score after k of them, for
k = 1, 2, 4, 8 and 16, is read from its trials in order. Per task and seed the scores are normalised between the
default's (0) and the best any arm found in all its trials (1), as the portfolio itself is chosen; an arm below the
default goes below 0. Targets (the issue's): a at 4 trials at least b and d at 16; a never below e (by
construction: a's first trial is e); a at 8 trials within 0.5 point of the best any arm found in 16.

    PYTHONPATH=. python -m benchmarks.portfolio.held_out --tasks trec,mrpc --seeds 0 --work bench-out/held-out
    PYTHONPATH=. python -m benchmarks.portfolio.held_out --report --work bench-out/held-out --svg docs/images/x.svg

Arms b, c and d do not read the matrix, so they can run while it is still being measured (``--arms
tpe,random,trainer``); arm a needs the matrix complete, since its portfolio comes from it. With one seed, TPE's first
five trials are the random arm's (pretune's TPE starts from five random draws, seeded alike); the seeds differ
between (task, seed) pairs, not between arms, so that the arms are paired.

Each finished (task, seed, arm) is one line of ``WORK/held_out.jsonl``: rerunning the command skips them, and a
pretune arm killed mid-search resumes its study; a killed Trainer arm starts again. The cost is trials x arms x
tasks x seeds fine-tunes of the matrix's size (16 x 4 x 8 x 3 = 1,536 here, a few minutes each on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Optional

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a file rather than with -m
    sys.path.insert(0, str(ROOT))

from benchmarks.portfolio import candidates as candlib  # noqa: E402
from benchmarks.portfolio import select as selectlib  # noqa: E402
from benchmarks.portfolio import tasks as tasklib  # noqa: E402

ARMS = ("pretune", "tpe", "random", "trainer")  # searched; "default" is read from pretune's first trial
SHOWN = ("pretune", "tpe", "random", "trainer", "default")
BUDGETS = (1, 2, 4, 8, 16)
RESULTS = "held_out.jsonl"
DEFAULT = "c04"  # the small-encoder recipe: what pretune fit trains MiniLM with (pretune.train.defaults)


def search_space() -> dict:
    """pretune's default space, which searches every key the matrix's candidates set (layer-wise decay too)."""
    from pretune.search.space import DEFAULT_SPACE

    return dict(DEFAULT_SPACE)


def portfolio_without(task: str, matrix: Path, work: Path, size: int = 15, model: str = "minilm") -> Path:
    """The portfolio greedy selection makes from ``matrix`` without ``task``, written as a portfolio file."""
    from pretune.search import portfolio

    scores = selectlib.complete(selectlib.read_matrix(matrix, model))
    rest = {t: row for t, row in scores.items() if t != task}
    if len(rest) < 2 or not any(DEFAULT in row for row in rest.values()):
        raise SystemExit(f"{matrix}: {len(rest)} tasks besides {task} with every candidate measured; a portfolio "
                         "needs at least two")
    order = portfolio.greedy(rest, DEFAULT)[1:size + 1]
    configs = {c["name"]: c["config"] for c in candlib.load()}
    path = work / "portfolios" / f"without-{task}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    return portfolio.write(path, [portfolio.Entry(c, configs[c]) for c in order],
                           {"what": f"greedy selection on {matrix.name} without {task}", "tasks": sorted(rest)})


def base_config(task: tasklib.Task, subset: tasklib.Subset, seed: int, work: Path, threads: int,
                model: str = "minilm") -> dict:
    """The run config a matrix cell of the default candidate uses on ``subset`` (before its search section)."""
    from pretune.config import merge

    base = {"model": {"path": model}, "data": tasklib.data_config(subset, work / "cache"),
            "train": {"threads": threads, "precision": "fp32", "progress": False, "checkpoint_every": 0,
                      "device": "cpu", "seed": seed, "metric": task.metric}}
    default = next(c for c in candlib.load() if c["name"] == DEFAULT)
    return merge(base, candlib.nested(default["config"]))


def run_pretune_arm(arm: str, base: dict, metric: str, trials: int, seed: int, out: Path,
                    portfolio_file: Optional[Path] = None, train_fn: Optional[Callable] = None) -> list[dict]:
    """One pretune arm (pretune, tpe or random); its trials in order: score (None unless complete), source."""
    from pretune.config import as_config
    from pretune.search import portfolio, search
    from pretune.search.plan import make_plan, open_study

    cfg = dict(base, output=str(out / arm),
               search={"space": search_space(), "n_trials": trials, "seed": seed, "pruner": "none",
                       "sampler": "random" if arm == "random" else "tpe",
                       "portfolio": str(portfolio_file) if arm == "pretune" else "none"})
    if arm != "pretune":  # from scratch: the study is made with its start points marked as done, so none is queued
        study = open_study(make_plan(as_config(cfg)), create=True)
        if study.user_attrs.get(portfolio.ENQUEUED_ATTR) is None and not study.get_trials(deepcopy=False):
            study.set_user_attr(portfolio.ENQUEUED_ATTR, [])
    result = search(cfg, train_fn=train_fn)
    return [{"score": r.get(metric) if r["state"] == "complete" else None, "source": r.get("source", "sampler"),
             "seconds": r.get("duration_s")} for r in result.trials]


def run_trainer_arm(task: tasklib.Task, subset: tasklib.Subset, trials: int, seed: int, threads: int,
                    out: Path) -> list[dict]:
    """``Trainer.hyperparameter_search`` (Optuna TPE) over lr, batch size, epochs, warmup and weight decay, with
    the space's ranges; one evaluation per epoch, each trial's best kept."""
    import numpy as np
    import optuna
    import torch
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainerCallback, TrainingArguments)

    from pretune.models import packaged_minilm

    torch.set_num_threads(threads)
    model_dir = str(packaged_minilm())
    tok = AutoTokenizer.from_pretrained(model_dir)
    read = lambda p: [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines()]  # noqa: E731
    train_rows, dev_rows = read(subset.train), read(subset.dev)
    regression = task.kind == "regression"
    names = sorted({r["label"] for r in train_rows}) if not regression else []
    ids = {n: i for i, n in enumerate(names)}

    def encode(rows):
        texts = [r["text"] for r in rows]
        pairs = [r["text_pair"] for r in rows] if task.pair else None
        enc = tok(texts, pairs, truncation=True, max_length=task.max_length)
        return [{"input_ids": i, "attention_mask": m, **({"token_type_ids": t} if t is not None else {}),
                 "labels": float(r["label"]) if regression else ids[r["label"]]}
                for i, m, t, r in zip(enc["input_ids"], enc["attention_mask"],
                                      enc.get("token_type_ids", [None] * len(rows)), rows)]

    train_set, dev_set = encode(train_rows), encode(dev_rows)
    space = search_space()
    log: list[dict] = []

    def hp_space(trial):
        lr = space["train.lr"]
        return {"learning_rate": trial.suggest_float("learning_rate", lr["low"], lr["high"], log=True),
                "per_device_train_batch_size": trial.suggest_categorical("per_device_train_batch_size",
                                                                         space["train.batch_size"]["choices"]),
                "num_train_epochs": trial.suggest_int("num_train_epochs", space["train.epochs"]["low"],
                                                      space["train.epochs"]["high"]),
                # transformers 5 has no warmup_ratio: a float below 1 in warmup_steps is the ratio
                "warmup_steps": trial.suggest_float("warmup_steps", 0.0, space["train.warmup"]["high"]),
                "weight_decay": trial.suggest_float("weight_decay", 0.0, space["train.weight_decay"]["high"])}

    class Keep(TrainerCallback):
        def on_train_begin(self, targs, state, control, **kw):
            log.append({"score": None, "source": "trainer", "started": time.time()})

        def on_train_end(self, targs, state, control, **kw):
            log[-1]["seconds"] = round(time.time() - log[-1].pop("started"), 1)

        def on_evaluate(self, targs, state, control, metrics=None, **kw):
            value = (metrics or {}).get(f"eval_{task.metric}")
            if value is not None and math.isfinite(value) and (log[-1]["score"] is None or value > log[-1]["score"]):
                log[-1]["score"] = float(value)

    def metrics(p):
        if regression:
            pred = np.asarray(p.predictions).reshape(-1)
            return {"pearson": float(np.corrcoef(pred, p.label_ids)[0, 1]) if pred.std() > 0 else 0.0}
        return {"accuracy": float((np.argmax(p.predictions, -1) == p.label_ids).mean())}

    targs = TrainingArguments(output_dir=str(out / "trainer"), eval_strategy="epoch", save_strategy="no",
                              report_to=[], seed=seed, per_device_eval_batch_size=128, disable_tqdm=True,
                              train_sampling_strategy="group_by_length", optim="adamw_torch_fused",
                              logging_strategy="no", use_cpu=True)
    trainer = Trainer(model_init=lambda *a: AutoModelForSequenceClassification.from_pretrained(
                          model_dir, num_labels=1 if regression else len(names)),
                      args=targs, train_dataset=train_set, eval_dataset=dev_set, compute_metrics=metrics,
                      data_collator=DataCollatorWithPadding(tok), callbacks=[Keep()])
    trainer.hyperparameter_search(hp_space=hp_space, compute_objective=lambda m: m[f"eval_{task.metric}"],
                                  n_trials=trials, direction="maximize", backend="optuna",
                                  sampler=optuna.samplers.TPESampler(seed=seed))
    for t in log:  # a trial that raised has no end: its time is unknown
        if "started" in t:
            t["seconds"] = None
            del t["started"]
    return log


# ----------------------------------------------------------------------------- reading the results


def best_after(scores: list[Optional[float]], k: int) -> Optional[float]:
    """The best complete score among the first ``k`` trials (None if none completed)."""
    done = [s for s in scores[:k] if s is not None]
    return max(done) if done else None


def normalised_table(records: list[dict], budgets=BUDGETS) -> dict:
    """Per (task, seed) with every arm: each arm's best after k trials, normalised between the default (arm a's
    first trial: 0) and the best any arm found (1). Returns {"cells": {(task, seed): {arm: {k: n}}},
    "mean": {arm: {k: mean n}}, "raw": {(task, seed): {arm: {k: score}}}, "missing": [(task, seed, arm)]}."""
    by_cell: dict[tuple, dict[str, list]] = {}
    for r in records:
        by_cell.setdefault((r["task"], r["seed"]), {})[r["arm"]] = [t["score"] for t in r["trials"]]
    cells, raw, points, missing = {}, {}, {}, []
    for key, arms in sorted(by_cell.items()):
        absent = [a for a in ARMS if a not in arms]
        if absent or not arms["pretune"] or arms["pretune"][0] is None:
            missing += [(*key, a) for a in absent or ["pretune"]]
            continue
        arms = dict(arms, default=arms["pretune"][:1])
        default = arms["default"][0]
        best = max(s for scores in arms.values() for s in scores if s is not None)
        raw[key] = {a: {k: best_after(s, k) for k in budgets} for a, s in arms.items()}
        span = best - default
        cells[key] = {a: {k: (0.0 if span <= 0 else ((v if v is not None else default) - default) / span)
                          for k, v in raw[key][a].items()} for a in arms}
        # points below the best any arm found: defined where the normalised score is not (the default the best)
        points[key] = {a: {k: 100 * (best - (v if v is not None else default)) for k, v in raw[key][a].items()}
                       for a in arms}
    mean = {a: {k: statistics.fmean(c[a][k] for c in cells.values()) for k in budgets} for a in SHOWN} \
        if cells else {}
    points_mean = {a: {k: statistics.fmean(c[a][k] for c in points.values()) for k in budgets} for a in SHOWN} \
        if points else {}
    return {"cells": cells, "mean": mean, "raw": raw, "points": points, "points_mean": points_mean,
            "missing": missing}


def targets(table: dict) -> list[str]:
    """The issue's three targets, each a line saying met or missed with the numbers."""
    if not table["cells"]:
        return ["no (task, seed) has every arm yet"]
    m = table["mean"]
    lines = []
    a4, b16, d16 = m["pretune"][4], m["tpe"][16], m["trainer"][16]
    lines.append(f"a at 4 trials {a4:.3f} against b at 16 {b16:.3f} and d at 16 {d16:.3f}: "
                 f"{'met' if a4 >= b16 and a4 >= d16 else 'missed'}")
    below = [(t, s, k) for (t, s), c in table["cells"].items() for k in BUDGETS
             if c["pretune"][k] < c["default"][k] - 1e-12]
    lines.append("a never below e: " + ("met" if not below else f"missed at {below[:3]}"))
    gaps = {key: max(v for a in ARMS for v in [r[a][16]] if v is not None) - r["pretune"][8]
            for key, r in table["raw"].items()}
    worst = max(gaps.items(), key=lambda kv: kv[1])
    lines.append(f"a at 8 trials within 0.5 point of the best of any arm at 16: "
                 f"{'met' if worst[1] <= 0.005 + 1e-12 else 'missed'} (largest gap {100 * worst[1]:.2f} points, "
                 f"{worst[0][0]} seed {worst[0][1]}; mean {100 * statistics.fmean(gaps.values()):.2f})")
    return lines


NAMES = {"pretune": "(a) pretune: default, portfolio, TPE", "tpe": "(b) TPE from scratch",
         "random": "(c) random search", "trainer": "(d) Trainer.hyperparameter_search",
         "default": "(e) the default alone"}


def markdown(table: dict, budgets=BUDGETS, what: str = "mean") -> str:
    """The arms' mean normalised best (``what="mean"``) or mean points below the best found (``"points_mean"``)
    after each budget of trials, as a markdown table."""
    head = "| arm | " + " | ".join(f"{k} trial{'s' if k > 1 else ''}" for k in budgets) + " |"
    rows = [head, "|---|" + "---:|" * len(budgets)]
    fmt = "{:.3f}" if what == "mean" else "{:.1f}"
    for arm in SHOWN:
        rows.append(f"| {NAMES[arm]} | " + " | ".join(fmt.format(table[what][arm][k]) for k in budgets) + " |")
    return "\n".join(rows)


def raw_markdown(table: dict, budgets=BUDGETS) -> str:
    """Each (task, seed)'s best score per arm after the largest budget, and the default's."""
    k = budgets[-1]
    rows = ["| task | seed | " + " | ".join(f"({NAMES[a][1]}) {a}" for a in SHOWN) + " |",
            "|---|---:|" + "---:|" * len(SHOWN)]
    for (task, seed), r in sorted(table["raw"].items()):
        rows.append(f"| {task} | {seed} | " + " | ".join("-" if r[a][k] is None else f"{r[a][k]:.4f}" for a in SHOWN)
                    + " |")
    return "\n".join(rows)


def svg(table: dict, budgets=BUDGETS) -> str:
    """The mean normalised best against trials (log scale), one line per arm, as a standalone SVG."""
    from pretune.report import svg as svglib

    series = [{"label": arm, "points": [(math.log2(k), table["mean"][arm][k]) for k in budgets]} for arm in SHOWN]
    chart = svglib.lines("held-out", "Mean normalised best dev score on held-out tasks", series,
                         "trials (log scale)", "normalised best (0 default, 1 best found)",
                         xticks=[(math.log2(k), str(k)) for k in budgets])
    style = ("<style>text{font:11px sans-serif;fill:#333}.axis{stroke:#555}.grid{stroke:#e5e5e5}"
             ".series{fill:none;stroke-width:2}</style>")
    return chart.replace("</title>", "</title>" + style, 1)


def read_results(work: Path) -> list[dict]:
    path = work / RESULTS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def append_result(work: Path, record: dict) -> None:
    with open(work / RESULTS, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


# ----------------------------------------------------------------------------- running


def run(args: argparse.Namespace, train_fn: Optional[Callable] = None) -> None:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    done = {(r["task"], r["seed"], r["arm"]) for r in read_results(work)}
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise SystemExit(f"unknown arm(s) {', '.join(unknown)}; the arms are {', '.join(ARMS)}")
    for task in tasklib.select(args.tasks):
        for seed in [int(s) for s in args.seeds.split(",")]:
            todo = [a for a in arms if (task.name, seed, a) not in done]
            if not todo:
                continue
            subset = tasklib.write_subset(task, seed, work, Path(args.data) if args.data else tasklib.DATA,
                                          args.train_rows)
            out = work / "runs" / task.name / f"seed{seed}"
            base = base_config(task, subset, seed, work, args.threads)
            pfile = portfolio_without(task.name, Path(args.matrix), work) if "pretune" in todo else None
            for arm in todo:
                t0 = time.time()
                if arm == "trainer":
                    trials = run_trainer_arm(task, subset, args.trials, seed, args.threads, out)
                else:
                    trials = run_pretune_arm(arm, base, task.metric, args.trials, seed, out, pfile, train_fn)
                record = {"task": task.name, "seed": seed, "arm": arm, "metric": task.metric, "trials": trials,
                          "seconds": round(time.time() - t0, 1),
                          **({"portfolio": json.loads(pfile.read_text())["entries"]} if arm == "pretune" else {})}
                append_result(work, record)
                best = best_after([t["score"] for t in trials], len(trials))
                print(f"{task.name} seed {seed} {arm}: best {task.metric} {best} in {len(trials)} trials, "
                      f"{record['seconds']:.0f} s", flush=True)


def report(args: argparse.Namespace) -> int:
    records = read_results(Path(args.work))
    fewest = min((len(r["trials"]) for r in records), default=0)
    budgets = tuple(k for k in BUDGETS if k <= fewest)  # a budget past an arm's trials would read as its last
    if not budgets:
        print("no (task, seed) has every arm yet")
        return 1
    table = normalised_table(records, budgets)
    if table["missing"]:
        print(f"not yet run (task, seed, arm): {table['missing'][:10]}")
    if not table["cells"]:
        print("no (task, seed) has every arm yet")
        return 1
    print(f"{len(table['cells'])} (task, seed) pairs: {sorted(table['cells'])}\n")
    print("mean normalised best dev score (0: the default's, 1: the best any arm found):")
    print(markdown(table, budgets) + "\n")
    print("mean points below the best any arm found (0: found it):")
    print(markdown(table, budgets, "points_mean") + "\n")
    print(f"best dev score after {budgets[-1]} trials:")
    print(raw_markdown(table, budgets) + "\n")
    print("\n".join(targets(table)) if budgets == BUDGETS else
          f"the targets read 4, 8 and 16 trials; the arms here ran {fewest}")
    if args.svg:
        Path(args.svg).write_text(svg(table, budgets), encoding="utf-8")
        print(f"wrote {args.svg}")
    return 0


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", default="default", help="held-out tasks (tasks.py names; default: the matrix's)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--arms", default=",".join(ARMS), help=f"comma list of {', '.join(ARMS)}")
    p.add_argument("--trials", type=int, default=max(BUDGETS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--train-rows", type=int, default=tasklib.MAX_TRAIN,
                   help="training rows of each subset (the matrix's: %(default)s; fewer for a quick check)")
    p.add_argument("--matrix", default=str(selectlib.MATRIX))
    p.add_argument("--data", help="the shared data folder (default: ../shared/data or $PRETUNE_DATA)")
    p.add_argument("--work", default="bench-out/held-out")
    p.add_argument("--report", action="store_true", help="print the table of the finished arms; runs nothing")
    p.add_argument("--svg", help="with --report: write the plot here")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.report:
        return report(args)
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
