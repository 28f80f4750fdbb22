"""Shared by the segmentation runtime tests: generated scenes and a micro UperNet whose label maps follow the
image (an untouched random model paints nearly every pixel with one class, so agreement would be trivial)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from segmentation_scenes import make_scene

from swinkit.data.segmentation import SegmentationProcessor
from swinkit.models.segmentation import create_upernet
from swinkit.models.segmentation.inference import DecodeLogits
from swinkit.models.segmentation.upernet import UperNet
from swinkit.tasks.segmentation_predict import SegmentationPredictor

LABELS = list("abcde")


def scene(seed: int, height: int = 192, width: int = 250) -> torch.Tensor:
    """(3, height, width) uint8 pixels of a generated scene (shapes on a textured background)."""
    image, _ = make_scene(np.random.default_rng(seed), size=max(height, width), shapes=4)
    return torch.from_numpy(np.ascontiguousarray(image[:height, :width])).permute(2, 0, 1)


def scene_image(seed: int, height: int, width: int) -> Image.Image:
    return Image.fromarray(scene(seed, height, width).permute(1, 2, 0).numpy())


def balanced_upernet(processor: SegmentationProcessor, calibration: torch.Tensor) -> UperNet:
    """A micro UperNet with BatchNorm statistics away from (0, 1) and its classifier's logits standardised
    per class on the (3, H, W) uint8 image ``calibration`` (as ``processor`` prepares it), so every class
    wins a share of the pixels and the label maps depend on the image."""
    torch.manual_seed(0)
    model = create_upernet("upernet_swin_micro", num_classes=len(LABELS), labels=LABELS).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 1.5)
        pixels = SegmentationPredictor(model, processor).view_pixels(calibration[None], None, False)
        (raw,) = DecodeLogits(model)(pixels)  # (1, 5, h/4, w/4)
        mean, std = raw.mean(dim=(0, 2, 3)), raw.std(dim=(0, 2, 3))  # (5,) each
        classifier = model.decode_head.conv_seg
        classifier.weight.div_(std.view(-1, 1, 1, 1))
        classifier.bias.sub_(mean).div_(std)
    return model
