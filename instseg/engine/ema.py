"""Exponential moving average (EMA) of a model's weights.

Short, small-batch trainings (a few hundred CPU steps of one image) leave the raw weights
noisy; the average of the last ~``1 / (1 - decay)`` steps predicts better. The decay of
update ``t`` (0-based) is ``min(decay, (1 + t) / (10 + t))``: early updates follow the raw
weights closely (the first weights are random), later ones average over more steps. The
average is a pure function of the raw weights' history and the step count, so exact resume
needs only the averaged tensors (saved as the checkpoint's ``model``) and the step.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["ModelEMA"]


class ModelEMA:
    """An evaluation-mode copy of ``model`` whose float tensors track the raw weights' EMA.

    Integer buffers (counters) are copied, not averaged. ``module`` is what evaluation and
    checkpoints use; ``update(model, step)`` runs after each optimizer step.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    def decay_at(self, step: int) -> float:
        """Decay of the update made after optimizer step ``step`` (1-based count of steps)."""
        t = max(0, step - 1)
        return min(self.decay, (1 + t) / (10 + t))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = self.decay_at(step)
        avg, raw = [], []
        for e, r in zip(self.module.state_dict().values(), model.state_dict().values()):
            if e.is_floating_point():
                avg.append(e)
                raw.append(r.detach())
            else:
                e.copy_(r)
        if avg:
            torch._foreach_lerp_(avg, raw, 1.0 - d)  # e += (1 - d) * (r - e)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)
