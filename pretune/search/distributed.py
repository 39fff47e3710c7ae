"""Several processes per trial (``torchrun``): rank 0 runs the study, every rank trains.

Rank 0 samples a trial's parameters and broadcasts them, so all ranks train the
same config (the Trainer's search samples on each rank and drifts apart). Prune
and stop decisions are broadcast the same way, so all ranks leave a trial at the
same evaluation. Uses the gloo backend when no process group exists yet.
"""

from __future__ import annotations

from typing import Any

from ..train.parallel import rank, world_size

__all__ = ["agree", "finish", "next_trial", "rank", "release_followers", "share_trial", "world_size"]


_OWNED = []  # the process group we created, to destroy on the way out


def _broadcast(obj: Any) -> Any:
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
        _OWNED.append(True)
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


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
    """Destroy the process group we created; left alive, gloo's threads abort the process at exit."""
    if _OWNED:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
        _OWNED.clear()
