"""Search efficiency on the packaged MiniLM and an SST-2 subset, one compute budget per arm.

Arms (same space, same data, same threads, budget in training samples):
  (a) pretune TPE + ASHA     (b) pretune TPE, no pruning     (c) pretune random search
  (d) transformers ``Trainer.hyperparameter_search`` (Optuna backend) at its best settings:
      ``train_sampling_strategy="group_by_length"`` and ``optim="adamw_torch_fused"``.

For each arm: best dev accuracy found, samples spent, and the samples spent until its first trial within
0.5 point of the best accuracy any arm found. The space is full fine-tuning only (lr, batch size, epochs,
warmup, weight decay) because the Trainer's search cannot search adapter settings.

    python benchmarks/search_efficiency.py --budget 2400 --train-rows 800 --eval-rows 300 --out runs/bench-search
    python benchmarks/search_efficiency.py --budget 40000 --train-rows 2000 --bf16 --out runs/bench-search

One run is one draw: which configurations come first decides most of it. Run several seeds (each its own
subset, training seed and sampler seed, shared by the arms so they are paired) and combine them:

    python benchmarks/search_efficiency.py --seed 1 --out runs/bench-search-s1   # ... and so on
    python benchmarks/search_efficiency.py --combine runs/bench-search-s1 runs/bench-search-s2 ...

Leave-one-task-out over many tasks, in trials rather than samples, with a portfolio built without the task it is
tested on and the default configuration as an arm of its own (issue 18): ``--held-out`` followed by the arguments of
``benchmarks/portfolio/held_out.py``, which does the work:

    python benchmarks/search_efficiency.py --held-out --tasks trec,mrpc --seeds 0 --work bench-out/held-out
    python benchmarks/search_efficiency.py --held-out --report --work bench-out/held-out

Whether pruning can pay on a task depends on how well early evaluations rank the trials; ``--curves`` measures
that on the unpruned arms of finished runs, and ``--replay`` runs their recorded trials through each of pretune's
pruners to estimate what it would save.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SST2 = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2"
ARMS = ("tpe_asha", "tpe", "random", "trainer")


def space(epochs_max: int) -> dict:
    return {"train.lr": {"type": "float", "low": 1e-5, "high": 3e-4, "log": True},
            "train.batch_size": [16, 32],
            "train.epochs": {"type": "int", "low": 1, "high": epochs_max},
            "train.warmup": {"type": "float", "low": 0.0, "high": 0.2},
            "train.weight_decay": {"type": "float", "low": 0.0, "high": 0.1}}


def subset(src: Path, dest: Path, rows: int, seed: int) -> Path:
    """A seeded random subset of a TSV (sentence, label), written as CSV (text, label)."""
    with open(src, encoding="utf-8") as f:
        data = [(r["sentence"].strip(), r["label"]) for r in csv.DictReader(f, delimiter="\t")]
    random.Random(seed).shuffle(data)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(data[:rows])
    return dest


def run_pretune(arm: str, args, train: Path, dev: Path, out: Path) -> list[dict]:
    """One pretune arm; returns its trials in order: accuracy (None unless complete), samples."""
    from pretune.models import packaged_minilm
    from pretune.search import search

    sampler, pruner = {"tpe_asha": ("tpe", "asha"), "tpe": ("tpe", "none"), "random": ("random", "none")}[arm]
    cfg = {"model": {"path": str(packaged_minilm())},
           "data": {"train": str(train), "eval": str(dev), "max_length": args.max_length,
                    "cache_dir": str(out / "cache")},
           "train": {"eval_every": args.eval_every, "threads": args.threads, "seed": args.seed, "progress": False,
                     "precision": "bf16" if args.bf16 else "fp32", "device": "cpu"},
           "search": {"space": space(args.epochs_max), "budget_samples": args.budget, "n_trials": 1000,
                      "sampler": sampler, "pruner": pruner, "seed": args.seed, "prune_after": args.prune_after},
           "output": str(out / arm)}
    result = search(cfg)
    return [{"number": r["number"], "state": r["state"], "accuracy": r.get("accuracy"),
             "samples": r["train_samples"], "duration_s": r["duration_s"]} for r in result.trials]


def trainer_hp_space(args):
    """The same space as the pretune arms, in TrainingArguments names."""
    s = space(args.epochs_max)

    def hp_space(trial):
        return {"learning_rate": trial.suggest_float("learning_rate", s["train.lr"]["low"], s["train.lr"]["high"],
                                                     log=True),
                "per_device_train_batch_size": trial.suggest_categorical("per_device_train_batch_size", [16, 32]),
                "num_train_epochs": trial.suggest_int("num_train_epochs", 1, args.epochs_max),
                # transformers 5 has no warmup_ratio: a float below 1 in warmup_steps is the ratio. (A name
                # TrainingArguments lacks would be skipped with only a log warning, silently unsearched.)
                "warmup_steps": trial.suggest_float("warmup_steps", 0.0, 0.2),
                "weight_decay": trial.suggest_float("weight_decay", 0.0, 0.1)}
    return hp_space


def run_trainer(args, train: Path, dev: Path, out: Path) -> list[dict]:
    """The Trainer's own search, stopped once it has trained ``args.budget`` samples."""
    import numpy as np
    import optuna
    import torch
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainerCallback, TrainingArguments)

    from pretune.models import packaged_minilm

    torch.set_num_threads(args.threads)
    model_dir = str(packaged_minilm())
    tok = AutoTokenizer.from_pretrained(model_dir)

    def encode(path: Path) -> list[dict]:
        rows = list(csv.DictReader(open(path, encoding="utf-8")))
        enc = tok([r["text"] for r in rows], truncation=True, max_length=args.max_length)
        return [{"input_ids": ids, "attention_mask": am, "labels": int(r["label"])}
                for ids, am, r in zip(enc["input_ids"], enc["attention_mask"], rows)]

    train_set, dev_set = encode(train), encode(dev)
    log: list[dict] = []

    class Budget(TrainerCallback):
        def on_train_begin(self, targs, state, control, **kw):
            # Checked between trials, like pretune's budget: the last trial may overshoot.
            if sum(t["samples"] for t in log) >= args.budget:
                raise BudgetSpent()
            log.append({"number": len(log), "state": "running", "accuracy": None, "samples": 0,
                        "started": time.time()})

        def on_step_end(self, targs, state, control, **kw):
            # Rows actually seen (the last batch of an epoch is partial), as pretune counts them.
            log[-1]["samples"] = round(state.epoch * len(train_set))

        def on_train_end(self, targs, state, control, **kw):
            log[-1]["ended"] = time.time()
            if state.global_step < state.max_steps:  # its MedianPruner stopped it (no early stopping is set)
                log[-1]["state"] = "pruned"

        def on_evaluate(self, targs, state, control, metrics=None, **kw):
            # The trial's best evaluation, as pretune's trials report theirs (train.restore_best) and as the
            # Trainer's load_best_model_at_end would restore; its TPE still sees the last one, its objective.
            # A pruned trial's never counts as arriving, as in pretune's arms.
            acc = metrics.get("eval_accuracy")
            if acc is not None and (log[-1]["accuracy"] is None or acc > log[-1]["accuracy"]):
                log[-1]["accuracy"] = acc

    def metrics(p):
        return {"accuracy": float((np.argmax(p.predictions, -1) == p.label_ids).mean())}

    targs = TrainingArguments(output_dir=str(out / "trainer"), eval_strategy="steps", eval_steps=args.eval_every,
                              save_strategy="no", report_to=[], seed=args.seed, per_device_eval_batch_size=128,
                              train_sampling_strategy="group_by_length", optim="adamw_torch_fused",
                              disable_tqdm=True, logging_strategy="no", use_cpu=True, bf16=args.bf16)
    trainer = Trainer(model_init=lambda *a: AutoModelForSequenceClassification.from_pretrained(model_dir,
                                                                                               num_labels=2),
                      args=targs, train_dataset=train_set, eval_dataset=dev_set, compute_metrics=metrics,
                      data_collator=DataCollatorWithPadding(tok), callbacks=[Budget()])
    try:
        trainer.hyperparameter_search(hp_space=trainer_hp_space(args), compute_objective=lambda m: m["eval_accuracy"],
                                      n_trials=1000, direction="maximize", backend="optuna",
                                      sampler=optuna.samplers.TPESampler(seed=args.seed))
    except BudgetSpent:
        pass
    for t in log:
        t["duration_s"] = round(t.pop("ended") - t.pop("started"), 1)
        t["state"] = "complete" if t["state"] == "running" else t["state"]
    return log


class BudgetSpent(Exception):
    """Stops the Trainer's search at the sample budget."""


def summarise(arms: dict[str, list[dict]]) -> dict:
    """Best accuracy per arm, and samples spent until an arm first came within 0.5 point of the overall best."""
    best_all = max((t["accuracy"] for ts in arms.values() for t in ts if t["accuracy"] is not None
                    and t["state"] == "complete"), default=None)
    out = {"overall_best": best_all, "arms": {}}
    for name, trials in arms.items():
        spent, reached = 0, None
        for t in trials:
            spent += t["samples"]
            ok = t["state"] == "complete" and t["accuracy"] is not None
            if reached is None and ok and best_all is not None and t["accuracy"] >= best_all - 0.005:
                reached = spent
        done = [t["accuracy"] for t in trials if t["state"] == "complete" and t["accuracy"] is not None]
        out["arms"][name] = {"best_accuracy": max(done, default=None), "trials": len(trials),
                             "complete": len(done), "samples": spent, "samples_to_within_0.5pt": reached,
                             "seconds": round(sum(t["duration_s"] or 0 for t in trials), 1)}
    return out


def combine(dirs: list[str]) -> dict:
    """Per seed, samples to within 0.5 point as a fraction of (b)'s and (d)'s; pooled over the seeds.

    An arm that never came within 0.5 point spent its whole budget without getting there: its figure is then a
    bound (">"), and so is any ratio it enters. The pooled ratio divides the arms' sums over the seeds, counting
    such an arm at the budget it spent (its least possible cost) and saying how many seeds that was.
    """
    rows, pooled = [], {"tpe_asha/tpe": [0, 0, 0], "tpe_asha/trainer": [0, 0, 0], "random/tpe": [0, 0, 0]}
    for d in dirs:
        r = json.loads((Path(d) / "search_efficiency.json").read_text())
        arms = r["summary"]["arms"]
        row = {"seed": r["settings"]["seed"], "overall_best": r["summary"]["overall_best"]}
        for name, a in arms.items():
            row[name] = {"best": a["best_accuracy"], "reached": a["samples_to_within_0.5pt"], "spent": a["samples"]}
        for key, sums in pooled.items():
            num, den = key.split("/")
            if num not in arms or den not in arms:
                continue
            n, m = (arms[a]["samples_to_within_0.5pt"] for a in (num, den))
            cost_n, cost_m = (arms[a]["samples_to_within_0.5pt"] or arms[a]["samples"] for a in (num, den))
            sums[0], sums[1], sums[2] = sums[0] + cost_n, sums[1] + cost_m, sums[2] + (n is None) + (m is None)
            row[key] = ("neither" if n is None and m is None else f"> {cost_n / cost_m:.2f}" if n is None
                        else f"< {cost_n / cost_m:.2f}" if m is None else round(n / m, 3))
        rows.append(row)
    return {"seeds": rows, "pooled": {k: {"ratio": round(a / b, 3) if b else None, "censored_arms": c}
                                      for k, (a, b, c) in pooled.items()}}


def recorded_arms(d: str) -> dict[str, list[tuple[dict, list[dict]]]]:
    """The unpruned arms (tpe, random) of a finished run: each trial's row of trials.json and its evaluations."""
    arms = {}
    for arm in ("tpe", "random"):
        table = Path(d) / arm / "trials.json"
        if not table.exists():
            continue
        arms[arm] = []
        for t in json.loads(table.read_text()):
            metrics = Path(d) / arm / "trials" / f"{t['number']:04d}" / "metrics.jsonl"
            lines = metrics.read_text().splitlines() if metrics.exists() else []
            arms[arm].append((t, [e for e in map(json.loads, lines) if e.get("type") == "eval"]))
    return arms


def curves(dirs: list[str], fractions=(0.1, 0.2, 1 / 3, 0.5)) -> dict:
    """How well a trial's early evaluation ranks it: the rank correlation (Spearman) between each unpruned trial's
    accuracy (and eval loss, negated) at its first evaluation at or past a fraction of its schedule and its
    final accuracy, within each run's unpruned arms (tpe, random), then averaged over them. A pruner cutting at
    a fraction bets on this ranking."""
    from scipy.stats import spearmanr

    per: dict[str, list[float]] = {f"{key}@{f:.2f}": [] for f in fractions for key in ("accuracy", "-loss")}
    runs = 0
    for d in dirs:
        for trials in recorded_arms(d).values():
            rows = [(t["params.train.epochs"], evals, t["accuracy"]) for t, evals in trials if t["state"] == "complete"]
            if len(rows) < 5:
                continue
            runs += 1
            for f in fractions:
                at = [next(e for e in evals if e["epoch"] / epochs >= f - 1e-9) for epochs, evals, _ in rows]
                finals = [final for *_, final in rows]
                for key, sign, name in (("accuracy", 1, "accuracy"), ("loss", -1, "-loss")):
                    per[f"{name}@{f:.2f}"].append(float(spearmanr([sign * e[key] for e in at], finals)[0]))
    return {"runs": runs, "mean_spearman": {k: round(sum(v) / len(v), 2) for k, v in per.items() if v}}


REPLAY_RULES = (("none", 0.0), ("median", 0.5), ("hyperband", 0.5), ("asha", 0.0), ("asha", 0.25),
                ("asha", 0.5), ("asha", 1.0))


def replay(dirs: list[str], rules=REPLAY_RULES, within: float = 0.005) -> dict:
    """What pretune's pruners would have done to the unpruned arms' recorded trials (tpe, random).

    Each rule (pruner, prune_after) runs the trials of every run, in their recorded order, through the search's
    own pruning step (``runner.judge_evaluation``) on an in-memory study: a trial stops at the first
    evaluation its pruner cuts, costing the samples it had seen there. An arrival is a complete trial within
    ``within`` of its seed's overall best (any arm, as summed up by the seed's last run given). Samples per
    kept arrival, pooled over the runs, estimates a search's samples to its first arrival if its trials were
    drawn alike; the ratio to "none" is what the pruner saves. It cannot say what a real pruned search gains
    from the trials its saved budget buys, nor how the sampler would react to the cuts. The recorded trials
    evaluate every ``eval_every`` steps, not at the rungs, so the pruner reads them within each rung's window
    but not exactly at it.
    """
    from types import SimpleNamespace

    import optuna

    from pretune.search.factories import make_pruner
    from pretune.search.pruning import GracePeriod
    from pretune.search.runner import judge_evaluation

    reports = {d: json.loads((Path(d) / "search_efficiency.json").read_text()) for d in dirs}
    # One seed's arms may lie in several runs chained by --previous: the last one given sets the seed's bar.
    best_of_seed = {r["settings"]["seed"]: r["summary"]["overall_best"] for r in reports.values()}
    runs = [(f"{d}:{arm}", best_of_seed[report["settings"]["seed"]], trials)
            for d, report in reports.items() for arm, trials in recorded_arms(d).items()]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = {"runs": [name for name, *_ in runs], "within": within, "rules": {}}
    # Each trial's epochs are its own parameter, as in the search, so that the pruner places its grace period.
    epochs = optuna.distributions.CategoricalDistribution(sorted({t["params.train.epochs"]
                                                                 for *_, trials in runs for t, _ in trials}))
    for pruner, prune_after in rules:
        plan = SimpleNamespace(objectives=[("accuracy", "maximize")], multi=False)
        grace = GracePeriod(prune_after, epochs=1.0)
        spent = kept = arrivals = 0
        for _, best, trials in runs:
            # Hyperband assigns brackets by study name and trial number: the name a search uses by default
            study = optuna.create_study(study_name="pretune", direction="maximize",
                                        pruner=make_pruner(pruner, False, grace))
            for t, evals in trials:
                study.enqueue_trial({"train.epochs": t["params.train.epochs"]})
                trial, reported, cost = study.ask({"train.epochs": epochs}), [-1], t["train_samples"]
                cfg = SimpleNamespace(train=SimpleNamespace(max_steps=None, epochs=t["params.train.epochs"]))
                cut = next((e for e in evals if judge_evaluation(trial, plan, cfg, e["step"], e, reported)), None)
                if cut is not None:
                    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                    cost = cut["samples"]
                elif t["state"] == "complete":
                    study.tell(trial, t["accuracy"])
                else:
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                arrives = t["state"] == "complete" and t["accuracy"] >= best - within
                spent, arrivals, kept = spent + cost, arrivals + arrives, kept + (arrives and cut is None)
        out["rules"][pruner if pruner == "none" else f"{pruner}, prune_after {prune_after:g}"] = {
            "samples": spent, "arrivals_kept": kept, "arrivals": arrivals,
            "samples_per_arrival": round(spent / kept) if kept else None}
    base = out["rules"].get("none", {}).get("samples_per_arrival")
    for rule in out["rules"].values():
        per = rule["samples_per_arrival"]
        rule["vs_none"] = round(per / base, 3) if per and base else None
    return out


def main() -> int:
    if sys.argv[1:2] == ["--held-out"]:  # issue 18's measure: the arguments are held_out.py's
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from benchmarks.portfolio import held_out

        return held_out.main(sys.argv[2:])
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", type=int, default=20000, help="training samples per arm")
    p.add_argument("--train-rows", type=int, default=4000)
    p.add_argument("--eval-rows", type=int, default=872)
    p.add_argument("--epochs-max", type=int, default=3)
    p.add_argument("--eval-every", type=int, default=20, help="optimizer steps between evaluations")
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prune-after", type=float, default=1.0,
                   help="search.prune_after of the pretune arms: epochs a trial trains before it may be pruned")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast in every arm (pretune train.bf16, Trainer bf16)")
    p.add_argument("--arms", default=",".join(ARMS), help=f"comma list of {', '.join(ARMS)}")
    p.add_argument("--out", default="runs/bench-search")
    p.add_argument("--previous", help="search_efficiency.json of an earlier run: keep its arms not rerun here")
    p.add_argument("--combine", nargs="+", metavar="DIR", help="combine finished runs (one per seed); runs nothing")
    p.add_argument("--curves", nargs="+", metavar="DIR",
                   help="how well early evaluations rank the unpruned arms' trials in finished runs; runs nothing")
    p.add_argument("--replay", nargs="+", metavar="DIR",
                   help="run the unpruned arms' recorded trials in finished runs through each pruner; runs nothing")
    p.add_argument("--within", type=float, default=0.005, help="--replay: how near the best an arrival is")
    args = p.parse_args()
    if args.replay:
        print(json.dumps(replay(args.replay, within=args.within), indent=2))
        return 0
    if args.combine:
        print(json.dumps(combine(args.combine), indent=2))
        return 0
    if args.curves:
        print(json.dumps(curves(args.curves), indent=2))
        return 0
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    train = subset(SST2 / "train.tsv", out / "data" / "train.csv", args.train_rows, args.seed)
    dev = subset(SST2 / "dev.tsv", out / "data" / "dev.csv", args.eval_rows, args.seed)
    from pretune.cli.logs import configure_logging, quiet_optuna
    from pretune.files import atomic_path
    configure_logging()
    quiet_optuna()
    arms = json.loads(Path(args.previous).read_text())["trials"] if args.previous else {}
    for arm in args.arms.split(","):
        started = time.time()
        arms[arm] = run_trainer(args, train, dev, out) if arm == "trainer" else run_pretune(arm, args, train, dev, out)
        print(f"{arm}: {len(arms[arm])} trials in {time.time() - started:.0f}s", file=sys.stderr, flush=True)
        # Written after every arm, so a run stopped part way keeps the arms it finished (see --previous).
        report = {"settings": vars(args), "summary": summarise(arms), "trials": arms}
        with atomic_path(out / "search_efficiency.json") as tmp:
            tmp.write_text(json.dumps(report, indent=2))
    print(json.dumps(report["summary"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
