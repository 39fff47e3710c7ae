"""Token classification on CoNLL-2003: pretune against the transformers Trainer's standard recipe, side by side.

Same model (the packaged all-MiniLM-L6-v2, or ``--model``, its head initialised the same way for both by
``pretune.models.load_for_task`` from the same seed), same sentences (the IOB2 JSONL copies; ``--train-rows`` a
seeded subset, the very sentences pretune's ``data.max_train_samples`` picks), same epochs, learning rate, batch
size, warmup, weight decay, precision and threads.

- pretune: ``pretune fit`` with the task's defaults: a word's tag on its first sub-token, sentences longer than
  ``--max-length`` cut into windows, length-grouped batches; dev and test scored by ``pretune eval``.
- Trainer, the recipe of the transformers token-classification example: words tokenized with
  ``is_split_into_words=True`` and truncated to ``--max-length``, the tag on each word's first sub-token and -100
  on the others, ``DataCollatorForTokenClassification``, length-grouped batches
  (``train_sampling_strategy="group_by_length"``) and fused AdamW; its predictions at the labelled sub-tokens
  scored with seqeval (words lost to truncation are left out, as the example does).

Entity F1 is seqeval's default mode for both. Each arm runs in its own process; arms alternate over ``--repeats``.

    python benchmarks/token_classification.py --train-rows 2000 --epochs 1 --eval-rows 500
    python benchmarks/token_classification.py                  # all 14,041 sentences, 3 epochs, full dev and test
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("PRETUNE_DATA", HERE.parent.parent / "shared" / "data")) / "conll2003"


def read_split(name: str, rows: int | None, seed: int) -> list[dict]:
    """The JSONL split's sentences; with ``rows``, the seeded subset pretune's subsampling picks."""
    from pretune.data import subsample

    lines = [json.loads(line) for line in (DATA / f"{name}.jsonl").read_text().splitlines() if line.strip()]
    return [lines[i] for i in subsample(len(lines), rows, seed)]


def worker_pretune(args) -> dict:
    from pretune.config import config_from_dict
    from pretune.jobs.fit import fit
    from pretune.jobs.predict import evaluate_folder
    from pretune.models import resolve_model_path

    out = Path(args.workdir) / f"pretune-{time.time_ns()}"
    cfg = config_from_dict({
        "model": {"path": resolve_model_path(args.model)},
        "data": {"train": str(DATA / "train.jsonl"), "eval": str(DATA / "validation.jsonl"),
                 "max_train_samples": args.train_rows, "max_eval_samples": args.eval_rows,
                 "max_length": args.max_length},
        "train": {"epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size, "warmup": args.warmup,
                  "weight_decay": 0.01, "threads": args.threads, "seed": args.seed, "progress": False,
                  "restore_best": False, "precision": args.precision, "device": "cpu"},
        "output": str(out)})
    result = fit(cfg)
    res = json.loads((out / "results.json").read_text())
    test = test_file(args)
    scored = evaluate_folder(str(result.model_dir), test, max_length=args.max_length, threads=args.threads,
                             device="cpu", precision=args.precision)
    return {"samples_per_s": res["train_samples"] / res["train_seconds"], "train_seconds": res["train_seconds"],
            "dev_f1": res["eval"]["f1"], "test_f1": scored["f1"], "dev_rows": res["eval_rows"],
            "test_rows": scored["rows"]}


def test_file(args) -> str:
    """The test split, or a seeded ``--eval-rows`` subset of it written beside the runs."""
    if not args.eval_rows:
        return str(DATA / "test.jsonl")
    path = Path(args.workdir) / f"test-{args.eval_rows}-{args.seed}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in read_split("test", args.eval_rows, args.seed)))
    return str(path)


def align(tok, rows: list[dict], label2id: dict, max_length: int) -> list[dict]:
    """The example's tokenize_and_align_labels: the tag on a word's first sub-token, -100 elsewhere."""
    enc = tok([r["tokens"] for r in rows], is_split_into_words=True, truncation=True, max_length=max_length)
    out = []
    for i, row in enumerate(rows):
        previous, labels = None, []
        for word in enc.word_ids(i):
            labels.append(-100 if word is None or word == previous else label2id[row["ner_tags"][word]])
            previous = word
        out.append({"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i],
                    **({"token_type_ids": enc["token_type_ids"][i]} if "token_type_ids" in enc else {}),
                    "labels": labels})
    return out


def entity_f1(trainer, dataset: list[dict], id2label: dict) -> float:
    """seqeval's default-mode F1 of the predictions at the labelled sub-tokens."""
    import numpy as np
    from seqeval.metrics import f1_score

    out = trainer.predict(dataset)
    preds = np.argmax(out.predictions, -1)
    gold, pred = [], []
    for p_row, l_row in zip(preds, out.label_ids):
        keep = l_row != -100
        gold.append([id2label[int(x)] for x in l_row[keep]])
        pred.append([id2label[int(x)] for x in p_row[keep]])
    return float(f1_score(gold, pred))


def worker_trainer(args) -> dict:
    import torch
    from transformers import DataCollatorForTokenClassification, Trainer

    from pretune import tasks
    from pretune.config import DataConfig, ModelConfig
    from pretune.data import read_table
    from pretune.models import load_for_task, load_tokenizer, resolve_model_path
    from pretune.runtime import seed_everything
    from train_throughput import trainer_arguments  # the Trainer at its best settings, shared with that benchmark

    torch.set_num_threads(args.threads)
    folder = resolve_model_path(args.model)
    tok = load_tokenizer(folder)
    table = read_table(DATA / "train.jsonl")  # the label set in pretune's order, so both heads start alike
    spec = tasks.get("token_classification").spec(table.columns["ner_tags"], table, "ner_tags", DataConfig())
    label2id = {name: i for i, name in enumerate(spec.labels)}
    train = align(tok, read_split("train", args.train_rows, args.seed), label2id, args.max_length)
    dev = align(tok, read_split("validation", args.eval_rows, args.seed), label2id, args.max_length)
    test = align(tok, read_split("test", args.eval_rows, args.seed), label2id, args.max_length)
    seed_everything(args.seed)
    model, _ = load_for_task(ModelConfig(path=folder, attn_implementation="sdpa"), spec)
    steps = -(-len(train) // args.batch_size) * args.epochs
    targs = trainer_arguments(args, str(Path(args.workdir) / f"trainer-{time.time_ns()}"), steps)
    targs.per_device_eval_batch_size = 128
    collator = DataCollatorForTokenClassification(tok)  # pads the labels with -100
    trainer = Trainer(model=model, args=targs, train_dataset=train, data_collator=collator)
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    id2label = dict(enumerate(spec.labels))
    return {"samples_per_s": len(train) * args.epochs / seconds, "train_seconds": seconds,
            "dev_f1": entity_f1(trainer, dev, id2label), "test_f1": entity_f1(trainer, test, id2label),
            "dev_rows": len(dev), "test_rows": len(test)}


def run_worker(kind: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, *sys.argv[1:]]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if out.returncode != 0:
        raise SystemExit(f"{kind} worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-rows", type=int, help="train on a seeded subset of this many sentences (default: all)")
    p.add_argument("--eval-rows", type=int, help="score seeded subsets of dev and test this large (default: all)")
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=128, help="sub-tokens per sentence (window) at most")
    p.add_argument("--warmup", type=float, default=0.06, help="fraction of the optimizer steps")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--model", default="minilm", help="model folder or a packaged name (default: minilm)")
    p.add_argument("--workdir", default="bench-out/token_classification")
    p.add_argument("--json", default="bench-out/token_classification.json")
    p.add_argument("--worker", choices=("pretune", "trainer"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.device = "cpu"  # trainer_arguments reads it
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    if args.worker:
        result = (worker_trainer if args.worker == "trainer" else worker_pretune)(args)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return
    runs: dict[str, list[dict]] = {"pretune": [], "trainer": []}
    for i in range(args.repeats):
        for kind in runs:
            r = run_worker(kind)
            runs[kind].append(r)
            print(f"[{i + 1}/{args.repeats}] {kind:8s} {r['samples_per_s']:7.1f} samples/s  dev F1 {r['dev_f1']:.4f}  "
                  f"test F1 {r['test_f1']:.4f}  peak {r['peak_rss_mb']:.0f} MB", flush=True)
    summary = {kind: {key: statistics.median(r[key] for r in rs)
                      for key in ("samples_per_s", "dev_f1", "test_f1", "peak_rss_mb")} for kind, rs in runs.items()}
    print(f"\n{'':8s} {'samples/s':>10s} {'dev F1':>8s} {'test F1':>8s} {'peak MB':>8s}")
    for kind, s in summary.items():
        print(f"{kind:8s} {s['samples_per_s']:10.1f} {s['dev_f1']:8.4f} {s['test_f1']:8.4f} {s['peak_rss_mb']:8.0f}")
    p, t = summary["pretune"], summary["trainer"]
    ratio = p["samples_per_s"] / t["samples_per_s"]
    print(f"pretune / Trainer samples/s: {ratio:.2f}x; F1 difference dev {100 * (p['dev_f1'] - t['dev_f1']):+.2f}, "
          f"test {100 * (p['test_f1'] - t['test_f1']):+.2f} points")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"args": vars(args), "runs": runs, "summary": summary,
                                           "samples_per_s_ratio": ratio}, indent=2))


if __name__ == "__main__":
    main()
