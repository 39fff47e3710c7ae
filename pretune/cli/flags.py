"""Flag groups shared by several commands, and the flags -> config mapping.

``add_columns`` is the one definition of ``--text / --text-pair / --label``; ``add_model_data`` is the
group of every command that takes a model and data (fit, search, run, demo, estimate).
"""

from __future__ import annotations

import argparse
from typing import Optional

from .. import tasks
from ..config import METHODS, PRECISIONS, load_config, parse_duration, read_yaml
from ..errors import ConfigError

# flag dest -> config key. Flags left unset do not override the YAML.
FLAG_KEYS = {
    "model": "model.path", "train": "data.train", "eval": "data.eval", "text": "data.text",
    "text_pair": "data.text_pair", "label": "data.label", "task": "data.task", "max_length": "data.max_length",
    "max_train_samples": "data.max_train_samples", "method": "method.name", "epochs": "train.epochs",
    "lr": "train.lr", "batch_size": "train.batch_size", "seed": "train.seed", "threads": "train.threads",
    "output": "output", "allow_pickle": "model.allow_pickle", "trust_remote_code": "model.trust_remote_code",
    "device": "train.device", "precision": "train.precision",
}


def add_columns(p, *, defaults: bool = True, label: bool = True) -> None:
    """``--text``, ``--text-pair`` and (with ``label``) ``--label``.

    Args:
        defaults: give the flags their defaults (text, label); without, an unset flag is None so that it
            does not override a config file.
    """
    p.add_argument("--text", default="text" if defaults else None,
                   help="text column (default: text; tokens for token classification)")
    p.add_argument("--text-pair", help="second text column, for sentence-pair tasks")
    if label:
        p.add_argument("--label", default="label" if defaults else None,
                       help="label column (default: label; ner_tags or tags for token classification)")
        p.add_argument("--conll-column", type=int, metavar="N",
                       help="CoNLL files: the column of the tags, counting the token as 0 (default: the last)")


def label_column(args: argparse.Namespace) -> Optional[str]:
    """``--label``, or the CoNLL column ``--conll-column`` names (a CoNLL table names its columns by number)."""
    if getattr(args, "conll_column", None) is not None:
        return str(args.conll_column)
    return args.label


def add_config(p: argparse.ArgumentParser) -> None:
    """``--config FILE`` and the dotted ``KEY=VALUE`` overrides."""
    p.add_argument("--config", help="YAML config file")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides, e.g. train.lr=3e-5")


def add_model_data(p: argparse.ArgumentParser) -> None:
    """Config, model, data and training flags, and ``--output``: what fit, search, run, demo and estimate take."""
    add_config(p)
    g = p.add_argument_group("model and data (override the config)")
    g.add_argument("--model", help="a model folder, a Hub id (bert-base-uncased), a .gguf file, or a packaged model: "
                   "minilm (all-MiniLM-L6-v2), smollm2 (SmolLM2-135M-Instruct)")
    g.add_argument("--train", help="training data: CSV, TSV, JSONL, JSON, Parquet, or hub:NAME[:CONFIG]:SPLIT")
    g.add_argument("--eval", help="evaluation data, as --train; default: a stratified split of --train")
    add_columns(g, defaults=False)
    g.add_argument("--task", choices=tasks.names(), help="default: inferred from the labels")
    g.add_argument("--max-length", type=int, help="truncate inputs to this many tokens (default 128)")
    g.add_argument("--max-train-samples", type=int, help="train on a seeded random subset of this size")
    g.add_argument("--allow-pickle", action="store_true", default=None,
                   help="allow pytorch_model.bin (pickle) weights: only for files you trust")
    g.add_argument("--trust-remote-code", action="store_true", default=None,
                   help="allow the model folder's own Python code: only for sources you trust")
    t = p.add_argument_group("training (override the config)")
    t.add_argument("--method", choices=METHODS)
    t.add_argument("--epochs", type=float)
    t.add_argument("--lr", type=float)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--seed", type=int)
    t.add_argument("--threads", type=int, help="CPU threads for torch")
    t.add_argument("--device", help="auto (default: CUDA when available, else the CPU), cpu, cuda, cuda:N, mps")
    t.add_argument("--precision", choices=PRECISIONS,
                   help="auto (default: bf16 where the device runs it natively, else fp32), fp32, bf16, fp16")
    p.add_argument("--output", help="run folder (default runs/fit)")


def add_inference(p: argparse.ArgumentParser) -> None:
    """Flags of the commands that run a saved model over a file (eval, predict)."""
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int)
    p.add_argument("--device", default="auto", help="auto (CUDA when available, else the CPU), cpu, cuda, cuda:N")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="auto (bf16 where the device runs it natively, else fp32), fp32, bf16, fp16")


def flags_to_config(args: argparse.Namespace) -> dict:
    """The model/data flags that were given, as a nested config dict."""
    out: dict = {}
    for dest, key in FLAG_KEYS.items():
        value = label_column(args) if dest == "label" else getattr(args, dest, None)
        if value is None:
            continue
        set_key(out, key, value)
    return out


def set_key(tree: dict, dotted: str, value) -> None:
    """``set_key(d, "search.n_trials", 8)``: d["search"]["n_trials"] = 8."""
    *parents, leaf = dotted.split(".")
    for part in parents:
        tree = tree.setdefault(part, {})
    tree[leaf] = value


def config_from_args(args: argparse.Namespace, extra: Optional[dict] = None, default_output: Optional[str] = None):
    """YAML, then the model/data flags, then ``extra`` (a command's own flags), then dotted overrides.

    Args:
        default_output: the run folder when neither ``--output`` nor the config file names one.
    """
    from ..config import merge

    given = merge(flags_to_config(args), extra or {})
    if default_output and args.output is None and not (args.config and "output" in read_yaml(args.config)):
        given["output"] = default_output
    return load_config(args.config, args.overrides, extra=given)


def duration(flag: str, value):
    """``--timeout 30m`` -> seconds, or a one-line error naming the flag."""
    try:
        return parse_duration(value)
    except ValueError as e:
        raise ConfigError(f"{flag}: {e}") from None
