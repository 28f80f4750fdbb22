"""COCO evaluation (swinkit.evaluation.coco): hand-checked cases and agreement with pycocotools called directly."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from swinkit.evaluation.coco import CocoEvaluator
from swinkit.tasks.instance_results import InstancePrediction

LABELS = ("can", "carton")
W, H = 64, 48


def box_mask(box: list[float]) -> np.ndarray:
    mask = np.zeros((H, W), dtype=bool)
    x1, y1, x2, y2 = (int(v) for v in box)
    mask[y1:y2, x1:x2] = True
    return mask


def ground_truth(objects: dict[int, list[tuple[list[float], int]]]) -> dict:
    """A COCO dict: per image id, (box x1 y1 x2 y2, category id) objects with rectangle polygons."""
    images = [{"id": i, "file_name": f"{i}.png", "width": W, "height": H} for i in objects]
    annotations = []
    for image_id, items in objects.items():
        for (x1, y1, x2, y2), category in items:
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": category, "iscrowd": 0,
                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": float((x2 - x1) * (y2 - y1)),
                "segmentation": [[x1, y1, x2, y1, x2, y2, x1, y2]],
            })  # fmt: skip
    categories = [{"id": 1, "name": "can"}, {"id": 2, "name": "carton"}]
    return {"images": images, "annotations": annotations, "categories": categories}


def prediction(items: list[tuple[list[float], int, float]]) -> InstancePrediction:
    """(box, label index, score) objects with rectangle masks."""
    boxes = np.array([b for b, _, _ in items], dtype=np.float64).reshape(-1, 4)
    masks = np.stack([box_mask(b) for b, _, _ in items]) if items else np.zeros((0, H, W), dtype=bool)
    return InstancePrediction(
        boxes, np.array([s for _, _, s in items]), np.array([k for _, k, _ in items], dtype=np.int64),
        LABELS, W, H, masks,
    )  # fmt: skip


def evaluate(gt: dict, predictions: dict[int, InstancePrediction]) -> dict:
    evaluator = CocoEvaluator(gt, LABELS, (1, 2))
    evaluator.process(list(predictions), list(predictions.values()))
    return evaluator.compute()


A, B = [4.0, 4.0, 36.0, 30.0], [40.0, 10.0, 60.0, 44.0]


def test_perfect_predictions_score_one():
    gt = ground_truth({1: [(A, 1), (B, 2)], 2: [(B, 1)]})
    metrics = evaluate(gt, {1: prediction([(A, 0, 0.9), (B, 1, 0.8)]), 2: prediction([(B, 0, 0.7)])})
    for name in ("bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "segm_mAP", "bbox_AR@100", "segm_AR@1000"):
        assert metrics[name] == pytest.approx(1.0), name
    assert metrics["per_class"]["segm"] == {"can": pytest.approx(1.0), "carton": pytest.approx(1.0)}


def test_one_of_two_objects_found_is_the_area_under_half_the_recall():
    gt = ground_truth({1: [(A, 1), (B, 1)]})
    metrics = evaluate(gt, {1: prediction([(A, 0, 0.9)])})
    # precision 1 at the recall thresholds 0, 0.01, ..., 0.5 (51 of COCO's 101), 0 beyond
    assert metrics["bbox_mAP"] == pytest.approx(51 / 101)
    assert metrics["segm_mAP"] == pytest.approx(51 / 101)
    assert metrics["bbox_AR@100"] == pytest.approx(0.5)
    assert np.isnan(metrics["per_class"]["bbox"]["carton"])  # no ground truth of that label


def test_per_class_ap_follows_the_labels_whatever_the_category_ids():
    gt = ground_truth({1: [(A, 1), (B, 2)]})
    for category in gt["categories"]:
        category["id"] = {1: 9, 2: 4}[category["id"]]  # "can" is 9, "carton" 4: not in label order
    for ann in gt["annotations"]:
        ann["category_id"] = {1: 9, 2: 4}[ann["category_id"]]
    evaluator = CocoEvaluator(gt, LABELS, (9, 4))
    evaluator.process([1], [prediction([(A, 0, 0.9)])])  # the can found, the carton missed
    per_class = evaluator.compute()["per_class"]["bbox"]
    assert per_class == {"can": pytest.approx(1.0), "carton": 0.0}


def test_a_wrong_label_scores_zero():
    gt = ground_truth({1: [(A, 1)]})
    metrics = evaluate(gt, {1: prediction([(A, 1, 0.9)])})
    assert metrics["bbox_mAP"] == 0.0 and metrics["segm_mAP"] == 0.0
    assert metrics["per_class"]["bbox"]["can"] == 0.0


def test_no_detections_at_all_scores_zero():
    metrics = evaluate(ground_truth({1: [(A, 1)]}), {1: prediction([])})
    assert metrics["bbox_mAP"] == 0.0 and metrics["segm_AR@100"] == 0.0


def random_case(seed: int) -> tuple[dict, dict[int, InstancePrediction]]:
    """Random ground truth on 12 images and noisy, partly wrong, partly missing predictions."""
    rng = np.random.default_rng(seed)
    objects, predictions = {}, {}
    for image_id in range(1, 13):
        items, found = [], []
        for _ in range(rng.integers(0, 5)):
            x1, y1 = rng.integers(0, W - 12), rng.integers(0, H - 12)
            box = [float(x1), float(y1), float(rng.integers(x1 + 4, W)), float(rng.integers(y1 + 4, H))]
            category = int(rng.integers(1, 3))
            items.append((box, category))
            if rng.random() < 0.8:
                noisy = np.clip(np.array(box) + rng.integers(-1, 2, 4), 0, [W, H, W, H]).tolist()
                if noisy[2] > noisy[0] + 1 and noisy[3] > noisy[1] + 1:
                    label = category - 1 if rng.random() < 0.85 else 2 - category
                    found.append((noisy, label, float(rng.random())))
        for _ in range(rng.integers(0, 3)):  # false positives
            x1, y1 = rng.integers(0, W - 8), rng.integers(0, H - 8)
            found.append(([float(x1), float(y1), float(x1 + 6), float(y1 + 7)], int(rng.integers(0, 2)), 0.3))
        objects[image_id], predictions[image_id] = items, prediction(found)
    return ground_truth(objects), predictions


def direct_stats(gt: dict, predictions: dict[int, InstancePrediction], iou_type: str) -> np.ndarray:
    """pycocotools' own stats, results written by hand (not through to_coco)."""
    rows = []
    for image_id, p in predictions.items():
        for box, score, label, mask in zip(p.boxes, p.scores, p.labels, p.masks, strict=True):
            row = {"image_id": image_id, "category_id": int(label) + 1, "score": float(score)}
            if iou_type == "bbox":
                row["bbox"] = [box[0], box[1], box[2] - box[0], box[3] - box[1]]
            else:
                row["segmentation"] = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            rows.append(row)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        evaluation = COCOeval(coco, coco.loadRes(rows), iou_type)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation.stats


@pytest.mark.parametrize("seed", [0, 1])
def test_agrees_with_pycocotools_called_directly(seed):
    gt, predictions = random_case(seed)
    metrics = evaluate(gt, predictions)
    names = ("mAP", "mAP_50", "mAP_75", "mAP_s", "mAP_m", "mAP_l")
    for iou_type in ("bbox", "segm"):
        stats = direct_stats(gt, predictions, iou_type)
        ours = [metrics[f"{iou_type}_{n}"] for n in names]
        np.testing.assert_allclose(ours, np.maximum(stats[:6], 0), atol=1e-12, err_msg=iou_type)
        assert metrics[f"{iou_type}_AR@100"] == pytest.approx(max(stats[8], 0))
    assert 0.2 < metrics["bbox_mAP"] < 0.9 and 0.2 < metrics["segm_mAP"] < 0.9  # a case that tests something


def test_pr_curve_plots_are_written(tmp_path):
    gt, predictions = random_case(0)
    evaluator = CocoEvaluator(gt, LABELS, (1, 2))
    evaluator.process(list(predictions), list(predictions.values()))
    evaluator.compute()
    written = evaluator.write_plots(tmp_path)
    assert set(written) == {"pr_curves_bbox", "pr_curves_segm"}
    assert all(path.read_bytes()[:4] == b"\x89PNG" for path in written.values())


def _rank_metrics(rank: int, port: int, queue) -> None:
    """One of two gloo ranks: half the images each, metrics over both."""
    import torch.distributed as dist

    from swinkit.engine.distributed import DistContext

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        gt, predictions = random_case(0)
        mine = {k: v for i, (k, v) in enumerate(predictions.items()) if i % 2 == rank}
        evaluator = CocoEvaluator(gt, LABELS, (1, 2), DistContext(rank=rank, world_size=2))
        evaluator.process(list(mine), list(mine.values()))
        queue.put((rank, evaluator.compute()))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_gather_into_the_single_process_metrics():
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    context = mp.get_context("spawn")
    queue = context.Queue()
    processes = [context.Process(target=_rank_metrics, args=(r, port, queue)) for r in range(2)]
    for p in processes:
        p.start()
    results = dict(queue.get(timeout=120) for _ in processes)
    for p in processes:
        p.join(timeout=60)
        assert p.exitcode == 0
    single = evaluate(*random_case(0))
    assert results[0]["bbox_mAP"] == results[1]["bbox_mAP"] == single["bbox_mAP"]
    assert results[0]["segm_mAP_50"] == single["segm_mAP_50"]
