"""SimMIM masked image modeling: a Swin v1 or v2 encoder with a mask token, a pixel-shuffle decoder, L1 loss.

The model follows microsoft/SimMIM (``models/simmim.py``) and transformers' ``Swin(v2)ForMaskedImageModeling``:
masked patch embeddings are replaced by a learnable ``mask_token``, the encoder runs as usual and ends in
its final LayerNorm, a 1x1 convolution maps the last stage's channels to ``encoder_stride**2 * in_channels``
and ``PixelShuffle(encoder_stride)`` turns that into a full-resolution reconstruction. The loss is the L1
error on the masked pixels, summed, divided by ``(number of masked pixels + 1e-5)`` and by the channels.

Return types never change with ``self.training``: ``forward(pixel_values, bool_masked_pos)`` always returns a
:class:`MaskedImageModelingOutput` (``loss`` is None when no mask is given); ``losses(...)`` returns the
named loss dict ``{"loss_mim": loss}`` a trainer sums.

Parameter names are the official SimMIM checkpoint's (``encoder.*``, ``encoder.mask_token``,
``decoder.0.*``), so the canonical MIM state dict *is* the official layout.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from swinkit import layouts
from swinkit.checkpoint_io import atomic_write_json, load_state_file, save_safetensors, save_torch
from swinkit.layouts import common, hf, official
from swinkit.loading import load_into
from swinkit.models.swin import SwinEncoder
from swinkit.presets import MIM_PRESETS, SwinConfig, get_mim_preset
from swinkit.sources import resolve_source

log = logging.getLogger(__name__)


@dataclass
class MaskedImageModelingOutput:
    """What the model computes: the reconstruction, and the masked L1 loss when a mask was given."""

    reconstruction: torch.Tensor  # (B, C_in, H, W) predicted pixels
    loss: torch.Tensor | None = None  # scalar masked L1 loss; None without a mask


def encoder_stride(config: SwinConfig) -> int:
    """Pixels per last-stage token: ``patch_size * 2**(num_stages - 1)`` (32 for the standard model)."""
    return config.patch_size * 2 ** (config.num_stages - 1)


def token_mask(bool_masked_pos: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """A (B, num_patches) or (B, h, w) patch mask as a (B, h, w) float mask over the token grid ``grid``."""
    h, w = grid
    if bool_masked_pos.ndim == 2 and bool_masked_pos.shape[1] != h * w:
        raise ValueError(
            f"bool_masked_pos has {bool_masked_pos.shape[1]} patches per image; the {h}x{w} token grid "
            f"needs {h * w}"
        )
    if bool_masked_pos.ndim == 3 and tuple(bool_masked_pos.shape[1:]) != (h, w):
        raise ValueError(f"bool_masked_pos is {tuple(bool_masked_pos.shape[1:])}; the token grid is {h}x{w}")
    if bool_masked_pos.ndim not in (2, 3):
        raise ValueError("bool_masked_pos must be (B, num_patches) or (B, h, w)")
    return bool_masked_pos.reshape(-1, h, w).float()  # (B, h, w)


def normalized_targets(pixel_values: torch.Tensor, patch_size: int) -> torch.Tensor:
    """SwinV2 SimMIM's target (``NORM_TARGET``): each pixel standardised by the mean and unbiased variance
    of its ``patch_size`` x ``patch_size`` neighbourhood (an odd size, e.g. 47), cut at the image border."""
    if patch_size % 2 != 1:
        raise ValueError(f"the target normalisation window must be odd, got {patch_size}")
    pool = dict(kernel_size=patch_size, stride=1, padding=patch_size // 2)
    mean = F.avg_pool2d(pixel_values, count_include_pad=False, **pool)  # (B, C, H, W)
    square_mean = F.avg_pool2d(pixel_values**2, count_include_pad=False, **pool)
    count = F.avg_pool2d(torch.ones_like(pixel_values), count_include_pad=True, **pool) * patch_size**2
    var = ((square_mean - mean**2) * (count / (count - 1))).clamp(min=0.0)
    return (pixel_values - mean) / (var + 1e-6) ** 0.5


def masked_l1_loss(
    pixel_values: torch.Tensor, reconstruction: torch.Tensor, mask: torch.Tensor, patch_size: int
) -> torch.Tensor:
    """SimMIM's loss: L1 on the pixels of masked patches / (masked pixels + 1e-5) / channels.

    mask: (B, h, w) over patches; it is repeated ``patch_size`` times along both axes to cover pixels.
    """
    pixel_mask = mask.repeat_interleave(patch_size, 1).repeat_interleave(patch_size, 2)  # (B, H, W)
    pixel_mask = pixel_mask.unsqueeze(1)  # (B, 1, H, W)
    error = F.l1_loss(pixel_values, reconstruction, reduction="none")  # (B, C, H, W)
    return (error * pixel_mask).sum() / (pixel_mask.sum() + 1e-5) / pixel_values.shape[1]


class SwinForMaskedImageModeling(nn.Module):
    """SimMIM on a Swin v1 or v2 encoder (``config.version``); see the module docstring."""

    def __init__(self, config: SwinConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = SwinEncoder(config)
        self.encoder.mask_token = nn.Parameter(torch.zeros(1, 1, config.embed_dim))
        stride = encoder_stride(config)
        self.encoder_stride = stride
        self.decoder = nn.Sequential(
            nn.Conv2d(config.num_features, stride**2 * config.in_channels, kernel_size=1),
            nn.PixelShuffle(stride),
        )
        # 0: the loss compares raw pixels (SimMIM v1, transformers); odd k: targets standardised over k x k
        # neighbourhoods first, as the official SwinV2 SimMIM configs (NORM_TARGET, 47)
        self.norm_target_patch = 0

    def init_weights(self) -> None:
        """The official initialisation of the encoder; the mask token as SimMIM (truncated normal 0.02)."""
        self.encoder.init_weights()
        nn.init.trunc_normal_(self.encoder.mask_token, std=0.02)

    def no_weight_decay(self) -> set[str]:
        return {"encoder." + name for name in self.encoder.no_weight_decay()}

    def encode(self, pixel_values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """(B, C_in, H, W) pixels and a (B, H/p, W/p) mask to the normalised last-stage map (B, C, h, w)."""
        x = self.encoder.forward_features(pixel_values, mask)  # (B, h, w, C)
        return x.permute(0, 3, 1, 2)  # (B, C, h, w)

    def forward(
        self, pixel_values: torch.Tensor, bool_masked_pos: torch.Tensor | None = None
    ) -> MaskedImageModelingOutput:
        """Reconstruct (B, C_in, H, W) pixels; H and W must be multiples of ``encoder_stride``.

        bool_masked_pos: (B, num_patches) or (B, H/p, W/p), true where a patch is masked (row-major order).
        """
        height, width = pixel_values.shape[-2:]
        if height % self.encoder_stride or width % self.encoder_stride:
            raise ValueError(
                f"masked image modeling needs an image size divisible by the encoder stride "
                f"{self.encoder_stride}, got {height}x{width}"
            )
        p = self.config.patch_size
        mask = None if bool_masked_pos is None else token_mask(bool_masked_pos, (height // p, width // p))
        reconstruction = self.decoder(self.encode(pixel_values, mask))  # (B, C_in, H, W)
        target = pixel_values
        if mask is not None and self.norm_target_patch:
            target = normalized_targets(pixel_values, self.norm_target_patch)
        loss = None if mask is None else masked_l1_loss(target, reconstruction, mask, p)
        return MaskedImageModelingOutput(reconstruction=reconstruction, loss=loss)

    def losses(self, pixel_values: torch.Tensor, bool_masked_pos: torch.Tensor) -> dict[str, torch.Tensor]:
        """The named losses a trainer sums: ``{"loss_mim": masked L1 loss}``."""
        return {"loss_mim": self(pixel_values, bool_masked_pos).loss}


def build_mim_model(config: SwinConfig) -> SwinForMaskedImageModeling:
    """A randomly initialised SimMIM model for the trunk ``config``."""
    model = SwinForMaskedImageModeling(config)
    model.init_weights()
    return model


def mim_state_dict_from(raw: dict[str, torch.Tensor]) -> tuple[str, dict[str, torch.Tensor]]:
    """(layout, canonical MIM state dict) of a Hugging Face or official SimMIM state dict."""
    layout = layouts.detect_layout(raw)
    if layout == "hf":
        return layout, hf.mim_to_canonical(raw)
    if layout == "official":
        return layout, official.mim_to_canonical(raw)
    raise ValueError(f"masked-image-modeling weights come in the hf or official layout, not {layout!r}")


def _resolve(source: str | os.PathLike) -> Path:
    """A local path for ``source``: a file or folder, or the hub snapshot of a MIM preset or hub id."""
    text = str(source)
    if text in MIM_PRESETS and not Path(source).exists():
        preset = MIM_PRESETS[text]
        if preset.hub_id is None:
            raise ValueError(
                f"SimMIM preset {text!r} has no Hugging Face weights ({preset.description}); "
                "download that file and pass its path"
            )
        text = preset.hub_id
    return resolve_source(text)


def _read(path: Path) -> tuple[dict[str, Any] | None, dict[str, torch.Tensor]]:
    """(config.json of a folder or None, the raw tensors of the folder's weights or of the file)."""
    hf_config = None
    if path.is_dir():
        if (path / "config.json").is_file():
            hf_config = json.loads((path / "config.json").read_text())
        names = ("model.safetensors", "pytorch_model.bin")
        weights = next((path / n for n in names if (path / n).is_file()), None)
        if weights is None:
            raise FileNotFoundError(f"{path} holds none of {', '.join(names)}")
        path = weights
    return hf_config, layouts.unwrap(load_state_file(path))


def load_mim(source: str | os.PathLike, *, preset: str | None = None) -> SwinForMaskedImageModeling:
    """A SimMIM model from a transformers MIM folder or hub id, an official SimMIM file, or a MIM preset name.

    The architecture comes from config.json, else from the MIM ``preset``, else from the tensor shapes
    (official files keep the index and coordinate buffers that tell the windows).
    """
    hf_config, raw = _read(_resolve(source))
    layout, state_dict = mim_state_dict_from(raw)
    if hf_config is not None:
        config = hf.trunk_from_hf(hf_config)
    elif preset is not None:
        config = get_mim_preset(preset).config
    else:
        encoder = {k[len("encoder.") :]: v for k, v in state_dict.items() if k.startswith("encoder.")}
        hints = (official.window_size_hint(raw), official.pretrained_window_sizes_hint(raw))
        config = common.infer_config(encoder, window_size=hints[0], pretrained_window_sizes=hints[1])
    model = SwinForMaskedImageModeling(config)
    stride = (hf_config or {}).get("encoder_stride", model.encoder_stride)
    if stride != model.encoder_stride:
        raise ValueError(
            f"config.json has encoder_stride {stride}, but a {config.num_stages}-stage patch-{config.patch_size} "
            f"encoder has stride {model.encoder_stride}"
        )
    load_into(model, state_dict)
    return model


def save_mim_pretrained(model: SwinForMaskedImageModeling, directory: str | os.PathLike) -> Path:
    """Write ``model`` as transformers' ``Swin(v2)ForMaskedImageModeling`` (config.json + model.safetensors)."""
    if not hf.transformers_can_run(model.config):
        log.warning(
            "transformers cannot run this architecture (stage windows %s for window_size %d): swinkit reads "
            "this folder, transformers' Swin does not",
            model.config.stage_window_sizes,
            model.config.window_size,
        )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = hf.mim_from_canonical(model.state_dict(), model.config)
    tensors = {k: v for k, v in tensors.items() if not common.DROPPED_BUFFERS.search(k)}
    save_safetensors(tensors, directory / "model.safetensors")
    atomic_write_json(directory / "config.json", hf.mim_config_to_hf(model.config, model.encoder_stride))
    return directory


def save_mim_official(model: SwinForMaskedImageModeling, path: str | os.PathLike) -> Path:
    """Write ``model`` as an official SimMIM checkpoint file, ``{"model": state_dict}``."""
    tensors = official.mim_from_canonical(model.state_dict())
    tensors = {k: v for k, v in tensors.items() if not common.DROPPED_BUFFERS.search(k)}
    save_torch({"model": tensors}, path)
    return Path(path)
