"""The canonical Swin model: a trunk shared by the classifier, the SimMIM encoder and the multi-scale backbone.

Parameter names follow the official microsoft/Swin-Transformer code, so the official layout *is* the
canonical state dict and every other layout maps onto it (see ``swinkit.layouts``). The trunk, the encoder
and the backbone take the trunk's ``SwinConfig``; the classifier takes a ``ClassifierConfig`` composing it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from swinkit.layers.blocks import PatchEmbed, PatchMerging, SwinBlock, SwinStage
from swinkit.presets import SwinConfig

ProblemType = Literal["single_label_classification", "multi_label_classification"]
PROBLEM_TYPES: tuple[str, ...] = ("single_label_classification", "multi_label_classification")


@dataclass(frozen=True)
class ClassifierConfig:
    """A Swin image classifier: the trunk and its head (transformers' ``Swin(v2)ForImageClassification``)."""

    trunk: SwinConfig = field(default_factory=SwinConfig)  # the architecture before the pooled head
    num_classes: int = 1000  # classifier outputs; 0 for a headless model (it returns pooled features)
    problem_type: ProblemType = "single_label_classification"  # softmax (single) or sigmoid (multi-label)
    labels: tuple[str, ...] | None = None  # class names in output order; None means "LABEL_i"

    def __post_init__(self) -> None:
        if self.num_classes < 0:
            raise ValueError(f"num_classes must be 0 (no head) or more, got {self.num_classes}")
        if self.problem_type not in PROBLEM_TYPES:
            raise ValueError(
                f"problem_type must be one of {', '.join(PROBLEM_TYPES)}, got {self.problem_type!r}"
            )
        if self.labels is not None and len(self.labels) != self.num_classes:
            raise ValueError(f"{len(self.labels)} labels given for {self.num_classes} classes")

    @property
    def in_channels(self) -> int:
        """Channels of the input image."""
        return self.trunk.in_channels

    @property
    def label_names(self) -> tuple[str, ...]:
        return (
            self.labels if self.labels is not None else tuple(f"LABEL_{i}" for i in range(self.num_classes))
        )

    def replace(self, **changes: Any) -> ClassifierConfig:
        """A copy with some fields changed (validated again); new ``labels`` set ``num_classes``, and a new
        class count drops labels that no longer fit."""
        if changes.get("labels") is not None:
            changes["labels"] = tuple(changes["labels"])
            changes.setdefault("num_classes", len(changes["labels"]))
        elif (
            "num_classes" in changes
            and self.labels is not None
            and changes["num_classes"] != self.num_classes
        ):
            changes.setdefault("labels", None)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The trunk's fields and the head's in one flat mapping (as transformers' configs hold them)."""
        labels = list(self.labels) if self.labels is not None else None
        head = {"num_classes": self.num_classes, "problem_type": self.problem_type, "labels": labels}
        return {**self.trunk.to_dict(), **head}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClassifierConfig:
        """From :meth:`to_dict`'s flat mapping (head fields absent: the defaults)."""
        head = {k: data[k] for k in ("num_classes", "problem_type", "labels") if k in data}
        if head.get("labels") is not None:
            head["labels"] = tuple(head["labels"])
        trunk = SwinConfig.from_dict({k: v for k, v in data.items() if k not in head})
        return cls(trunk, **head)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class SwinTrunk(nn.Module):
    """Patch embedding, optional absolute position embedding and the stages.

    ``always_shift`` selects the detection-backbone convention (official Swin detection code, OpenMMLab,
    transformers' ``SwinBackbone``): every stage keeps the configured window and every odd block is
    shifted, whatever the map size. Otherwise the classification rule holds: windows clamped to the
    native stage maps, and no shift along an axis that is a single window.
    """

    def __init__(self, config: SwinConfig, always_shift: bool = False) -> None:
        super().__init__()
        self.config = config
        c = config
        self.patch_embed = PatchEmbed(
            c.patch_size, c.in_channels, c.embed_dim, c.patch_norm, c.layer_norm_eps, c.patch_padding
        )
        grid = c.image_size // c.patch_size
        self.absolute_pos_embed = (
            nn.Parameter(torch.zeros(1, grid * grid, c.embed_dim)) if c.absolute_pos_embed else None
        )
        self.mask_token: nn.Parameter | None = None  # set by masked-image-modeling models
        self.pos_drop = nn.Dropout(c.drop_rate)
        rates = torch.linspace(
            0, c.drop_path_rate, sum(c.depths), device="cpu"
        ).tolist()  # also under a meta default device
        self.layers = nn.ModuleList()
        for i, (depth, heads, dim) in enumerate(zip(c.depths, c.num_heads, c.stage_dims)):
            start = sum(c.depths[:i])
            window = c.window_size if always_shift else c.stage_window_sizes[i]
            shift = window // 2 if always_shift else c.stage_shift_sizes[i]
            blocks = [
                SwinBlock(
                    dim,
                    heads,
                    window,
                    0 if j % 2 == 0 else shift,
                    version=c.version,
                    mlp_ratio=c.mlp_ratio,
                    qkv_bias=c.qkv_bias,
                    drop=c.drop_rate,
                    attn_drop=c.attn_drop_rate,
                    drop_path_rate=rates[start + j],
                    pretrained_window_size=c.pretrained_window_sizes[i],
                    eps=c.layer_norm_eps,
                    always_shift=always_shift,
                    shift_rule=c.shift_rule,
                )
                for j in range(depth)
            ]
            merge = PatchMerging(dim, c.version, c.layer_norm_eps) if i < c.num_stages - 1 else None
            self.layers.append(SwinStage(blocks, merge))

    @property
    def trunk_config(self) -> SwinConfig:
        """The trunk's architecture (``config`` itself here; a task model's ``config`` composes it)."""
        return self.config

    def init_weights(self) -> None:
        """The official initialisation (truncated normal 0.02; v2 res-post-norms start at zero)."""
        self.apply(_init_weights)
        if self.absolute_pos_embed is not None:
            nn.init.trunc_normal_(self.absolute_pos_embed, std=0.02)
        for module in self.modules():
            if isinstance(module, SwinBlock):
                if module.version == 1:
                    nn.init.trunc_normal_(module.attn.relative_position_bias_table, std=0.02)
                else:
                    for norm in (module.norm1, module.norm2):
                        nn.init.zeros_(norm.weight)
                        nn.init.zeros_(norm.bias)

    @property
    def num_layers(self) -> int:
        """Layer ids run 0 (stem) .. ``sum(depths) + 1`` (whatever follows the stages: norms, heads)."""
        return sum(self.trunk_config.depths) + 2

    def layer_id(self, name: str) -> int:
        """Depth of parameter ``name`` (relative to this trunk) for layer-wise learning-rate decay.

        0: patch embedding, absolute position embedding and mask token; 1..L: the blocks in order, a stage's
        patch merging sharing its last block's id (the official Swin/SimMIM rule); L + 1: everything else.
        """
        depths = self.trunk_config.depths
        if name.startswith(("patch_embed.", "absolute_pos_embed", "mask_token")):
            return 0
        if name.startswith("layers."):
            parts = name.split(".")
            stage = int(parts[1])
            if parts[2] == "downsample":
                return sum(depths[: stage + 1])
            return sum(depths[:stage]) + int(parts[3]) + 1
        return sum(depths) + 1

    def stage_prefixes(self, stages: int) -> tuple[str, ...]:
        """Name prefixes (relative to this trunk) of the stem and the first ``stages`` stages, for freezing."""
        num_stages = self.trunk_config.num_stages
        if not 0 <= stages <= num_stages:
            raise ValueError(f"cannot freeze {stages} stages: the model has {num_stages}")
        stem = ("patch_embed.", "absolute_pos_embed") if stages else ()
        return stem + tuple(f"layers.{i}." for i in range(stages))

    def no_weight_decay(self) -> set[str]:
        """Parameter names (relative to this module) conventionally excluded from weight decay."""
        return no_weight_decay_names(self)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for stage in self.layers:
            stage.grad_checkpointing = enable

    def embed(self, pixel_values: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C_in, H, W) image to (B, H/p, W/p, C) tokens, with position embedding and optional masking.

        mask: (B, H/p, W/p) with 1 where the token is replaced by ``mask_token`` (SimMIM).
        """
        x = self.patch_embed(pixel_values)
        if mask is not None:
            if self.mask_token is None:
                raise ValueError("this model has no mask token; masking needs a masked-image-modeling model")
            token = self.mask_token.to(x.dtype)  # (1, 1, C)
            w = mask.unsqueeze(-1).to(x.dtype)
            x = x * (1 - w) + token.view(1, 1, 1, -1) * w
        if self.absolute_pos_embed is not None:
            x = x + self.resized_pos_embed(x.shape[1], x.shape[2]).to(x.dtype)
        return self.pos_drop(x)

    def resized_pos_embed(self, height: int, width: int) -> torch.Tensor:
        """The absolute position embedding as a (1, H, W, C) map, bicubically resized to the token grid."""
        grid = self.trunk_config.image_size // self.trunk_config.patch_size
        pos = self.absolute_pos_embed.view(1, grid, grid, -1)
        if not torch.jit.is_tracing() and (height, width) == (
            grid,
            grid,
        ):  # traced: resized to the traced size
            return pos
        pos = F.interpolate(
            pos.permute(0, 3, 1, 2), size=(height, width), mode="bicubic", align_corners=False
        )
        return pos.permute(0, 2, 3, 1)  # (1, H, W, C)

    def forward_stages(
        self, pixel_values: torch.Tensor, mask: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        """Each stage's output before patch merging, channels-last: [(B, H/4, W/4, C), (B, H/8, W/8, 2C), ...]."""
        x = self.embed(pixel_values, mask)
        outputs = []
        for stage in self.layers:
            before, x = stage(x)
            outputs.append(before)
        return outputs


class SwinEncoder(SwinTrunk):
    """The trunk and its final LayerNorm: (B, 3, H, W) pixels to the normalised last-stage map (the SimMIM
    encoder, and the classifier before its pooled head)."""

    def __init__(self, config: SwinConfig) -> None:
        super().__init__(config)
        self.norm = nn.LayerNorm(config.num_features, eps=config.layer_norm_eps)

    def forward_features(self, pixel_values: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 3, H, W) pixels (and an optional (B, H/p, W/p) token mask, see ``embed``) to the normalised
        last-stage map (B, H/32, W/32, C)."""
        x = self.embed(pixel_values, mask)
        for stage in self.layers:
            _, x = stage(x)
        return self.norm(x)


class SwinTransformer(SwinEncoder):
    """Swin image classifier: calling it on (B, 3, H, W) pixels returns (B, num_classes) logits.

    ``config`` is a :class:`ClassifierConfig` (the trunk in ``config.trunk``). With ``num_classes=0`` it has
    no head and returns the (B, C) pooled features.
    """

    def __init__(self, config: ClassifierConfig) -> None:
        if not isinstance(config, ClassifierConfig):
            raise TypeError(
                f"a classifier is built from a ClassifierConfig(trunk, num_classes, ...), not {type(config).__name__}"
            )
        super().__init__(config.trunk)
        self.config = config
        self.head = (
            nn.Linear(config.trunk.num_features, config.num_classes) if config.num_classes > 0 else None
        )

    @property
    def trunk_config(self) -> SwinConfig:
        return self.config.trunk

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def reset_classifier(self, num_classes: int, labels: Sequence[str] | None = None) -> None:
        """Replace the head with a freshly initialised one for ``num_classes`` outputs."""
        self.config = self.config.replace(num_classes=num_classes, labels=tuple(labels) if labels else None)
        self.head = nn.Linear(self.trunk_config.num_features, num_classes) if num_classes > 0 else None
        if self.head is not None:
            _init_weights(self.head)
            self.head.to(self.norm.weight.device)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Average-pool (B, h, w, C) features and apply the head."""
        pooled = features.mean(dim=(1, 2))  # (B, C)
        if pre_logits or self.head is None:
            return pooled
        return self.head(pooled)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(pixel_values))


class SwinBackbone(SwinTrunk):
    """Multi-scale feature extractor: (B, 3, H, W) to a list of NCHW maps for ``out_indices``.

    Each returned stage has its own LayerNorm ``norm{i}`` (the OpenMMLab / detection convention), unless
    ``out_norms=False`` (transformers' ``Swinv2Backbone`` returns the raw stage outputs).
    ``always_shift`` defaults to True for v1 (the detection convention, as transformers' ``SwinBackbone``)
    and False for v2 (as transformers' ``Swinv2Backbone``); see :class:`SwinTrunk`.
    """

    def __init__(
        self,
        config: SwinConfig,
        out_indices: Sequence[int] | None = None,
        always_shift: bool | None = None,
        out_norms: bool = True,
    ) -> None:
        super().__init__(config, always_shift=config.version == 1 if always_shift is None else always_shift)
        if out_indices is None:  # every stage
            out_indices = range(config.num_stages)
        out_indices = tuple(i if i >= 0 else config.num_stages + i for i in out_indices)
        if not out_indices or any(not 0 <= i < config.num_stages for i in out_indices):
            raise ValueError(f"out_indices must name stages 0..{config.num_stages - 1}, got {out_indices}")
        self.out_indices = out_indices
        self.out_norms = out_norms
        if out_norms:
            for i in out_indices:
                self.add_module(f"norm{i}", nn.LayerNorm(config.stage_dims[i], eps=config.layer_norm_eps))

    @property
    def out_channels(self) -> list[int]:
        return [self.config.stage_dims[i] for i in self.out_indices]

    @property
    def strides(self) -> list[int]:
        return [self.config.patch_size * 2**i for i in self.out_indices]

    def forward(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        x = self.embed(pixel_values)
        features = []
        last = max(self.out_indices)
        for i, stage in enumerate(self.layers[: last + 1]):
            before, x = stage(x)
            if i in self.out_indices:
                if self.out_norms:
                    before = getattr(self, f"norm{i}")(before)
                features.append(before.permute(0, 3, 1, 2).contiguous())  # (B, C, H, W)
        return features


def no_weight_decay_names(model: nn.Module) -> set[str]:
    """Norms, biases, relative-position tables, CPB MLPs, logit scales and absolute position embeddings."""
    skip = ("relative_position_bias_table", "absolute_pos_embed", "logit_scale", "cpb_mlp", "mask_token")
    names = set()
    for name, param in model.named_parameters():
        if param.ndim <= 1 or any(s in name for s in skip) or name.endswith(".bias"):
            names.add(name)
    return names
