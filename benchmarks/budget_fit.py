"""A user's budget is a constraint to plan within: ``pretune run --budget T`` where T is what one hand-set
fine-tune took.

For each task (whole training pools of 2,500-8,500 rows, ``benchmarks/portfolio/tasks.py``: quirks handled,
duplicates across splits dropped), in one invocation:
1. the hand-set fine-tune: the Trainer script of ``benchmarks/whole_process.py`` (its documentation's recipe at
   its best settings here: 3 epochs, lr 5e-5, batch 32, weight decay 0.01, 6% warmup, linear decay, an
   evaluation per epoch and the best one kept), on the packaged all-MiniLM-L6-v2, timed from the command to its
   exit: T seconds, dev accuracy A;
2. ``pretune run --model minilm --budget T`` on the same rows and dev set (the whole job: plan, search, compress,
   bench, report), timed the same way.

It prints, per task, T, pretune's wall time as a share of T (target <= 1.05), the Trainer's and pretune's best dev
accuracy (target: pretune >= Trainer), and what pretune's plan lowered. With ``--seeds``, each seed repeats
both on the same rows, the Trainer with that seed (set before its classifier head is drawn) and pretune with
``train.seed``; each seed's Trainer time is that seed's budget, and each task gets a row of means. Run from the
repository root:

    PYTHONPATH=. python benchmarks/budget_fit.py --tasks trec,mrpc --threads 2 [--seeds 42,1,2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.portfolio import tasks as matrix_tasks  # noqa: E402
from benchmarks.whole_process import HPARAMS, train_and_save  # noqa: E402  the same Trainer recipe


def trainer_main(train: str, dev: str, out: str, threads: int, pair: bool, seed: int) -> None:
    """The hand-set fine-tune (run in its own process by ``main``)."""
    import re

    import torch
    from datasets import load_dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed

    from pretune.models import packaged_minilm

    torch.set_num_threads(threads)
    model_dir = str(packaged_minilm())
    bf16 = bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", Path("/proc/cpuinfo").read_text()))
    data = load_dataset("json", data_files={"train": train, "dev": dev})
    labels = sorted({str(x) for x in data["train"]["label"]})
    index = {name: i for i, name in enumerate(labels)}
    tok = AutoTokenizer.from_pretrained(model_dir)

    def encode(batch):
        args = (batch["text"], batch["text_pair"]) if pair else (batch["text"],)
        enc = tok(*args, truncation=True, max_length=HPARAMS["max_length"])
        enc["labels"] = [index[str(x)] for x in batch["label"]]
        return enc

    data = data.map(encode, batched=True, remove_columns=data["train"].column_names)
    set_seed(seed)  # the new classifier head is drawn here, before the Trainer seeds its own run
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=len(labels),
                                                               attn_implementation="sdpa")

    train_and_save(model, tok, data, out, bf16, seed)


def timed(cmd: list[str], log: Path) -> float:
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:5])} failed; see {log}")
    return seconds


def write_task(name: str, work: Path) -> tuple[Path, Path, bool, dict]:
    task = matrix_tasks.TASKS[name]
    train, dev, counts = matrix_tasks.build(task, seed=0, max_train=10**9)  # the whole de-duplicated pool
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    for split, rows in (("train", train), ("dev", dev)):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return folder / "train.jsonl", folder / "dev.jsonl", task.pair, counts


def run_seed(name: str, seed: int, train: Path, dev: Path, pair: bool, counts: dict, folder: Path,
             threads: int) -> dict:
    """The Trainer, timed, then ``pretune run`` with that time as its budget; one row of the table."""
    out = folder / "trainer"
    out.mkdir(parents=True, exist_ok=True)
    budget = timed([sys.executable, __file__, "--trainer-worker", str(train), str(dev), str(out), str(threads),
                    "pair" if pair else "single", str(seed)], folder / "trainer.log")
    trainer_acc = json.loads((out / "result.json").read_text())["accuracy"]
    run_dir = folder / "pretune"
    cmd = [sys.executable, "-m", "pretune", "run", "--model", "minilm", "--train", str(train), "--eval",
           str(dev), "--text", "text", "--label", "label", "--budget", f"{budget:.0f}s", "--output",
           str(run_dir), "--overwrite", "--threads", str(threads), "data.max_length=128",
           "train.progress=false", f"train.seed={seed}"]
    if pair:
        cmd[cmd.index("--label"):cmd.index("--label")] = ["--text-pair", "text_pair"]
    wall = timed(cmd, folder / "pretune.log")
    state = json.loads((run_dir / "run.json").read_text())
    search = json.loads((run_dir / "search" / "results.json").read_text())
    return {"task": name, "seed": seed, "train_rows": counts["train"], "dev_rows": counts["dev"],
            "budget_s": round(budget, 1), "pretune_s": round(wall, 1), "share": round(wall / budget, 3),
            "trainer_acc": trainer_acc, "pretune_acc": search["best_values"][0], "trials": search.get("counts"),
            "lowered": (state["plan"].get("fidelity") or {}).get("lowered", []),
            "stages_s": {k: v.get("seconds") for k, v in state["stages"].items()}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", default="trec,mrpc")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workdir", default="bench-out/budget-fit")
    p.add_argument("--seeds", default=str(HPARAMS["seed"]),
                   help="comma-separated; each repeats both arms (default: the Trainer recipe's seed, 42)")
    p.add_argument("--trainer-worker", nargs=6, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.trainer_worker:
        train, dev, out, threads, pair, seed = args.trainer_worker
        trainer_main(train, dev, out, int(threads), pair == "pair", int(seed))
        return 0

    work = Path(args.workdir)
    seeds = [int(x) for x in args.seeds.split(",")]
    rows = []
    for name in args.tasks.split(","):
        train, dev, pair, counts = write_task(name, work / "data")
        for seed in seeds:
            rows.append(run_seed(name, seed, train, dev, pair, counts, work / name / f"seed-{seed}", args.threads))
            print(json.dumps(rows[-1]), flush=True)
    cmd = f"PYTHONPATH=. python benchmarks/budget_fit.py --tasks {args.tasks} --threads {args.threads}"
    print(f"\n`{cmd}{f' --seeds {args.seeds}' if len(seeds) > 1 else ''}`\n")
    print("| task | seed | train rows | dev rows | Trainer 3 epochs = budget (s) | pretune run (s) | share of budget "
          "| Trainer dev acc | pretune dev acc | lowered |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in args.tasks.split(","):
        mine = [r for r in rows if r["task"] == name]
        for r in mine:
            print(f"| {name} | {r['seed']} | {r['train_rows']:,} | {r['dev_rows']} | {r['budget_s']:.0f} | "
                  f"{r['pretune_s']:.0f} | {r['share']:.2f} | {100 * r['trainer_acc']:.2f}% | "
                  f"{100 * r['pretune_acc']:.2f}% | {'; '.join(r['lowered']) or 'nothing'} |")
        if len(mine) > 1:
            def mean(key):
                return sum(r[key] for r in mine) / len(mine)
            wins = sum(r["pretune_acc"] >= r["trainer_acc"] for r in mine)
            print(f"| **{name}, mean of {len(mine)}** | | | | {mean('budget_s'):.0f} | {mean('pretune_s'):.0f} | "
                  f"{max(r['share'] for r in mine):.2f} (most) | {100 * mean('trainer_acc'):.2f}% | "
                  f"{100 * mean('pretune_acc'):.2f}% | pretune >= Trainer on {wins} of {len(mine)} seeds |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
