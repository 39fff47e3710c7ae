"""Optimizer and schedule: AdamW with decoupled decay, layer-wise LR decay, warmup schedules."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import TrainConfig
from ..errors import ConfigError
from ..models.methods import encoder_layers, is_no_decay, layer_index
from .defaults import value


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """Trainable parameters grouped by (layer lr scale, weight decay).

    No decay on biases and normalisation weights. With ``layer_lr_decay`` d < 1 the
    block l of n gets lr * d ** (n + 1 - l): lower layers, which hold more general
    features, move less (Clark et al., 2020).
    """
    no_decay = is_no_decay(model)
    decay_rate, lr, weight_decay = value(cfg, "layer_lr_decay"), value(cfg, "lr"), value(cfg, "weight_decay")
    prefix, layers = encoder_layers(model) if decay_rate < 1 else ("", [])
    n = len(layers)
    groups: dict[tuple[float, float], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        scale = decay_rate ** (n + 1 - layer_index(name, prefix, n)) if decay_rate < 1 else 1.0
        wd = 0.0 if name in no_decay else weight_decay
        groups.setdefault((scale, wd), []).append(p)
    return [{"params": ps, "lr": lr * scale, "weight_decay": wd, "lr_scale": scale}
            for (scale, wd), ps in sorted(groups.items(), key=lambda kv: kv[0])]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg)
    if not groups:
        raise ConfigError("no trainable parameters: the method froze every weight; check method.name and its "
                          "settings (e.g. method.train_top_layers, lora.target_modules)")
    try:  # the fused CPU kernel is ~1.8x faster than the per-tensor loop here
        return torch.optim.AdamW(groups, lr=groups[0]["lr"], betas=(0.9, 0.999), eps=1e-8, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, lr=groups[0]["lr"], betas=(0.9, 0.999), eps=1e-8, foreach=True)


def warmup_steps(cfg: TrainConfig, total_steps: int) -> int:
    warmup = value(cfg, "warmup")
    return int(warmup) if warmup >= 1 else int(math.ceil(warmup * total_steps))


def lr_lambda(schedule: str, warmup: int, total: int):
    """Multiplier of the base lr at optimizer step ``s`` (0-based): linear warmup, then decay."""
    def f(s: int) -> float:
        if warmup and s < warmup:
            return (s + 1) / warmup
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (s - warmup) / max(1, total - warmup))
        if schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return max(0.0, 1.0 - progress)
    return f


def build_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int):
    return torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg.schedule, warmup_steps(cfg, total_steps), total_steps))
