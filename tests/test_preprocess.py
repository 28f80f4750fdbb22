"""Preprocessing: pixel tensors equal those of transformers' PIL image processors on real photos."""

from __future__ import annotations

import json

import pytest
import torch
from image_samples import PHOTOS, awkward_files, photo
from transformers import AutoImageProcessor

import swinkit
from swinkit.data.decode import decode_image
from swinkit.data.preprocess import ImageProcessor, processor_for_checkpoint
from swinkit.loading import load_checkpoint, save_pretrained
from swinkit.presets import Preprocessing, get_preset

# The preprocessor configs published with microsoft/swin-tiny-patch4-window7-224 (legacy feature-extractor
# form) and microsoft/swinv2-tiny-patch4-window8-256.
SWIN_224 = {
    "do_normalize": True,
    "do_resize": True,
    "feature_extractor_type": "ViTFeatureExtractor",
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
    "resample": 3,
    "size": 224,
}
SWINV2_256 = {
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_processor_type": "ViTImageProcessor",
    "image_std": [0.229, 0.224, 0.225],
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"height": 256, "width": 256},
}
CONVNEXT_CROP = {
    "image_processor_type": "ConvNextImageProcessor",
    "size": {"shortest_edge": 224},
    "crop_pct": 0.875,
}
VIT_DEFAULTS = {"image_processor_type": "ViTImageProcessor", "size": {"height": 96, "width": 128}}  # bilinear


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Real photos and every awkward kind of file, decoded."""
    files = awkward_files(tmp_path_factory.mktemp("awkward"))
    paths = [photo(name) for name in PHOTOS] + [
        files[k] for k in ("exif6", "cmyk", "gray16", "palette", "gif")
    ]
    return [decode_image(path) for path in paths]


def _transformers_processor(config, folder):
    (folder / "preprocessor_config.json").write_text(json.dumps(config))
    processor = AutoImageProcessor.from_pretrained(folder, backend="pil")
    assert processor.backend == "pil"
    return processor


@pytest.mark.parametrize(
    "config", [SWIN_224, SWINV2_256, CONVNEXT_CROP, VIT_DEFAULTS], ids=["swin", "v2", "cnx", "vit"]
)
def test_pixels_equal_transformers(config, images, tmp_path):
    reference = _transformers_processor(config, tmp_path)
    ours = ImageProcessor.from_preprocessor_config(config)
    expected = reference(images=images, return_tensors="pt")["pixel_values"]
    got = ours.batch(images)
    assert got.dtype == torch.float32 and got.shape == expected.shape
    assert (got - expected).abs().max().item() < 1e-5


@pytest.mark.parametrize("crop_pct", [224 / 256, None])
def test_preset_preprocessing_is_what_transformers_does_with_its_config(crop_pct, images, tmp_path):
    preprocessing = Preprocessing(image_size=(192, 192), crop_pct=crop_pct)
    ours = ImageProcessor.from_preprocessing(preprocessing)
    reference = _transformers_processor(ours.to_preprocessor_config(), tmp_path)
    expected = reference(images=images[:4], return_tensors="pt")["pixel_values"]
    assert (ours.batch(images[:4]) - expected).abs().max().item() < 1e-5
    assert ours.output_size == (192, 192)


def test_official_crop_resizes_the_shortest_edge_then_crops_the_centre(images):
    ours = ImageProcessor.from_preprocessing(get_preset("swin_tiny_patch4_window7_224").preprocessing)
    assert ours.size == {"shortest_edge": 256} and ours.crop_size == (224, 224)
    assert ours.describe().startswith("resize shortest edge to 256 (bicubic), centre crop 224x224, normalize")
    plain = ImageProcessor.from_preprocessing(get_preset("swin_base_patch4_window12_384").preprocessing)
    assert plain.size == {"height": 384, "width": 384} and plain.crop_size is None
    assert plain.describe().startswith("resize to 384x384 (bicubic), normalize")


def test_checkpoint_without_preprocessor_config_uses_the_preset_rule(tmp_path):
    model = swinkit.create_model("swin_micro", num_classes=2)
    save_pretrained(model, tmp_path / "plain")
    save_pretrained(model, tmp_path / "with", preprocessing=SWINV2_256)
    plain = processor_for_checkpoint(load_checkpoint(tmp_path / "plain"))
    assert plain.size == {"shortest_edge": 73} and plain.crop_size == (64, 64)  # int(64 / 0.875)
    assert processor_for_checkpoint(load_checkpoint(tmp_path / "with")).size == {"height": 256, "width": 256}


def test_vit_config_crop_pct_is_ignored_like_transformers(images, tmp_path):
    config = {**SWIN_224, "crop_pct": 0.875}
    reference = _transformers_processor(config, tmp_path)
    expected = reference(images=images[:2], return_tensors="pt")["pixel_values"]
    assert (ImageProcessor.from_preprocessor_config(config).batch(images[:2]) - expected).abs().max() < 1e-5


def test_non_rgb_input_is_refused():
    from PIL import Image

    with pytest.raises(ValueError, match="RGB"):
        ImageProcessor()(Image.new("L", (10, 10)))
