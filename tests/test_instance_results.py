"""Typed detection results (swinkit.tasks.instance_results): the Azure schema, COCO results, text, pictures."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from swinkit.ops.polygons import polygons_to_mask
from swinkit.serve.schemas import DetectionResult, SegmentationResult
from swinkit.tasks.instance_results import InstancePrediction

LABELS = ("can", "carton", "milk_bottle")


def make_result(with_masks: bool = True) -> InstancePrediction:
    """Two objects on a 100 x 50 image: a carton box with a rectangle mask, a can with two square parts."""
    masks = np.zeros((2, 50, 100), dtype=bool)
    masks[0, 10:40, 20:60] = True
    masks[1, 5:15, 70:80] = True
    masks[1, 30:45, 70:85] = True
    return InstancePrediction(
        boxes=np.array([[20.0, 10.0, 60.0, 40.0], [70.0, 5.0, 85.0, 45.0]]),
        scores=np.array([0.98, 0.6]),
        labels=np.array([1, 0]),
        label_names=LABELS,
        width=100,
        height=50,
        masks=masks if with_masks else None,
    )


def test_to_azure_is_the_model_cards_schema():
    azure = make_result().to_azure()
    assert list(azure) == ["boxes"]
    first, second = azure["boxes"]
    assert list(first) == ["box", "label", "score", "polygon"]
    assert first["box"] == {"topX": 0.2, "topY": 0.2, "bottomX": 0.6, "bottomY": 0.8}
    assert (first["label"], first["score"]) == ("carton", 0.98)
    assert second["label"] == "can" and len(second["polygon"]) == 2  # one polygon per part
    for item in azure["boxes"]:
        for polygon in item["polygon"]:
            assert len(polygon) % 2 == 0 and all(0 <= v <= 1 for v in polygon)
    SegmentationResult.model_validate(azure)


def test_azure_polygons_rasterise_back_to_the_masks():
    result = make_result()
    for mask, item in zip(result.masks, result.to_azure()["boxes"], strict=True):
        pixels = [[v * (100 if i % 2 == 0 else 50) for i, v in enumerate(p)] for p in item["polygon"]]
        assert np.array_equal(polygons_to_mask(pixels, 50, 100), mask)


def test_detection_results_have_no_polygon():
    azure = make_result(with_masks=False).to_azure()
    assert all(list(item) == ["box", "label", "score"] for item in azure["boxes"])
    DetectionResult.model_validate(azure)
    with pytest.raises(ValueError, match="boxes only"):
        make_result(with_masks=False).polygons()


def test_to_coco_writes_xywh_boxes_and_text_rles():
    result = make_result()
    rows = result.to_coco(7, category_ids=[11, 22, 33])
    assert [row["category_id"] for row in rows] == [22, 11]
    assert rows[0]["image_id"] == 7 and rows[0]["bbox"] == [20.0, 10.0, 40.0, 30.0]
    assert isinstance(rows[0]["segmentation"]["counts"], str)
    decoded = mask_utils.decode({**rows[1]["segmentation"], "counts": rows[1]["segmentation"]["counts"]})
    assert np.array_equal(decoded.astype(bool), result.masks[1])
    assert "segmentation" not in make_result(with_masks=False).to_coco(7, [1, 2, 3])[0]


def test_top_filters_by_score_and_count():
    result = make_result()
    assert len(result.top(threshold=0.7)) == 1 and result.top(threshold=0.7).names == ["carton"]
    assert len(result.top(top_k=1)) == 1
    empty = result.top(threshold=0.99)
    assert len(empty) == 0 and empty.masks.shape == (0, 50, 100)
    assert empty.to_azure() == {"boxes": []}
    assert empty.lines() == ["(no object above the score threshold)"]


def test_lines_name_label_score_and_box():
    assert make_result().lines() == [
        "carton   98.0%  box 20,10,60,40",
        "can      60.0%  box 70,5,85,45",
    ]


def test_save_image_draws_masks_and_boxes(tmp_path):
    image = Image.new("RGB", (100, 50), (128, 128, 128))
    path = make_result().save_image(image, tmp_path / "out.png")
    drawn = np.asarray(Image.open(path).convert("RGB"))
    assert drawn.shape[1] / drawn.shape[0] == pytest.approx(2.0)  # enlarged, same aspect
    scale = drawn.shape[0] / 50
    inside = drawn[int(30 * scale), int(40 * scale)]  # inside the carton's mask, off its box line
    outside = drawn[int(2 * scale), int(5 * scale)]
    assert tuple(outside) == (128, 128, 128)
    assert tuple(inside) != (128, 128, 128)
    make_result(with_masks=False).save_image(image, tmp_path / "plain.png")
    plain = np.asarray(Image.open(tmp_path / "plain.png").convert("RGB"))
    assert tuple(plain[int(30 * scale), int(40 * scale)]) == (128, 128, 128)  # no mask: only the outline
