"""Typed run configuration: one dataclass per stage, nested into ``RunConfig``.

YAML is the saved form. ``load_config`` reads a file, applies dotted overrides
(``train.lr=3e-5 lora.r=16``) and validates every key and type, collecting all
problems into one ``ConfigError`` that names the valid keys.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from .errors import ConfigError

METHODS = ("full", "freeze", "bitfit", "lora", "qlora")
SCHEDULES = ("linear", "cosine", "constant")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
ATTENTION = ("sdpa", "eager", "flash_attention_2")
DISTRIBUTED = ("ddp", "fsdp")
DPO_LOSSES = ("sigmoid", "ipo")
TAG_SCHEMES = ("IOB1", "IOB2", "BIOES")


@dataclass
class ModelConfig:
    path: Optional[str] = None  # a model folder, a .gguf file, a Hub id (org/name) or minilm / smollm2
    allow_pickle: bool = False  # load pytorch_model.bin (pickle) weights; unsafe for untrusted files
    trust_remote_code: bool = False
    attn_implementation: str = "sdpa"  # sdpa | eager | flash_attention_2 (a GPU with flash-attn installed)


@dataclass
class DataConfig:
    train: Optional[str] = None
    eval: Optional[str] = None  # no eval file: a stratified, seeded split of train
    text: str = "text"
    text_pair: Optional[str] = None
    label: str = "label"  # in a CoNLL file, a column number picks that column as the tags (--conll-column)
    # classification | regression | token_classification | causal_lm; inferred from the labels when unset
    task: Optional[str] = None
    max_length: int = 128
    val_fraction: float = 0.1
    max_train_samples: Optional[int] = None  # rows (sentences, for token classification)
    max_eval_samples: Optional[int] = None
    cache_dir: Optional[str] = None  # tokenized cache; default ~/.cache/pretune
    # token classification
    label_names: Optional[list[str]] = None  # tag names in id order, for integer tags
    tag_scheme: Optional[str] = None  # IOB1 | IOB2 | BIOES; None: read off the training tags
    strict_tags: bool = False  # a tag its scheme does not allow where it stands (I-PER after O in IOB2) is an error
    label_all_subtokens: bool = False  # every sub-token of a word learns its tag (B-X: I-X after the first)
    stride: Optional[int] = None  # sub-tokens two windows of a long sentence share; None: a quarter of max_length
    # causal_lm (instruction tuning): the loss covers the responses only unless train_on_prompt
    train_on_prompt: bool = False
    chat_template: Optional[str] = None  # Jinja chat template for `messages` rows when the tokenizer has none
    packing: bool = False  # several examples of a batch in one max_length row, no attention across them


@dataclass
class MethodConfig:
    # full | freeze | bitfit | lora | qlora (LoRA on a 4-bit NF4 base through bitsandbytes: a CUDA GPU only)
    name: str = "full"
    train_top_layers: int = 2  # freeze: train the head plus this many top encoder layers


@dataclass
class LoraConfig:
    # r, alpha and target_modules left unset (None): the model's LoRA recipe fills them (``pretune.train.defaults``:
    # r 8, alpha 16 on peft's targets; r 16, alpha 32 on every Linear layer of a small encoder)
    r: Optional[int] = None
    alpha: Optional[int] = None
    dropout: float = 0.1
    target_modules: Optional[list[str]] = None  # [auto]: the architecture's default; [all-linear]; or names
    merge: bool = True  # merge the adapter into the saved model (a plain transformers folder)
    use_dora: bool = False  # DoRA: a learned magnitude per output on top of the low-rank direction (peft)


@dataclass
class DpoConfig:
    loss_type: str = "sigmoid"  # sigmoid (DPO) | ipo
    beta: float = 0.1  # strength of the pull towards the reference (the KL weight; IPO's tau)
    label_smoothing: float = 0.0  # sigmoid: the share of pairs assumed mislabelled (conservative DPO), in [0, 0.5)
    # full fine-tuning: the reference's log-probs computed once before training and kept with the data, instead of
    # a frozen copy of the model in memory (LoRA always uses the model with its adapter switched off)
    precompute_reference: bool = False


@dataclass
class TrainConfig:
    epochs: float = 3.0
    max_steps: Optional[int] = None  # optimizer steps; overrides epochs
    # lr, weight_decay, warmup and layer_lr_decay: None takes the recipe for the model's family and size and the
    # method (pretune.train.defaults: e.g. 3e-4, 0, 0.1, 0.8 for a small encoder's full fine-tune; else 5e-5, 0.01,
    # 0.06, 1.0); config.yaml records the values used
    lr: Optional[float] = None
    batch_size: int = 32
    eval_batch_size: int = 128
    grad_accum: int = 1
    weight_decay: Optional[float] = None
    warmup: Optional[float] = None  # fraction of optimizer steps (< 1) or a number of steps (>= 1)
    schedule: str = "linear"  # linear | cosine | constant
    layer_lr_decay: Optional[float] = None  # lr of layer l = lr * decay ** (n_layers - l); 1.0 disables
    max_grad_norm: Optional[float] = 1.0
    # Evaluate and save an exponential moving average of the weights, decay warmed up as min(d, (1+t)/(10+t))
    # (e.g. 0.999; 0 disables; see pretune.train.average)
    ema_decay: float = 0.0
    device: str = "auto"  # auto (CUDA when available, else CPU) | cpu | cuda | cuda:N | mps
    # auto: bf16 autocast where the device runs it natively (a GPU with bf16, a CPU with AVX512-BF16 or AMX),
    # else fp32 | fp32 | bf16 | fp16 (autocast with loss scaling)
    precision: str = "auto"
    tf32: bool = True  # TF32 matmuls for fp32 work on GPUs that have them
    gradient_checkpointing: bool = False
    # Under torchrun: ddp (every rank holds the whole model, optimizer state and gradients) | fsdp (FSDP2: each
    # rank holds 1/world_size of them; sharded checkpoints; see pretune.train.distributed). One process: ignored
    distributed: str = "ddp"
    # BERT-family classifiers: the last layer computes only position 0, the one the head reads (the same
    # result with about 14% fewer FLOPs for 6 layers; see pretune.models.fastpath)
    first_token_only: bool = True
    eval_every: Optional[int] = None  # optimizer steps between evaluations; None: once per epoch
    # Fractions of the schedule evaluated as well (a search with asha or hyperband adds their rungs)
    eval_at: Optional[list[float]] = None
    checkpoint_every: Optional[int] = None  # optimizer steps; None: at every evaluation; 0: never (no resume)
    keep_checkpoints: int = 2
    early_stopping_patience: Optional[int] = None  # evaluations without improvement
    restore_best: bool = True  # end with the weights of the best evaluation
    log_every: int = 10  # optimizer steps between training-loss lines in metrics.jsonl
    metric: Optional[str] = None  # selection metric; default accuracy / pearson
    group_by_length: bool = True
    seed: int = 42
    threads: Optional[int] = None
    progress: bool = True


@dataclass
class SearchConfig:
    space: Optional[dict] = None  # dotted key -> spec (see pretune.search.space); None: the default space
    objectives: Optional[list[str]] = None  # e.g. ["accuracy", "trainable_params:min"]; None: train.metric
    n_trials: Optional[int] = 20  # trials in the study, counted over restarts
    timeout: Optional[float] = None  # wall seconds for this invocation
    budget_samples: Optional[int] = None  # training samples over all trials, pruned ones included
    sampler: str = "tpe"  # tpe | random | grid | cmaes | qmc | gp | nsga2 | nsga3 | bruteforce
    # none | asha | hyperband | median; None: none. With tens of short trials early evaluations rank trials poorly
    # (docs/benchmarks.md, search efficiency), so pruning is opt-in
    pruner: Optional[str] = None
    # Trials after the first (the run's own configuration): auto (the portfolio shipped with pretune, learned
    # across tasks), none, or a file made by `pretune portfolio build`; then the sampler (see pretune.search.portfolio)
    portfolio: Optional[str] = "auto"
    # Epochs a trial trains before it may be pruned: the first evaluations mostly show a model that still
    # predicts one class whatever its settings, and pruning on them is pruning on noise.
    prune_after: float = 1.0
    storage: Optional[str] = None  # SQLAlchemy URL; None: sqlite file study.db in the output folder
    study: str = "pretune"
    workers: int = 1  # worker processes on this machine, all on one storage
    seed: int = 0
    heartbeat: int = 30  # seconds; a trial silent for 2x this is marked failed and retried
    keep_models: str = "best"  # best (Pareto set when multi-objective) | all


@dataclass
class CompressConfig:
    methods: Optional[list[str]] = None  # None: every registered method (see pretune.compress.METHODS)
    tolerance: float = 1.0  # metric points (accuracy 0.01 = 1 point) a variant may lose before it is rejected; per cent
    # of the source's value for a metric with no fixed scale (a language model's perplexity: 1.0 = at most 1% higher)
    threads: int = 2  # CPU threads for every runtime while benchmarking
    max_length: int = 128
    # quantization
    per_channel: bool = True  # one int8 scale per output channel of each weight
    reduce_range: bool = False  # 7-bit weights (avoids u8s8 saturation on CPUs without VNNI)
    keep_fp32: Optional[list[str]] = None  # module/node name substrings left in fp32, e.g. classifier
    calibration_samples: int = 128  # training rows for static int8 calibration
    ort_optimize: bool = True  # fuse attention, LayerNorm and GELU with ONNX Runtime's BERT optimizer
    onnx_opset: int = 17
    onnx_tolerance: float = 1e-3  # max |logit difference| of an ONNX export vs PyTorch
    # pruning
    sparsity: float = 0.5  # prune-magnitude: fraction of encoder Linear weights set to zero
    head_fraction: float = 0.25  # prune-structured: fraction of attention heads removed per layer
    ffn_fraction: float = 0.5  # prune-structured: fraction of FFN neurons removed per layer
    importance_batches: int = 16  # training batches used to score heads and neurons
    recovery_steps: int = 200  # optimizer steps of recovery fine-tuning after pruning (0: none)
    # distillation
    student_layers: Optional[list[int]] = None  # teacher layers copied into the student; None: every other
    temperature: float = 2.0
    alpha: float = 0.5  # weight of the soft-target loss; 1 - alpha goes to the hard labels
    hidden_weight: float = 0.0  # weight of hidden-state matching (0: off)
    distill_steps: int = 500
    # training shared by recovery and distillation
    lr: float = 5e-5
    batch_size: int = 32
    seed: int = 42
    bench_runs: int = 200  # timed batch-1 calls per variant (per round, see latency_rounds)
    # After every variant is built, batch-1 latency of the source and the variants is timed again in this many
    # alternating rounds, and each p50 is the median over them (0: keep the single timing of each bench)
    latency_rounds: int = 3
    isolate: bool = True  # bench each variant in a fresh process (honest peak memory)


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    compress: CompressConfig = field(default_factory=CompressConfig)
    dpo: DpoConfig = field(default_factory=DpoConfig)
    output: str = "runs/fit"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# ---------------------------------------------------------------- building and validation


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(_type_name(a) for a in args) + " or null"
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str, errors: list[str]) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted for floats."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key, errors)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, str):  # "query,value" from the command line
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            errors.append(f"{key}: expected {_type_name(tp)}, got {value!r}")
            return value
        return [_coerce(v, item_tp, f"{key}[{i}]", errors) for i, v in enumerate(value)]
    if tp is dict and isinstance(value, dict):  # free-form mapping, validated by its stage
        return value
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if tp is bool and isinstance(value, bool):
        return value
    if tp in (int, str) and isinstance(value, tp) and not isinstance(value, bool):
        return value
    errors.append(f"{key}: expected {_type_name(tp)}, got {value!r}")
    return value


# Keys that were renamed: the old name gets an error that says what replaced it.
RENAMED = {"train.bf16": "train.precision (auto, fp32, bf16 or fp16; auto picks bf16 where the hardware runs it "
                         "natively)"}


def _build(cls: type, data: Any, prefix: str, errors: list[str]) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        errors.append(f"{prefix or 'config'}: expected a mapping of keys, got {data!r}")
        return cls()
    types_ = _field_types(cls)
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in types_:
            if full in RENAMED:
                errors.append(f"{full} was replaced by {RENAMED[full]}")
                continue
            valid = ", ".join(f"{prefix}{k}" for k in types_)
            errors.append(f"unknown key {full!r}; valid keys here: {valid}")
            continue
        tp = types_[key]
        if _is_dataclass_type(tp):
            kwargs[key] = _build(tp, value, f"{full}.", errors)
        else:
            kwargs[key] = _coerce(value, tp, full, errors)
    return cls(**kwargs)


def _check_values(cfg: RunConfig, errors: list[str]) -> None:
    def choice(key: str, value: Any, choices: tuple) -> None:
        if value is not None and value not in choices:
            errors.append(f"{key}: expected one of {', '.join(choices)}, got {value!r}")

    def positive(key: str, value: Any, allow_zero: bool = False) -> None:
        if value is None or not isinstance(value, (int, float)):
            return
        if value < 0 or (value == 0 and not allow_zero):
            errors.append(f"{key}: must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")

    from .tasks import names as task_names  # the registry sits above the config; torch-free to import

    choice("data.task", cfg.data.task, task_names())
    choice("data.tag_scheme", cfg.data.tag_scheme, TAG_SCHEMES)
    choice("method.name", cfg.method.name, METHODS)
    choice("train.schedule", cfg.train.schedule, SCHEDULES)
    choice("train.precision", cfg.train.precision, PRECISIONS)
    choice("train.distributed", cfg.train.distributed, DISTRIBUTED)
    choice("model.attn_implementation", cfg.model.attn_implementation, ATTENTION)
    choice("dpo.loss_type", cfg.dpo.loss_type, DPO_LOSSES)
    for key in ("train.lr", "train.batch_size", "train.eval_batch_size", "train.grad_accum",
                "train.epochs", "train.max_steps", "train.eval_every", "train.keep_checkpoints",
                "data.max_length", "lora.r", "lora.alpha", "dpo.beta",
                "data.max_train_samples", "data.max_eval_samples", "train.threads"):
        section, name = key.split(".")
        positive(key, getattr(getattr(cfg, section), name))
    for key in ("train.weight_decay", "train.warmup", "method.train_top_layers",
                "train.early_stopping_patience", "train.checkpoint_every", "data.stride"):
        section, name = key.split(".")
        positive(key, getattr(getattr(cfg, section), name), allow_zero=True)
    if isinstance(cfg.data.val_fraction, float) and not 0 < cfg.data.val_fraction < 1:
        errors.append(f"data.val_fraction: must be between 0 and 1, got {cfg.data.val_fraction!r}")
    if isinstance(cfg.lora.dropout, float) and not 0 <= cfg.lora.dropout < 1:
        errors.append(f"lora.dropout: must be in [0, 1), got {cfg.lora.dropout!r}")
    if isinstance(cfg.dpo.label_smoothing, (int, float)) and not 0 <= cfg.dpo.label_smoothing < 0.5:
        errors.append(f"dpo.label_smoothing: must be in [0, 0.5), got {cfg.dpo.label_smoothing!r}")
    if isinstance(cfg.train.ema_decay, float) and not 0 <= cfg.train.ema_decay < 1:
        errors.append(f"train.ema_decay: must be in [0, 1) (0 disables), got {cfg.train.ema_decay!r}")
    if any(not isinstance(f, (int, float)) or not 0 < f <= 1 for f in cfg.train.eval_at or ()):
        errors.append(f"train.eval_at: fractions of the schedule must be in (0, 1], got {cfg.train.eval_at!r}")
    if isinstance(cfg.train.layer_lr_decay, float) and not 0 < cfg.train.layer_lr_decay <= 1:
        errors.append(f"train.layer_lr_decay: must be in (0, 1], got {cfg.train.layer_lr_decay!r}")


def config_from_dict(data: dict[str, Any] | None) -> RunConfig:
    """Build and validate a ``RunConfig``; raise one ``ConfigError`` listing every problem."""
    errors: list[str] = []
    cfg = _build(RunConfig, data or {}, "", errors)
    if not errors:
        _check_values(cfg, errors)
    if errors:
        raise ConfigError("invalid config: " + "; ".join(errors))
    return cfg


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["train.lr=3e-5", "lora.r=16"]`` -> nested dict, values parsed as YAML scalars."""
    nested: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not KEY=VALUE (e.g. train.lr=3e-5)")
        key, raw = item.split("=", 1)
        value = _parse_scalar(raw)
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with another override of {part!r}")
        node[parts[-1]] = value
    return nested


def _parse_scalar(raw: str) -> Any:
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    # YAML 1.1 reads "3e-5" as a string; numbers are what people mean.
    if isinstance(value, str):
        try:
            return float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            return value
    return value


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursively merge ``update`` into a copy of ``base``."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} not found")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{p}{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of sections (model, data, train, ...)")
    return _expand_env(data, p)


_ENV_VAR = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def _expand_env(node: Any, path: Path) -> Any:
    """``${NAME}`` and ``${NAME:-default}`` in string values, so one config serves several machines
    (e.g. ``${PRETUNE_DATA:-../shared/data}/sst2/train.tsv``); an unset name without default is an error."""
    if isinstance(node, dict):
        return {k: _expand_env(v, path) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand_env(v, path) for v in node]
    if not isinstance(node, str):
        return node

    def sub(m: re.Match) -> str:
        value = os.environ.get(m.group(1), m.group(2))
        if value is None:
            raise ConfigError(f"{path}: environment variable {m.group(1)} is not set; set it or write "
                              f"${{{m.group(1)}:-DEFAULT}}")
        return value
    return _ENV_VAR.sub(sub, node)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                extra: dict[str, Any] | None = None) -> RunConfig:
    """Read YAML (optional), merge ``extra`` (e.g. CLI flags) then dotted overrides; validate."""
    data = read_yaml(path) if path else {}
    if extra:
        data = merge(data, extra)
    if overrides:
        data = merge(data, parse_overrides(overrides))
    return config_from_dict(data)


def config_diff(old: dict[str, Any], new: dict[str, Any], ignore: tuple[str, ...] = ()) -> list[str]:
    """The dotted keys (``train.lr``) whose values differ between two config dicts, less ``ignore``d ones."""
    keys = []
    for section in sorted(set(old) | set(new)):
        a, b = old.get(section), new.get(section)
        if isinstance(a, dict) or isinstance(b, dict):
            a, b = a or {}, b or {}
            keys += [f"{section}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif a != b:
            keys.append(section)
    return [k for k in keys if k not in ignore and k.split(".")[0] not in ignore]


def as_config(cfg: RunConfig | dict | str | Path | None) -> RunConfig:
    """A ``RunConfig`` from a ``RunConfig``, a dict of sections, a YAML path, or None (the defaults)."""
    if cfg is None:
        return RunConfig()
    if isinstance(cfg, RunConfig):
        return cfg
    if isinstance(cfg, dict):
        return config_from_dict(cfg)
    return load_config(cfg)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def parse_duration(text: str | int | float | None) -> float | None:
    """'90s', '6m', '1h', '1.5h' or a number of seconds -> seconds."""
    if text is None:
        return None
    if isinstance(text, (int, float)):
        return float(text)
    m = _DURATION.match(str(text))
    if not m:
        raise ValueError(f"cannot read duration {text!r}: use e.g. 90s, 6m, 1h")
    value, unit = float(m.group(1)), m.group(2) or "s"
    return value * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
