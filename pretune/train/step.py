"""One optimizer step, the same for the training loop and for anything that times a step (the estimate probe).

    zero the gradients
    for each micro-batch this process runs:       # accumulation gives the big batch's update
        forward (autocast), loss * rows / rows_in_step, backward
    sum gradients over ranks (torchrun)
    stop if the loss is not finite
    clip, optimizer step
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..config import TrainConfig
from ..data import Encoded, collate
from ..errors import TrainingDiverged
from . import distributed
from .evaluate import autocast

LossFn = Callable[[nn.Module, dict], tuple[torch.Tensor, torch.Tensor]]


def optimizer_step(model: nn.Module, optimizer: torch.optim.Optimizer, data: Encoded, micro: list[np.ndarray],
                   rows_in_step: int, *, loss_fn: LossFn, pad_id: int, cfg: TrainConfig,
                   params: list[torch.Tensor], step: int, world: int = 1,
                   collate: Callable[..., dict] = collate) -> tuple[float, int]:
    """Run one optimizer step over ``micro`` (this process's micro-batches, row indices into ``data``).

    Args:
        rows_in_step: rows of the whole step over every rank: each loss is weighted by its rows over these.
        params: the trained parameters (clipped, and summed over ranks).
        step: this step's number (1-based), for the divergence message.
        world: processes sharing the step (their gradients are summed).
        collate: builds a batch from rows (the task's; default: padded text rows).

    Returns:
        (sum over the step's rows of the loss, real tokens of the step), both over every rank.

    Raises:
        TrainingDiverged: the loss is NaN or infinite.
    """
    optimizer.zero_grad(set_to_none=True)
    step_loss, step_tokens = 0.0, 0
    for rows in micro:
        batch = collate(data, rows, pad_id)
        with autocast(cfg.bf16):
            loss, _ = loss_fn(model, batch)
        # Weight by rows so accumulated micro-batches give the big batch's mean gradient.
        (loss * (len(rows) / rows_in_step)).backward()
        step_loss += loss.item() * len(rows)
        step_tokens += int(batch["attention_mask"].sum())
    if world > 1:
        step_loss, step_tokens = distributed.sum_gradients(params, [step_loss, step_tokens])
    if not math.isfinite(step_loss):
        raise TrainingDiverged(f"loss became {step_loss / rows_in_step} at step {step}; lower "
                               f"train.lr (now {cfg.lr:g}) or set train.max_grad_norm")
    if cfg.max_grad_norm:
        nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
    optimizer.step()
    return step_loss, int(step_tokens)
