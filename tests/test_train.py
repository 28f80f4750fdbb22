"""Fine-tuning: config resolution, the optimiser recipe, the run folder, a multi-label task learnt."""

import json
import logging

import numpy as np
import pytest
import torch
import yaml
from PIL import Image, ImageDraw

from swinkit.checkpoint_io import load_torch
from swinkit.cli import main
from swinkit.engine.config import TrainConfig, apply_overrides
from swinkit.engine.ema import ModelEma
from swinkit.engine.evaluate import evaluate_model
from swinkit.engine.optim import build_optimizer, freeze_stages, param_groups
from swinkit.engine.schedule import WarmupCosine
from swinkit.engine.trainer import Trainer
from swinkit.loading import save_pretrained
from swinkit.models.factory import create_model

SHAPES = ("circle", "square", "triangle")
COLORS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}


@pytest.fixture(autouse=True)
def one_thread():
    """Training tests use one intra-op thread: far faster than two on a shared, busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_colors(root, per_class, seed=0, size=32):
    """A folder per colour; each image a noisy background with a coloured square."""
    rng = np.random.default_rng(seed)
    for name, color in COLORS.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 60, (size, size, 3)) + np.array(color) // 2
            pixels[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = color
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / name / f"{i}.png")
    return root


def make_shapes(root, count, seed, size=32):
    """Images holding a random non-empty set of shape kinds, one shape per quadrant; labels.csv lists them."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows = ["path,labels"]
    half = size // 2
    for i in range(count):
        kinds = [k for k in SHAPES if rng.random() < 0.5] or [SHAPES[int(rng.integers(3))]]
        image = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 60, 3)))
        draw = ImageDraw.Draw(image)
        for kind, cell in zip(kinds, rng.permutation(4)):
            x, y = (cell % 2) * half + int(rng.integers(0, 3)), (cell // 2) * half + int(rng.integers(0, 3))
            s = int(rng.integers(half - 5, half - 2))
            color = tuple(int(v) for v in rng.integers(120, 256, 3))
            if kind == "circle":
                draw.ellipse([x, y, x + s, y + s], fill=color)
            elif kind == "square":
                draw.rectangle([x, y, x + s, y + s], fill=color)
            else:
                draw.polygon([(x + s / 2, y), (x, y + s), (x + s, y + s)], fill=color)
        image.save(root / f"{i}.png")
        rows.append(f"{i}.png,{' '.join(kinds)}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv"


def small_config(**overrides) -> TrainConfig:
    """swinv2_micro at 32 px, light augmentation, no progress bars."""
    config = TrainConfig()
    base = {
        "model.preset": "swinv2_micro",
        "model.image_size": 32,
        "model.drop_path_rate": 0.0,
        "data.crop_pct": None,
        "augment.scale": [1.0, 1.0],
        "augment.randaugment_ops": 0,
        "augment.random_erasing": 0.0,
        "augment.mixup": 0.0,
        "augment.cutmix": 0.0,
        "augment.label_smoothing": 0.0,
        "optim.lr": 2e-3,
        "run.batch_size": 32,
        "run.progress": False,
    }
    return apply_overrides(config, {**base, **overrides})


def test_multi_label_shapes_reach_iou_090(tmp_path):
    train = make_shapes(tmp_path / "train", 256, seed=0)
    val = make_shapes(tmp_path / "val", 100, seed=1)
    config = small_config(
        **{"data.train": str(train), "data.val": str(val), "run.output": str(tmp_path / "run")}
    )
    config.schedule.epochs = 7
    metrics = Trainer(config).fit()
    assert metrics["problem_type"] == "multi_label_classification"
    assert metrics["iou"] >= 0.9, metrics["history"]
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["iou"] == metrics["iou"] and "map" in saved and len(saved["history"]) == 7
    hf_config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert hf_config["problem_type"] == "multi_label_classification"
    assert sorted(hf_config["id2label"].values()) == sorted(SHAPES)


@pytest.fixture(scope="module")
def color_run(tmp_path_factory):
    """One short CLI training run on colour folders with an explicit validation set."""
    root = tmp_path_factory.mktemp("colors")
    train, val = make_colors(root / "train", 12), make_colors(root / "val", 4, seed=1)
    run = root / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    code = main(
        ["train", "--data", str(train), "--val-data", str(val), "--output", str(run), "--preset", "swinv2_micro",
         "--image-size", "32", "--epochs", "2", "--batch-size", "12", "--lr", "2e-3", "--no-progress",
         "--set", "augment.mixup=0", "--set", "augment.cutmix=0", "--set", "augment.hflip=0"]
    )  # fmt: skip
    torch.set_num_threads(threads)
    assert code == 0
    return run, val


def test_run_folder_holds_a_model_transformers_and_predict_load(color_run):
    run, _ = color_run
    for name in (
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "metrics.json",
        "train_config.yaml",
    ):
        assert (run / name).is_file(), name
    for plot in ("curves.png", "confusion_matrix.png", "pr_curves.png"):
        assert (run / "plots" / plot).stat().st_size > 1000
    config = json.loads((run / "config.json").read_text())
    assert config["id2label"] == {"0": "blue", "1": "green", "2": "red"}
    assert config.get("problem_type", "single_label_classification") == "single_label_classification"
    from transformers import AutoModelForImageClassification

    hf = AutoModelForImageClassification.from_pretrained(run)
    assert hf.config.id2label[2] == "red"
    resolved = yaml.safe_load((run / "train_config.yaml").read_text())
    assert resolved["model"]["image_size"] == 32 and resolved["optim"]["lr"] == 2e-3
    assert resolved["augment"]["mixup"] == 0.0


def test_metrics_json_and_evaluate_see_what_training_saw(color_run):
    run, val = color_run
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["primary_metric"] == "accuracy"
    assert {
        "accuracy",
        "top5_accuracy",
        "f1_macro",
        "precision_weighted",
        "confusion_matrix",
        "per_class",
    } <= set(metrics)
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert metrics["accuracy"] == max(h["accuracy"] for h in metrics["history"])
    report = evaluate_model(run, val, output=run / "eval")
    assert report["accuracy"] == metrics["accuracy"]
    assert report["loss"] == pytest.approx(metrics["loss"], rel=1e-5)
    assert (run / "eval" / "plots" / "confusion_matrix.png").is_file()


def test_fine_tuning_from_a_checkpoint_with_other_labels(tmp_path, caplog):
    """Fresh head with a message; frozen stages stay as loaded; bf16, EMA, accumulation and layer decay run."""
    source = create_model("swinv2_micro", labels=["cat", "dog"], image_size=32)
    save_pretrained(source, tmp_path / "pretrained")
    data = make_colors(tmp_path / "data", 6)
    config = small_config(
        **{"data.train": str(data), "run.output": str(tmp_path / "run"), "model.preset": None}
    )
    apply_overrides(
        config,
        {"model.pretrained": str(tmp_path / "pretrained"), "schedule.epochs": 2, "run.bf16": True, "run.ema": True,
         "optim.freeze_stages": 1, "optim.layer_decay": 0.8, "optim.accum_steps": 2, "run.batch_size": 4},
    )  # fmt: skip
    with caplog.at_level(logging.WARNING):
        Trainer(config).fit()
    assert "fresh classification head" in caplog.text and "cat, dog" in caplog.text
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert list(saved["id2label"].values()) == ["blue", "green", "red"]
    trained = load_torch(tmp_path / "run" / "checkpoints" / "last.pt")["model"]
    before = source.state_dict()
    assert torch.equal(
        trained["layers.0.blocks.0.attn.qkv.weight"], before["layers.0.blocks.0.attn.qkv.weight"]
    )
    assert torch.equal(trained["patch_embed.proj.weight"], before["patch_embed.proj.weight"])
    assert not torch.equal(
        trained["layers.1.blocks.0.attn.qkv.weight"], before["layers.1.blocks.0.attn.qkv.weight"]
    )


def test_existing_run_needs_resume(color_run):
    run, val = color_run
    config = small_config(**{"data.train": str(val), "run.output": str(run)})
    with pytest.raises(ValueError, match="--resume"):
        Trainer(config).fit()


def test_config_precedence_and_errors(tmp_path):
    from swinkit.cli import build_parser
    from swinkit.cli.train import resolve_config

    (tmp_path / "c.yaml").write_text("optim:\n  lr: 0.01\n  layer_decay: 0.9\nschedule:\n  epochs: 3\n")
    args = build_parser().parse_args(
        [
            "train",
            "--config",
            str(tmp_path / "c.yaml"),
            "--lr",
            "5e-4",
            "--set",
            "run.ema=true",
            "--set",
            "augment.scale=0.5,1",
        ]
    )
    config = resolve_config(args)
    assert config.optim.lr == 5e-4 and config.optim.layer_decay == 0.9 and config.schedule.epochs == 3
    assert config.run.ema is True and config.augment.scale == (0.5, 1.0)
    with pytest.raises(ValueError, match="optim.lrr"):
        apply_overrides(TrainConfig(), {"optim.lrr": 1})
    with pytest.raises(ValueError, match="expected an integer"):
        apply_overrides(TrainConfig(), {"schedule.epochs": "many"})
    with pytest.raises(ValueError, match="--data"):
        TrainConfig().validate()


def test_param_groups_decay_layer_scales_and_freezing():
    model = create_model("swin_micro", num_classes=3, absolute_pos_embed=True)
    groups = param_groups(model, weight_decay=0.05, layer_decay=0.5)
    names = {id(p): n for n, p in model.named_parameters()}
    for group in groups:
        for p in group["params"]:
            name = names[id(p)]
            no_decay = p.ndim <= 1 or "relative_position_bias_table" in name or name == "absolute_pos_embed"
            assert group["weight_decay"] == (0.0 if no_decay else 0.05), name
            if name.startswith("head."):
                assert group["lr_scale"] == 1.0
            if name.startswith("patch_embed."):
                assert group["lr_scale"] == 0.5 ** (sum(model.config.trunk.depths) + 1)
    frozen = freeze_stages(model, 2)
    assert frozen > 0
    assert not model.layers[1].blocks[0].attn.qkv.weight.requires_grad
    assert model.layers[2].blocks[0].attn.qkv.weight.requires_grad
    optimizer = build_optimizer(model, TrainConfig().optim)
    trainable = sum(p.numel() for g in optimizer.param_groups for p in g["params"])
    assert trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_schedule_warms_up_linearly_then_follows_a_cosine():
    optimizer = torch.optim.AdamW([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr_scale": 0.5}])
    schedule = WarmupCosine(
        optimizer, base_lr=1.0, total_steps=110, warmup_steps=10, warmup_lr=0.0, min_lr=0.1
    )
    assert schedule.lr_at(5) == pytest.approx(0.5)
    assert schedule.lr_at(10) == pytest.approx(1.0)
    assert schedule.lr_at(60) == pytest.approx(0.55)
    assert schedule.lr_at(110) == pytest.approx(0.1)
    for _ in range(5):
        schedule.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.25)


def test_ema_tracks_weights():
    model = torch.nn.Linear(2, 2)
    ema = ModelEma(model, decay=0.5)
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    d = min(0.5, 2 / 11)
    expected = model.weight - (1 - (1 - d))  # ema = d * old + (1 - d) * new = new - d
    assert torch.allclose(ema.module.weight, expected)


class _Composite(torch.nn.Module):
    """A dense-prediction-shaped model: a Swin trunk at ``backbone.*`` and a head outside it."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = create_model("swin_micro", backbone=True)
        self.decode = torch.nn.Conv2d(self.backbone.out_channels[-1], 3, 1)


def test_param_groups_and_freezing_find_a_trunk_inside_a_composite_model():
    from swinkit.engine.optim import layer_ids, no_weight_decay

    composite = _Composite()
    classifier = create_model("swin_micro", num_classes=3)
    ids, num_layers = layer_ids(composite)
    reference, reference_layers = layer_ids(classifier)
    assert num_layers == reference_layers == sum(classifier.config.trunk.depths) + 2
    for name, value in reference.items():
        if name.startswith(("patch_embed.", "layers.")):
            assert ids["backbone." + name] == value, name
    assert ids["backbone.layers.1.blocks.0.attn.qkv.weight"] == 3  # depths (2, 2, ...): blocks 1, 2, then 3
    assert ids["backbone.layers.0.downsample.reduction.weight"] == 2  # merging: its stage's last block
    assert ids["decode.weight"] == ids["backbone.norm3.weight"] == num_layers - 1

    groups = param_groups(composite, weight_decay=0.05, layer_decay=0.5)
    scale = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    decay = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    params = dict(composite.named_parameters())
    assert scale[id(params["backbone.patch_embed.proj.weight"])] == 0.5 ** (num_layers - 1)
    assert scale[id(params["decode.weight"])] == 1.0
    assert decay[id(params["backbone.layers.0.blocks.0.attn.relative_position_bias_table"])] == 0.0
    assert decay[id(params["decode.weight"])] == 0.05 and decay[id(params["decode.bias"])] == 0.0
    assert "backbone.layers.0.blocks.0.norm1.weight" in no_weight_decay(composite)

    frozen = freeze_stages(composite, 1)
    assert frozen == sum(
        p.numel() for n, p in params.items() if n.startswith(("backbone.patch_embed.", "backbone.layers.0."))
    )
    assert not params["backbone.layers.0.blocks.1.mlp.fc1.weight"].requires_grad
    assert params["backbone.layers.1.blocks.0.mlp.fc1.weight"].requires_grad
    assert params["decode.weight"].requires_grad
    with pytest.raises(ValueError, match="cannot freeze 5 stages"):
        freeze_stages(_Composite(), 5)
