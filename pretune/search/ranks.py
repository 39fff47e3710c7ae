"""Several processes per trial (``torchrun``): rank 0 runs the study, every rank trains.

Rank 0 samples a trial's parameters and broadcasts them, so all ranks train the same config (the
Trainer's search samples on each rank and drifts apart). Prune and stop decisions are broadcast the same
way, so all ranks leave a trial at the same evaluation. The process group belongs to
``pretune.train.distributed``; a search holds it from its first message to ``finish()``.
"""

from __future__ import annotations

from typing import Any

from ..train import distributed
from ..train.distributed import rank, world_size

__all__ = ["agree", "finish", "next_trial", "rank", "release_followers", "share_trial", "world_size"]

_held = []  # set while this search holds the process group


def _broadcast(obj: Any) -> Any:
    if not _held:
        distributed.acquire()
        _held.append(True)
    return distributed.broadcast_object(obj)


def share_trial(values: dict[str, Any], trial_dir: str) -> dict[str, Any]:
    """Rank 0: send this trial's sampled values to the other ranks. Returns them unchanged."""
    if world_size() > 1:
        _broadcast(("trial", values, trial_dir))
    return values


def next_trial() -> tuple[dict[str, Any], str] | None:
    """Ranks > 0: wait for rank 0's next trial; ``None`` when the search is over."""
    msg = _broadcast(None)
    return None if msg[0] == "stop" else (msg[1], msg[2])


def agree(prune: bool, stop: bool) -> tuple[bool, bool]:
    """Every rank gets rank 0's decision to prune or stop the current trial."""
    if world_size() == 1:
        return prune, stop
    return tuple(_broadcast((prune, stop)))


def release_followers() -> None:
    """Rank 0: tell the other ranks the search is over."""
    if world_size() > 1 and rank() == 0:
        _broadcast(("stop",))
    finish()


def finish() -> None:
    """Let go of the process group (destroyed if nothing else holds it)."""
    if _held:
        _held.clear()
        distributed.release()
