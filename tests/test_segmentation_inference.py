"""Semantic segmentation inference: mmseg's sliding windows, multi-scale + flip TTA, the test pipeline and
the mapping back to the original image, checked against hand-computed references on a micro UperNet."""

from __future__ import annotations

import base64
import io

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from swinkit.data.segmentation import SegmentationProcessor
from swinkit.models.segmentation import create_upernet
from swinkit.models.segmentation.inference import (
    InferenceSettings,
    merge_views,
    slide_inference,
    slide_windows,
    whole_inference,
)
from swinkit.serve.schemas import SemanticSegmentationResult
from swinkit.tasks.segmentation_predict import SegmentationPredictor, view_size

MEAN = np.array([123.675, 116.28, 103.53])
STD = np.array([58.395, 57.12, 57.375])


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    model = create_upernet("upernet_swin_micro", num_classes=5, labels=list("abcde")).eval()
    with torch.no_grad():  # BatchNorm statistics away from (0, 1), so every layer matters
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 1.5)
    return model


def random_image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_slide_windows_follow_mmseg_grid_and_move_back_inside():
    # h_grids = (10 - 6 + 3) // 4 + 1 = 2, w_grids = (13 - 6 + 3) // 4 + 1 = 3; the last column is moved back
    windows = slide_windows(10, 13, (6, 6), (4, 4))
    assert windows == [
        (0, 6, 0, 6),
        (0, 6, 4, 10),
        (0, 6, 7, 13),
        (4, 10, 0, 6),
        (4, 10, 4, 10),
        (4, 10, 7, 13),
    ]
    assert slide_windows(5, 7, (8, 8), (4, 4)) == [(0, 5, 0, 7)]  # a crop larger than the image is the image


def test_slide_inference_is_the_average_of_the_crops(model):
    pixels = torch.randn(1, 3, 80, 112)  # larger than the 64 crop, not a multiple of the stride
    with torch.inference_mode():
        got = slide_inference(model, pixels, (64, 64), (40, 40))
        stack = []
        for y1, x1 in [(0, 0), (0, 40), (0, 48), (16, 0), (16, 40), (16, 48)]:  # worked out by hand
            placed = torch.full((1, 5, 80, 112), float("nan"))
            placed[:, :, y1 : y1 + 64, x1 : x1 + 64] = model(pixels[:, :, y1 : y1 + 64, x1 : x1 + 64]).logits
            stack.append(placed.numpy())
    expected = np.nanmean(np.stack(stack), axis=0)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-5, rtol=1e-5)
    overlap = got[:, :, 20:60, 50:60]  # covered by 4 crops: no single crop's logits
    single = whole_inference(model, pixels[:, :, 0:64, 40:104])[:, :, 20:60, 10:20]
    assert not torch.allclose(overlap, single, atol=1e-3)


def test_slide_with_a_crop_covering_the_image_is_whole_inference(model):
    pixels = torch.randn(1, 3, 48, 72)
    with torch.inference_mode():
        torch.testing.assert_close(
            slide_inference(model, pixels, (64, 96), (40, 40)), whole_inference(model, pixels)
        )


def test_merge_views_is_the_mean_of_softmaxes():
    a, b = torch.randn(1, 4, 3, 3), torch.randn(1, 4, 3, 3)
    torch.testing.assert_close(merge_views(iter([a, b])), (a.softmax(1) + b.softmax(1)) / 2)


def mmseg_view(image: np.ndarray, size: tuple[int, int], flip: bool) -> torch.Tensor:
    """Resize with cv2 bilinear (mmcv's imresize), flip, normalise: (1, 3, h, w)."""
    resized = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
    if flip:
        resized = np.fliplr(resized)
    return torch.from_numpy(((resized - MEAN) / STD).transpose(2, 0, 1).copy()).float()[None]


def test_ms_flip_is_the_mean_of_the_views_softmaxes_at_the_original_size(model):
    image = random_image(70, 50, seed=1)
    predictor = SegmentationPredictor(model, tta=True, tta_ratios=(0.75, 1.25))
    pixels = predictor.prepare(image)
    assert pixels.dtype == torch.uint8 and pixels.shape == (3, 50, 70)
    with torch.inference_mode():
        got = predictor.scores(pixels[None])
        array, expected = np.asarray(image), torch.zeros(1, 5, 50, 70)
        # mmcv Resize(scale_factor=r, keep_ratio=True): 0.75 -> (53, 38), 1.25 -> (88, 63)
        for size in [(53, 38), (88, 63)]:
            for flip in (False, True):
                logits = model(mmseg_view(array, size, flip)).logits
                logits = logits.flip(3) if flip else logits
                expected += F.interpolate(logits, (50, 70), mode="bilinear", align_corners=False).softmax(1)
    assert view_size(70, 50, 0.75, (2048, 512)) == (53, 38) and view_size(70, 50, 1.25, (2048, 512)) == (
        88,
        63,
    )
    torch.testing.assert_close(got, expected / 4, atol=1e-5, rtol=1e-4)
    labels = predictor.infer([pixels])[0].label_map
    np.testing.assert_array_equal(labels, (expected / 4).argmax(1)[0].numpy())


def test_the_test_pipeline_resizes_as_mmseg_and_maps_back_to_a_non_square_original(model):
    image = random_image(53, 37, seed=2)
    predictor = SegmentationPredictor(model, SegmentationProcessor(scale=(256, 64)))
    # Resize(scale=(256, 64), keep_ratio=True): factor min(256 / 53, 64 / 37) -> (92, 64)
    assert view_size(53, 37, None, (256, 64)) == (92, 64)
    pixels = predictor.prepare(image)[None]
    torch.testing.assert_close(
        predictor.view_pixels(pixels, None, False), mmseg_view(np.asarray(image), (92, 64), False)
    )
    with torch.inference_mode():
        logits = model(mmseg_view(np.asarray(image), (92, 64), False)).logits
        expected = F.interpolate(logits, (37, 53), mode="bilinear", align_corners=False).argmax(1)[0]
    result = predictor.infer([pixels[0]])[0]
    assert result.label_map.shape == (37, 53)
    np.testing.assert_array_equal(result.label_map, expected.numpy())


def test_slide_mode_runs_through_the_predictor(model):
    image = random_image(150, 90, seed=3)
    whole = SegmentationPredictor(model, SegmentationProcessor(scale=(160, 96)))
    slide = SegmentationPredictor(
        model, SegmentationProcessor(scale=(160, 96)), settings=InferenceSettings("slide", (64, 64), (48, 48))
    )
    pixels = whole.prepare(image)
    a, b = whole.infer([pixels])[0].label_map, slide.infer([pixels])[0].label_map
    assert a.shape == b.shape == (90, 150) and (a != b).any()  # windows see less context than the whole image


def test_to_azure_round_trips_the_label_map_and_the_fractions(model):
    predictor = SegmentationPredictor(model, SegmentationProcessor(scale=(128, 64)))
    images = [random_image(45, 31, seed=4), random_image(64, 64, seed=5), random_image(45, 31, seed=6)]
    results = predictor.infer([predictor.prepare(i) for i in images])
    assert [r.label_map.shape for r in results] == [(31, 45), (64, 64), (31, 45)]
    for result in results:
        row = SemanticSegmentationResult.model_validate(result.to_azure()).model_dump()
        decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(row["label_map"]))))
        assert decoded.dtype == np.uint8 and (row["width"], row["height"]) == (
            decoded.shape[1],
            decoded.shape[0],
        )
        np.testing.assert_array_equal(decoded, result.label_map)
        fractions = [c["fraction"] for c in row["classes"]]
        assert sum(fractions) == pytest.approx(1.0) and fractions == sorted(fractions, reverse=True)
        for c in row["classes"]:
            assert c["label"] == "abcde"[c["index"]]
            assert c["fraction"] == pytest.approx((decoded == c["index"]).mean())


def test_lines_list_the_largest_classes_within_top_k_and_threshold(model):
    predictor = SegmentationPredictor(model, top_k=1)
    result = predictor.infer([predictor.prepare(random_image(40, 40))])[0]
    top = result.classes()[0]
    assert result.lines() == [f"{top['label']}  {top['fraction']:7.2%}"]
    result.threshold = 1.01
    assert result.lines() == ["(no class covers the threshold's share of the pixels)"]


def test_bad_options_are_refused_in_one_sentence(model):
    with pytest.raises(ValueError, match="inference mode must be one of whole, slide"):
        InferenceSettings(mode="sliding")
    with pytest.raises(ValueError, match="positive scale ratios"):
        SegmentationPredictor(model, tta=True, tta_ratios=())


@pytest.fixture(scope="module")
def saved(tmp_path_factory, model):
    """The micro model saved as a transformers folder (test scale 128x64) and a 3-image images/ + masks/ set."""
    from swinkit.checkpoint_io import atomic_write_json
    from swinkit.models.segmentation.checkpoints import save_hf

    root = tmp_path_factory.mktemp("seg_eval")
    save_hf(model, root / "model")
    atomic_write_json(root / "model" / "preprocessor_config.json", {"mmseg_test_scale": [128, 64]})
    (root / "data" / "images").mkdir(parents=True)
    (root / "data" / "masks").mkdir()
    rng = np.random.default_rng(7)
    for i, (height, width) in enumerate([(40, 60), (40, 60), (50, 30)]):
        random_image(width, height, seed=10 + i).save(root / "data" / "images" / f"{i}.png")
        mask = rng.integers(0, 5, (height, width), dtype=np.uint8)
        Image.fromarray(mask).save(root / "data" / "masks" / f"{i}.png")
    return root / "model", root / "data"


def test_evaluate_saved_slides_and_runs_ms_flip_through_the_predictor(saved):
    from swinkit.data.segmentation import read_label_map
    from swinkit.evaluation.segmentation import areas_to_metrics, intersect_and_union
    from swinkit.tasks import get_task
    from swinkit.tasks.segmentation_predict import segmentation_predictor

    folder, data = saved
    task = get_task("semantic_segmentation")
    whole = task.evaluate_saved(folder, data, batch_size=2)
    slide = task.evaluate_saved(folder, data, batch_size=2, mode="slide")  # one 512 crop covers these images
    assert slide["mIoU"] == pytest.approx(whole["mIoU"], abs=1e-9) and slide["aAcc"] == pytest.approx(
        whole["aAcc"]
    )
    tta = task.evaluate_saved(folder, data, batch_size=2, tta=True)
    predictor = segmentation_predictor(folder, tta=True)
    areas = torch.zeros(4, 5, dtype=torch.float64)
    for i in range(3):
        predicted = predictor.infer([predictor.prepare(Image.open(data / "images" / f"{i}.png"))])[
            0
        ].label_map
        label = torch.from_numpy(read_label_map(data / "masks" / f"{i}.png")).long()
        areas += intersect_and_union(torch.from_numpy(predicted).long(), label, 5, 255).double()
    expected = areas_to_metrics(areas)
    assert tta["mIoU"] == pytest.approx(expected["mIoU"]) and tta["mIoU"] != pytest.approx(whole["mIoU"])


def test_evaluate_cli_passes_mode_and_tta_to_the_segmentation_task(saved, tmp_path, capsys):
    from serve_helpers import make_model_dir

    from swinkit.cli import main

    folder, data = saved
    assert main(["evaluate", "--model", str(folder), "--data", str(data), "--mode", "slide", "--tta"]) == 0
    assert "mIoU" in capsys.readouterr().out
    classifier = make_model_dir(tmp_path)
    assert main(["evaluate", "--model", str(classifier), "--data", str(data), "--tta"]) == 2
    assert capsys.readouterr().err.endswith(
        "error: --tta is not an evaluation option of a classification model\n"
    )
