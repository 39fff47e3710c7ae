"""Atomic checkpoints with everything exact resume needs.

A checkpoint is a folder ``checkpoints/step-00000123`` holding the trainable
weights (safetensors), optimizer, scheduler and (fp16) gradient-scaler state, RNG
states and the training position. It is written under a temporary name and
renamed into place, so a kill at any moment leaves only whole checkpoints. Tensors
are stored on the CPU, so a checkpoint written on one device resumes on another.

With ``train.distributed=fsdp`` (``save_sharded_checkpoint``) every rank takes part: the trained weights, the
optimizer state and the weight average go to ``shards/`` through ``torch.distributed.checkpoint`` (each rank
writes its own shard file; rank 0 the index), each rank's random generators to ``rng-R.pt``, and rank 0 writes
the scheduler and the position, all in the one temporary folder that rank 0 renames into place once every rank
is done. Such a checkpoint resumes at any world size, a single process included (``load_checkpoint`` reads
either kind); exact resume is promised at the same one.
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .. import files
from ..errors import ResumeError
from ..files import atomic_path
from . import distributed
from .average import WeightAverage


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    missing = [n for n in state if n not in params]
    if missing:
        raise ResumeError(f"the checkpoint holds parameters this model lacks ({', '.join(missing[:3])}): it was "
                          "written by a run with another model or method; resume with that run's config, or "
                          "start afresh without --resume")
    with torch.no_grad():
        for n, t in state.items():
            params[n].copy_(distributed.like(params[n], t))  # a whole tensor into a sharded parameter


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    # On another device (or another GPU count) the CUDA generators start from the seed: exact resume is
    # promised on the same device only.
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    random.setstate(tuple(v if not isinstance(v, list) else tuple(v) for v in state["python"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))


def save_checkpoint(ckpt_dir: Path, step: int, model: nn.Module, optimizer, scheduler,
                    position: dict[str, Any], keep: int, average: WeightAverage | None = None,
                    scaler=None) -> Path:
    """Write ``ckpt_dir/step-NNNNNNNN`` atomically, then delete all but the newest ``keep``."""
    final = files.checkpoint_dir(ckpt_dir, step)
    with atomic_path(final) as tmp:
        tmp.mkdir()
        save_file(_on_cpu(trainable_state(model)), str(tmp / files.CKPT_TRAINABLE))
        if average is not None:
            save_file(_on_cpu(average.state_dict()), str(tmp / files.CKPT_AVERAGE))
        state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state()}
        if scaler is not None:
            state["scaler"] = scaler.state_dict()
        torch.save(state, tmp / files.CKPT_STATE)
        (tmp / files.CKPT_POSITION).write_text(json.dumps(position, indent=2))
    for old in list_checkpoints(ckpt_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def save_sharded_checkpoint(ckpt_dir: Path, step: int, model: nn.Module, optimizer, scheduler,
                            position: dict[str, Any], keep: int, average: WeightAverage | None = None,
                            scaler=None) -> Path:
    """Write ``ckpt_dir/step-NNNNNNNN`` atomically from every rank (each calls this), then delete all but the
    newest ``keep``. The model may be FSDP-sharded or plain (one process)."""
    import torch.distributed.checkpoint as dcp

    rank, writer = distributed.rank(), distributed.is_writer()
    final = files.checkpoint_dir(ckpt_dir, step)
    with atomic_path(final) if writer else contextlib.nullcontext(None) as tmp:
        if writer:
            tmp.mkdir()
        tmp = distributed.broadcast_object(tmp) if _grouped() else tmp  # rank 0's temporary folder
        with _quiet_alone():
            dcp.save(_sharded_state(model, optimizer, average), checkpoint_id=tmp / files.CKPT_SHARDS,
                     no_dist=not _grouped())
        torch.save({"rng": rng_state()}, tmp / files.checkpoint_rng(rank))
        distributed.barrier()  # every rank's files are written before rank 0 renames the folder
        if writer:
            state = {"scheduler": scheduler.state_dict()}
            if scaler is not None:
                state["scaler"] = scaler.state_dict()
            torch.save(state, tmp / files.CKPT_STATE)
            (tmp / files.CKPT_POSITION).write_text(json.dumps(position, indent=2))
    if writer:
        for old in list_checkpoints(ckpt_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _grouped() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


@contextlib.contextmanager
def _quiet_alone():
    """Without DCP's warning that a process without a process group saves or loads alone: one process is a
    supported case here (train.distributed=fsdp outside torchrun), not a mistake."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
        yield


def _sharded_state(model: nn.Module, optimizer, average: WeightAverage | None) -> dict[str, Any]:
    """The state ``torch.distributed.checkpoint`` saves and loads in place: trained weights and optimizer by
    parameter name (frozen weights come from the model folder), and the weight average."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    weights, optim = get_state_dict(model, optimizer, options=StateDictOptions(ignore_frozen_params=True))
    state = {"model": weights, "optimizer": optim}
    if average is not None:
        state["average"] = average.state_dict()
    return state


def _load_sharded(path: Path, model: nn.Module, optimizer, average: WeightAverage | None) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    state = _sharded_state(model, optimizer, average)
    stored = dcp.FileSystemReader(str(path / files.CKPT_SHARDS)).read_metadata().state_dict_metadata
    if average is not None and not any(k.startswith("average.") for k in stored):
        raise ResumeError(f"{path} holds no weight average because the run started with train.ema_decay=0: "
                          "resume with that, or start afresh without --resume")
    missing = [n for n in state["model"] if f"model.{n}" not in stored]
    if missing:
        raise ResumeError(f"the checkpoint {path} lacks parameters this model trains ({', '.join(missing[:3])}): "
                          "it was written by a run with another model or method; resume with that run's config, "
                          "or start afresh without --resume")
    with _quiet_alone():
        dcp.load(state, checkpoint_id=path / files.CKPT_SHARDS, no_dist=not _grouped())
    # strict=False: the frozen weights are not in the checkpoint (the check above covers the trained ones).
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"],
                   options=StateDictOptions(ignore_frozen_params=True, strict=False))
    if average is not None:
        average.load_state_dict(state["average"])


def list_checkpoints(ckpt_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary folders of a killed write are ignored)."""
    if not ckpt_dir.is_dir():
        return []
    done = [p for p in ckpt_dir.glob(files.CKPT_GLOB) if (p / files.CKPT_POSITION).is_file()]
    return sorted(done, key=lambda p: int(p.name.split("-")[1]))


def _on_cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.cpu() for k, v in state.items()}


def load_checkpoint(path: Path, model: nn.Module, optimizer, scheduler,
                    average: WeightAverage | None = None, scaler=None) -> dict[str, Any]:
    """Restore weights, optimizer, scheduler, gradient scaler, RNG and the weight average; return the saved
    position. The tensors move to the device the model is on.

    A sharded checkpoint (``save_sharded_checkpoint``) is read by every rank, into a sharded or a plain model;
    each rank takes its own random generators when the checkpoint has them (the same world size), else the
    generators stay as seeded."""
    if (path / files.CKPT_SHARDS).is_dir():
        _load_sharded(path, model, optimizer, average)
        state = torch.load(path / files.CKPT_STATE, weights_only=True, map_location="cpu")
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        rng = path / files.checkpoint_rng(distributed.rank())
        if rng.is_file():
            set_rng_state(torch.load(rng, weights_only=True)["rng"])
        return json.loads((path / files.CKPT_POSITION).read_text())
    if any(distributed.is_sharded(p) for p in model.parameters()):
        raise ResumeError(f"{path} was written without train.distributed=fsdp (whole weights, one optimizer "
                          "state): resume it with train.distributed=ddp, or start afresh without --resume")
    load_trainable(model, load_file(str(path / files.CKPT_TRAINABLE)))
    if average is not None:
        if not (path / files.CKPT_AVERAGE).is_file():
            raise ResumeError(f"{path} holds no weight average because the run started with "
                               "train.ema_decay=0: resume with that, or start afresh without --resume")
        average.load_state_dict(load_file(str(path / files.CKPT_AVERAGE)))
    # weights_only: a checkpoint holds tensors and plain values, never code.
    state = torch.load(path / files.CKPT_STATE, weights_only=True, map_location="cpu")
    optimizer.load_state_dict(state["optimizer"])  # moves each state tensor to its parameter's device
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and "scaler" in state:
        scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    return json.loads((path / files.CKPT_POSITION).read_text())
