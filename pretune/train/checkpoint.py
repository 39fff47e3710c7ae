"""Atomic checkpoints with everything exact resume needs.

A checkpoint is a folder ``checkpoints/step-00000123`` holding the trainable
weights (safetensors), optimizer, scheduler and (fp16) gradient-scaler state, RNG
states and the training position. It is written under a temporary name and
renamed into place, so a kill at any moment leaves only whole checkpoints. Tensors
are stored on the CPU, so a checkpoint written on one device resumes on another.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .. import files
from ..errors import ResumeError
from ..files import atomic_path
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
            params[n].copy_(t)


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
    position. The tensors move to the device the model is on."""
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
