"""Does the default precision cost accuracy? pretune fit at train.precision=auto against fp32, on several tasks.

On a CPU with AVX512-BF16 or AMX (or a GPU with bf16), ``auto`` trains in bf16 autocast. For each task the two
precisions run alternately in this one invocation, each ``pretune fit`` in its own process, with the same seed,
data and hyperparameters; the table gives the dev metric of each and the training samples/s.

    python benchmarks/precision.py --tasks sst2,trec,mrpc --threads 2
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

# task -> fit flags (files from ../shared/data; see each folder's README)
TASKS = {
    "sst2": ["--train", "sst2/train.tsv", "--eval", "sst2/dev.tsv", "--text", "sentence",
             "--max-train-samples", "8000", "--epochs", "1"],
    "trec": ["--train", "trec/train.jsonl", "--eval", "trec/test.jsonl", "--epochs", "3"],
    "mrpc": ["--train", "mrpc/train.tsv", "--eval", "mrpc/dev.tsv", "--text", "#1 String", "--text-pair",
             "#2 String", "--label", "Quality", "--epochs", "3"],
}


def fit(task: str, precision: str, args, out: Path) -> dict:
    flags = [f if not f.endswith((".tsv", ".jsonl")) else str(DATA / f) for f in TASKS[task]]
    cmd = [sys.executable, "-m", "pretune", "fit", "--model", args.model, *flags, "--lr", str(args.lr),
           "--batch-size", "32", "--seed", str(args.seed), "--threads", str(args.threads), "--precision", precision,
           "--output", str(out), "--overwrite", "train.progress=false", "data.max_length=128"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if proc.returncode != 0:
        raise SystemExit(f"{task} {precision} failed:\n{proc.stderr[-2000:]}")
    res = json.loads((out / "results.json").read_text())
    return {"metric": res["metric"], "value": res["eval"][res["metric"]], "eval": res["eval"],
            "precision": res["precision"], "samples_per_s": res["samples_per_s"], "wall_s": time.perf_counter() - t0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", default="sst2,trec,mrpc")
    p.add_argument("--model", default="minilm")
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workdir", default="bench-out/precision")
    args = p.parse_args()
    rows = {}
    for task in args.tasks.split(","):
        for precision in ("auto", "fp32"):
            r = fit(task, precision, args, Path(args.workdir) / f"{task}-{precision}")
            rows[(task, precision)] = r
            print(f"{task:5s} {precision:4s} (ran {r['precision']}): {r['metric']} {r['value']:.4f}, "
                  f"{r['samples_per_s']:.1f} samples/s", flush=True)
    print(f"\n{'task':6s} {'metric':9s} {'auto':>8s} {'fp32':>8s} {'points':>7s} {'speed':>6s}")
    for task in args.tasks.split(","):
        a, f = rows[(task, "auto")], rows[(task, "fp32")]
        print(f"{task:6s} {a['metric']:9s} {a['value']:8.4f} {f['value']:8.4f} {100 * (a['value'] - f['value']):+7.2f} "
              f"{a['samples_per_s'] / f['samples_per_s']:5.2f}x  (auto ran {a['precision']})")
    out = Path(args.workdir) / "precision.json"
    out.write_text(json.dumps({f"{t}-{p}": r for (t, p), r in rows.items()}, indent=2))


if __name__ == "__main__":
    main()
