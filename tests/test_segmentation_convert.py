"""``swinkit convert --to mmseg / official / hf``: swin2mmseg.py's backbone files both ways, bit for bit, and
UperNet models between mmseg segmentor files and transformers folders; such files load with the right task."""

from __future__ import annotations

import json
from collections import OrderedDict

import numpy as np
import pytest
import torch
from PIL import Image

import swinkit
from swinkit.checkpoint_io import load_torch, save_torch
from swinkit.cli import main
from swinkit.inference import task_of_source
from swinkit.layers.window import relative_position_index
from swinkit.loading import load_checkpoint
from swinkit.models.segmentation import create_upernet
from swinkit.models.segmentation.checkpoints import load_hf, load_mmseg, save_mmseg
from swinkit.tasks import ClassificationTask, get_task


def reference_convert_swin(ckpt: dict) -> OrderedDict:
    """mmsegmentation's tools/model_converters/swin2mmseg.py ``convert_swin``, restated for the test."""
    new = OrderedDict()
    for k, v in ckpt.items():
        if k.startswith("head"):
            continue
        new_v, new_k = v, k
        if k.startswith("layers"):
            if "attn." in k:
                new_k = k.replace("attn.", "attn.w_msa.")
            elif "mlp.fc1." in k:
                new_k = k.replace("mlp.fc1.", "ffn.layers.0.0.")
            elif "mlp.fc2." in k:
                new_k = k.replace("mlp.fc2.", "ffn.layers.1.")
            elif "downsample" in k and "reduction." in k:
                out_channel, in_channel = v.shape
                x = v.reshape(out_channel, 4, in_channel // 4)
                new_v = x[:, [0, 2, 1, 3], :].transpose(1, 2).reshape(out_channel, in_channel)
            elif "downsample" in k and "norm." in k:
                x = v.reshape(4, v.shape[0] // 4)
                new_v = x[[0, 2, 1, 3], :].transpose(0, 1).reshape(v.shape[0])
            new_k = new_k.replace("layers", "stages", 1)
        elif k.startswith("patch_embed") and "proj" in k:
            new_k = k.replace("proj", "projection")
        new[new_k] = new_v
    return new


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """A random swin_micro classifier as an official file, with the buffers official files keep."""
    torch.manual_seed(0)
    model = swinkit.create_model("swin_micro", num_classes=3)
    state_dict = OrderedDict()
    for key, tensor in model.state_dict().items():
        state_dict[key] = torch.randn_like(tensor) if tensor.is_floating_point() else tensor
        if key.endswith("attn.relative_position_bias_table"):
            state_dict[key.replace("bias_table", "index")] = relative_position_index(4)
    state_dict["layers.0.blocks.1.attn_mask"] = torch.randn(16, 16, 16)
    path = tmp_path_factory.mktemp("official") / "swin_micro.pth"
    save_torch({"model": state_dict}, path)
    return path, state_dict


def assert_identical(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


def test_to_mmseg_writes_what_swin2mmseg_writes_and_official_reads_it_back(official, tmp_path, capsys):
    path, state_dict = official
    mmseg_file, back = tmp_path / "mmseg.pth", tmp_path / "back.pth"
    assert main(["convert", str(path), str(mmseg_file), "--to", "mmseg"]) == 0
    written = load_torch(mmseg_file)
    assert_identical(written, reference_convert_swin(state_dict))
    assert "stages.0.blocks.0.attn.w_msa.relative_position_index" in written and "norm.weight" in written
    assert main(["convert", str(mmseg_file), str(back), "--to", "official"]) == 0
    assert "detected layout: mmlab" in capsys.readouterr().out
    assert_identical(
        load_torch(back)["model"],
        OrderedDict((k, v) for k, v in state_dict.items() if not k.startswith("head")),
    )


def test_the_mmseg_backbone_file_loads_as_the_same_swin(official, tmp_path):
    path, _ = official
    mmseg_file = tmp_path / "mmseg.pth"
    assert main(["convert", str(path), str(mmseg_file), "--to", "mmseg"]) == 0
    ours, theirs = load_checkpoint(mmseg_file), load_checkpoint(path)
    assert ours.layout == "mmlab" and theirs.layout == "official"
    expected = {k: v for k, v in theirs.state_dict.items() if not k.startswith("head.")}
    assert set(ours.state_dict) == set(expected)
    for key, tensor in expected.items():
        assert torch.equal(ours.state_dict[key], tensor), key
    assert task_of_source(mmseg_file) is ClassificationTask  # a backbone file: no decode head


@pytest.fixture(scope="module")
def upernet():
    torch.manual_seed(1)
    model = create_upernet("upernet_swin_micro", labels=["sky", "road", "tree"]).eval()
    with torch.no_grad():  # every tensor perturbed, BatchNorm statistics included (variances kept positive)
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                tensor.add_(0.05 * torch.randn_like(tensor))
            if name.endswith("running_var"):
                tensor.abs_()
    return model


def test_upernet_converts_mmseg_to_hf_and_back_bit_for_bit(upernet, tmp_path, capsys):
    source, folder, again = tmp_path / "seg.pth", tmp_path / "hf", tmp_path / "again.pth"
    save_mmseg(upernet, source)
    assert task_of_source(source) is get_task("semantic_segmentation")
    assert main(["convert", str(source), str(folder)]) == 0
    assert "UperNet, 3 classes" in capsys.readouterr().out
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["UperNetForSemanticSegmentation"]
    assert main(["convert", str(folder), str(again), "--to", "mmseg"]) == 0
    first, second = load_torch(source)["state_dict"], load_torch(again)["state_dict"]
    assert set(first) == set(second) and all(torch.equal(first[k], second[k]) for k in first)
    pixels = torch.randn(1, 3, 64, 96)
    models = [load_hf(folder).eval(), load_mmseg(again).eval()]
    with torch.inference_mode():
        expected = upernet(pixels).logits
        for model in models:
            torch.testing.assert_close(model(pixels).logits, expected, rtol=0, atol=0)


def test_an_upernet_cannot_be_written_in_the_official_classifier_layout(upernet, tmp_path, capsys):
    save_mmseg(upernet, tmp_path / "seg.pth")
    assert main(["convert", str(tmp_path / "seg.pth"), str(tmp_path / "x.pth"), "--to", "official"]) == 2
    assert "an UperNet converts to hf or mmseg" in capsys.readouterr().err


def test_a_bare_mmseg_segmentor_state_dict_predicts_as_segmentation(upernet, tmp_path):
    """No meta, no description: the decode head's keys pick the task, the shapes the architecture."""
    from swinkit.layouts.heads import mmseg

    bare = tmp_path / "bare.pth"
    save_torch({"state_dict": mmseg.from_canonical(upernet.state_dict(), upernet.config)}, bare)
    assert task_of_source(bare) is get_task("semantic_segmentation")
    image = tmp_path / "image.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(image)
    out = tmp_path / "rows.jsonl"
    assert main(["predict", "--model", str(bare), str(image), "--output", str(out)]) == 0
    row = json.loads(out.read_text())
    assert (row["width"], row["height"]) == (60, 40)
    assert {c["label"] for c in row["classes"]} <= {"LABEL_0", "LABEL_1", "LABEL_2"}


def test_a_segmentation_preset_without_a_hub_port_is_refused_in_one_sentence():
    with pytest.raises(ValueError, match="segmentation preset 'upernet_swin_micro' has no Hugging Face port"):
        task_of_source("upernet_swin_micro")
