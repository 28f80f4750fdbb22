"""The optimiser recipe: AdamW over parameter groups with no decay on norms, biases, position tables and
embeddings, layer-wise learning-rate decay by block depth, and frozen early stages."""

from __future__ import annotations

import logging

import torch
from torch import nn

from swinkit.engine.config import OptimConfig

log = logging.getLogger(__name__)


def freeze_stages(model: nn.Module, stages: int) -> int:
    """Freeze the patch embedding (and absolute position embedding) and the first ``stages`` stages.

    Returns the number of parameters frozen. ``stages`` may not exceed the model's stage count.
    """
    if stages <= 0:
        return 0
    depths = model.config.depths
    if stages > len(depths):
        raise ValueError(f"freeze_stages={stages} but the model has {len(depths)} stages")
    prefixes = ("patch_embed.", "absolute_pos_embed") + tuple(f"layers.{i}." for i in range(stages))
    frozen = 0
    for name, param in model.named_parameters():
        if name.startswith(prefixes):
            param.requires_grad_(False)
            frozen += param.numel()
    return frozen


def layer_id(name: str, depths: tuple[int, ...]) -> int:
    """Depth of a parameter for layer-wise lr decay: 0 embedding, 1..L blocks, L + 1 final norm and head.

    A stage's patch merging shares the id of the stage's last block (the official SimMIM/Swin rule).
    """
    if name.startswith(("patch_embed", "absolute_pos_embed", "mask_token")):
        return 0
    if name.startswith("layers."):
        stage = int(name.split(".")[1])
        if ".downsample." in name:
            return sum(depths[: stage + 1])
        block = int(name.split(".")[3])
        return sum(depths[:stage]) + block + 1
    return sum(depths) + 1


def param_groups(model: nn.Module, weight_decay: float, layer_decay: float = 1.0) -> list[dict]:
    """Trainable parameters grouped by (decay or not, layer); each group carries its ``lr_scale``."""
    skip = model.no_weight_decay() if hasattr(model, "no_weight_decay") else set()
    depths = model.config.depths
    num_layers = sum(depths) + 1
    groups: dict[tuple[bool, int], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        no_decay = name in skip
        depth = layer_id(name, depths) if layer_decay != 1.0 else num_layers
        key = (no_decay, depth)
        if key not in groups:
            groups[key] = {
                "params": [],
                "weight_decay": 0.0 if no_decay else weight_decay,
                "lr_scale": layer_decay ** (num_layers - depth),
            }
        groups[key]["params"].append(param)
    return [groups[key] for key in sorted(groups)]


def build_optimizer(model: nn.Module, config: OptimConfig) -> torch.optim.AdamW:
    """AdamW with the recipe's groups; the schedule sets each group's lr to ``lr(step) * lr_scale``."""
    groups = param_groups(model, config.weight_decay, config.layer_decay)
    if not groups:
        raise ValueError("no trainable parameters (every stage frozen?)")
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, eps=config.eps)
