"""``pretune compress MODEL --data FILE``: make, benchmark and gate compressed variants (``pretune.compress``)."""

from __future__ import annotations

import argparse
import logging

from .flags import add_columns, label_column

log = logging.getLogger("pretune")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", help="fine-tuned model folder (or a pretune fit run folder holding model/)")
    p.add_argument("--data", help="labelled held-out file every variant is measured on (required)")
    p.add_argument("--train", default=None, help="labelled training file for calibration, pruning recovery "
                   "and distillation (default: the run folder's training file)")
    add_columns(p)
    p.add_argument("--methods", default=None, help="comma-separated methods (default: all); chain them with > "
                   "(quoted in a shell: 'distill>int8-dynamic-ort'); see --list")
    p.add_argument("--output", default="runs/compress", help="output folder (default: runs/compress)")
    p.add_argument("--tolerance", type=float, default=None, help="metric points a variant may lose (default 1.0)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for every runtime (default: 2)")
    p.add_argument("--config", default=None, help="YAML file with a compress: section")
    p.add_argument("--list", action="store_true", help="list the methods and exit")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="a compress setting, repeatable: --set sparsity=0.6 --set distill_steps=300")


def _config(args: argparse.Namespace):
    from ..config import load_config

    extra: dict = {}
    if args.methods:
        extra["methods"] = [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.tolerance is not None:
        extra["tolerance"] = args.tolerance
    if args.threads is not None:
        extra["threads"] = args.threads
    overrides = [o if o.startswith("compress.") else f"compress.{o}" for o in args.overrides]
    return load_config(args.config, overrides, extra={"compress": extra}).compress


def run(args: argparse.Namespace) -> int:
    from ..compress import METHODS, compress, resolve

    if args.list:
        for name in resolve(None):
            *first, last = name.split(">")
            doc = (METHODS[last].__doc__ or last).strip().splitlines()[0]
            print(f"{name:36s} {'the ' + first[-1] + ' variant, then: ' if first else ''}{doc}")
        return 0
    from ..errors import ConfigError

    if not args.model or not args.data:
        raise ConfigError("give a model folder and --data FILE: pretune compress MODEL --data FILE")
    cfg = _config(args)
    r = compress(args.model, args.data, train=args.train, text=args.text, text_pair=args.text_pair,
                 label=label_column(args), output=args.output, cfg=cfg)
    print(format_table(r))
    log.info("results: %s/results.json", args.output)
    return 0


def format_table(r: dict) -> str:
    """One line per variant: metric, points lost, latency, size, ratios to the source, status."""
    metric = r["metric"]
    src = r["source_bench"]
    head = (f"{'variant':20s} {metric:>9s} {'lost':>6s} {'p50 ms':>8s} {'speedup':>8s} {'MiB':>7s} {'smaller':>8s}"
            "  status")
    lines = [head, f"{'source (fp32)':20s} {src['eval']['metrics'][metric]:9.4f} {'':6s} "
                   f"{src['latency_ms']['p50']:8.2f} {'1.00x':>8s} {src['size_mb']:7.1f} {'1.00x':>8s}  "
                   f"{'pareto' if 'source' in r['pareto_front'] else ''}"]
    for v in r["variants"]:
        if v["status"] in ("failed", "skipped"):
            lines.append(f"{v['name']:20s} {v['status']}: {v.get('error') or v.get('reason')}")
            continue
        b, ratio = v["bench"], v["ratios"]
        status = v["status"] + (", pareto" if v.get("pareto") else "")
        lines.append(f"{v['name']:20s} {b['eval']['metrics'][metric]:9.4f} {v['points_lost']:6.2f} "
                     f"{b['latency_ms']['p50']:8.2f} {ratio['latency_p50_speedup']:7.2f}x {b['size_mb']:7.1f} "
                     f"{ratio['size_reduction']:7.2f}x  {status}")
    return "\n".join(lines)
