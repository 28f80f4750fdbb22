"""Foreign checkpoint layouts map onto the one canonical state dict.

The foreign state dicts come from ``foreign_layouts`` (written from each library's source, independently of
``swinkit.layouts``); the layout-specific transformations are checked against independent references.
"""

import foreign_layouts as fl
import pytest
import torch
from torch import nn

from swinkit import layouts
from swinkit.layers.blocks import PatchMerging
from swinkit.layouts import mmlab, timm, torchvision
from swinkit.loading import load_checkpoint


@pytest.fixture(scope="module")
def canon():
    """Canonical weights of a random tiny v1 and v2 transformers model."""
    return {version: fl.canonical(fl.hf_model(version)) for version in (1, 2)}


def _foreign(canon, case: str) -> dict:
    """(checkpoint object as a library saves it) for a named case."""
    v1, v2 = canon[1], canon[2]
    return {
        "official_v1": lambda: fl.to_official(v1),
        "official_v2": lambda: fl.to_official(v2),
        "simmim": lambda: {
            "model": {**{"encoder." + k: v for k, v in v2.items()}, "decoder.0.weight": torch.ones(3)}
        },
        "timm_v1": lambda: fl.to_timm(v1),
        "timm_v2": lambda: fl.to_timm(v2),
        "torchvision_v1": lambda: fl.to_torchvision(v1),
        "torchvision_v2": lambda: fl.to_torchvision(v2),
        "mmseg_v1": lambda: {
            "state_dict": fl.to_mmlab(v1, merge_at_start=False, classifier=False),
            "meta": {},
        },
        "mmpretrain_v1": lambda: {"state_dict": fl.to_mmlab(v1, merge_at_start=False, classifier=True)},
        "mmpretrain_v2": lambda: {"state_dict": fl.to_mmlab(v2, merge_at_start=True, classifier=True)},
    }[case]()


EXPECTED_LAYOUT = {
    "official_v1": "official",
    "official_v2": "official",
    "simmim": "official",
    "timm_v1": "timm",
    "timm_v2": "timm",
    "torchvision_v1": "torchvision",
    "torchvision_v2": "torchvision",
    "mmseg_v1": "mmlab",
    "mmpretrain_v1": "mmlab",
    "mmpretrain_v2": "mmlab",
}

# Names and shapes each library gives the tiny model (embed 32, depths 2-2-2, heads 2-4-8, window 4,
# 5 classes), read off their sources: a check that the test writers produce what the libraries save.
LIBRARY_KEYS = {
    "timm_v1": {
        "layers.1.downsample.reduction.weight": (64, 128),
        "layers.1.downsample.norm.weight": (128,),
        "layers.2.downsample.reduction.weight": (128, 256),
        "layers.0.blocks.1.attn.relative_position_bias_table": (49, 2),
        "head.fc.weight": (5, 128),
    },
    "timm_v2": {
        "layers.1.downsample.norm.weight": (64,),
        "layers.0.blocks.0.attn.q_bias": (32,),
        "layers.0.blocks.0.attn.cpb_mlp.2.weight": (2, 512),
        "head.fc.bias": (5,),
    },
    "torchvision_v1": {
        "features.0.0.weight": (32, 3, 4, 4),
        "features.0.2.weight": (32,),
        "features.1.1.mlp.0.weight": (128, 32),
        "features.1.1.mlp.3.weight": (32, 128),
        "features.2.reduction.weight": (64, 128),
        "features.2.norm.weight": (128,),
        "features.3.0.attn.relative_position_index": (256,),
        "features.5.1.attn.qkv.weight": (384, 128),
        "norm.weight": (128,),
        "head.weight": (5, 128),
    },
    "torchvision_v2": {
        "features.1.0.attn.qkv.bias": (96,),
        "features.1.0.attn.logit_scale": (2, 1, 1),
        "features.1.0.attn.cpb_mlp.0.weight": (512, 2),
        "features.4.norm.weight": (128,),
    },
    "mmseg_v1": {
        "backbone.patch_embed.projection.weight": (32, 3, 4, 4),
        "backbone.stages.0.blocks.0.attn.w_msa.qkv.weight": (96, 32),
        "backbone.stages.0.blocks.0.attn.w_msa.relative_position_index": (16, 16),
        "backbone.stages.0.blocks.0.ffn.layers.0.0.weight": (128, 32),
        "backbone.stages.0.blocks.0.ffn.layers.1.weight": (32, 128),
        "backbone.stages.0.downsample.reduction.weight": (64, 128),
        "backbone.stages.0.downsample.norm.weight": (128,),
        "backbone.norm0.weight": (32,),
        "backbone.norm2.weight": (128,),
    },
    "mmpretrain_v2": {
        "backbone.stages.1.downsample.reduction.weight": (64, 128),
        "backbone.stages.1.downsample.norm.weight": (64,),
        "backbone.stages.0.blocks.0.attn.w_msa.q_bias": (32,),
        "backbone.norm2.weight": (128,),
        "head.fc.weight": (5, 128),
    },
}


@pytest.mark.parametrize("case", list(EXPECTED_LAYOUT))
def test_auto_detection_picks_the_layout(canon, case):
    state_dict = layouts.unwrap(_foreign(canon, case))
    assert layouts.detect_layout(state_dict) == EXPECTED_LAYOUT[case]


@pytest.mark.parametrize("case", list(LIBRARY_KEYS))
def test_writers_produce_the_library_names(canon, case):
    state_dict = layouts.unwrap(_foreign(canon, case))
    shapes = {k: tuple(v.shape) for k, v in state_dict.items()}
    for key, shape in LIBRARY_KEYS[case].items():
        assert shapes.get(key) == shape, key
    if case.startswith("timm"):
        assert not any(k.startswith("layers.0.downsample.") for k in shapes)


def _expected_canonical(canon, case: str) -> dict[str, torch.Tensor]:
    version = 2 if case.endswith("v2") or case == "simmim" else 1
    expected = dict(canon[version])
    if case == "mmseg_v1":  # a backbone: no head, per-stage output norms
        foreign = layouts.unwrap(_foreign(canon, case))
        expected = {k: v for k, v in expected.items() if not k.startswith(("head.", "norm."))}
        for stage in range(3):
            expected[f"norm{stage}.weight"] = foreign[f"backbone.norm{stage}.weight"]
            expected[f"norm{stage}.bias"] = foreign[f"backbone.norm{stage}.bias"]
    return expected


@pytest.mark.parametrize("case", list(EXPECTED_LAYOUT))
def test_every_tensor_comes_back_under_its_canonical_name(canon, case):
    layout, state_dict = layouts.to_canonical(layouts.unwrap(_foreign(canon, case)))
    expected = _expected_canonical(canon, case)
    assert sorted(state_dict) == sorted(expected)
    for key, tensor in expected.items():
        torch.testing.assert_close(state_dict[key], tensor, rtol=0, atol=0, msg=key)


def _unfold_merge(x: torch.Tensor, norm: nn.LayerNorm, reduction: nn.Linear, post_norm: bool) -> torch.Tensor:
    """OpenMMLab's PatchMerging: nn.Unfold(2, stride 2) on (B, C, H, W), then norm/reduction. (B, L, 2C) out."""
    sampled = nn.Unfold(kernel_size=2, stride=2)(x.permute(0, 3, 1, 2)).transpose(1, 2)  # (B, L, 4C)
    return norm(reduction(sampled)) if post_norm else reduction(norm(sampled))


@pytest.mark.parametrize("version", [1, 2])
def test_mmlab_patch_merging_matches_the_unfold_reference(version):
    dim, post_norm = 8, version == 2
    reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
    norm = nn.LayerNorm(2 * dim if post_norm else 4 * dim)
    with torch.no_grad():
        norm.weight.normal_(1, 0.3)
        norm.bias.normal_(0, 0.3)
    stage = 1 if post_norm else 0  # mmpretrain v2 merges at the start of the next stage
    foreign = {
        f"stages.{stage}.downsample.{k}": v
        for k, v in (
            ("reduction.weight", reduction.weight),
            ("norm.weight", norm.weight),
            ("norm.bias", norm.bias),
        )
    }
    converted = mmlab.to_canonical(foreign)
    ours = PatchMerging(dim, version, 1e-5)
    ours.load_state_dict({k.removeprefix("layers.0.downsample."): v for k, v in converted.items()})
    x = torch.randn(2, 6, 10, dim)
    with torch.no_grad():
        expected = _unfold_merge(x, norm, reduction, post_norm)
        got = ours(x).reshape(2, -1, 2 * dim)
        unpermuted = PatchMerging(dim, version, 1e-5)
        unpermuted.load_state_dict(
            {"reduction.weight": reduction.weight, "norm.weight": norm.weight, "norm.bias": norm.bias}
        )
        assert not torch.allclose(unpermuted(x).reshape(2, -1, 2 * dim), expected, atol=1e-3)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_timm_merging_moves_to_the_end_of_the_previous_stage(canon):
    foreign = fl.to_timm(canon[1])
    converted = timm.to_canonical(foreign)
    assert torch.equal(
        converted["layers.0.downsample.reduction.weight"], foreign["layers.1.downsample.reduction.weight"]
    )
    assert torch.equal(converted["layers.1.downsample.norm.bias"], foreign["layers.2.downsample.norm.bias"])
    assert not any(k.startswith("layers.2.downsample") for k in converted)
    assert torch.equal(converted["head.weight"], foreign["head.fc.weight"])
    with pytest.raises(ValueError, match="stage 0 has no patch merging"):
        timm.to_canonical(canon[1])  # official names forced through the timm layout


def test_torchvision_v2_key_bias_is_never_used(canon):
    clean = torchvision.to_canonical(fl.to_torchvision(canon[2], key_bias=0.0))
    garbage = torchvision.to_canonical(fl.to_torchvision(canon[2], key_bias=1e4))
    assert sorted(clean) == sorted(garbage)
    assert not any(k.endswith("qkv.bias") for k in garbage)
    for key in clean:
        assert torch.equal(clean[key], garbage[key]), key


@pytest.mark.parametrize(
    ("case", "window"),
    [("official_v2", 4), ("torchvision_v2", 4), ("mmpretrain_v2", 4), ("timm_v2", 8)],
)
def test_v2_window_comes_from_the_index_buffer_when_the_file_has_one(canon, case, window, tmp_path, caplog):
    path = tmp_path / "ckpt.pth"
    torch.save(_foreign(canon, case), path)
    config = load_checkpoint(path).config.trunk
    assert ("do not record the Swin v2 window size" in caplog.text) == (case == "timm_v2")
    assert (config.window_size, config.image_size) == (window, 64 if window == 4 else 256)
    assert config.pretrained_window_sizes == (0, 0, 0)


@pytest.mark.parametrize("library", ["official", "mmpretrain"])
def test_v2_pretrained_windows_come_from_the_coordinate_tables(canon, library, tmp_path):
    pretrained = [3, 3, 2]
    if library == "official":
        checkpoint = fl.to_official(canon[2], pretrained=pretrained)
    else:
        state_dict = fl.to_mmlab(canon[2], merge_at_start=True, classifier=True, pretrained=pretrained)
        checkpoint = {"state_dict": state_dict}
    torch.save(checkpoint, tmp_path / "ckpt.pth")
    assert load_checkpoint(tmp_path / "ckpt.pth").config.trunk.pretrained_window_sizes == tuple(pretrained)
