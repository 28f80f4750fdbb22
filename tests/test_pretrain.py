"""``swinkit pretrain`` (SimMIM on unlabelled images), its reconstruction grid, resumption, and fine-tuning a
classifier from the pretrained run with ``swinkit train --pretrained RUN``."""

import argparse
import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from swinkit.cli import main
from swinkit.cli.pretrain import add_arguments, resolve_config
from swinkit.engine import trainer as trainer_module
from swinkit.engine.config import TrainConfig, apply_overrides, flatten
from swinkit.engine.reconstruction import denormalise, grid_rows
from swinkit.loading import from_pretrained
from swinkit.models.mim import load_mim
from swinkit.tasks.classification import build_classifier

MICRO = [
    "--preset",
    "swinv2_micro_simmim",
    "--image-size",
    "32",
    "--mask-patch-size",
    "8",
    "--batch-size",
    "4",
]
MICRO += ["--no-progress", "--set", "schedule.warmup_epochs=0.5", "--set", "data.crop_pct=null"]


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_images(root, count, size=32, classes=("a", "b")):
    """Class folders of flat-coloured noisy images; pretraining ignores the folders."""
    g = torch.Generator().manual_seed(0)
    for i in range(count):
        folder = root / classes[i % len(classes)]
        folder.mkdir(parents=True, exist_ok=True)
        colour = torch.tensor([220.0, 40.0, 40.0] if i % 2 else [40.0, 40.0, 220.0]).view(3, 1, 1)
        pixels = (colour.expand(3, size, size) + 20 * torch.randn(3, size, size, generator=g)).clamp(0, 255)
        Image.fromarray(pixels.byte().permute(1, 2, 0).numpy()).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain")
    images = make_images(root / "images", 12)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    code = main(["pretrain", "--data", str(images), "--output", str(root / "run"), "--epochs", "2", *MICRO])
    torch.set_num_threads(before)
    assert code == 0
    return root


def parse(argv):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_pretrain_writes_the_mim_model_plots_metrics_and_config(pretrained_run, capsys):
    run = pretrained_run / "run"
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "metrics.json"):
        assert (run / name).is_file(), name
    for name in (
        "curves.png",
        "reconstruction.png",
        "reconstruction_epoch1.png",
        "reconstruction_epoch2.png",
    ):
        assert (run / "plots" / name).is_file(), name
    assert json.loads((run / "config.json").read_text())["architectures"] == ["Swinv2ForMaskedImageModeling"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["primary_metric"] == "masked_l1" and len(metrics["history"]) == 2
    saved = yaml.safe_load((run / "train_config.yaml").read_text())
    assert saved["task"] == "masked_image_modeling"
    assert saved["optim"]["lr"] == pytest.approx(2e-4 * 4 / 512)  # SimMIM's base lr scaled by batch / 512
    assert saved["schedule"]["min_lr"] == pytest.approx(1e-5 * 4 / 512)
    assert saved["optim"]["weight_decay"] == 0.05 and saved["optim"]["clip_grad"] == 5.0
    grid = Image.open(run / "plots" / "reconstruction.png")
    assert grid.height == 3 * (96 + 4)  # original / masked / reconstruction rows of 32 px images enlarged x3
    load_mim(run)  # the exported model loads as a SimMIM model


def test_pretrain_prints_how_to_fine_tune(tmp_path, capsys):
    images = make_images(tmp_path / "images", 6)
    code = main(
        ["pretrain", "--data", str(images), "--output", str(tmp_path / "run"), "--epochs", "1", *MICRO]
    )
    out = capsys.readouterr().out
    assert code == 0 and f"swinkit train --pretrained {tmp_path / 'run'}" in out and "serve" not in out


def test_explicit_learning_rates_are_kept_and_base_lr_scales_all_three(tmp_path):
    common = ["--data", str(tmp_path), "--output", str(tmp_path / "run"), "--batch-size", "64"]
    config = resolve_config(parse([*common, "--lr", "3e-3"]))
    assert config.optim.lr == 3e-3 and config.schedule.warmup_lr == pytest.approx(1e-6 * 64 / 512)
    config = resolve_config(parse([*common, "--base-lr", "4e-4", "--set", "optim.accum_steps=2"]))
    assert config.optim.lr == pytest.approx(4e-4 * 128 / 512)
    assert config.schedule.min_lr == pytest.approx(2e-5 * 128 / 512)
    with pytest.raises(ValueError, match="swinkit pretrain trains masked_image_modeling only"):
        resolve_config(parse([*common, "--set", "task=classification"]))


def test_train_with_the_mim_task_resolves_the_same_run_as_pretrain(tmp_path, monkeypatch):
    """The recipe belongs to the task: ``train --task masked_image_modeling`` gets SimMIM's, batch-scaled lrs."""
    from swinkit.cli import build_parser
    from swinkit.cli.train import resolve_config as resolve_train

    monkeypatch.setenv("WORLD_SIZE", "2")
    common = ["--data", str(tmp_path), "--output", str(tmp_path / "run"), "--preset", "swinv2_micro_simmim"]
    common += ["--batch-size", "16", "--accum-steps", "2", "--set", "mim.mask_ratio=0.5", "--no-progress"]
    pretrain = resolve_config(parse(common))
    train = resolve_train(build_parser().parse_args(["train", "--task", "masked_image_modeling", *common]))
    assert flatten(train.to_dict()) == flatten(pretrain.to_dict())
    assert train.task_options.mask_ratio == 0.5 and not train.run.progress
    assert train.schedule.epochs == 100 and train.optim.lr == pytest.approx(2e-4 * 64 / 512)
    classification = resolve_train(build_parser().parse_args(["train", "--data", str(tmp_path)]))
    assert classification.schedule.epochs == 30 and classification.optim.lr == 5e-4


def test_the_grid_shows_the_reconstruction_only_on_masked_squares():
    pixels, reconstruction = torch.zeros(2, 3, 8, 8), torch.ones(2, 3, 8, 8)
    mask = torch.tensor([[[1, 0], [0, 0]], [[0, 0], [0, 1]]])  # (2, 2, 2) squares of 4 px
    original, masked, rebuilt = grid_rows(pixels, mask, reconstruction, 4, (0.5,) * 3, (0.25,) * 3)
    assert (original == 128).all()  # 0 * 0.25 + 0.5 -> mid grey
    assert (rebuilt[0, :4, :4] == 191).all() and (rebuilt[0, 4:, :] == 128).all()  # 1 * 0.25 + 0.5
    assert (rebuilt[1, 4:, 4:] == 191).all() and (rebuilt[1, :4, :] == 128).all()
    assert np.array_equal(denormalise(pixels, (0.5,) * 3, (0.25,) * 3), original)
    with pytest.raises(ValueError, match="do not describe the same images"):
        grid_rows(pixels, mask, reconstruction, 2, (0.5,) * 3, (0.25,) * 3)


@pytest.mark.slow
def test_an_interrupted_pretrain_run_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    images = make_images(tmp_path / "images", 12)

    def pretrain(output, *extra):
        argv = ["pretrain", "--data", str(images), "--output", str(output), "--epochs", "2", *MICRO]
        return main([*argv, "--set", "run.checkpoint_every=1", *extra])

    assert pretrain(tmp_path / "whole") == 0
    step = trainer_module.Trainer._step

    def dies(self, micro):
        if self.progress.epoch == 1 and self.progress.step == 1:
            raise RuntimeError("interrupted")
        return step(self, micro)

    monkeypatch.setattr(trainer_module.Trainer, "_step", dies)
    with pytest.raises(RuntimeError, match="interrupted"):
        pretrain(tmp_path / "parts")
    assert not (tmp_path / "parts" / "plots" / "reconstruction_epoch2.png").exists()
    monkeypatch.setattr(trainer_module.Trainer, "_step", step)
    assert pretrain(tmp_path / "parts", "--resume") == 0
    whole = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    parts = json.loads((tmp_path / "parts" / "metrics.json").read_text())
    assert parts["history"] == whole["history"]
    assert (tmp_path / "parts" / "plots" / "reconstruction_epoch2.png").is_file()


@pytest.mark.slow
def test_train_fine_tunes_a_classifier_from_the_pretrained_encoder(pretrained_run):
    run, labelled = pretrained_run / "run", pretrained_run / "images"
    encoder = load_mim(run).encoder.state_dict()
    config = apply_overrides(TrainConfig(), {
        "data.train": str(labelled), "model.pretrained": str(run), "run.output": str(pretrained_run / "ft"),
        "run.batch_size": 4, "schedule.epochs": 1, "optim.layer_decay": 0.8, "run.progress": False,
        "augment.randaugment_ops": 0, "data.crop_pct": None,
    })  # fmt: skip
    start = build_classifier(config, ("a", "b"), multi_label=False).state_dict()
    assert not any("mask_token" in k or "decoder" in k for k in start)
    for key in ("patch_embed.proj.weight", "layers.3.blocks.1.attn.qkv.weight", "norm.weight"):
        torch.testing.assert_close(start[key], encoder[key], rtol=0, atol=0)
    argv = [
        "train",
        "--pretrained",
        str(run),
        "--data",
        str(labelled),
        "--output",
        str(pretrained_run / "ft"),
    ]
    argv += ["--epochs", "1", "--batch-size", "4", "--no-progress", "--set", "optim.layer_decay=0.8"]
    assert main(argv) == 0
    fine_tuned = from_pretrained(pretrained_run / "ft")
    assert fine_tuned.config.num_classes == 2
    assert json.loads((pretrained_run / "ft" / "config.json").read_text())["architectures"] == [
        "Swinv2ForImageClassification"
    ]


def test_the_pretraining_crop_is_bilinear_as_simmims(tmp_path, monkeypatch):
    """SimMIM's RandomResizedCrop keeps torchvision's default filter (bilinear), whatever data.interpolation says."""
    import swinkit.tasks.masked_image_modeling as mim_task
    from swinkit.engine.distributed import DistContext

    seen = {}
    real = mim_task.TrainTransform
    monkeypatch.setattr(mim_task, "TrainTransform", lambda **kw: seen.update(kw) or real(**kw))
    config = resolve_config(parse(["--data", str(make_images(tmp_path / "images", 4)), "--output",
                                   str(tmp_path / "run"), *MICRO]))  # fmt: skip
    assert config.data.interpolation == "bicubic" and config.task_options.interpolation == "bilinear"
    task = mim_task.MaskedImageModelingTask(config)
    data = task.load_data()
    model = task.build_model(data)
    task.train_loader(data, task.processor(model), DistContext())
    assert seen["interpolation"] == "bilinear"


def test_the_mim_evaluator_only_computes_and_the_task_writes_the_epoch_grid(tmp_path):
    """compute() has no side effect; the epoch's reconstruction grid is the task's epoch report."""
    from swinkit.engine.distributed import DistContext
    from swinkit.engine.evaluation import run_evaluation
    from swinkit.tasks.masked_image_modeling import MaskedImageModelingTask

    run = tmp_path / "run"
    config = resolve_config(parse(["--data", str(make_images(tmp_path / "images", 4)), "--output", str(run),
                                   *MICRO]))  # fmt: skip
    task, context = MaskedImageModelingTask(config), DistContext()
    data = task.load_data()
    model = task.build_model(data)
    processor = task.processor(model)
    task.train_loader(data, processor, context)
    loader = task.eval_loader(data.val, processor, 2, context)
    evaluator = task.evaluator(context)
    metrics = run_evaluation(model, loader, task, evaluator, context)
    assert metrics["masked_l1"] > 0 and not run.exists()  # nothing written by computing the metrics
    written = task.write_epoch_report(run, 3, evaluator)
    assert written == {"reconstruction": run / "plots" / "reconstruction_epoch3.png"}
    assert Image.open(written["reconstruction"]).height == 3 * (96 + 4)
