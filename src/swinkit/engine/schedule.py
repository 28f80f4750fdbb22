"""Per-step learning rate: linear warm-up, then cosine decay to a floor."""

from __future__ import annotations

import math

import torch


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
