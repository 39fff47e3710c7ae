"""An exponential moving average of the trained weights (Polyak averaging).

After every optimizer step ``avg = d * avg + (1 - d) * weights``, with the decay
warmed up as ``d_t = min(decay, (1 + t) / (10 + t))`` so the average does not
drag the pretrained weights along at the start. Evaluations, the best-weights
snapshot and the saved model use the average; the optimizer keeps training the
raw weights, whose trajectory the average does not change.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from ..errors import ConfigError, ResumeError


class WeightAverage:
    """The running average of ``model``'s trainable parameters, kept in fp32."""

    def __init__(self, model: nn.Module, decay: float):
        if not 0 < decay < 1:
            raise ConfigError(f"train.ema_decay: must be in (0, 1) to average (0 disables), got {decay!r}")
        self.decay = decay
        trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.names = [n for n, _ in trained]
        self.params = [p for _, p in trained]
        self.shadow = [p.detach().float().clone() for p in self.params]

    def decay_at(self, step: int) -> float:
        return min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Fold in the weights after optimizer step ``step`` (1-based)."""
        torch._foreach_lerp_(self.shadow, [p.detach().float() for p in self.params], 1.0 - self.decay_at(step))

    @torch.no_grad()
    def copy_to_model(self) -> None:
        _copy(self.params, self.shadow)

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The model holds the average inside the block and its own weights again after it."""
        raw = [p.detach().clone() for p in self.params]
        self.copy_to_model()
        try:
            yield
        finally:
            with torch.no_grad():
                _copy(self.params, raw)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {n: s.contiguous() for n, s in zip(self.names, self.shadow)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if sorted(state) != sorted(self.names):
            raise ResumeError("the checkpoint's weight average covers other parameters than this model trains; "
                              "resume with the config the run started with, or start afresh without --resume")
        with torch.no_grad():
            _copy(self.shadow, [state[n] for n in self.names])


def _copy(dst: list[torch.Tensor], src: list[torch.Tensor]) -> None:
    """``dst[i].copy_(src[i])``: in one kernel, or one by one for FSDP's DTensor shards (which have no
    ``_foreach_copy_``)."""
    from torch.distributed.tensor import DTensor

    if any(isinstance(t, DTensor) for t in dst):
        for d, s in zip(dst, src):
            d.copy_(s)
    else:
        torch._foreach_copy_(dst, src)
