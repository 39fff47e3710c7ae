"""``pretune predict MODEL_DIR --input FILE``: one JSON line per row; the job is ``pretune.jobs.predict``."""

from __future__ import annotations

import argparse
import json
import sys

from .flags import add_columns, add_inference


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", metavar="MODEL_DIR", help="a model folder written by pretune fit, a variant folder "
                   "written by pretune compress (ONNX, int8, pruned, distilled), or a pretune run folder (its "
                   "recommended variant)")
    p.add_argument("--input", required=True, help="data file (labels not needed)")
    add_columns(p, label=False)
    add_inference(p)
    p.add_argument("--output", help="JSONL file to write (default: standard output)")


def run(args: argparse.Namespace) -> int:
    from ..files import write_text
    from ..jobs.predict import predict_file

    rows = predict_file(args.model_dir, args.input, text=args.text, text_pair=args.text_pair,
                        max_length=args.max_length, batch_size=args.batch_size, threads=args.threads,
                        device=args.device, precision=args.precision)
    lines = "".join(json.dumps(r) + "\n" for r in rows)
    if args.output:
        write_text(args.output, lines)
    else:
        sys.stdout.write(lines)
    return 0
