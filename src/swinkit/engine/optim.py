"""The optimiser recipe: AdamW over parameter groups with no decay on norms, biases, position tables and
embeddings, layer-wise learning-rate decay by block depth, and frozen early stages.

The groups come from what the model declares (timm's ``group_matcher`` idea): every Swin trunk inside the
model, at any prefix, gives its parameters' layer ids, its no-decay names and its stage prefixes.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from swinkit.engine.config import OptimConfig

log = logging.getLogger(__name__)


def trunks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The outermost submodules (``model`` itself included) that declare parameter groups, with the prefix
    of their names: ``("", model)`` for a classifier, ``("backbone.", trunk)`` inside a composite model.

    A module declares groups with ``layer_id(name)``, ``num_layers`` and ``stage_prefixes(stages)``
    (see ``swinkit.models.swin.SwinTrunk``).
    """
    found: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        if not hasattr(module, "layer_id") or not hasattr(module, "stage_prefixes"):
            continue
        prefix = f"{name}." if name else ""
        if not any(prefix.startswith(outer) for outer, _ in found):
            found.append((prefix, module))
    return found


def freeze_stages(model: nn.Module, stages: int) -> int:
    """Freeze the stem (patch and absolute position embedding) and the first ``stages`` stages of every
    trunk in ``model``, wherever it sits. Returns the number of parameters frozen."""
    if stages <= 0:
        return 0
    found = trunks(model)
    if not found:
        raise ValueError("the model declares no Swin trunk whose stages could be frozen")
    prefixes = tuple(prefix + p for prefix, trunk in found for p in trunk.stage_prefixes(stages))
    frozen = 0
    for name, param in model.named_parameters():
        if name.startswith(prefixes):
            param.requires_grad_(False)
            frozen += param.numel()
    return frozen


def layer_ids(model: nn.Module) -> tuple[dict[str, int], int]:
    """(layer id of every parameter, number of ids) for layer-wise lr decay.

    Parameters of a trunk get the trunk's ids; everything outside the trunks (heads, necks, decoders) the
    top id, so it trains at the full learning rate.
    """
    found = trunks(model)
    num_layers = max((trunk.num_layers for _, trunk in found), default=1)
    ids = {}
    for name, _ in model.named_parameters():
        owner = next(((p, t) for p, t in found if name.startswith(p)), None)
        ids[name] = owner[1].layer_id(name[len(owner[0]) :]) if owner else num_layers - 1
    return ids, num_layers


def no_weight_decay(model: nn.Module) -> set[str]:
    """Names excluded from weight decay: what each trunk declares, plus every bias and 1-D parameter."""
    names = {
        prefix + name
        for prefix, trunk in trunks(model)
        if hasattr(trunk, "no_weight_decay")
        for name in trunk.no_weight_decay()
    }
    for name, param in model.named_parameters():
        if param.ndim <= 1 or name.endswith(".bias"):
            names.add(name)
    return names


def no_decay_by_keys(model: nn.Module, keys: str) -> set[str]:
    """Names holding any of the comma-separated ``keys`` (mmengine's ``DefaultOptimWrapperConstructor``
    ``custom_keys`` with ``decay_mult=0``: a substring match; everything else, biases included, decays)."""
    wanted = [key.strip() for key in keys.split(",") if key.strip()]
    return {name for name, _ in model.named_parameters() if any(key in name for key in wanted)}


def param_groups(
    model: nn.Module, weight_decay: float, layer_decay: float = 1.0, no_decay_keys: str | None = None
) -> list[dict]:
    """Trainable parameters grouped by (decay or not, layer); each group carries its ``lr_scale``.
    ``no_decay_keys`` replaces the model's no-decay set by a name-substring rule (``no_decay_by_keys``)."""
    skip = no_weight_decay(model) if no_decay_keys is None else no_decay_by_keys(model, no_decay_keys)
    ids, num_layers = layer_ids(model)
    top = num_layers - 1
    groups: dict[tuple[bool, int], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        no_decay = name in skip
        depth = ids[name] if layer_decay != 1.0 else top
        key = (no_decay, depth)
        if key not in groups:
            groups[key] = {
                "params": [],
                "weight_decay": 0.0 if no_decay else weight_decay,
                "lr_scale": layer_decay ** (top - depth),
            }
        groups[key]["params"].append(param)
    return [groups[key] for key in sorted(groups)]


def build_optimizer(model: nn.Module, config: OptimConfig) -> torch.optim.AdamW:
    """AdamW with the recipe's groups; the schedule sets each group's lr to ``lr(step) * lr_scale``."""
    groups = param_groups(model, config.weight_decay, config.layer_decay, config.no_decay_keys)
    if not groups:
        raise ValueError("no trainable parameters (every stage frozen?)")
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, eps=config.eps)
