"""Tuning methods: which parameters train. A registry of plain functions.

Each method takes a freshly loaded model and the run config, sets
``requires_grad`` (or wraps the model, for LoRA) and returns the model to train.
``unwrap_for_saving`` turns the trained model back into a plain ``transformers``
model (merging a LoRA adapter when asked).
"""

from __future__ import annotations

import re
from typing import Callable

from torch import nn

from ..config import RunConfig
from ..errors import ConfigError

METHODS: dict[str, Callable[[nn.Module, RunConfig], nn.Module]] = {}


def register(name: str):
    def deco(fn):
        METHODS[name] = fn
        return fn
    return deco


def apply_method(model: nn.Module, cfg: RunConfig) -> nn.Module:
    """Apply ``cfg.method.name``; an unknown name lists the valid ones."""
    try:
        fn = METHODS[cfg.method.name]
    except KeyError:
        raise ConfigError(f"method.name: unknown method {cfg.method.name!r}; choose one of "
                          f"{', '.join(METHODS)}") from None
    return fn(model, cfg)


# ------------------------------------------------------------------ model anatomy


def encoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The stack of transformer blocks: the longest ``ModuleList`` (prefix, module)."""
    best = ("", None)
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and (best[1] is None or len(mod) > len(best[1])):
            best = (name, mod)
    if best[1] is None:
        raise ConfigError(f"cannot find the transformer layers of {type(model).__name__}")
    return best


def head_parameter_names(model: nn.Module) -> set[str]:
    """Parameters outside the pretrained body (classifier, score) plus a pooler feeding it."""
    prefix = getattr(model, "base_model_prefix", "")
    names = set()
    for name, _ in model.named_parameters():
        if not (prefix and name.startswith(prefix + ".")) or ".pooler." in name:
            names.add(name)
    return names


def layer_index(name: str, layers_prefix: str, n_layers: int) -> int:
    """0 for embeddings, 1..n for block i-1, n+1 for everything after (final norm, pooler, head)."""
    m = re.match(re.escape(layers_prefix) + r"\.(\d+)\.", name)
    if m:
        return int(m.group(1)) + 1
    if "embed" in name:
        return 0
    return n_layers + 1


def is_no_decay(model: nn.Module) -> set[str]:
    """Biases and normalisation weights: no weight decay for these (decoupled AdamW convention)."""
    names = set()
    for mod_name, mod in model.named_modules():
        is_norm = "norm" in type(mod).__name__.lower() or isinstance(mod, (nn.LayerNorm, nn.GroupNorm))
        for p_name, _ in mod.named_parameters(recurse=False):
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            if is_norm or p_name == "bias" or p_name.endswith("bias"):
                names.add(full)
    return names


# ------------------------------------------------------------------ methods


@register("full")
def full(model: nn.Module, cfg: RunConfig) -> nn.Module:
    for p in model.parameters():
        p.requires_grad_(True)
    return model


@register("freeze")
def freeze(model: nn.Module, cfg: RunConfig) -> nn.Module:
    """Train the head plus the top ``method.train_top_layers`` blocks; freeze the rest."""
    prefix, layers = encoder_layers(model)
    k = cfg.method.train_top_layers
    if k > len(layers):
        raise ConfigError(f"method.train_top_layers: the model has {len(layers)} layers, got {k}")
    head = head_parameter_names(model)
    top = {f"{prefix}.{i}." for i in range(len(layers) - k, len(layers))}
    for name, p in model.named_parameters():
        p.requires_grad_(name in head or any(name.startswith(t) for t in top))
    return model


@register("bitfit")
def bitfit(model: nn.Module, cfg: RunConfig) -> nn.Module:
    """Train only bias terms (Ben Zaken et al., 2021) and the head."""
    head = head_parameter_names(model)
    for name, p in model.named_parameters():
        p.requires_grad_(name in head or name.endswith("bias"))
    return model


@register("lora")
def lora(model: nn.Module, cfg: RunConfig) -> nn.Module:
    """Low-rank adapters through ``peft``; the head stays fully trainable."""
    from peft import LoraConfig, TaskType, get_peft_model

    lc = cfg.lora
    targets = lc.target_modules
    if targets:
        available = linear_module_names(model)
        missing = [t for t in targets if t not in available]
        if len(missing) == len(targets):
            raise ConfigError(f"lora.target_modules: {targets} match no Linear layer; available Linear names: "
                              f"{', '.join(sorted(available))}")
    peft_cfg = LoraConfig(task_type=TaskType.SEQ_CLS, r=lc.r, lora_alpha=lc.alpha, lora_dropout=lc.dropout,
                          target_modules=targets, modules_to_save=_head_modules(model))
    try:
        return get_peft_model(model, peft_cfg)
    except ValueError as e:
        raise ConfigError(f"lora: {str(e).splitlines()[0]}; available Linear names: "
                          f"{', '.join(sorted(linear_module_names(model)))}") from None


def linear_module_names(model: nn.Module) -> set[str]:
    """Short names of the Linear layers in the body (what ``target_modules`` can match)."""
    head = {n.rsplit(".", 1)[0] for n in head_parameter_names(model)}
    return {name.rsplit(".", 1)[-1] for name, mod in model.named_modules()
            if isinstance(mod, nn.Linear) and name not in head}


def _head_modules(model: nn.Module) -> list[str]:
    prefix = getattr(model, "base_model_prefix", "")
    return sorted({n.split(".")[0] for n, _ in model.named_parameters()
                   if not (prefix and n.startswith(prefix + "."))})


def unwrap_for_saving(model: nn.Module, merge: bool = True) -> nn.Module:
    """A plain ``transformers`` model: LoRA merged into the weights when ``merge``."""
    if hasattr(model, "merge_and_unload") and merge:
        return model.merge_and_unload()
    return model


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total
