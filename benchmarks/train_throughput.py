"""Training throughput: pretune against the transformers Trainer at its best settings.

Same model (the packaged all-MiniLM-L6-v2), same SST-2 subset and tokens, same
hyperparameters and threads. The Trainer uses length-grouped batches
(``train_sampling_strategy="group_by_length"``) and its fused AdamW. Runs
alternate (pretune, Trainer, pretune, Trainer, ...) in one invocation, each in
its own process so peak memory is its own, and the report gives ratios.

Model FLOPs utilisation = 6 x non-embedding parameters x real tokens / time,
against the fp32 matmul rate measured in this same invocation (also for bf16
runs, so their MFU reads as "fraction of what fp32 could do").

``--ablate-first-token`` adds pretune arms with ``train.first_token_only=false`` (the last layer
computes every position), to show what that fast path contributes.

``--precisions fp32,bf16`` adds bf16-autocast arms of both (pretune's
``train.precision=bf16``, the Trainer's ``bf16=True``); each precision is compared like
for like, and pretune bf16 against the Trainer fp32 as well.

    python benchmarks/train_throughput.py --train-samples 4000 --repeats 2 --threads 2 --precisions fp32,bf16
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
DATA = Path(os.environ.get("PRETUNE_DATA", HERE.parent.parent / "shared" / "data"))


def matmul_rate(threads: int, seconds: float = 3.0) -> float:
    """fp32 FLOP/s of (1024 x 384) @ (384 x 1536), the shape of a MiniLM FFN on a batch of tokens."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(1024, 384), torch.randn(384, 1536)
    for _ in range(20):
        a @ b
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(20):
            a @ b
        n += 20
    return 2 * 1024 * 384 * 1536 * n / (time.perf_counter() - t0)


def load_data(args):
    from pretune.config import DataConfig
    from pretune.tasks import load_task_data
    from pretune.models import load_tokenizer, packaged_minilm

    folder = args.model or packaged_minilm()
    tok = load_tokenizer(folder)
    cfg = DataConfig(train=str(DATA / "sst2" / "train.tsv"), eval=str(DATA / "sst2" / "dev.tsv"), text="sentence",
                     max_train_samples=args.train_samples, max_length=128)
    return folder, tok, load_task_data(cfg, tok, seed=args.seed)


def non_embedding_params(model) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if "embeddings" not in n)


def worker_pretune(args) -> dict:
    from pretune.config import config_from_dict
    from pretune.jobs.fit import fit

    folder, _, _ = load_data(args)
    out = Path(args.workdir) / f"pretune-{time.time_ns()}"
    cfg = config_from_dict({
        "model": {"path": folder},
        "data": {"train": str(DATA / "sst2" / "train.tsv"), "eval": str(DATA / "sst2" / "dev.tsv"),
                 "text": "sentence", "max_train_samples": args.train_samples},
        "train": {"epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size, "warmup": args.warmup,
                  "weight_decay": 0.01, "threads": args.threads, "seed": args.seed, "progress": False,
                  "restore_best": False, "precision": args.precision, "device": "cpu",
                  "first_token_only": args.worker != "pretune-allpos"},
        "output": str(out)})
    r = fit(cfg)
    res = json.loads((out / "results.json").read_text())
    from transformers import AutoModelForSequenceClassification
    nonemb = non_embedding_params(AutoModelForSequenceClassification.from_pretrained(r.model_dir))
    return {"samples_per_s": res["train_samples"] / res["train_seconds"], "train_seconds": res["train_seconds"],
            "samples": res["train_samples"], "tokens": res["train_tokens"], "accuracy": res["eval"]["accuracy"],
            "nonemb_params": nonemb}


def worker_trainer(args) -> dict:
    import numpy as np
    import torch
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    from pretune.config import ModelConfig
    from pretune.models import load_for_task
    from pretune.runtime import resolve
    from pretune.train import evaluate

    torch.set_num_threads(args.threads)
    folder, tok, data = load_data(args)
    enc = data.train

    class Rows(torch.utils.data.Dataset):  # the very same tokens pretune trains on
        def __len__(self):
            return len(enc)

        def __getitem__(self, i):
            a, b = enc.offsets[i], enc.offsets[i + 1]
            row = {"input_ids": enc.ids[a:b].tolist(), "labels": int(enc.labels[i])}
            if enc.type_ids is not None:
                row["token_type_ids"] = enc.type_ids[a:b].tolist()
            return row

    torch.manual_seed(args.seed)
    model, _ = load_for_task(ModelConfig(path=folder), data.spec)
    steps = int(np.ceil(len(enc) / args.batch_size) * args.epochs)
    targs = TrainingArguments(
        output_dir=str(Path(args.workdir) / f"trainer-{time.time_ns()}"), per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr, num_train_epochs=args.epochs, warmup_steps=int(np.ceil(args.warmup * steps)),
        weight_decay=0.01, lr_scheduler_type="linear", optim="adamw_torch_fused",
        train_sampling_strategy="group_by_length", use_cpu=True, save_strategy="no", eval_strategy="no",
        report_to="none", logging_steps=10_000, disable_tqdm=True, seed=args.seed, dataloader_num_workers=0,
        bf16=args.precision == "bf16")
    trainer = Trainer(model=model, args=targs, train_dataset=Rows(), data_collator=DataCollatorWithPadding(tok))
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    rt = resolve("cpu", args.precision)
    acc = evaluate(model, data.eval, data.spec, 128, tok.pad_token_id, rt)["accuracy"]
    return {"samples_per_s": len(enc) * args.epochs / seconds, "train_seconds": seconds,
            "samples": int(len(enc) * args.epochs), "tokens": int(enc.lengths.sum() * args.epochs),
            "accuracy": acc, "nonemb_params": non_embedding_params(model)}


def run_worker(kind: str, precision: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--precision", precision, *sys.argv[1:]]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if out.returncode != 0:
        raise SystemExit(f"{kind} worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-samples", type=int, default=4000)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--warmup", type=float, default=0.06)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--model", help="model folder (default: the packaged MiniLM)")
    p.add_argument("--workdir", default="bench-out/train_throughput")
    p.add_argument("--json", default="bench-out/train_throughput.json")
    p.add_argument("--precisions", default="fp32", help="comma list of fp32, bf16 (bf16 autocast)")
    p.add_argument("--ablate-first-token", action="store_true",
                   help="add pretune arms with train.first_token_only=false (every position in the last layer)")
    p.add_argument("--worker", choices=("pretune", "pretune-allpos", "trainer"), help=argparse.SUPPRESS)
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help=argparse.SUPPRESS)
    args = p.parse_args()
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    if args.worker:
        result = (worker_trainer if args.worker == "trainer" else worker_pretune)(args)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return

    precisions = [x.strip() for x in args.precisions.split(",") if x.strip()]
    if not precisions or set(precisions) - {"fp32", "bf16"}:
        p.error(f"--precisions: {args.precisions!r}; use fp32, bf16 or fp32,bf16")
    kinds = ("pretune", "trainer") + (("pretune-allpos",) if args.ablate_first_token else ())
    arms = [(kind, prec) for prec in precisions for kind in kinds]
    runs: dict[str, list[dict]] = {f"{k}-{pr}": [] for k, pr in arms}
    rates = [matmul_rate(args.threads)]
    for i in range(args.repeats):
        for kind, prec in arms:
            r = run_worker(kind, prec)
            runs[f"{kind}-{prec}"].append(r)
            print(f"[{i + 1}/{args.repeats}] {kind + ' ' + prec:19s} {r['samples_per_s']:6.1f} samples/s  "
                  f"acc {r['accuracy']:.4f}  peak {r['peak_rss_mb']:.0f} MB", flush=True)
        rates.append(matmul_rate(args.threads))
    matmul = statistics.median(rates)
    summary = {}
    for arm, rs in runs.items():
        sps = statistics.median(r["samples_per_s"] for r in rs)
        tok_s = statistics.median(r["tokens"] / r["train_seconds"] for r in rs)
        summary[arm] = {"samples_per_s": sps, "tokens_per_s": tok_s,
                        "accuracy": statistics.mean(r["accuracy"] for r in rs),
                        "peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
                        "mfu": 6 * rs[0]["nonemb_params"] * tok_s / matmul}
    print(f"\nmatmul rate {matmul / 1e9:.1f} GFLOP/s fp32 on {args.threads} threads "
          f"(min {min(rates) / 1e9:.1f}, max {max(rates) / 1e9:.1f})")
    print(f"{'':20s} {'samples/s':>10s} {'tokens/s':>9s} {'MFU':>6s} {'dev acc':>8s} {'peak MB':>8s}")
    for arm, s in summary.items():
        print(f"{arm:20s} {s['samples_per_s']:10.1f} {s['tokens_per_s']:9.0f} {s['mfu']:6.1%} "
              f"{s['accuracy']:8.4f} {s['peak_rss_mb']:8.0f}")
    ratios = {}
    pairs = [(f"pretune-{pr}", f"trainer-{pr}") for pr in precisions]
    if "bf16" in precisions and "fp32" in precisions:
        pairs.append(("pretune-bf16", "trainer-fp32"))
    if args.ablate_first_token:
        pairs += [(f"pretune-{pr}", f"pretune-allpos-{pr}") for pr in precisions]
    for a, b in pairs:
        ratios[f"{a} / {b}"] = r = summary[a]["samples_per_s"] / summary[b]["samples_per_s"]
        print(f"{a} / {b} samples/s: {r:.2f}x; accuracy difference "
              f"{100 * (summary[a]['accuracy'] - summary[b]['accuracy']):+.2f} points")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"args": vars(args), "matmul_flops": rates, "runs": runs,
                                           "summary": summary, "ratios": ratios}, indent=2))

if __name__ == "__main__":
    main()
