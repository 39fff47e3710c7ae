"""Whole processes, as a new user runs them: ``pretune fit`` at its defaults against a Trainer script.

Both fine-tune the packaged all-MiniLM-L6-v2 on the same seeded SST-2 rows (``--train-rows``, 2,000 by
default) and evaluate on the whole dev set, with the same hyperparameters (3 epochs, lr 5e-5, batch 32,
weight decay 0.01, 6% warmup, linear decay, max length 128), and each ends with a saved model folder that
scores the best evaluation. The Trainer script is the one its documentation teaches, at its best settings on
this machine: ``datasets`` to read and tokenize, ``DataCollatorWithPadding``, length-grouped batches,
``adamw_torch_fused``, sdpa attention, bf16 autocast where the CPU runs it natively (as pretune's default
precision does), an evaluation per epoch with ``load_best_model_at_end`` (so a checkpoint per epoch, as
pretune's default writes), then ``save_model``, its score read from ``trainer.state.best_metric`` rather than another
``evaluate()`` pass. Each run is timed from the command to its exit; runs alternate
(pretune, Trainer, pretune, ...) in this one invocation and the report gives each one's time and the ratio.

    python benchmarks/whole_process.py --train-rows 2000 --repeats 2 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("PRETUNE_DATA", HERE.parent.parent / "shared" / "data"))
HPARAMS = dict(epochs=3, lr=5e-5, batch_size=32, max_length=128, seed=42)


def trainer_main(train: str, dev: str, out: str, threads: int) -> None:
    """The user's Trainer script (run in its own process by ``main``)."""
    import re

    import torch
    from datasets import load_dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.set_num_threads(threads)
    from pretune.models import packaged_minilm

    model_dir = str(packaged_minilm())
    bf16 = bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", Path("/proc/cpuinfo").read_text()))
    data = load_dataset("csv", data_files={"train": train, "dev": dev}, delimiter="\t", quoting=3)
    tok = AutoTokenizer.from_pretrained(model_dir)
    data = data.map(lambda b: tok(b["sentence"], truncation=True, max_length=HPARAMS["max_length"]), batched=True,
                    remove_columns=["sentence"])
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2, attn_implementation="sdpa")

    train_and_save(model, tok, data, out, bf16)


def train_and_save(model, tok, data, out: str, bf16: bool, seed: int = HPARAMS["seed"]) -> None:
    """The Trainer recipe at its best settings here (``HPARAMS``, an evaluation per epoch, the best one kept) on
    tokenized ``data`` (``train`` and ``dev``), with the Trainer's ``seed``; the model, tokenizer and
    ``result.json`` (the best dev accuracy) go to ``out``."""
    import numpy as np
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    def accuracy(p):
        return {"accuracy": float((np.argmax(p.predictions, -1) == p.label_ids).mean())}

    steps = -(-len(data["train"]) // HPARAMS["batch_size"]) * HPARAMS["epochs"]
    args = TrainingArguments(
        output_dir=out, num_train_epochs=HPARAMS["epochs"], learning_rate=HPARAMS["lr"],
        per_device_train_batch_size=HPARAMS["batch_size"], per_device_eval_batch_size=128, weight_decay=0.01,
        warmup_steps=int(np.ceil(0.06 * steps)), lr_scheduler_type="linear", optim="adamw_torch_fused",
        train_sampling_strategy="group_by_length", bf16=bf16, use_cpu=True, eval_strategy="epoch",
        save_strategy="epoch", save_total_limit=2, load_best_model_at_end=True, metric_for_best_model="accuracy",
        report_to="none", seed=seed, disable_tqdm=True, logging_steps=50)
    trainer = Trainer(model=model, args=args, train_dataset=data["train"], eval_dataset=data["dev"],
                      data_collator=DataCollatorWithPadding(tok), compute_metrics=accuracy)
    trainer.train()
    trainer.save_model(str(Path(out) / "model"))
    tok.save_pretrained(str(Path(out) / "model"))
    # the best evaluation's score, as pretune reports it (no extra evaluate() pass: the Trainer at its best)
    Path(out, "result.json").write_text(json.dumps({"accuracy": trainer.state.best_metric, "bf16": bf16}))


def run(cmd: list[str], out: Path) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed:\n{proc.stderr[-3000:]}")
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train-rows", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workdir", default="bench-out/whole")
    p.add_argument("--trainer-worker", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.trainer_worker:
        train, dev, out, threads = args.trainer_worker
        return trainer_main(train, dev, out, int(threads))

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    # The same seeded rows for both, as one file: a user's 2,000-row task.
    lines = (DATA / "sst2" / "train.tsv").read_text(encoding="utf-8").splitlines()
    import random

    rows = random.Random(HPARAMS["seed"]).sample(lines[1:], args.train_rows)
    train = work / "train.tsv"
    train.write_text("\n".join([lines[0], *rows]) + "\n", encoding="utf-8")
    dev = DATA / "sst2" / "dev.tsv"
    times: dict[str, list[float]] = {"pretune": [], "trainer": []}
    scores: dict[str, list[float]] = {"pretune": [], "trainer": []}
    for r in range(args.repeats):
        out = work / f"pretune{r}"
        cmd = [sys.executable, "-m", "pretune", "fit", "--model", "minilm", "--train", str(train), "--eval", str(dev),
               "--text", "sentence", "--threads", str(args.threads), "--output", str(out), "--overwrite",
               "train.progress=false"]
        times["pretune"].append(run(cmd, out))
        scores["pretune"].append(json.loads((out / "results.json").read_text())["eval"]["accuracy"])
        out = work / f"trainer{r}"
        cmd = [sys.executable, __file__, "--trainer-worker", str(train), str(dev), str(out), str(args.threads)]
        times["trainer"].append(run(cmd, out))
        scores["trainer"].append(json.loads((out / "result.json").read_text())["accuracy"])
        print(json.dumps({"repeat": r, "pretune_s": times["pretune"][-1], "trainer_s": times["trainer"][-1],
                          "pretune_acc": scores["pretune"][-1], "trainer_acc": scores["trainer"][-1]}), flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\nSST-2, {args.train_rows} training rows, 3 epochs, dev 872; {args.threads} threads; whole processes\n")
    print("| | wall seconds (each run) | median | dev accuracy (each run) |")
    print("|---|---|---|---|")
    for k in times:
        print(f"| {k} | {', '.join(f'{t:.1f}' for t in times[k])} | {med[k]:.1f} | "
              f"{', '.join(f'{100 * a:.2f}%' for a in scores[k])} |")
    ratios = [t / p for p, t in zip(times["pretune"], times["trainer"])]
    print(f"\nTrainer / pretune, per pair: {', '.join(f'{x:.2f}x' for x in ratios)}; "
          f"median of pairs {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
