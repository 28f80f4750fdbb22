"""What flows into and out of the detector: per-image metadata and typed detections."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ImageMeta:
    """mmdetection's per-image meta (``ori_shape``, ``img_shape``, ``scale_factor``) for one padded batch entry."""

    ori_shape: tuple[int, int]  # (H0, W0) of the image as given
    img_shape: tuple[int, int]  # (H, W) after the keep-ratio resize, before padding
    scale_factor: tuple[float, float]  # (w_scale, h_scale) = (W / W0, H / H0), as mmdet's Resize records it

    def __post_init__(self) -> None:
        if min(*self.ori_shape, *self.img_shape) < 1:
            raise ValueError(
                f"image sizes must be positive, got ori_shape {self.ori_shape}, img_shape {self.img_shape}"
            )
        if min(self.scale_factor) <= 0:
            raise ValueError(f"scale_factor must be positive, got {self.scale_factor}")

    @classmethod
    def identity(cls, height: int, width: int) -> ImageMeta:
        """The meta of an image fed at its own size (no resize)."""
        return cls((height, width), (height, width), (1.0, 1.0))


@dataclass
class Detections:
    """One image's detections, in the pixels of the original image (``ImageMeta.ori_shape``)."""

    boxes: torch.Tensor  # (N, 4) x1, y1, x2, y2
    scores: torch.Tensor  # (N,) class probability, descending
    labels: torch.Tensor  # (N,) int64 class index in [0, num_classes)
    masks: torch.Tensor | None = None  # (N, H0, W0) bool; None for a detection-only (Faster R-CNN) model

    def __len__(self) -> int:
        return self.boxes.shape[0]


@dataclass
class DetectionOutput:
    """What the detector returns, whatever ``self.training`` is: per image its detections and proposals."""

    detections: list[Detections]  # one entry per image, in batch order
    proposals: list[torch.Tensor]  # per image (P, 5) RPN proposals (x1, y1, x2, y2, score) in input pixels
    losses: dict[str, torch.Tensor] | None = None  # with targets given to forward: MaskRCNN.losses' dict


@dataclass(frozen=True)
class DetectionTargets:
    """Per image ground truth for the losses, in input pixels (after the resize): what ``forward`` trains on."""

    boxes: list[torch.Tensor]  # per image (G, 4) x1, y1, x2, y2
    labels: list[torch.Tensor]  # per image (G,) int64 in [0, num_classes)
    masks: list[torch.Tensor] | None = None  # per image (G, H, W) bool, at least img_shape large (Mask R-CNN)
