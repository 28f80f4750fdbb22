"""Exponential moving average of a model's weights (evaluated and saved instead of the raw weights)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEma:
    """``ema = d * ema + (1 - d) * weights`` after each optimizer step, with ``d = min(decay, (1+n)/(10+n))``.

    The warm-up of ``d`` lets short fine-tuning runs benefit; integer buffers are copied as they are.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(model).eval()
        for param in self.module.parameters():
            param.requires_grad_(False)
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        current = model.state_dict()
        frozen = {name for name, param in model.named_parameters() if not param.requires_grad}
        for name, value in self.module.state_dict().items():
            source = current[name].detach()
            if value.dtype.is_floating_point and name not in frozen:
                value.mul_(d).add_(source.to(value.dtype), alpha=1 - d)
            else:
                value.copy_(source)

    def state_dict(self) -> dict:
        return {"weights": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["weights"])
        self.updates = int(state["updates"])
