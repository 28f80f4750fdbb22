"""Preprocessing: pixel tensors equal those of transformers' PIL image processors on real photos."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from image_samples import PHOTOS, awkward_files, photo
from transformers import AutoImageProcessor

import swinkit
from swinkit.data.decode import decode_image
from swinkit.data.preprocess import ImageProcessor, preprocessing_for, processor_for_checkpoint
from swinkit.engine.build import eval_processor
from swinkit.engine.config import TrainConfig, apply_overrides
from swinkit.loading import Checkpoint, load_checkpoint, save_pretrained
from swinkit.presets import Preprocessing, get_preset

DATA_PACKAGE = Path(swinkit.__file__).parent / "data"

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


def _imported_modules(file: Path) -> set[str]:
    """Every module ``file`` imports, relative imports resolved against its package ``swinkit.data``."""
    names = set()
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            package = ["swinkit", "data"][: 2 - node.level + 1] if node.level else []
            base = ".".join(package + ([node.module] if node.module else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def test_nothing_in_swinkit_data_imports_loading():
    modules = sorted(DATA_PACKAGE.glob("*.py"))
    assert len(modules) >= 3  # the package was found
    offenders = {
        f.name for f in modules if any(n.startswith("swinkit.loading") for n in _imported_modules(f))
    }
    assert offenders == set()
    code = "import sys, swinkit.data.preprocess; assert 'swinkit.loading' not in sys.modules"
    env = {**os.environ, "PYTHONPATH": str(DATA_PACKAGE.parent.parent)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_preprocessing_for_prefers_own_config_then_preset_then_native_default():
    config = swinkit.create_model("swin_micro", num_classes=2).config  # 64 px
    own = Checkpoint(config, {}, "hf", SWINV2_256, None)
    assert preprocessing_for(own, preset="swin_base_patch4_window12_384").size == {
        "height": 256,
        "width": 256,
    }
    bare = Checkpoint(config, {}, "hf", None, None)
    by_name = preprocessing_for(bare, preset="swin_base_patch4_window12_384")
    assert by_name.size == {"height": 384, "width": 384} and by_name.crop_size is None
    hub_id = get_preset("swin_tiny_patch4_window7_224").hub_id
    assert preprocessing_for(bare, hub_id=hub_id).crop_size == (224, 224)
    cached = Checkpoint(config, {}, "hf", None, Path(f"/c/models--{hub_id.replace('/', '--')}/snapshots/x"))
    assert preprocessing_for(cached).size == {"shortest_edge": 256}
    assert preprocessing_for(config.trunk).crop_size == (64, 64)  # native size, official crop
    assert preprocessing_for(config.trunk.replace(image_size=384)).size == {"height": 384, "width": 384}


@pytest.mark.parametrize(
    "image_size, preprocessing, shape",
    [
        (64, None, (64, 64)),  # the default: official crop, shortest edge 73 then centre crop
        (384, None, (384, 384)),  # the default at 384: resize straight to the size
        (64, Preprocessing(image_size=(224, 224), crop_pct=224 / 256), (224, 224)),
    ],
    ids=["default-crop", "default-384", "crop-224"],
)
def test_saved_folder_preprocesses_in_transformers_as_in_swinkit(image_size, preprocessing, shape, tmp_path):
    model = swinkit.create_model("swin_micro", num_classes=2, image_size=image_size)
    save_pretrained(model, tmp_path, preprocessing=preprocessing)
    reference = AutoImageProcessor.from_pretrained(tmp_path, backend="pil")
    ours = preprocessing_for(load_checkpoint(tmp_path))
    image = decode_image(photo("coffee.png"))  # 600x400: not square
    expected = reference(images=[image], return_tensors="pt")["pixel_values"]
    assert expected.shape == (1, 3, *shape)
    assert (ours.batch([image]) - expected).abs().max().item() < 1e-5


def test_folder_file_wins_over_the_weights_embedded_preprocessing(tmp_path):
    save_pretrained(swinkit.create_model("swin_micro", num_classes=2), tmp_path, preprocessing=SWINV2_256)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(VIT_DEFAULTS))  # what transformers reads
    assert preprocessing_for(load_checkpoint(tmp_path)).size == {"height": 96, "width": 128}
    assert preprocessing_for(load_checkpoint(tmp_path / "model.safetensors")).size == SWINV2_256["size"]


def test_training_eval_processor_takes_mean_and_std_from_a_pretrained_file(tmp_path):
    model = swinkit.create_model("swin_micro", num_classes=2)
    save_pretrained(
        model, tmp_path, preprocessing={**SWINV2_256, "image_mean": [0.5] * 3, "image_std": [0.25] * 3}
    )
    config = apply_overrides(TrainConfig(), {"model.pretrained": str(tmp_path / "model.safetensors")})
    processor = eval_processor(config, model.config.trunk)
    assert processor.mean == (0.5, 0.5, 0.5) and processor.std == (0.25, 0.25, 0.25)
    assert processor.crop_size == (64, 64)  # the run's crop_pct 0.875 at the model's size
    scratch = eval_processor(
        apply_overrides(TrainConfig(), {"model.preset": "swin_micro"}), model.config.trunk
    )
    assert scratch.mean == pytest.approx((0.485, 0.456, 0.406))
