"""One optimizer step, the same for the training loop and for anything that times a step (the estimate probe).

    zero the gradients
    for each micro-batch this process runs:       # accumulation gives the big batch's update
        batch to the device; forward (autocast), loss * rows / rows_in_step, backward (scaled for fp16);
        under DDP the gradients are averaged over the ranks at the last micro-batch only (no_sync before);
        under FSDP they are reduce-scattered (averaged, and left sharded) after every micro-batch
    sum the loss and tokens over ranks; stop if the loss is not finite
    unscale (fp16), clip, optimizer step
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

from ..config import TrainConfig
from ..data import Encoded, collate
from ..errors import TrainingDiverged
from ..runtime import CPU, Runtime
from . import distributed
from .defaults import value

LossFn = Callable[[nn.Module, dict], tuple[torch.Tensor, torch.Tensor]]


def optimizer_step(model: nn.Module, optimizer: torch.optim.Optimizer, data: Encoded, micro: list[np.ndarray],
                   rows_in_step: int, *, loss_fn: LossFn, pad_id: int, cfg: TrainConfig,
                   params: list[torch.Tensor], step: int, world: int = 1, passes: int = 0,
                   collate: Callable[..., dict] = collate, runtime: Runtime = CPU,
                   scaler: Optional["torch.amp.GradScaler"] = None) -> tuple[float, int]:
    """Run one optimizer step over ``micro`` (this process's micro-batches, row indices into ``data``).

    Args:
        rows_in_step: rows of the whole step over every rank: each loss is weighted by its rows over these.
        params: the trained parameters (clipped, and summed over ranks).
        step: this step's number (1-based), for the divergence message.
        world: processes sharing the step; above 1, ``model`` is the DDP-wrapped or the FSDP-sharded model.
        passes: micro-batches every rank runs: a rank with fewer runs rows that count zero to make up the
            number, because each of FSDP's forward and backward passes is a collective (the loop passes the
            most any rank has). 0: no more than DDP needs (at least one, its synchronising backward pass).
        collate: builds a batch from rows (the task's; default: padded text rows).
        runtime: the device the model is on and the precision of the passes.
        scaler: fp16's gradient scaler (``runtime.scaler()``), None otherwise.

    Returns:
        (sum over the step's rows of the loss, real tokens of the step), both over every rank.

    Raises:
        TrainingDiverged: the loss is NaN or infinite.
    """
    optimizer.zero_grad(set_to_none=True)
    step_loss = torch.zeros((), device=runtime.device)  # summed on the device: one sync per step, not per batch
    step_tokens = 0
    work = [(rows, len(rows)) for rows in micro]
    if world > 1:
        # A rank left short in an epoch's last step still joins the collectives, with one row whose loss counts
        # zero per missing pass: DDP's synchronising backward pass, or every one of FSDP's passes.
        work += [(np.zeros(1, dtype=np.int64), 0)] * (max(passes, 1) - len(work))
    for i, (rows, weight) in enumerate(work):
        batch = collate(data, rows, pad_id)
        step_tokens += int(batch["attention_mask"].sum()) if weight else 0  # counted on the host
        batch = runtime.to_device(batch)
        sync = world == 1 or i == len(work) - 1
        with contextlib.nullcontext() if sync else distributed.no_sync(model):
            with runtime.autocast():
                loss, _ = loss_fn(model, batch)
            # Weight by rows so accumulated micro-batches give the big batch's mean gradient; DDP and FSDP
            # average over the ranks, so scale by their number to sum instead.
            weighted = loss * (weight * world / rows_in_step)
            (scaler.scale(weighted) if scaler is not None else weighted).backward()
        step_loss += loss.detach().float() * weight
    total = float(step_loss)
    if world > 1:
        total, step_tokens = distributed.sum_scalars([total, step_tokens], runtime.device)
    if not math.isfinite(total):
        raise TrainingDiverged(f"loss became {total / rows_in_step} at step {step}; lower "
                               f"train.lr (now {value(cfg, 'lr'):g}) or set train.max_grad_norm")
    if scaler is not None:
        scaler.unscale_(optimizer)  # clip the true gradients; a step with inf/nan ones is skipped by the scaler
    if cfg.max_grad_norm:
        clip_gradients(params, cfg.max_grad_norm, runtime.device.type)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return total, int(step_tokens)


def clip_gradients(params: list[nn.Parameter], max_norm: float, device_type: str) -> None:
    """``nn.utils.clip_grad_norm_``, less its scaling pass when that pass would change nothing.

    torch multiplies every gradient by ``min(1, max_norm / (norm + 1e-6))`` even when that is 1.0: a full read
    and write of the gradients, about 5% of a MiniLM step on a 2-core CPU. On the CPU, where reading the norm
    costs no device sync, the pass is skipped when the factor is exactly 1.0, so the result is bit for bit
    torch's. On a GPU the test would cost a host sync per step, so torch's function runs as it is.
    """
    if device_type != "cpu":
        nn.utils.clip_grad_norm_(params, max_norm)
        return
    norm = nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
    full = norm.full_tensor() if hasattr(norm, "full_tensor") else norm  # FSDP: the whole model's norm
    if not float(full) + 1e-6 <= max_norm:  # also when the norm is inf or nan, as torch would
        nn.utils.clip_grads_with_norm_(params, max_norm, norm)
