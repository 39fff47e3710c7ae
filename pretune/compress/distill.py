"""Distillation: a student made of a subset of the teacher's layers, trained on soft targets.

The loss is ``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * task loss`` (Hinton et
al., 2015; the T^2 keeps soft-target gradients on the hard loss's scale), plus, optionally,
``hidden_weight`` times the MSE between each student layer's output and the output of the
teacher layer it was copied from. The same loss drives recovery fine-tuning after pruning.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from .. import tasks
from ..config import TrainConfig
from ..errors import ConfigError, PretuneError
from ..models import encoder_layers
from ..tasks import TaskSpec
from ..train import model_inputs
from .registry import Context, register


def distill_loss(teacher: nn.Module, spec: TaskSpec, temperature: float, alpha: float,
                 hidden_weight: float = 0.0, layer_map: Optional[list[int]] = None,
                 record: Optional[list[float]] = None):
    """A ``loss_fn(student, batch) -> (loss, logits)`` for ``pretune.train.train``.

    Args:
        teacher: frozen source model (eval mode, no gradients).
        temperature, alpha: soft-target temperature and weight (1 - alpha goes to the labels).
        hidden_weight: weight of hidden-state matching; needs ``layer_map``.
        layer_map: teacher layer index copied into each student layer, in order.
        record: if given, each step's loss is appended (to show that it falls).
    """
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    hidden = hidden_weight > 0 and layer_map is not None
    task = tasks.get(spec.task)

    def loss_fn(student: nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = model_inputs(batch)
        with torch.no_grad():
            t_out = teacher(**inputs, output_hidden_states=hidden)
        s_out = student(**inputs, output_hidden_states=hidden)
        s, t = s_out.logits.float(), t_out.logits.float()  # (B, C), or (B, T, C) for a tag per token
        loss = alpha * task.soft_loss(s, t, temperature, batch["attention_mask"]) \
            + (1 - alpha) * task.loss(s, batch["labels"])
        if hidden:
            mask = batch["attention_mask"].unsqueeze(-1).float()  # (B, T, 1): padding does not count
            for j, i in enumerate(layer_map):
                diff = (s_out.hidden_states[j + 1] - t_out.hidden_states[i + 1]) ** 2 * mask
                loss = loss + hidden_weight * diff.sum() / (mask.sum() * diff.shape[-1])
        if record is not None:
            record.append(float(loss.detach()))
        return loss, s_out.logits
    return loss_fn


def student_layers(n_layers: int, wanted: Optional[list[int]]) -> list[int]:
    """Teacher layers to keep: ``wanted``, or every other one ending with the top layer."""
    if not wanted:
        keep = list(range(n_layers - 1, -1, -2))[::-1]
        return keep if len(keep) < n_layers else keep[1:]
    bad = [i for i in wanted if not 0 <= i < n_layers]
    if bad:
        raise ConfigError(f"compress.student_layers: the teacher has layers 0..{n_layers - 1}, got {bad}")
    keep = sorted(set(wanted))
    if len(keep) >= n_layers:
        raise ConfigError(f"compress.student_layers: a student needs fewer than {n_layers} layers, got {keep}")
    return keep


# Config lists with one entry per layer (Qwen2's, ModernBERT's attention types): the kept layers keep theirs.
PER_LAYER_CONFIG = ("layer_types",)


def make_student(teacher: nn.Module, keep: list[int]) -> nn.Module:
    """A model of ``teacher``'s class with only the layers ``keep`` (embeddings and head copied too).

    The student is built from its own config, then given the teacher's weights, so that it is the model its
    saved folder reloads as: ModernBERT's first layer has no attention norm, so a kept upper layer loses its own.

    Raises:
        PretuneError: the student's architecture has weights the teacher's layers cannot fill.
    """
    prefix, layers = encoder_layers(teacher)
    config = copy.deepcopy(teacher.config)
    for key in PER_LAYER_CONFIG:  # first: setting num_hidden_layers checks that these lists match it
        if isinstance(getattr(config, key, None), list):
            setattr(config, key, [getattr(config, key)[i] for i in keep])
    config.num_hidden_layers = len(keep)
    new_index = {str(i): str(j) for j, i in enumerate(keep)}
    pattern = re.compile(re.escape(prefix) + r"\.(\d+)\.")
    state = {}
    for name, tensor in teacher.state_dict().items():
        m = pattern.match(name)
        if m is None:
            state[name] = tensor
        elif m.group(1) in new_index:
            state[f"{prefix}.{new_index[m.group(1)]}.{name[m.end():]}"] = tensor
    student = type(teacher)(config)
    missing, _ = student.load_state_dict(state, strict=False)  # unexpected: weights the new layout drops
    if missing:
        raise PretuneError(f"distill: the {len(keep)}-layer student of model type {config.model_type!r} has weights "
                           f"the teacher cannot fill ({', '.join(missing[:3])}); set compress.student_layers")
    return student.to(next(teacher.parameters()).device).train(teacher.training)


def train_with(ctx: Context, model: nn.Module, steps: int, loss_fn) -> None:
    """Short fine-tune of ``model`` on the training rows with ``loss_fn`` (no best-weights selection)."""
    from ..train import train

    cfg = ctx.cfg
    # The variants are CPU deployment models, measured in fp32 against an fp32 source: they train so too.
    tcfg = TrainConfig(lr=cfg.lr, batch_size=cfg.batch_size, max_steps=steps, warmup=0.06, eval_every=steps,
                       eval_batch_size=64, progress=False, threads=cfg.threads, seed=cfg.seed,
                       restore_best=False, device="cpu", precision="fp32")
    # The loop wants an eval set; a slice of the training rows keeps the held-out rows unseen.
    monitor = ctx.train.select(list(range(min(256, len(ctx.train)))))
    train(model, ctx.train, monitor, ctx.spec, tcfg, pad_id=ctx.pad_id, loss_fn=loss_fn)
    model.eval()


def _mean(values: list[float]) -> Optional[float]:
    return sum(values) / len(values) if values else None


@register("distill", trains=True, logits=True, gives_model=True)
def distill(ctx: Context, out: Path) -> dict:
    """Student from every other teacher layer (or ``student_layers``), distilled on the training rows."""
    cfg = ctx.cfg
    _, layers = encoder_layers(ctx.model)
    keep = student_layers(len(layers), cfg.student_layers)
    student = make_student(ctx.model, keep)
    losses: list[float] = []
    teacher = copy.deepcopy(ctx.model)
    loss_fn = distill_loss(teacher, ctx.spec, cfg.temperature, cfg.alpha, cfg.hidden_weight, keep, losses)
    train_with(ctx, student, cfg.distill_steps, loss_fn)
    student.save_pretrained(str(out))
    ctx.save_tokenizer(out)
    from .formats import write_manifest
    write_manifest(out, format="hf", method="distill", source=str(ctx.source), teacher_layers=keep)
    k = max(1, min(10, len(losses) // 4))
    return {"student_layers": keep, "teacher_layers": len(layers), "steps": len(losses),
            "loss_first": _mean(losses[:k]), "loss_last": _mean(losses[-k:]),
            "temperature": cfg.temperature, "alpha": cfg.alpha, "hidden_weight": cfg.hidden_weight}
