"""Several processes under ``torchrun``: the one owner of the process group, and data parallelism.

The process group is started by the first ``acquire()`` and destroyed by the ``release()`` that balances the
last one, so a search (which holds it for its messages) and each fit inside it (which holds it while it
trains) share one group. Only a group this module started is destroyed; one the caller started is left alone.

Data parallelism is torch's ``DistributedDataParallel`` (``wrap``, ``train.distributed=ddp``, the default) or
its fully sharded engine FSDP2 (``shard``, ``train.distributed=fsdp``). Either way one optimizer step takes
``grad_accum x world_size`` micro-batches of the length-grouped epoch order; rank ``r`` runs micro-batches
``r, r + W, ...`` of them, each loss weighted by its rows over the rows of the whole step, and the gradients
are averaged over the ranks (the step scales the loss by ``world_size`` to make that average the sum). The
update is therefore the one a single process makes with ``grad_accum x world_size`` accumulation steps (tests
check it for both), and ``batch_size`` stays per process. Each rank evaluates the whole eval set, so early
stopping, best weights and pruning agree without messages; only rank 0 writes files.

- **ddp**: every rank holds the whole model, its gradients and AdamW's two moments. Weights start from rank
  0's copy (DDP broadcasts them); gradients are all-reduced once per step, at the last micro-batch (before it,
  ``no_sync``). Checkpoints hold the trained weights as safetensors, written by rank 0.
- **fsdp**: ``fully_shard`` (FSDP2) on each transformer block (the layer stack ``models.encoder_layers``
  finds, as layer-wise LR decay does) and then on the root, after rank 0's weights are broadcast. Each rank
  keeps 1/W of every parameter (a ``DTensor``), of its gradient and of AdamW's moments, which the optimizer,
  built after sharding, updates in place; a block's full weights exist only during its forward and backward
  (all-gathered, then freed), and its gradients are reduce-scattered, averaged over the ranks as DDP's are.
  The gradients are reduce-scattered after every micro-batch, not once per step: accumulating them unsharded
  (FSDP2's ``set_requires_gradient_sync(False)``) would hold the full gradients on every rank, the memory
  FSDP is there to save. Every forward and backward pass is a collective, so a rank with fewer micro-batches
  in a step's short tail runs rows that count zero to keep in step (``step.optimizer_step``'s ``passes``).
  Gradient clipping works on the sharded gradients (the norm is the whole model's). Checkpoints are
  ``torch.distributed.checkpoint`` shards, one file per rank (``checkpoint.save_sharded_checkpoint``), which
  resume at any world size. At the end of training the full weights are gathered onto every rank and the
  model is a plain module again (``unshard``), so evaluation and ``save_pretrained`` (rank 0) see an ordinary
  Hugging Face model.

Use fsdp when the weights fit one device but weights, gradients and optimizer state together (about 4x the
weights in fp32 with AdamW) do not, or to free memory for larger batches; it costs an all-gather per block in
the forward and again in the backward pass, where DDP sends only the gradients. The model is still loaded whole
on each rank before sharding and gathered whole at the end. ``fsdp`` does not run with ``train.precision=fp16``
(the loss scaler would see one shard's gradients only; use bf16). On the CPU it runs over gloo.

With ``WORLD_SIZE`` unset or 1 every function here is a no-op, and ``train.distributed`` changes nothing but the
checkpoint format (fsdp's is sharded, so a run can resume under torchrun).
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, ContextManager

import torch
from torch import nn

from ..errors import ConfigError

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


def barrier() -> None:
    """Wait for every rank (the caller holds the group; nothing to wait for in one process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def no_sync(model: nn.Module) -> ContextManager:
    """The context of a micro-batch before the step's last: DDP keeps its gradients local (``no_sync``); FSDP
    reduce-scatters anyway, so that they stay sharded (see the module docstring)."""
    from torch.nn.parallel import DistributedDataParallel

    return model.no_sync() if isinstance(model, DistributedDataParallel) else contextlib.nullcontext()


def shard(model: nn.Module, device: torch.device) -> nn.Module:
    """Apply FSDP2 to ``model`` in place: ``fully_shard`` on each transformer block, then on the root, over one
    mesh of every rank. Rank 0's weights are broadcast first, so every rank shards the same model. Build the
    optimizer after this: the parameters become ``DTensor`` shards."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from ..models.methods import encoder_layers

    if device.type == "cuda":
        torch.cuda.set_device(device)  # FSDP2's CUDA mesh communicates on the current device
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            sent = tensor.detach().contiguous()  # itself when contiguous (collectives need a dense tensor)
            dist.broadcast(sent, src=0)
            if sent.data_ptr() != tensor.data_ptr():
                tensor.detach().copy_(sent)
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    try:
        _, blocks = encoder_layers(model)
    except ConfigError:  # no layer stack: the root alone is one group
        blocks = []
    # Every group, the root's included, frees its gathered weights after each forward pass (the root would keep
    # them by default): outside a pass the registered parameters are always the shards, which the best-weights
    # snapshot, the weight average and the checkpoints read.
    for block in blocks:
        fully_shard(block, mesh=mesh, reshard_after_forward=True)
    fully_shard(model, mesh=mesh, reshard_after_forward=True)
    return model


def unshard(model: nn.Module) -> nn.Module:
    """Undo ``shard`` in place: every rank gathers the full weights and ``model`` is a plain module again (its
    own class, no FSDP hooks), for evaluation and ``save_pretrained`` after training.

    FSDP2 has no public inverse of ``fully_shard``; this removes the hooks through the handles its state keeps
    (torch 2.13), and tests/train/test_fsdp.py checks the plain result.
    """
    from torch.distributed._composable.contract import REGISTRY_KEY, STATE_KEY
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor

    sharded = [m for m in model.modules() if isinstance(m, FSDPModule)]
    for module in sharded:
        module.reshard()  # the registered parameters are the sharded ones again (the root keeps them gathered)
    full: dict[int, nn.Parameter] = {}  # by the sharded parameter: tied weights stay tied
    with torch.no_grad():
        for module in model.modules():  # the same order on every rank: the all-gathers pair up
            for name, param in list(module._parameters.items()):
                if isinstance(param, DTensor):
                    if id(param) not in full:
                        full[id(param)] = nn.Parameter(param.full_tensor(), requires_grad=param.requires_grad)
                    module._parameters[name] = full[id(param)]
    for module in sharded:
        state = module._get_fsdp_state()
        state._pre_forward_hook_handle.remove()
        state._post_forward_hook_handle.remove()
        for group in state._fsdp_param_groups:
            for handle in [*group._module_to_pre_save_state_dict_hook_handle.values(),
                           *group._module_to_pre_load_state_dict_hook_handle.values()]:
                handle.remove()
            for param in group.fsdp_params:
                param._post_load_hook_handle.remove()
        module.__class__ = type(module).__mro__[FSDPModule._orig_cls_mro_index]
    for module in model.modules():
        for key in (STATE_KEY, REGISTRY_KEY, "_is_fsdp_managed_module", "_fsdp_use_orig_params"):
            module.__dict__.pop(key, None)
    return model


def full_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with each ``DTensor`` shard gathered whole, on the CPU (a collective: every rank calls it)."""
    from torch.distributed.tensor import DTensor

    return {k: (v.full_tensor() if isinstance(v, DTensor) else v).cpu() for k, v in state.items()}


def like(param: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``value`` (a whole tensor every rank holds) in ``param``'s layout: this rank's shard when ``param`` is a
    ``DTensor`` (no communication), ``value`` itself otherwise."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if isinstance(param, DTensor) and not isinstance(value, DTensor):
        return distribute_tensor(value.to(param.device), param.device_mesh, param.placements, src_data_rank=None)
    return value


def is_sharded(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` is a ``DTensor`` (a parameter FSDP sharded)."""
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


def sum_scalars(values: list[float], device: torch.device) -> list[float]:
    """The sum over ranks of a few numbers (a step's loss and tokens), in one message."""
    import torch.distributed as dist

    flat = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(flat)
    return flat.tolist()
