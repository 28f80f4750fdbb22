"""Training the instance segmentation task: the train pipeline, fine-tuning to new classes, mmdet's Swin 1x
recipe and schedule, and swinkit train / evaluate / predict end to end on generated scenes."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
import torch
from instance_scenes import CLASSES, write_scenes

from swinkit.cli import main
from swinkit.data.instance_transforms import CollateInstances, InstanceTrainSet
from swinkit.data.instances import load_instances
from swinkit.engine.config import TrainConfig, apply_recipe
from swinkit.engine.distributed import DistContext
from swinkit.engine.optim import build_optimizer, freeze_stages
from swinkit.engine.schedule import build_schedule
from swinkit.models.detection.checkpoints import save_pretrained
from swinkit.models.detection.mask_rcnn import create_mask_rcnn
from swinkit.models.detection.preprocess import DetectionPreprocessor
from swinkit.tasks import InstanceSegmentationTask, ObjectDetectionTask
from swinkit.tasks.instance_training import CLASS_LAYERS, refit_classes


def test_train_pipeline_resizes_flips_and_pads_boxes_and_masks_together(tmp_path):
    data = load_instances(write_scenes(tmp_path, 2, size=64))
    processor = DetectionPreprocessor((48, 32))  # 64x64 -> 32x32 (keep ratio: the short bound rules)
    plain = InstanceTrainSet(data, processor, flip=0.0, seed=0)[0]
    flipped = InstanceTrainSet(data, processor, flip=1.0, seed=0)[0]
    assert plain["pixels"].shape == (3, 32, 32) and plain["meta"].scale_factor == (0.5, 0.5)
    assert torch.allclose(plain["boxes"], torch.from_numpy(data[0].boxes * 0.5).float())
    assert torch.equal(flipped["masks"], plain["masks"].flip(-1))
    assert torch.allclose(flipped["boxes"][:, [2, 0]], 32 - plain["boxes"][:, [0, 2]])
    for sample in (plain, flipped):  # each mask lies inside its box
        for box, mask in zip(sample["boxes"], sample["masks"]):
            ys, xs = mask.nonzero(as_tuple=True)
            assert (
                xs.min() >= box[0] - 1
                and xs.max() <= box[2]
                and ys.min() >= box[1] - 1
                and ys.max() <= box[3]
            )
    batch = CollateInstances(processor)([plain, flipped])
    assert batch["pixel_values"].shape == (2, 3, 32, 32) and batch["gt_masks"][1].shape[1:] == (32, 32)


def test_refitting_to_new_classes_reinitialises_exactly_the_class_layers():
    torch.manual_seed(0)
    model = create_mask_rcnn("mask_rcnn_swin_micro", labels=("a", "b", "c"))
    assert refit_classes(model, ("a", "b", "c")) is model
    torch.manual_seed(1)
    fitted = refit_classes(model, ("x", "y"))
    old, new = model.state_dict(), fitted.state_dict()
    assert set(old) == set(new)
    changed = {k for k in old if old[k].shape != new[k].shape or not torch.equal(old[k], new[k])}
    class_weights = {k for k in old if k.startswith(CLASS_LAYERS) and k.endswith("weight")}
    assert class_weights <= changed and all(k.startswith(CLASS_LAYERS) for k in changed)
    assert new["roi_head.bbox_head.fc_cls.weight"].shape[0] == 3 and fitted.config.labels == ("x", "y")
    assert new["roi_head.mask_head.conv_logits.weight"].shape[0] == 2
    assert new["roi_head.bbox_head.fc_reg.weight"].shape[0] == 8


def test_freeze_stages_reaches_the_detector_backbone():
    model = create_mask_rcnn("mask_rcnn_swin_micro", num_classes=2)
    assert freeze_stages(model, 2) > 0
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert any(n.startswith("backbone.layers.1.") for n in frozen)
    assert not any(n.startswith(("backbone.layers.2.", "neck.", "rpn_head.", "roi_head.")) for n in frozen)


def test_the_task_defaults_to_mmdet_swin_1x():
    assert InstanceSegmentationTask.default_recipe == "mmdet_1x"
    config = apply_recipe(TrainConfig(task="instance_segmentation"), "mmdet_1x")
    o, s = config.optim, config.schedule
    assert (o.lr, o.betas, o.weight_decay, o.clip_grad) == (1e-4, (0.9, 0.999), 0.05, None)
    assert (s.kind, s.epochs, s.milestones, s.gamma, s.warmup_iters, s.warmup_factor) == (
        "step",
        12,
        (8, 11),
        0.1,
        1000,
        0.001,
    )
    assert config.task_options.scale == (1333, 800) and config.task_options.hflip == 0.5
    model = create_mask_rcnn("mask_rcnn_swin_micro", num_classes=2)
    groups = build_optimizer(model, o).param_groups
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    for name, p in model.named_parameters():
        expected = any(k in name for k in ("absolute_pos_embed", "relative_position_bias_table", "norm"))
        assert (id(p) in no_decay) == expected, name  # biases decay, as mmdet's paramwise_cfg


def test_step_schedule_is_linear_warmup_times_multistep():
    config = apply_recipe(TrainConfig(task="instance_segmentation"), "mmdet_1x")
    model = torch.nn.Linear(2, 2)
    schedule = build_schedule(torch.optim.AdamW(model.parameters()), config, steps_per_epoch=500)
    lr = 1e-4
    assert schedule.lr_at(0) == pytest.approx(lr * 0.001)
    assert schedule.lr_at(999) == pytest.approx(lr)
    assert schedule.lr_at(500) == pytest.approx(lr * (0.001 + 0.999 * 500 / 999))
    assert schedule.lr_at(8 * 500 - 1) == pytest.approx(lr)
    assert schedule.lr_at(8 * 500) == pytest.approx(lr * 0.1)
    assert schedule.lr_at(11 * 500) == pytest.approx(lr * 0.01)
    assert schedule.total_steps == 12 * 500
    short = build_schedule(torch.optim.AdamW(model.parameters()), config, steps_per_epoch=10)
    assert short.lr_at(119) == pytest.approx(lr * (0.001 + 0.999 * 119 / 999) * 0.01)  # still warming up


def test_object_detection_fine_tunes_a_saved_detector_on_boxes_only_data(tmp_path):
    torch.manual_seed(0)
    saved = create_mask_rcnn("faster_rcnn_swin_micro", labels=("a", "b", "c"))
    save_pretrained(saved, tmp_path / "saved")
    config = TrainConfig(task="object_detection")
    config.data.train = str(write_scenes(tmp_path / "data", 3, masks=False))
    config.model.pretrained, config.run.batch_size = str(tmp_path / "saved"), 2
    config.task_options.scale = (64, 64)
    task = ObjectDetectionTask(config)
    data = task.load_data()
    model = task.build_model(data)
    assert model.config.labels == CLASSES and task.primary_metric == "bbox_mAP"
    kept = saved.state_dict()
    for name, value in model.state_dict().items():
        if not name.startswith(CLASS_LAYERS):
            assert torch.equal(value, kept[name]), name
    batch = next(iter(task.train_loader(data, task.processor(model), DistContext()).loader))
    assert "gt_masks" not in batch
    losses = task.losses(model, batch, np.random.default_rng(0), contextlib.nullcontext())
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "loss_bbox"}


@pytest.mark.slow
def test_train_evaluate_predict_end_to_end(tmp_path, capsys):
    train = write_scenes(tmp_path / "train", 4)
    val = write_scenes(tmp_path / "val", 2, seed=1)
    run = tmp_path / "run"
    args = ["train", "--task", "instance_segmentation", "--data", str(train), "--val-data", str(val),
            "--preset", "mask_rcnn_swin_micro", "--output", str(run), "--epochs", "1", "--batch-size", "2",
            "--set", "det.scale=[64,64]", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "metrics.json"):
        assert (run / name).is_file(), name
    config = json.loads((run / "config.json").read_text())
    assert list(config["id2label"].values()) == list(CLASSES) and config["architectures"] == ["SwinMaskRCNN"]
    report = json.loads((run / "metrics.json").read_text())
    assert report["primary_metric"] == "segm_mAP" and "segm_mAP_50" in report
    assert json.loads((run / "preprocessor_config.json").read_text())["scale"] == [64, 64]
    capsys.readouterr()
    assert main(["evaluate", "--model", str(run), "--data", str(val)]) == 0
    assert "segm_mAP" in capsys.readouterr().out
    assert main(["predict", "--model", str(run), str(tmp_path / "val" / "scene0.png")]) == 0
    assert np.isfinite(report["bbox_mAP"])


@pytest.mark.slow
def test_a_micro_mask_rcnn_learns_generated_scenes(tmp_path):
    """Issue 13's bar: from scratch, 192 steps of 2 images (8 epochs of 48 scenes, the step decay at epochs 6
    and 7; the run length is fixed, so the time is bounded) reach mask AP50 >= 0.7 on 40 held-out scenes.
    Measured mask AP50: 0.853 with one torch thread (0.79 at epoch 6), 0.895 with two (0.82 at epoch 6), 0.835
    with one thread and data seeds 1 and 101, against 0.63 for the former 12 x 24 run (one thread); 5.3 minutes
    on 2 cores shared with other jobs."""
    train = write_scenes(tmp_path / "train", 48)
    val = write_scenes(tmp_path / "val", 40, seed=100)
    run = tmp_path / "run"
    args = ["train", "--task", "instance_segmentation", "--data", str(train), "--val-data", str(val),
            "--preset", "mask_rcnn_swin_micro", "--output", str(run), "--epochs", "8", "--batch-size", "2",
            "--lr", "1e-3", "--set", "det.scale=[64,64]", "--set", "schedule.warmup_iters=10",
            "--set", "schedule.milestones=[6,7]", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    report = json.loads((run / "metrics.json").read_text())
    assert report["best_epoch"] >= 6 and report["segm_mAP_50"] >= 0.7 and report["bbox_mAP_50"] >= 0.7


def _three_class_scenes(folder):
    """Generated scenes relabelled to 3 classes (every third object a ``blue_box``)."""
    path = write_scenes(folder, 4)
    coco = json.loads(path.read_text())
    coco["categories"].append({"id": 3, "name": "blue_box"})
    for annotation in coco["annotations"][::3]:
        annotation["category_id"] = 3
    path.write_text(json.dumps(coco))
    return path


def test_fine_tuning_an_mmdet_coco_checkpoint_to_three_classes_keeps_every_shared_weight(tmp_path):
    """``swinkit train --pretrained X.pth`` with an mmdet 3.x COCO file (80 classes, the documented key layout):
    the run's detector predicts the data's 3 classes, ``fc_cls``/``fc_reg``/``conv_logits`` freshly initialised
    (mmdet's init, as its ``load_from`` leaves mis-shaped layers), every other tensor the file's."""
    from test_detection_layouts import MICRO, mmdet_checkpoint

    from swinkit.layouts.heads import mmdet

    checkpoint = mmdet_checkpoint(MICRO, seed=3)
    torch.save(checkpoint, tmp_path / "coco.pth")
    config = TrainConfig(task="instance_segmentation")
    config.data.train, config.model.pretrained = (
        str(_three_class_scenes(tmp_path / "data")),
        str(tmp_path / "coco.pth"),
    )
    config.task_options.scale = (64, 64)
    task = InstanceSegmentationTask(config)
    model = task.build_model(task.load_data())
    assert model.config.labels == ("red_box", "green_box", "blue_box") and model.training
    tuned, coco = model.state_dict(), mmdet.to_canonical(checkpoint["state_dict"])
    assert tuned.keys() == coco.keys()
    for name, value in tuned.items():
        if name.startswith(CLASS_LAYERS):
            assert value.shape != coco[name].shape, name
        else:
            assert torch.equal(value, coco[name]), name
    assert tuned["roi_head.bbox_head.fc_cls.weight"].shape[0] == 4  # 3 classes + background
    assert tuned["roi_head.bbox_head.fc_reg.weight"].shape[0] == 12
    assert tuned["roi_head.mask_head.conv_logits.weight"].shape[0] == 3
    assert tuned["roi_head.bbox_head.fc_cls.weight"].std().item() == pytest.approx(0.01, rel=0.2)
    assert not tuned["roi_head.bbox_head.fc_cls.bias"].any()
    batch = next(iter(task.train_loader(task.load_data(), task.processor(model), DistContext()).loader))
    losses = task.losses(model, batch, np.random.default_rng(0), contextlib.nullcontext())
    assert all(torch.isfinite(v) for v in losses.values())
