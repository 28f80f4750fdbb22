"""The task interface: the registry, and a second task (mean colour regression) trained by the unchanged Trainer."""

import argparse
import contextlib
import inspect
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from swinkit.checkpoint_io import atomic_write_json, load_torch, save_torch
from swinkit.cli.train import add_arguments, resolve_config
from swinkit.engine import trainer as trainer_module
from swinkit.engine.config import TrainConfig, apply_overrides
from swinkit.engine.distributed import DistContext, ShardedSampler, all_reduce_sum, eval_shard
from swinkit.engine.evaluation import run_evaluation
from swinkit.engine.trainer import Trainer
from swinkit.layouts.hf import config_to_hf
from swinkit.models.factory import create_model
from swinkit.models.mim import load_mim
from swinkit.tasks import (
    ClassificationTask,
    Evaluator,
    MaskedImageModelingTask,
    Task,
    TrainLoader,
    get_task,
    register,
    task_of_saved_model,
    unregister,
)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_registry_names_tasks_and_saved_models():
    assert get_task("classification") is ClassificationTask
    with pytest.raises(ValueError, match="unknown task 'segmentation'; known tasks: classification"):
        get_task("segmentation")
    hf = config_to_hf(create_model("swinv2_micro", num_classes=3).config)
    assert task_of_saved_model(hf) is ClassificationTask
    with pytest.raises(ValueError, match="no task handles a saved model with"):
        task_of_saved_model({"architectures": ["SwinForSomethingElse"]})


def test_config_carries_the_task_through_yaml_and_validation(tmp_path):
    config = TrainConfig()
    assert config.task == "classification" and config.to_dict()["task"] == "classification"
    apply_overrides(
        config, {"task": "mean_colour", "data.train": "x", "run.output": "y", "model.preset": "p"}
    )
    assert TrainConfig.from_dict(yaml.safe_load(yaml.safe_dump(config.to_dict()))).task == "mean_colour"
    with pytest.raises(ValueError, match="unknown task 'mean_colour'"):
        config.validate()


def test_train_command_takes_a_task():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert resolve_config(parser.parse_args(["--output", "r"])).task == "classification"
    assert resolve_config(parser.parse_args(["--task", "mean_colour", "--output", "r"])).task == "mean_colour"


def test_the_trainer_names_no_task():
    source = inspect.getsource(trainer_module)
    for word in ("multi_label", "classification", "labels", "logits", "self.mix", "accuracy"):
        assert word not in source, word


class Colours(Dataset):
    """Noisy images of one random colour each; the target is the image's mean colour (3,)."""

    def __init__(self, count: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        colours = torch.rand(count, 3, 1, 1, generator=g)
        self.images = (colours + 0.1 * torch.randn(count, 3, 8, 8, generator=g)).clamp(0, 1)
        self.targets = self.images.mean(dim=(2, 3))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i], self.targets[i]

    def set_epoch(self, epoch: int) -> None:
        pass

    def summary(self, title: str) -> str:
        return f"{title}: {len(self)} colour images"


class ColourData:
    def __init__(self) -> None:
        self.train, self.val = Colours(48, seed=0), Colours(16, seed=1)


class Processor:
    def to_preprocessor_config(self) -> dict:
        return {"size": 8}


class MaeEvaluator(Evaluator):
    def __init__(self, context) -> None:
        self.context = context
        self.reset()

    def reset(self) -> None:
        self.sums = torch.zeros(3, dtype=torch.float64)  # (squared error, absolute error, count)

    def process(self, batch, outputs) -> None:
        target = batch[1]
        self.sums += torch.stack(
            [
                F.mse_loss(outputs, target, reduction="sum").double() / 3,
                F.l1_loss(outputs, target, reduction="sum").double() / 3,
                torch.tensor(float(target.shape[0]), dtype=torch.float64),
            ]
        )

    def compute(self) -> dict:
        sums = all_reduce_sum(self.sums, self.context)
        count = float(sums[2])
        return {"loss": float(sums[0]) / count, "mae": float(sums[1]) / count, "num_samples": int(count)}


class MeanColourTask(Task):
    """A task the trainer has never heard of: a loss to minimise, and a lower-is-better primary metric."""

    name = "mean_colour"
    higher_is_better = False
    primary_metric = "mae"

    @classmethod
    def matches(cls, config_dict):
        return config_dict.get("architectures") == ["MeanColour"]

    @classmethod
    def check_preset(cls, name):
        assert name == "(the task's own)"

    def load_data(self):
        return ColourData()

    def build_model(self, data):
        torch.manual_seed(self.config.run.seed)
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GELU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(8, 3))  # fmt: skip

    def processor(self, model):
        return Processor()

    def train_loader(self, data, processor, context):
        sampler = ShardedSampler(len(data.train), seed=self.config.run.seed, rank=context.rank,
                                 world_size=context.world_size)  # fmt: skip
        loader = DataLoader(data.train, batch_size=self.config.run.batch_size, sampler=sampler)
        return TrainLoader(loader, data.train, sampler)

    def eval_loader(self, data, processor, batch_size, context):
        shard = torch.utils.data.Subset(data, eval_shard(len(data), context))
        return DataLoader(shard, batch_size=batch_size)

    def losses(self, model, batch, rng, autocast):
        pixels, target = batch
        with autocast:
            predicted = model(pixels)
        return {
            "loss_mse": F.mse_loss(predicted.float(), target),
            "loss_l1": 0.1 * F.l1_loss(predicted, target),
        }

    def infer(self, model, batch):
        return model(batch[0])

    def evaluator(self, context):
        return MaeEvaluator(context)

    def summary_line(self, metrics):
        return f"mae {metrics['mae']:.4f}"

    def write_report(self, directory, report, evaluator):
        atomic_write_json(Path(directory) / "metrics.json", report)
        return {"metrics": Path(directory) / "metrics.json"}

    def export(self, model, directory, processor):
        torch.save(model.state_dict(), Path(directory) / "mean_colour.pt")

    def description(self, model, processor):
        return {"task": self.name}


@pytest.fixture
def mean_colour_task():
    register(MeanColourTask)
    yield MeanColourTask
    unregister(MeanColourTask.name)


def test_a_new_task_trains_through_the_unchanged_trainer(tmp_path, mean_colour_task):
    config = apply_overrides(TrainConfig(), {
        "task": "mean_colour", "data.train": str(tmp_path), "model.preset": "(the task's own)",
        "run.output": str(tmp_path / "run"), "run.batch_size": 8, "run.progress": False, "optim.lr": 3e-2,
        "optim.weight_decay": 0.0, "schedule.epochs": 4, "schedule.warmup_epochs": 0.0,
        "schedule.min_lr": 3e-2,
    })  # fmt: skip
    assert task_of_saved_model({"architectures": ["MeanColour"]}) is MeanColourTask
    lines = []
    report = Trainer(config, reporter=lines.append).fit()
    history = report["history"]
    maes = [h["mae"] for h in history]
    assert len(history) == 4 and maes[-1] < maes[0], history
    assert report["best_epoch"] == 1 + maes.index(min(maes)) != 1 + maes.index(max(maes))
    assert report["primary_metric"] == "mae" and report["mae"] == min(maes)
    for h in history:
        assert h["train_loss"] == pytest.approx(h["loss_mse"] + h["loss_l1"], rel=1e-6)
        assert h["val_loss"] > 0
    assert any(line.startswith("epoch 1/4") and "mae " in line for line in lines), lines
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["history"] == history and (tmp_path / "run" / "mean_colour.pt").is_file()
    assert yaml.safe_load((tmp_path / "run" / "train_config.yaml").read_text())["task"] == "mean_colour"


class Interrupted(Trainer):
    """Dies at step 3 of epoch 2, after the mid-epoch checkpoint of step 2."""

    def _step(self, micro):
        if self.progress.epoch == 1 and self.progress.step == 3:
            raise RuntimeError("interrupted")
        return super()._step(micro)


def test_resume_mid_epoch_keeps_the_task_and_its_named_losses(tmp_path, mean_colour_task, caplog):
    def config(output):
        return apply_overrides(TrainConfig(), {
            "task": "mean_colour", "data.train": str(tmp_path), "model.preset": "(the task's own)", "run.output": str(output),
            "run.batch_size": 8, "run.progress": False, "optim.lr": 1e-2, "schedule.epochs": 3,
            "run.checkpoint_every": 2,
        })  # fmt: skip

    whole = Trainer(config(tmp_path / "whole")).fit()
    with pytest.raises(RuntimeError, match="interrupted"):
        Interrupted(config(tmp_path / "parts")).fit()
    last = tmp_path / "parts" / "checkpoints" / "last.pt"
    state = load_torch(last)
    # a checkpoint written when every config held every task's section: masked image modeling's, at its defaults
    state["config"]["mim"] = {"mask_patch_size": 32, "mask_ratio": 0.6, "scale": [0.67, 1.0], "hflip": 0.5}
    save_torch(state, last)
    with caplog.at_level(logging.WARNING, logger="swinkit.engine.trainer"):
        resumed = Trainer(config(tmp_path / "parts"), resume=True).fit()
    assert not caplog.records, caplog.text
    assert resumed["history"] == whole["history"] and "loss_l1" in whole["history"][1]


def test_classification_losses_are_named_and_computed_by_the_task():
    model = create_model("swinv2_micro", num_classes=3, image_size=32).eval()
    config = apply_overrides(TrainConfig(), {"augment.mixup": 0.0, "augment.cutmix": 0.0,
                                             "augment.label_smoothing": 0.0})  # fmt: skip
    task = ClassificationTask(config, labels=("a", "b", "c"), multi_label=False)
    pixels, targets = torch.randn(2, 3, 32, 32), torch.tensor([0, 2])
    losses = task.losses(model, (pixels, targets), np.random.default_rng(0), contextlib.nullcontext())
    assert list(losses) == ["loss_cls"]
    torch.testing.assert_close(losses["loss_cls"], F.cross_entropy(model(pixels), targets), rtol=0, atol=1e-6)
    assert isinstance(model(pixels), torch.Tensor)  # the model's output type is logits, in any mode


def make_tree(root, count, size=32):
    """Unlabelled images spread over nested folders (no class structure), some of them two levels deep."""
    g = torch.Generator().manual_seed(0)
    for i in range(count):
        folder = root / f"part{i % 3}" / ("deep" if i % 2 else "")
        folder.mkdir(parents=True, exist_ok=True)
        colour = (torch.rand(3, 1, 1, generator=g) * 255).expand(3, size, size)
        pixels = (colour + 20 * torch.randn(3, size, size, generator=g)).clamp(0, 255).byte()
        Image.fromarray(pixels.permute(1, 2, 0).numpy()).save(folder / f"{i}.png")
    return root


def mim_config(data, output, epochs=2):
    return apply_overrides(TrainConfig(), {
        "task": "masked_image_modeling", "data.train": str(data), "model.preset": "swinv2_micro_simmim",
        "model.image_size": 32, "mim.mask_patch_size": 8, "data.crop_pct": None, "run.output": str(output),
        "run.batch_size": 8, "optim.lr": 2e-3, "schedule.epochs": epochs, "schedule.warmup_epochs": 0.5,
        "run.progress": False,
    })  # fmt: skip


@pytest.mark.slow
def test_masked_image_modeling_pretrains_a_micro_model(tmp_path):
    data = make_tree(tmp_path / "images", 30)
    report = Trainer(mim_config(data, tmp_path / "run")).fit()
    history = report["history"]
    assert report["primary_metric"] == "masked_l1" and report["train_size"] == 24
    assert history[-1]["masked_l1"] < history[0]["masked_l1"] and "loss_mim" in history[0]
    assert report["best_epoch"] == 2 and report["masked_l1"] == history[-1]["masked_l1"]
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["architectures"] == ["Swinv2ForMaskedImageModeling"]
    assert task_of_saved_model(saved) is MaskedImageModelingTask
    model = load_mim(tmp_path / "run").eval()  # the exported model is the best epoch's
    task = MaskedImageModelingTask(mim_config(data, tmp_path / "run"))
    data_sets = task.load_data()
    task.build_model(data_sets)
    context = DistContext()
    loader = task.eval_loader(data_sets.val, task.processor(model), 4, context)
    metrics = run_evaluation(model, loader, task, task.evaluator(context), context)
    assert metrics["masked_l1"] == pytest.approx(report["masked_l1"], rel=1e-6)


def test_masked_image_modeling_takes_simmim_presets_and_names_them_for_an_unknown_one(tmp_path):
    config = mim_config(tmp_path, tmp_path / "run")
    config.validate()
    config.model.preset = "swinv2_nano_simmim"
    with pytest.raises(
        ValueError, match="unknown preset 'swinv2_nano_simmim' for masked image modeling; Sim"
    ):
        config.validate()


def test_masked_image_modeling_masks_are_fixed_per_held_out_image(tmp_path):
    task = MaskedImageModelingTask(mim_config(make_tree(tmp_path / "images", 10), tmp_path / "run"))
    data = task.load_data()
    model = task.build_model(data)
    full = task.eval_loader(data.val, task.processor(model), 4, DistContext()).dataset
    second_rank = full.shard([1])
    torch.testing.assert_close(second_rank[0][1], full[1][1], rtol=0, atol=0)
    masks = torch.stack([full[i][1] for i in range(len(full))])  # (N, 8, 8) patch masks, 1 = masked
    assert masks.float().mean() == pytest.approx(10 / 16) and not torch.equal(masks[0], masks[1])
    with pytest.raises(ValueError, match="not a multiple of the mask patch 12"):
        MaskedImageModelingTask(
            apply_overrides(mim_config(tmp_path, tmp_path), {"mim.mask_patch_size": 12})
        ).build_model(None)
