"""Optimizer, learning-rate schedule and time-budget planning (plain functions).

Schedule: linear warm-up from ``warmup_factor * lr`` over ``warmup`` steps, then either
cosine decay to ``min_factor * lr`` at ``total`` steps, or step decay (x0.1 at 2/3 and 8/9 of
``total``, Detectron's 3x-schedule shape). The learning rate of step ``s`` is a pure function
of ``(s, total)``: exact resume needs only the step counter and the plan.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["DEFAULT_LR", "build_optimizer", "lr_factor", "scale_lr", "steps_for_budget"]

#: base learning rate for a batch of 8 images; scaled with the batch size by :func:`scale_lr`
DEFAULT_LR = {"adamw": 2e-4, "sgd": 0.02}
DEFAULT_WEIGHT_DECAY = {"adamw": 0.05, "sgd": 1e-4}


def build_optimizer(
    model: nn.Module, name: str, lr: float, weight_decay: float | None = None, momentum: float = 0.9
) -> torch.optim.Optimizer:
    """AdamW or SGD (momentum) over trainable parameters; no weight decay on biases and norms."""
    if name not in DEFAULT_LR:
        raise ValueError(f"unknown optimizer '{name}' (known: {', '.join(DEFAULT_LR)})")
    wd = DEFAULT_WEIGHT_DECAY[name] if weight_decay is None else weight_decay
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for _, p in sorted(model.named_parameters()):
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]
    if name == "adamw":  # fused: one kernel for all tensors (CPU: ~4 ms instead of ~11 ms a
        # step for the light SOLOv2's 231 tensors, bench/README.md)
        fused = all(p.device.type in ("cpu", "cuda") for p in decay + no_decay)
        return torch.optim.AdamW(groups, lr=lr, fused=fused or None)
    return torch.optim.SGD(groups, lr=lr, momentum=momentum)


def scale_lr(lr: float, optimizer: str, batch: int, ref_batch: int) -> float:
    """``lr`` tuned for ``ref_batch`` images -> for ``batch``: linear for SGD (Goyal et al.,
    2017), square root for AdamW (its update size does not grow with the gradient's, only its
    noise falls; linear scaling saturates e.g. SOLOv2's mask logits at batch 8)."""
    ratio = batch / max(1, ref_batch)
    return lr * (ratio if optimizer == "sgd" else math.sqrt(ratio))


def lr_factor(
    step: int,
    total: int,
    warmup: int,
    schedule: str = "cosine",
    warmup_factor: float = 0.001,
    min_factor: float = 0.01,
) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based) of ``total``."""
    if step < warmup:
        a = step / max(1, warmup)
        return warmup_factor * (1 - a) + a
    if schedule == "cosine":
        t = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * t))
    if schedule == "step":
        return 0.1 ** sum(step >= m for m in (round(total * 2 / 3), round(total * 8 / 9)))
    if schedule == "constant":
        return 1.0
    raise ValueError(f"unknown schedule '{schedule}' (known: cosine, step, constant)")


def steps_for_budget(
    step: int, elapsed_s: float, budget_s: float, step_s: float, reserve_s: float = 0.0
) -> int:
    """Total steps so that training ends at the budget: ``step + (remaining - reserve) / step time``.

    ``reserve_s`` is time kept for what still follows (evaluations, final checkpoint).
    Never less than ``step + 1`` (the step in flight ends the run).
    """
    remaining = budget_s - elapsed_s - reserve_s
    return step + max(1, int(remaining / max(step_s, 1e-6)))


class BudgetPlan:
    """Schedule length: explicit (``total`` known), or planned from a wall-clock budget.

    Budget-only runs time ``MEASURE_STEPS`` steps after the first (fewer once they took 2% of
    the budget), then set ``total`` with :func:`steps_for_budget`, reserving time for the
    evaluations to come: a rough guess (at most 30% of the time left), then the measured
    evaluation time (the loop evaluates right after planning, and every evaluation
    re-plans). ``budget_s`` is also a hard stop for explicit schedules.
    """

    MEASURE_STEPS = 5
    UNPLANNED = 10**9

    def __init__(
        self, explicit: int | None, budget_s: float, eval_images: int, batch_size: int
    ) -> None:
        self.total = explicit or self.UNPLANNED
        self.planned = explicit is not None
        self.adaptive = explicit is None
        self.budget_s = budget_s
        self.eval_images, self.batch_size = eval_images, batch_size
        self.start_step, self.t_first = 0, 0.0
        self.eval_s, self.n_evals = 0.0, 0

    def after_step(self, step: int, elapsed: float) -> bool:
        """Record a finished step; True when ``total`` was just planned."""
        timed = step - self.start_step - 1
        if self.planned or timed < 0:
            return False
        if timed == 0:
            self.t_first = elapsed
            return False
        if timed >= self.MEASURE_STEPS or (
            timed >= 2 and elapsed - self.t_first > self.budget_s / 50
        ):
            step_s = (elapsed - self.t_first) / timed
            # rough guess until the first evaluation (run right after planning) is timed
            guess = 8 * self.eval_images * step_s / max(1, self.batch_size)
            reserve = min(guess, 0.3 * (self.budget_s - elapsed))
            self.total = steps_for_budget(step, elapsed, self.budget_s, step_s, reserve)
            self.planned = True
            return True
        return False

    def after_eval(self, step: int, elapsed: float, eval_s: float, interval: int) -> None:
        """Re-plan with the measured evaluation time (budget-only runs)."""
        self.eval_s, self.n_evals = self.eval_s + eval_s, self.n_evals + 1
        if self.adaptive and self.planned and step < self.total:
            # time per step since the first one (which pays warm-up costs), evaluations excluded
            step_s = (elapsed - self.t_first - self.eval_s) / max(1, step - self.start_step - 1)
            evals_left = max(1, math.ceil((self.total - step) / interval))
            reserve = eval_s * evals_left
            self.total = steps_for_budget(step, elapsed, self.budget_s, step_s, reserve)

    def refresh(self, step: int, elapsed: float, interval: int | None) -> bool:
        """Re-plan between evaluations from the mean step time so far (budget-only runs).

        Step times drift (image sizes, thermal, other load): without this the plan made from
        the first steps can end the schedule minutes early or late. ``interval`` is the
        evaluation interval (None: no evaluations). True when ``total`` changed.
        """
        if not (self.adaptive and self.planned and step < self.total):
            return False
        timed = step - self.start_step - 1
        if timed < self.MEASURE_STEPS:
            return False
        step_s = (elapsed - self.t_first - self.eval_s) / timed
        reserve = 0.0
        if interval and self.n_evals:
            reserve = self.eval_s / self.n_evals * max(1, math.ceil((self.total - step) / interval))
        total = steps_for_budget(step, elapsed, self.budget_s, step_s, reserve)
        changed, self.total = total != self.total, total
        return changed
