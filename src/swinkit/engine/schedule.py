"""Per-step learning rate: linear warm-up, then cosine (or mmseg's poly, or mmdet's step) decay."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from swinkit.engine.config import ScheduleConfig, TrainConfig


class WarmupCosine:
    """Sets every optimizer group's lr to ``lr_at(step) * group["lr_scale"]``; the state is the step count."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        base_lr: float,
        total_steps: int,
        warmup_steps: int = 0,
        warmup_lr: float = 0.0,
        min_lr: float = 0.0,
    ) -> None:
        if total_steps < 1:
            raise ValueError("the schedule needs at least one step")
        self.optimizer = optimizer
        self.base_lr, self.total_steps, self.warmup_steps = (
            base_lr,
            total_steps,
            min(warmup_steps, total_steps),
        )
        self.warmup_lr, self.min_lr = warmup_lr, min_lr
        self.step_count = 0
        self._apply()

    def lr_at(self, step: int) -> float:
        """The un-scaled learning rate used for optimizer step ``step`` (0-based)."""
        if step < self.warmup_steps:
            return self.warmup_lr + (self.base_lr - self.warmup_lr) * step / self.warmup_steps
        span = max(self.total_steps - self.warmup_steps, 1)
        progress = min((step - self.warmup_steps) / span, 1.0)
        return self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1 + math.cos(math.pi * progress))

    @property
    def lr(self) -> float:
        return self.lr_at(self.step_count)

    def _apply(self) -> None:
        lr = self.lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)

    def step(self) -> None:
        """Advance to the next optimizer step (call after ``optimizer.step()``)."""
        self.step_count += 1
        self._apply()

    def state_dict(self) -> dict[str, int]:
        return {"step_count": self.step_count}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.step_count = int(state["step_count"])
        self._apply()


class WarmupPoly(WarmupCosine):
    """Linear warm-up, then polynomial decay: mmseg's ``LinearLR`` + ``PolyLR`` by iteration, as mmengine
    steps them (each scheduler spans ``end - begin - 1`` steps, so it reaches its end value on its last step).

    With W = ``warmup_steps`` and T = ``total_steps``, step t < W gets ``warmup_lr + (base_lr - warmup_lr) * t /
    (W - 1)`` (``LinearLR(start_factor=warmup_lr / base_lr, begin=0, end=W)``), and step t >= W gets ``min_lr
    + (base_lr - min_lr) * (1 - (t - W) / (T - W - 1)) ** power`` (``PolyLR(eta_min=min_lr, begin=W, end=T)``),
    which is 0 on the last step when ``min_lr`` is 0.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, *, power: float = 1.0, **schedule: float) -> None:
        self.power = power
        super().__init__(optimizer, **schedule)

    def lr_at(self, step: int) -> float:
        if step < self.warmup_steps:
            progress = step / max(self.warmup_steps - 1, 1)
            return self.warmup_lr + (self.base_lr - self.warmup_lr) * progress
        span = max(self.total_steps - self.warmup_steps - 1, 1)
        progress = min((step - self.warmup_steps) / span, 1.0)
        return self.min_lr + (self.base_lr - self.min_lr) * (1.0 - progress) ** self.power


class WarmupStep(WarmupCosine):
    """mmdet's 1x schedule as mmengine chains it: ``LinearLR(start_factor, by_epoch=False, end=W)`` times
    ``MultiStepLR(milestones, gamma, by_epoch=True)``.

    Step t gets ``base_lr * warm(t) * gamma ** (milestones <= t // steps_per_epoch)``, with ``warm(t) = f + (1 - f)
    * t / (W - 1)`` for t < W (f = ``warmup_lr / base_lr``) and 1 afterwards; a run shorter than W stays in
    the warm-up, as mmengine's.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        steps_per_epoch: int,
        milestones: tuple[int, ...],
        gamma: float,
        **schedule: float,
    ) -> None:
        self.steps_per_epoch, self.milestones, self.gamma = max(steps_per_epoch, 1), tuple(milestones), gamma
        self.linear_steps = int(
            schedule.get("warmup_steps", 0)
        )  # not cut to the run: mmengine's LinearLR end
        super().__init__(optimizer, **schedule)

    def lr_at(self, step: int) -> float:
        warm = 1.0
        if step < self.linear_steps and self.base_lr > 0:
            start = self.warmup_lr / self.base_lr
            warm = start + (1.0 - start) * step / max(self.linear_steps - 1, 1)
        epoch = step // self.steps_per_epoch
        return self.base_lr * warm * self.gamma ** sum(epoch >= m for m in self.milestones)


def run_length(schedule: ScheduleConfig, steps_per_epoch: int) -> tuple[int, int, int]:
    """(epochs, total optimizer steps, warm-up steps) of a run: ``schedule.iterations`` steps over as many
    (partly) epochs as they need, or ``schedule.epochs`` whole epochs."""
    total = schedule.iterations or steps_per_epoch * schedule.epochs
    epochs = -(-total // steps_per_epoch) if schedule.iterations else schedule.epochs
    warmup = schedule.warmup_iters
    if warmup is None:
        warmup = round(schedule.warmup_epochs * steps_per_epoch)
    return epochs, total, warmup


def build_schedule(
    optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int
) -> WarmupCosine:
    """The run's learning-rate schedule (``schedule.kind``: cosine or poly) over ``run_length``'s steps."""
    s = config.schedule
    _, total, warmup = run_length(s, steps_per_epoch)
    lr = config.optim.lr
    warmup_lr = lr * s.warmup_factor if s.warmup_factor is not None else s.warmup_lr
    common = dict(base_lr=lr, total_steps=total, warmup_steps=warmup, warmup_lr=warmup_lr, min_lr=s.min_lr)
    if s.kind == "poly":
        return WarmupPoly(optimizer, power=s.power, **common)
    if s.kind == "step":
        return WarmupStep(
            optimizer, steps_per_epoch=steps_per_epoch, milestones=s.milestones, gamma=s.gamma, **common
        )
    return WarmupCosine(optimizer, **common)
