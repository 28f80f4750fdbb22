"""``swinkit convert``: every layout round-trips to a Hugging Face folder that transformers loads identically.

Round trip: random transformers model -> weights written the way the foreign library saves them -> file ->
``swinkit convert`` -> ``transformers.AutoModelForImageClassification`` and ``swinkit.from_pretrained``:
all three give the same logits.
"""

import json

import foreign_layouts as fl
import pytest
import torch
import transformers
from safetensors.torch import save_file

import swinkit
from swinkit.cli import main
from swinkit.loading import CheckpointMismatchError


@pytest.fixture(scope="module")
def references():
    """(model, canonical weights) for v1, v2, v2 with the swinv2_micro preset's architecture, v2 fine-tuned
    from smaller pretrained windows."""
    models = {
        "v1": fl.hf_model(1),
        "v2": fl.hf_model(2),
        "v2_micro": fl.hf_model(2, micro=True),
        "v2_pretrained_windows": fl.hf_model(2, pretrained=PRETRAINED_WINDOWS),
    }
    return {name: (model, fl.canonical(model)) for name, model in models.items()}


PRETRAINED_WINDOWS = [3, 3, 2]
PIXELS = torch.randn(2, 3, fl.IMAGE, fl.IMAGE, generator=torch.Generator().manual_seed(3))

# case: (reference model, writer, file name, extra CLI arguments, layout the CLI must report)
CASES = {
    "official_v1": ("v1", fl.to_official, "swin_tiny.pth", [], "official"),
    "official_v2": ("v2", fl.to_official, "swinv2_tiny.pth", [], "official"),
    "official_v2_pretrained_windows": (
        "v2_pretrained_windows",
        lambda sd: fl.to_official(sd, pretrained=PRETRAINED_WINDOWS),
        "swinv2_12to16.pth",
        [],
        "official",
    ),
    "timm_v1": ("v1", fl.to_timm, "model.safetensors", [], "timm"),
    "timm_v2_preset": ("v2_micro", fl.to_timm, "pytorch_model.bin", ["--preset", "swinv2_micro"], "timm"),
    "torchvision_v1": ("v1", fl.to_torchvision, "swin_t.pth", [], "torchvision"),
    "torchvision_v2_garbage_key_bias": (
        "v2",
        lambda sd: fl.to_torchvision(sd, key_bias=1e4),
        "swin_v2_t.pth",
        [],
        "torchvision",
    ),
    "mmpretrain_v1": (
        "v1",
        lambda sd: {
            "state_dict": fl.to_mmlab(sd, merge_at_start=False, classifier=True),
            "meta": {"epoch": 1},
        },
        "epoch_1.pth",
        [],
        "mmlab",
    ),
    "mmpretrain_v1_every_out_index": (
        "v1",
        lambda sd: fl.to_mmlab(sd, merge_at_start=False, classifier=True, stage_norms=True),
        "mmcls.pth",
        [],
        "mmlab",
    ),
    "mmpretrain_v2": (
        "v2",
        lambda sd: {"state_dict": fl.to_mmlab(sd, merge_at_start=True, classifier=True)},
        "epoch_2.pth",
        [],
        "mmlab",
    ),
}


def _save(obj, path):
    if path.suffix == ".safetensors":
        save_file(obj, str(path))
    else:
        torch.save(obj, path)
    return path


@pytest.mark.parametrize("case", list(CASES))
def test_round_trip_gives_the_same_logits_in_transformers_and_swinkit(case, references, tmp_path, capsys):
    which, writer, filename, extra, layout = CASES[case]
    reference, canonical = references[which]
    src = _save(writer(canonical), tmp_path / filename)
    dst = tmp_path / "hf"
    assert main(["convert", str(src), str(dst), *extra]) == 0
    out = capsys.readouterr().out
    assert f"detected layout: {layout}" in out and str(dst) in out
    assert {p.name for p in dst.iterdir()} == {"config.json", "model.safetensors", "preprocessor_config.json"}
    assert len(json.loads((dst / "config.json").read_text())["id2label"]) == fl.CLASSES
    hf_loaded = transformers.AutoModelForImageClassification.from_pretrained(str(dst)).eval()
    ours = swinkit.from_pretrained(dst).eval()
    with torch.no_grad():
        expected = reference(pixel_values=PIXELS).logits
        via_transformers = hf_loaded(pixel_values=PIXELS).logits
        via_swinkit = ours(PIXELS)
    assert expected.abs().max() > 0.1
    torch.testing.assert_close(via_transformers, expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(via_swinkit, expected, atol=1e-4, rtol=0)


@pytest.fixture
def mmseg_file(references, tmp_path):
    """An mmsegmentation-style segmentor checkpoint: backbone with norm0..2, plus a decode head."""
    state_dict = fl.to_mmlab(references["v1"][1], merge_at_start=False, classifier=False)
    return _save({"state_dict": state_dict, "meta": {}}, tmp_path / "iter_160000.pth"), state_dict


def test_backbone_checkpoint_needs_num_classes(mmseg_file, tmp_path, capsys):
    src, _ = mmseg_file
    assert main(["convert", str(src), str(tmp_path / "out")]) == 2
    assert "--num-classes" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_backbone_checkpoint_features_and_classifier(mmseg_file, references, tmp_path):
    src, foreign = mmseg_file
    reference = references["v1"][0]
    # transformers' Swin layers keep the window/shift a classification call shrank: use a fresh copy
    fresh = type(reference)(reference.config).eval()
    fresh.load_state_dict(reference.state_dict())
    with torch.no_grad():
        stages = fresh.swin(
            pixel_values=PIXELS,
            output_hidden_states=True,
            output_hidden_states_before_downsampling=True,
            always_partition=True,  # the detection convention mmseg/mmdet follow
        ).reshaped_hidden_states[1:]
        features = swinkit.from_pretrained(src, backbone=True, out_indices=(0, 1, 2)).eval()(PIXELS)
    for i, (stage, got) in enumerate(zip(stages, features)):
        norm = torch.nn.LayerNorm(stage.shape[1])
        norm.load_state_dict(
            {"weight": foreign[f"backbone.norm{i}.weight"], "bias": foreign[f"backbone.norm{i}.bias"]}
        )
        with torch.no_grad():
            expected = norm(stage.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)

    dst = tmp_path / "classifier"
    assert main(["convert", str(src), str(dst), "--num-classes", "3"]) == 0
    converted = transformers.AutoModelForImageClassification.from_pretrained(str(dst)).eval()
    assert converted.config.num_labels == 3
    with torch.no_grad():  # the last stage's output norm is the classifier's final norm
        expected = reference.swin(pixel_values=PIXELS).last_hidden_state
        got = converted.swin(pixel_values=PIXELS).last_hidden_state
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_format_forces_the_layout(references, tmp_path, capsys):
    src = _save(fl.to_timm(references["v1"][1]), tmp_path / "timm.pth")
    assert main(["convert", str(src), str(tmp_path / "a"), "--format", "official"]) == 2
    err = capsys.readouterr().err
    assert "missing:" in err and "layers.0.downsample.reduction.weight" in err
    assert "unexpected:" in err and "head.fc.weight" in err
    assert main(["convert", str(src), str(tmp_path / "b"), "--format", "timm"]) == 0


def test_wrong_preset_lists_missing_unexpected_and_mis_shaped_keys(references, tmp_path, capsys):
    src = _save(fl.to_timm(references["v2_micro"][1]), tmp_path / "timm_v2.pth")  # a v2 model
    with pytest.raises(CheckpointMismatchError) as error:
        swinkit.from_pretrained(src, preset="swin_micro")  # v1 preset of the same size
    assert "layers.0.blocks.0.attn.relative_position_bias_table" in error.value.missing
    assert "layers.0.blocks.0.attn.logit_scale" in error.value.unexpected
    assert any(k.startswith("layers.0.downsample.norm.weight") for k in error.value.mis_shaped)
    assert main(["convert", str(src), str(tmp_path / "out"), "--preset", "swin_micro"]) == 2
    err = capsys.readouterr().err
    assert all(title in err for title in ("missing:", "unexpected:", "mis-shaped:"))
    assert not (tmp_path / "out").exists()
