"""The semantic segmentation task: registry, export, the mmseg recipe's schedule, CLI training and resume."""

import argparse
import json
import time

import pytest
import torch
import transformers
from safetensors.torch import load_file
from segmentation_scenes import CLASSES, write_pairs
from test_train import one_thread  # noqa: F401  (autouse: one torch thread)

from swinkit.cli import build_parser, main
from swinkit.cli import train as train_cli
from swinkit.data.segmentation import SegmentationProcessor
from swinkit.engine.config import TrainConfig, apply_overrides, apply_recipe
from swinkit.engine.evaluate import evaluate_model
from swinkit.engine.optim import param_groups
from swinkit.engine.schedule import build_schedule, run_length
from swinkit.engine.trainer import Trainer
from swinkit.inference import task_of_source
from swinkit.loading import save_pretrained
from swinkit.models.factory import create_model
from swinkit.models.segmentation import create_upernet
from swinkit.tasks import get_task
from swinkit.tasks.semantic_segmentation import SemanticSegmentationTask, export_upernet


def test_task_registered_and_checks_presets():
    task = get_task("semantic_segmentation")
    assert task is SemanticSegmentationTask
    assert task.matches({"architectures": ["UperNetForSemanticSegmentation"]})
    assert not task.matches({"architectures": ["SwinForImageClassification"]})
    task.check_preset("upernet_swin_micro")
    with pytest.raises(ValueError, match="did you mean upernet_swin_micro"):
        task.check_preset("upernet_swin_mirco")


def test_export_loads_in_transformers_and_is_recognised(tmp_path):
    model = create_upernet("upernet_swin_micro", num_classes=3, labels=("bg", "disc", "square")).eval()
    processor = SegmentationProcessor(scale=(128, 64))
    export_upernet(model, tmp_path, processor)
    reference = transformers.UperNetForSemanticSegmentation.from_pretrained(tmp_path).eval()
    pixels = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ours, theirs = model(pixels).logits, reference(pixel_values=pixels).logits
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
    assert reference.config.id2label == {0: "bg", 1: "disc", 2: "square"}
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert SegmentationProcessor.from_preprocessor_config(saved) == processor
    transformers.AutoImageProcessor.from_pretrained(tmp_path)
    assert task_of_source(tmp_path) is SemanticSegmentationTask


def _mmengine_lrs(base, steps, warmup, start_factor, power=1.0, eta_min=0.0):
    """mmengine's chainable LinearLR(begin=0, end=warmup) + PolyLR(begin=warmup, end=steps) by iteration:
    the learning rate of each iteration, written from mmengine's ``_get_value`` forms."""
    linear_total, poly_total = warmup - 1, steps - warmup - 1  # mmengine: total_iters = end - begin - 1
    lr, out = base, []
    for t in range(steps):
        if t < warmup:  # LinearLR, last_step = t
            if t == 0:
                lr = lr * start_factor
            else:
                lr = lr * (
                    1 + (1 - start_factor) / (linear_total * start_factor + (t - 1) * (1 - start_factor))
                )
        else:  # PolyLR, last_step = t - warmup (0: the value is kept)
            s = t - warmup
            if s > 0:
                lr = (lr - eta_min) * (1 - 1 / (poly_total - s + 1)) ** power + eta_min
        out.append(lr)
    return out


@pytest.mark.parametrize(("power", "eta_min"), [(1.0, 0.0), (0.9, 1e-6)])
def test_poly_schedule_is_mmengines_chain(power, eta_min):
    config = TrainConfig()
    apply_recipe(config, "mmseg")
    apply_overrides(
        config, {"schedule.iterations": 100, "schedule.warmup_iters": 15, "schedule.power": power}
    )
    apply_overrides(config, {"schedule.min_lr": eta_min})
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = build_schedule(optimizer, config, steps_per_epoch=7)
    expected = _mmengine_lrs(6e-5, 100, 15, 1e-6, power, eta_min)
    assert [schedule.lr_at(t) for t in range(100)] == pytest.approx(expected, rel=1e-9, abs=1e-18)
    assert run_length(config.schedule, 7) == (15, 100, 15)  # 100 iterations: 14 whole epochs and 2 steps


def test_mmseg_recipe_values_at_160k():
    config = TrainConfig()
    apply_recipe(config, "mmseg")
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = build_schedule(optimizer, config, steps_per_epoch=1264)  # ADE20K: 20210 images / 16
    assert schedule.lr_at(0) == pytest.approx(6e-5 * 1e-6)
    assert schedule.lr_at(750) == pytest.approx(6e-5 * (1e-6 + (1 - 1e-6) * 750 / 1499))
    assert schedule.lr_at(1499) == schedule.lr_at(1500) == pytest.approx(6e-5)
    assert schedule.lr_at(80750) == pytest.approx(6e-5 * (1 - 79250 / 158499))
    assert schedule.lr_at(159999) == 0.0
    assert (config.optim.weight_decay, config.optim.betas, config.optim.clip_grad) == (
        0.01,
        (0.9, 0.999),
        None,
    )


def test_mmseg_no_decay_is_position_tables_and_norms_only():
    model = create_upernet("upernet_swin_micro", num_classes=3)
    config = TrainConfig()
    apply_recipe(config, "mmseg")
    decayed = set()
    for group in param_groups(model, 0.01, no_decay_keys=config.optim.no_decay_keys):
        if group["weight_decay"]:
            decayed |= {id(p) for p in group["params"]}
    names = {name for name, p in model.named_parameters() if id(p) not in decayed}
    assert "backbone.layers.0.blocks.0.attn.relative_position_bias_table" in names
    assert {
        "backbone.norm0.weight",
        "backbone.patch_embed.norm.bias",
        "backbone.layers.0.downsample.norm.weight",
    } <= names
    assert all("norm" in n or "relative_position_bias_table" in n for n in names)
    # mmseg decays biases and the heads' BatchNorm (named bn, not norm)
    assert "decode_head.conv_seg.bias" not in names and "decode_head.fpn_bottleneck.bn.weight" not in names
    assert "backbone.layers.0.blocks.0.attn.qkv.bias" not in names


def test_the_task_defaults_to_the_mmseg_recipe(tmp_path):
    parser = argparse.ArgumentParser()
    train_cli.add_arguments(parser)
    args = parser.parse_args(["--task", "semantic_segmentation", "--data", "x", "--output", str(tmp_path)])
    config = train_cli.resolve_config(args)
    assert (config.optim.lr, config.schedule.kind, config.schedule.iterations) == (6e-5, "poly", 160000)
    args = parser.parse_args(["--data", "x", "--output", str(tmp_path)])
    assert train_cli.resolve_config(args).optim.lr == 5e-4  # classification keeps its default recipe


def _tiny_run_args(data, run):
    settings = {
        "schedule.iterations": 3, "schedule.warmup_iters": 1, "seg.crop_size": 32, "seg.scale": "64,32",
        "seg.test_scale": "64,32", "data.val_split": 0.34, "optim.lr": 1e-3, "model.drop_path_rate": 0.2,
    }  # fmt: skip
    args = ["train", "--task", "semantic_segmentation", "--data", str(data), "--preset", "upernet_swin_micro"]
    args += ["--output", str(run), "--batch-size", "2", "--no-progress"]
    for key, value in settings.items():
        args += ["--set", f"{key}={value}"]
    return args


class _StopAfterFirstEpoch(Exception):
    pass


def _stop_after_first_epoch(line):
    if line.startswith("epoch 1/"):
        raise _StopAfterFirstEpoch


@pytest.mark.slow
def test_cli_run_then_interrupted_and_resumed_run_is_identical(tmp_path, capsys):
    data = write_pairs(tmp_path / "data", 6, size=48)  # 4 training images: 2 steps per epoch
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main(_tiny_run_args(data, full)) == 0
    report = json.loads((full / "metrics.json").read_text())
    assert report["epochs_run"] == 2 and report["primary_metric"] == "mIoU"  # 3 iterations: 2 + 1
    assert report["classes"] == list(CLASSES) and 0.0 <= report["mIoU"] <= 1.0
    assert (full / "plots" / "class_iou.png").is_file() and (full / "plots" / "curves.png").is_file()
    assert task_of_source(full) is SemanticSegmentationTask
    assert (
        main(["evaluate", "--model", str(full), "--data", str(data), "--output", str(tmp_path / "eval")]) == 0
    )
    printed = capsys.readouterr().out
    assert (
        "mIoU" in printed
        and "triangle" in printed
        and (tmp_path / "eval" / "plots" / "class_iou.png").is_file()
    )
    folder = evaluate_model(full, data)
    best = evaluate_model(full / "checkpoints" / "best.safetensors", data)  # the same weights, self-described
    assert folder["mIoU"] == best["mIoU"] and folder["per_class"] == best["per_class"]
    parser = build_parser()
    args = parser.parse_args(_tiny_run_args(data, cut))
    with pytest.raises(_StopAfterFirstEpoch):
        Trainer(train_cli.resolve_config(args), reporter=_stop_after_first_epoch).fit()
    assert main(["train", "--output", str(cut), "--resume", "--no-progress"]) == 0
    ours, theirs = load_file(full / "model.safetensors"), load_file(cut / "model.safetensors")
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert json.loads((cut / "metrics.json").read_text())["history"] == report["history"]
    capsys.readouterr()
    assert main(["train", "--output", str(full), "--resume", "--no-progress"]) == 0
    assert "already finished" in capsys.readouterr().out


def test_cli_names_a_missing_mask(tmp_path, capsys):
    data = write_pairs(tmp_path / "data", 3)
    (data / "masks" / "scene0002.png").unlink()
    assert main(_tiny_run_args(data, tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert "no mask for" in err and "scene0002.png" in err


@pytest.mark.slow
def test_micro_upernet_learns_generated_scenes(tmp_path):
    """From scratch on 300 generated 64x64 scenes, a micro UPerNet reaches mIoU >= 0.8 on 60 held-out ones.

    The mmseg recipe's lr 6e-5 is for an ImageNet-pretrained backbone over 160k iterations; from scratch in
    a few hundred iterations this test uses lr 3e-3 (same AdamW, no-decay keys, warm-up and poly decay),
    no stochastic depth and no photometric distortion (the classes differ in colour as well as shape).
    """
    train = write_pairs(tmp_path / "train", 300, seed=1)
    val = write_pairs(tmp_path / "val", 60, seed=2)
    settings = {
        "schedule.iterations": 400, "schedule.warmup_iters": 20, "optim.lr": 3e-3, "model.drop_path_rate": 0.0,
        "seg.crop_size": 64, "seg.scale": "128,64", "seg.test_scale": "128,64", "seg.ratio_range": "0.75,1.5",
        "seg.photometric": False, "run.checkpoint_every": 0,
    }  # fmt: skip
    args = ["train", "--task", "semantic_segmentation", "--data", str(train), "--val-data", str(val)]
    args += ["--preset", "upernet_swin_micro", "--output", str(tmp_path / "run"), "--batch-size", "8"]
    args += ["--no-progress", *(x for k, v in settings.items() for x in ("--set", f"{k}={v}"))]
    started = time.perf_counter()
    assert main(args) == 0
    report = json.loads((tmp_path / "run" / "metrics.json").read_text())
    print(f"mIoU {report['mIoU']:.4f} after {time.perf_counter() - started:.0f} s: {report['per_class']}")
    assert report["mIoU"] >= 0.8


def _task_for(data, **settings):
    config = TrainConfig()
    apply_recipe(config, "mmseg")
    overrides = {"task": "semantic_segmentation", "data.train": str(data), "run.output": "unused", **settings}
    return SemanticSegmentationTask(apply_overrides(config, overrides))


def test_pretrained_swin_classifier_fills_the_backbone(tmp_path):
    data = write_pairs(tmp_path / "data", 3)
    classifier = create_model("swin_micro", num_classes=5)
    save_pretrained(classifier, tmp_path / "swin")
    task = _task_for(
        data, **{"model.preset": "upernet_swin_micro", "model.pretrained": str(tmp_path / "swin")}
    )
    model = task.build_model(task.load_data())
    assert model.config.label_names == CLASSES  # the data's classes.txt
    theirs = classifier.state_dict()
    ours = model.backbone.state_dict()
    shared = [k for k in ours if k.startswith(("layers.", "patch_embed.")) and "relative_position" not in k]
    assert shared and [k for k in shared if not torch.equal(ours[k], theirs[k])] == []
    # the classifier's last stage at 64 px has a 2x2 window; the detection-convention backbone keeps 4x4,
    # so that stage's tables are resized (the others are copied)
    table = "layers.0.blocks.0.attn.relative_position_bias_table"
    assert torch.equal(ours[table], theirs[table])
    assert model.backbone.config.drop_path_rate == 0.1  # the preset's stochastic depth, not the checkpoint's


def test_pretrained_upernet_keeps_its_weights_and_refits_the_classifiers(tmp_path):
    data = write_pairs(tmp_path / "data", 3)
    same = create_upernet("upernet_swin_micro", labels=CLASSES)
    other = create_upernet("upernet_swin_micro", num_classes=3, labels=("a", "b", "c"))
    export_upernet(same, tmp_path / "same", SegmentationProcessor())
    export_upernet(other, tmp_path / "other", SegmentationProcessor())
    task = _task_for(data, **{"model.pretrained": str(tmp_path / "same")})
    model = task.build_model(task.load_data())
    assert all(torch.equal(v, same.state_dict()[k]) for k, v in model.state_dict().items())
    task = _task_for(data, **{"model.pretrained": str(tmp_path / "other")})
    model = task.build_model(task.load_data())
    assert model.config.num_classes == 4 and model.decode_head.conv_seg.weight.shape[0] == 4
    kept = {k: v for k, v in other.state_dict().items() if "conv_seg" not in k}
    assert all(torch.equal(model.state_dict()[k], v) for k, v in kept.items())
