"""``pretune bench MODEL --data FILE``: measure one model or variant folder (``pretune.bench``)."""

from __future__ import annotations

import argparse
import logging

from .flags import add_columns, label_column

log = logging.getLogger("pretune")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="fine-tuned model folder, a pretune compress variant folder, or a run "
                   "folder (its recommended variant)")
    p.add_argument("--data", required=True, help="labelled eval file (CSV/TSV/JSONL/Parquet)")
    add_columns(p)
    p.add_argument("--output", default=None, help="folder for bench.json (default: print only)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for every runtime (default: 2)")
    p.add_argument("--device", default="cpu", help="device of the PyTorch runtime: cpu (default), cuda, cuda:N")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16", "auto"),
                   help="precision of the PyTorch runtime (default fp32, the deployment baseline)")
    p.add_argument("--batch-size", type=int, default=32, help="batch size of the throughput pass (default: 32)")
    p.add_argument("--runs", type=int, default=200, help="timed batch-1 calls (default: 200)")
    p.add_argument("--max-eval-samples", type=int, default=None, help="evaluate on a seeded subset")
    p.add_argument("--max-length", type=int, default=128, help="truncate inputs to this many tokens")
    p.add_argument("--no-isolate", action="store_true",
                   help="measure in this process (faster; peak memory then includes pretune itself)")


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..bench import BenchConfig, bench

    for name in ("threads", "batch_size", "runs", "max_eval_samples", "max_length"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')}: must be >= 1, got {value}")
    cfg = BenchConfig(threads=args.threads, batch_size=args.batch_size, runs=args.runs,
                      max_eval_samples=args.max_eval_samples, max_length=args.max_length,
                      isolate=not args.no_isolate, device=args.device, precision=args.precision)
    r = bench(args.model, args.data, text=args.text, text_pair=args.text_pair, label=label_column(args),
              output=args.output, cfg=cfg)
    print(format_result(r))
    if args.output:
        log.info("wrote %s/bench.json", args.output)
    return 0


def format_result(r: dict) -> str:
    metric = r["eval"]["metric"]
    lat, mem = r["latency_ms"], r["memory"]
    peak = f"{mem['peak_rss_mb']:.0f} MiB peak RSS" if mem["peak_rss_mb"] is not None else "peak RSS n/a"
    gen = r.get("generation")
    speed = "" if not gen else (
        f"  generation batch 1: prompt {gen['prompt_tokens_per_s']:.1f} tokens/s, generated "
        f"{gen['generated_tokens_per_s'] or 0:.1f} tokens/s, time to first token p50 {gen['ttft_ms']['p50']:.2f} ms\n")
    return (f"{r['model']} [{r['backend']}, {r['format']}, {r['threads']} threads]\n"
            f"  {metric} {r['eval']['metrics'][metric]:.4f} on {r['eval']['rows']} rows\n"
            f"  latency batch 1: p50 {lat['p50']:.2f} ms, p95 {lat['p95']:.2f} ms\n"
            f"  throughput batch {r['throughput']['batch_size']}: {r['throughput']['samples_per_s']:.1f} samples/s\n"
            f"{speed}"
            f"  size {r['size_mb']:.1f} MiB, {r['parameters'] / 1e6:.2f}M parameters, {peak}")
