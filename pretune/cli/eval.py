"""``pretune eval MODEL_DIR --data FILE``: metrics of a saved model; the job is ``pretune.jobs.predict``."""

from __future__ import annotations

import argparse
import json

from .flags import add_columns, label_column, add_inference


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .. import tasks

    p.add_argument("model_dir", metavar="MODEL_DIR", help="a model folder written by pretune fit, a variant "
                   "folder written by pretune compress, or a pretune run folder (its recommended variant); with --task "
                   "causal_lm also a base model (folder, .gguf file, Hub id, smollm2)")
    p.add_argument("--data", required=True, help="labelled data file")
    p.add_argument("--task", choices=tasks.names(), help="read the model as this task (default: the one it was "
                   "tuned for)")
    add_columns(p)
    add_inference(p)
    p.add_argument("--output", help="also write the metrics to this JSON file")


def run(args: argparse.Namespace) -> int:
    from ..files import write_json
    from ..jobs.predict import evaluate_folder

    metrics = evaluate_folder(args.model_dir, args.data, task=args.task, text=args.text, text_pair=args.text_pair,
                              label=label_column(args), max_length=args.max_length, batch_size=args.batch_size,
                              threads=args.threads, device=args.device, precision=args.precision)
    if args.output:
        write_json(args.output, metrics)
    print(json.dumps(metrics))
    return 0
