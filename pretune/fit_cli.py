"""``pretune fit``, ``eval``, ``predict`` and ``validate``.

``add_model_data_arguments`` and ``flags_to_config`` are shared with the other
commands that take a model and data (search, run).
"""

from __future__ import annotations

import argparse
import json
import sys

from .config import load_config

# flag dest -> config key. Flags left unset do not override the YAML.
FLAG_KEYS = {
    "model": "model.path", "train": "data.train", "eval": "data.eval", "text": "data.text",
    "text_pair": "data.text_pair", "label": "data.label", "task": "data.task", "max_length": "data.max_length",
    "max_train_samples": "data.max_train_samples", "method": "method.name", "epochs": "train.epochs",
    "lr": "train.lr", "batch_size": "train.batch_size", "seed": "train.seed", "threads": "train.threads",
    "output": "output", "allow_pickle": "model.allow_pickle", "trust_remote_code": "model.trust_remote_code",
}


def add_model_data_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config file")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides, e.g. train.lr=3e-5")
    g = p.add_argument_group("model and data (override the config)")
    g.add_argument("--model", help="Hugging Face model folder, or minilm for the packaged all-MiniLM-L6-v2")
    g.add_argument("--train", help="training data (CSV, TSV, JSONL, Parquet)")
    g.add_argument("--eval", help="evaluation data; default: a stratified split of --train")
    g.add_argument("--text", help="text column (default: text)")
    g.add_argument("--text-pair", help="second text column, for sentence-pair tasks")
    g.add_argument("--label", help="label column (default: label)")
    g.add_argument("--task", choices=("classification", "regression"), help="default: inferred from the labels")
    g.add_argument("--max-length", type=int, help="truncate inputs to this many tokens (default 128)")
    g.add_argument("--max-train-samples", type=int, help="train on a seeded random subset of this size")
    g.add_argument("--allow-pickle", action="store_true", default=None,
                   help="allow pytorch_model.bin (pickle) weights: only for files you trust")
    g.add_argument("--trust-remote-code", action="store_true", default=None,
                   help="allow the model folder's own Python code: only for sources you trust")
    t = p.add_argument_group("training (override the config)")
    t.add_argument("--method", choices=("full", "freeze", "bitfit", "lora"))
    t.add_argument("--epochs", type=float)
    t.add_argument("--lr", type=float)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--seed", type=int)
    t.add_argument("--threads", type=int, help="CPU threads for torch")
    p.add_argument("--output", help="run folder (default runs/fit)")


def flags_to_config(args: argparse.Namespace) -> dict:
    """The flags that were given, as a nested config dict."""
    out: dict = {}
    for dest, key in FLAG_KEYS.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def config_from_args(args: argparse.Namespace):
    return load_config(args.config, args.overrides, extra=flags_to_config(args))


# ----------------------------------------------------------------------------- fit


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_data_arguments(p)
    p.add_argument("--resume", action="store_true", help="continue the run in --output from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")


def run(args: argparse.Namespace) -> int:
    from .finetune import fit

    cfg = config_from_args(args)
    result = fit(cfg, resume=args.resume, overwrite=args.overwrite)
    print(json.dumps({"run_dir": str(result.run_dir), "model_dir": str(result.model_dir), "eval": result.eval}))
    return 0


# ----------------------------------------------------------------------------- eval / predict


def _add_columns(p: argparse.ArgumentParser) -> None:
    p.add_argument("--text", default="text", help="text column (default: text)")
    p.add_argument("--text-pair", help="second text column")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int)


def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", metavar="MODEL_DIR", help="a model folder written by pretune fit")
    p.add_argument("--data", required=True, help="labelled data file")
    p.add_argument("--label", default="label", help="label column (default: label)")
    _add_columns(p)
    p.add_argument("--output", help="also write the metrics to this JSON file")


def run_eval(args: argparse.Namespace) -> int:
    from .inference import evaluate_folder
    from .utils import write_json

    metrics = evaluate_folder(args.model_dir, args.data, text=args.text, text_pair=args.text_pair,
                              label=args.label, max_length=args.max_length, batch_size=args.batch_size,
                              threads=args.threads)
    if args.output:
        write_json(args.output, metrics)
    print(json.dumps(metrics))
    return 0


def add_predict_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", metavar="MODEL_DIR", help="a model folder written by pretune fit")
    p.add_argument("--input", required=True, help="data file (labels not needed)")
    _add_columns(p)
    p.add_argument("--output", help="JSONL file to write (default: standard output)")


def run_predict(args: argparse.Namespace) -> int:
    from .inference import predict_file
    from .utils import atomic_path

    rows = predict_file(args.model_dir, args.input, text=args.text, text_pair=args.text_pair,
                        max_length=args.max_length, batch_size=args.batch_size, threads=args.threads)
    lines = "".join(json.dumps(r) + "\n" for r in rows)
    if args.output:
        with atomic_path(args.output) as tmp:
            tmp.write_text(lines)
    else:
        sys.stdout.write(lines)
    return 0


# ----------------------------------------------------------------------------- validate


def add_validate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", metavar="CONFIG", help="YAML config file")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")


def run_validate(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    sys.stdout.write(cfg.to_yaml())
    print(f"{args.config}: ok", file=sys.stderr)
    return 0
