"""Several processes under ``torchrun``: the one owner of the process group, and data parallelism.

The process group is started by the first ``acquire()`` and destroyed by the ``release()`` that balances the
last one, so a search (which holds it for its messages) and each fit inside it (which holds it while it
trains) share one group. Only a group this module started is destroyed; one the caller started is left alone.

Data parallelism is torch's ``DistributedDataParallel`` (``wrap``): one optimizer step takes
``grad_accum x world_size`` micro-batches of the length-grouped epoch order; rank ``r`` runs micro-batches
``r, r + W, ...`` of them (without synchronising gradients until its last, ``no_sync``), each loss weighted by
its rows over the rows of the whole step, and DDP averages the gradients over the ranks (the step scales the
loss by ``world_size`` to make that average the sum). The update is therefore the one a single process makes
with ``grad_accum x world_size`` accumulation steps (a test checks it), and ``batch_size`` stays per process.
Weights start from rank 0's copy (DDP broadcasts them), so ranks never drift apart; each rank evaluates the
whole eval set, so early stopping, best weights and pruning agree without messages; only rank 0 writes files.

With ``WORLD_SIZE`` unset or 1 every function here is a no-op.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

_state = {"holds": 0, "owned": False}


def world_size() -> int:
    """Processes training together (``WORLD_SIZE``), without touching the process group."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's rank (``RANK``), without touching the process group."""
    return int(os.environ.get("RANK", "0"))


def is_writer() -> bool:
    """Whether this process writes the run folder (rank 0, or the only process)."""
    return rank() == 0


def acquire() -> tuple[int, int]:
    """(rank, world size), starting the process group (NCCL on CUDA, else gloo) if none exists yet.

    Every ``acquire`` is balanced by a ``release``.
    """
    if world_size() <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        _state["owned"] = True
    _state["holds"] += 1
    return dist.get_rank(), dist.get_world_size()


def release() -> None:
    """Balance one ``acquire``; the last one destroys the group if this module started it (left alive, gloo's
    threads abort the process at exit)."""
    if _state["holds"] == 0:
        return
    _state["holds"] -= 1
    if _state["holds"] == 0 and _state["owned"]:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
        _state["owned"] = False


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (the caller holds the group)."""
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` in torch's DistributedDataParallel: rank 0's weights on every rank from the start, gradients
    averaged over the ranks in buckets that overlap the backward pass."""
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def sum_scalars(values: list[float], device: torch.device) -> list[float]:
    """The sum over ranks of a few numbers (a step's loss and tokens), in one message."""
    import torch.distributed as dist

    flat = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(flat)
    return flat.tolist()
