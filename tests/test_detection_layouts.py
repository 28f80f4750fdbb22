"""Detector checkpoints: mmdetection 3.x files written from the documented key layout (random weights), the
official Swin-Transformer-Object-Detection layout, swinkit's own folder, and strict mismatch errors."""

import json
import shutil

import pytest
import torch
from safetensors import safe_open

from swinkit.checkpoint_io import load_torch
from swinkit.loading import DESCRIPTION_KEYS, CheckpointMismatchError
from swinkit.models.detection import checkpoints as ck
from swinkit.models.detection.config import get_detection_preset
from swinkit.models.detection.mask_rcnn import build_mask_rcnn
from swinkit.models.detection.structures import ImageMeta

MICRO = dict(embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), window=4, fpn=32, fc=64, mask=32)
TINY = dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window=7, fpn=256, fc=1024, mask=256)


def mmdet_index(window: int) -> torch.Tensor:
    """mmdet's ``WindowMSA.relative_position_index`` (``double_step_seq`` + transpose + flip), written out."""
    seq1 = torch.arange(0, (2 * window - 1) * window, 2 * window - 1)
    seq2 = torch.arange(0, window, 1)
    coords = (seq1[:, None] + seq2[None, :]).reshape(1, -1)
    return (coords + coords.T).flip(1).contiguous()


def _backbone_shapes(embed_dim, depths, num_heads, window, **_) -> dict[str, tuple]:
    """mmdet 3.x ``SwinTransformer`` keys (``mmdet/models/backbones/swin.py``) and their shapes."""
    s = {"patch_embed.projection.weight": (embed_dim, 3, 4, 4), "patch_embed.projection.bias": (embed_dim,)}
    s.update({"patch_embed.norm.weight": (embed_dim,), "patch_embed.norm.bias": (embed_dim,)})
    for i, (depth, heads) in enumerate(zip(depths, num_heads)):
        dim = embed_dim * 2**i
        for j in range(depth):
            p = f"stages.{i}.blocks.{j}."
            for name in ("norm1", "norm2"):
                s.update({f"{p}{name}.weight": (dim,), f"{p}{name}.bias": (dim,)})
            s[p + "attn.w_msa.relative_position_bias_table"] = ((2 * window - 1) ** 2, heads)
            s[p + "attn.w_msa.relative_position_index"] = (window * window, window * window)
            s.update({p + "attn.w_msa.qkv.weight": (3 * dim, dim), p + "attn.w_msa.qkv.bias": (3 * dim,)})
            s.update({p + "attn.w_msa.proj.weight": (dim, dim), p + "attn.w_msa.proj.bias": (dim,)})
            s.update({p + "ffn.layers.0.0.weight": (4 * dim, dim), p + "ffn.layers.0.0.bias": (4 * dim,)})
            s.update({p + "ffn.layers.1.weight": (dim, 4 * dim), p + "ffn.layers.1.bias": (dim,)})
        if i < len(depths) - 1:
            p = f"stages.{i}.downsample."
            s.update({p + "norm.weight": (4 * dim,), p + "norm.bias": (4 * dim,)})
            s[p + "reduction.weight"] = (2 * dim, 4 * dim)
        s.update({f"norm{i}.weight": (dim,), f"norm{i}.bias": (dim,)})
    return {"backbone." + k: v for k, v in s.items()}


def _head_shapes(embed_dim, depths, fpn, fc, mask, classes=80, with_mask=True, **_) -> dict[str, tuple]:
    """FPN, RPN, Shared2FCBBoxHead and FCNMaskHead keys of mmdet's Mask R-CNN and their shapes."""
    s = {}
    for i in range(len(depths)):
        s.update({f"neck.lateral_convs.{i}.conv.weight": (fpn, embed_dim * 2**i, 1, 1)})
        s.update({f"neck.lateral_convs.{i}.conv.bias": (fpn,), f"neck.fpn_convs.{i}.conv.bias": (fpn,)})
        s[f"neck.fpn_convs.{i}.conv.weight"] = (fpn, fpn, 3, 3)
    s.update({"rpn_head.rpn_conv.weight": (fpn, fpn, 3, 3), "rpn_head.rpn_conv.bias": (fpn,)})
    s.update({"rpn_head.rpn_cls.weight": (3, fpn, 1, 1), "rpn_head.rpn_cls.bias": (3,)})
    s.update({"rpn_head.rpn_reg.weight": (12, fpn, 1, 1), "rpn_head.rpn_reg.bias": (12,)})
    b = "roi_head.bbox_head."
    s.update({b + "shared_fcs.0.weight": (fc, fpn * 49), b + "shared_fcs.0.bias": (fc,)})
    s.update({b + "shared_fcs.1.weight": (fc, fc), b + "shared_fcs.1.bias": (fc,)})
    s.update({b + "fc_cls.weight": (classes + 1, fc), b + "fc_cls.bias": (classes + 1,)})
    s.update({b + "fc_reg.weight": (4 * classes, fc), b + "fc_reg.bias": (4 * classes,)})
    if with_mask:
        m = "roi_head.mask_head."
        for i in range(4):
            s.update({f"{m}convs.{i}.conv.weight": (mask, fpn if i == 0 else mask, 3, 3)})
            s[f"{m}convs.{i}.conv.bias"] = (mask,)
        s.update({m + "upsample.weight": (mask, mask, 2, 2), m + "upsample.bias": (mask,)})
        s.update({m + "conv_logits.weight": (classes, mask, 1, 1), m + "conv_logits.bias": (classes,)})
    return s


def mmdet_shapes(arch: dict, with_mask: bool = True) -> dict[str, tuple]:
    return {**_backbone_shapes(**arch), **_head_shapes(**arch, with_mask=with_mask)}


def mmdet_checkpoint(arch: dict, with_mask: bool = True, seed: int = 0, classes=None) -> dict:
    """A ``{'state_dict', 'meta'}`` body with random weights in the documented mmdet 3.x layout."""
    generator = torch.Generator().manual_seed(seed)
    state_dict = {}
    for name, shape in mmdet_shapes(arch, with_mask).items():
        if name.endswith("relative_position_index"):
            state_dict[name] = mmdet_index(arch["window"])
        else:
            state_dict[name] = 0.05 * torch.randn(shape, generator=generator)
    meta = {"dataset_meta": {"classes": classes or [f"thing{i}" for i in range(80)]}}
    return {"state_dict": state_dict, "meta": meta}


def test_swin_t_mask_rcnn_has_mmdetections_parameter_count():
    config = get_detection_preset("mask_rcnn_swin_t_1x_coco").config
    with torch.device("meta"):
        model = build_mask_rcnn(config)
    params = sum(p.numel() for p in model.parameters())
    documented = sum(
        torch.Size(shape).numel()
        for name, shape in mmdet_shapes(TINY).items()
        if not name.endswith("relative_position_index")  # a buffer, not a parameter
    )
    assert params == documented
    assert round(params / 1e6, 1) == 47.8  # mmdet's "48M" for Mask R-CNN Swin-T
    assert set(ck.mmdet.from_canonical(model.state_dict())) == set(mmdet_shapes(TINY))


@pytest.fixture(scope="module")
def mmdet_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("mmdet") / "mask_rcnn_micro.pth"
    torch.save(mmdet_checkpoint(MICRO), path)
    return path


def test_mmdet_checkpoint_round_trips_bit_exactly(mmdet_file, tmp_path):
    model = ck.load_mmdet(mmdet_file)
    assert model.config.num_classes == 80 and model.config.labels[3] == "thing3"
    assert model.config.backbone.window_size == 4 and model.config.fpn_channels == 32
    ck.save_mmdet(model, tmp_path / "again.pth")
    original, again = load_torch(mmdet_file), load_torch(tmp_path / "again.pth")
    assert set(again["state_dict"]) == set(original["state_dict"])
    for name, tensor in original["state_dict"].items():
        assert again["state_dict"][name].dtype == tensor.dtype, name
        assert torch.equal(again["state_dict"][name], tensor), name
    assert again["meta"]["dataset_meta"]["classes"] == original["meta"]["dataset_meta"]["classes"]


@pytest.mark.parametrize("size", [pytest.param((800, 1344), marks=pytest.mark.slow), (517, 731)])
def test_mmdet_checkpoint_runs_at_full_and_odd_sizes(mmdet_file, size):
    model = ck.load_mmdet(mmdet_file)
    torch.manual_seed(0)
    h, w = size
    pixels = torch.randn(1, 3, h, w)
    with torch.no_grad():
        output = model(pixels, [ImageMeta((h // 2, w // 2), (h, w), (2.0, 2.0))])
    (det,) = output.detections
    assert (
        det.boxes.shape[1] == 4 and det.masks.shape[1:] == (h // 2, w // 2) and det.masks.dtype == torch.bool
    )
    assert output.proposals[0].shape[0] > 0
    if len(det):
        assert float(det.boxes[:, 2].max()) <= w // 2 and float(det.boxes[:, 3].max()) <= h // 2


def test_official_detection_repo_layout_loads_the_same_model(mmdet_file, tmp_path):
    model = ck.load_mmdet(mmdet_file)
    official = {}
    for name, tensor in model.state_dict().items():
        official[name] = tensor
        if name.endswith("attn.relative_position_bias_table"):  # the official repo keeps its index buffers
            official[name.replace("relative_position_bias_table", "relative_position_index")] = mmdet_index(4)
    torch.save({"state_dict": official, "meta": {"CLASSES": tuple(model.config.labels)}}, tmp_path / "o.pth")
    again = ck.load_mmdet(tmp_path / "o.pth")
    assert again.config == model.config
    for name, tensor in model.state_dict().items():
        assert torch.equal(again.state_dict()[name], tensor), name


def test_swinkit_folder_round_trips_with_its_description(mmdet_file, tmp_path):
    model = ck.load_mmdet(mmdet_file)
    ck.save_pretrained(model, tmp_path / "saved")
    config = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert config["architectures"] == ["SwinMaskRCNN"] and config["id2label"]["3"] == "thing3"
    assert ck.is_detection_config(config)
    with safe_open(str(tmp_path / "saved" / "model.safetensors"), "pt") as f:
        metadata = f.metadata()
    assert json.loads(metadata[DESCRIPTION_KEYS[0]]) == config
    assert json.loads(metadata[DESCRIPTION_KEYS[1]])["scale"] == [1333, 800]
    shutil.copy(tmp_path / "saved" / "model.safetensors", tmp_path / "alone.safetensors")
    for source in (tmp_path / "saved", tmp_path / "alone.safetensors"):  # the file describes itself
        again = ck.load_pretrained(source)
        assert again.config == model.config
        for name, tensor in model.state_dict().items():
            assert torch.equal(again.state_dict()[name], tensor), name
    with pytest.raises(ValueError, match="needs a model.safetensors"):
        ck.load_pretrained(tmp_path)


def test_faster_rcnn_checkpoint_reads_as_detection_only(tmp_path):
    torch.save(mmdet_checkpoint(MICRO, with_mask=False), tmp_path / "faster.pth")
    model = ck.load_mmdet(tmp_path / "faster.pth")
    assert not model.config.with_mask and model.roi_head.mask_head is None


def test_mismatch_names_missing_unexpected_and_mis_shaped_keys(tmp_path):
    checkpoint = mmdet_checkpoint(MICRO)
    sd = checkpoint["state_dict"]
    del sd["roi_head.mask_head.upsample.bias"]
    sd["roi_head.mask_head.extra.weight"] = torch.zeros(3)
    sd["rpn_head.rpn_conv.bias"] = torch.zeros(7)
    torch.save(checkpoint, tmp_path / "bad.pth")
    config = get_detection_preset("mask_rcnn_swin_micro").config
    with pytest.raises(CheckpointMismatchError) as info:
        ck.load_mmdet(tmp_path / "bad.pth", config=config)
    assert info.value.missing == ["roi_head.mask_head.upsample.bias"]
    assert info.value.unexpected == ["roi_head.mask_head.extra.weight"]
    assert info.value.mis_shaped == ["rpn_head.rpn_conv.bias (7,) vs model (32,)"]


def test_a_file_that_is_no_detector_is_refused(tmp_path):
    torch.save(
        {"state_dict": {"backbone.stages.0.blocks.0.attn.w_msa.qkv.weight": torch.zeros(3)}},
        tmp_path / "x.pth",
    )
    with pytest.raises(ValueError, match="not an mmdetection two-stage detector"):
        ck.load_mmdet(tmp_path / "x.pth")


@pytest.mark.parametrize("name", ["mask_rcnn_swin_t_1x_coco", "mask_rcnn_swin_s_amp_ms_crop_3x_coco"])
def test_the_architecture_read_from_the_shapes_is_the_presets(name):
    preset = get_detection_preset(name)
    with torch.device("meta"):
        model = build_mask_rcnn(preset.config)
    assert ck.config_from_state_dict(model.state_dict(), labels=preset.config.labels) == preset.config


def test_a_raw_mmdet_file_is_predicted_as_a_detector(mmdet_file, tmp_path, capsys):
    """An mmdetection .pth (no swinkit description) is recognised as a detector by its tensors and predicted
    with the mmdet weights and the meta's class names."""
    from PIL import Image

    from swinkit.cli import main
    from swinkit.inference import task_of_source
    from swinkit.tasks import get_task

    assert task_of_source(mmdet_file) is get_task("instance_segmentation")
    image = tmp_path / "scene.png"
    Image.new("RGB", (96, 64), (120, 90, 60)).save(image)
    out = tmp_path / "rows.jsonl"
    assert main(["predict", "--model", str(mmdet_file), str(image), "--output", str(out)]) == 0
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert "boxes" in row and all(0 <= b["box"]["topX"] <= 1 for b in row["boxes"])
    labels = set(ck.load_mmdet(mmdet_file).config.labels)
    assert all(b["label"] in labels for b in row["boxes"])
