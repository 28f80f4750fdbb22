"""The canonical model: presets, shapes at any input size, backbone mode, caching, training features."""

import pytest
import torch
import torch.nn.functional as F

import swinkit
from swinkit.layers.window import shift_attention_mask, window_partition, window_reverse
from swinkit.presets import PRESETS, SwinConfig

REQUIRED_PRESETS = [
    *(f"swin_{s}_patch4_window7_224" for s in ("tiny", "small", "base", "large")),
    "swin_base_patch4_window7_224_22k",
    "swin_large_patch4_window7_224_22k",
    *(f"swin_{s}_patch4_window12_384{k}" for s in ("base", "large") for k in ("", "_22k")),
    *(f"swinv2_{s}_patch4_window{w}_256" for s in ("tiny", "small", "base") for w in (8, 16)),
    *(f"swinv2_{s}_patch4_window12_192_22k" for s in ("base", "large")),
    *(f"swinv2_{s}_patch4_window12to16_192to256_22kto1k_ft" for s in ("base", "large")),
    *(f"swinv2_{s}_patch4_window12to24_192to384_22kto1k_ft" for s in ("base", "large")),
    "swin_micro",
    "swinv2_micro",
]


def test_every_required_preset_exists():
    missing = [name for name in REQUIRED_PRESETS if name not in swinkit.list_models()]
    assert not missing


def test_presets_know_classes_windows_and_hub_ids():
    assert PRESETS["swin_base_patch4_window7_224_22k"].num_classes == 21841
    assert PRESETS["swin_tiny_patch4_window7_224"].hub_id == "microsoft/swin-tiny-patch4-window7-224"
    v2 = PRESETS["swinv2_base_patch4_window12_192_22k"]
    assert v2.hub_id == "microsoft/swinv2-base-patch4-window12-192-22k"
    assert v2.num_classes == 21841 and v2.config.image_size == 192
    ft = PRESETS["swinv2_large_patch4_window12to24_192to384_22kto1k_ft"].config
    assert ft.pretrained_window_sizes == (12, 12, 12, 6)
    assert ft.stage_window_sizes == (24, 24, 24, 12)
    assert ft.stage_shift_sizes == (12, 12, 0, 0)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("swin_tiny_patch4_window7_224", 28_288_354), ("swinv2_tiny_patch4_window8_256", 28_347_154)],
)
def test_parameter_counts_equal_the_official_models(name, expected):
    model = swinkit.create_model(name)
    assert sum(p.numel() for p in model.parameters()) == expected


@pytest.mark.parametrize("name", ["swin_micro", "swinv2_micro"])
def test_micro_presets_are_small(name):
    count = sum(p.numel() for p in swinkit.create_model(name).parameters())
    assert 100_000 < count < 5_000_000


@pytest.mark.parametrize("name", ["swin_micro", "swinv2_micro"])
@pytest.mark.parametrize("size", [(64, 64), (33, 47), (7, 9), (130, 70), (1, 1)])
def test_classifier_runs_at_any_input_size(name, size):
    model = swinkit.create_model(name, num_classes=5).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, *size))
    assert logits.shape == (2, 5)
    assert torch.isfinite(logits).all()


def test_backbone_returns_nchw_maps_with_channels_and_strides():
    backbone = swinkit.create_model("swin_micro", backbone=True, out_indices=(1, 3)).eval()
    with torch.no_grad():
        maps = backbone(torch.randn(1, 3, 100, 60))
    assert [tuple(m.shape) for m in maps] == [(1, 64, 13, 8), (1, 256, 4, 2)]
    assert backbone.out_channels == [64, 256]
    assert backbone.strides == [8, 32]


def test_backbone_rejects_bad_out_indices():
    with pytest.raises(ValueError, match="out_indices"):
        swinkit.create_model("swin_micro", backbone=True, out_indices=(4,))


def test_window_partition_round_trips():
    x = torch.randn(2, 8, 12, 5)
    windows = window_partition(x, 4)
    assert windows.shape == (2, 6, 16, 5)
    torch.testing.assert_close(windows[0, 1, :4], x[0, 0, 4:8])  # second window, first row
    torch.testing.assert_close(window_reverse(windows, 4, 8, 12), x)


def test_shift_mask_separates_regions():
    # 4x4 map, window 2, shift 1: the last window mixes 4 regions; the first window is one region.
    mask = shift_attention_mask(4, 4, 2, (1, 1))
    assert mask.shape == (4, 4, 4)
    assert (mask[0] == 0).all()
    assert (mask[3].diagonal() == 0).all() and (mask[3] != 0).sum() == 12
    horizontal = shift_attention_mask(4, 4, 2, (0, 1))  # only the right column of windows mixes regions
    assert (horizontal[1] != 0).sum() == 8 and (horizontal[2] == 0).all()


def _reference_window_attention(block, x):
    """Plain-matmul reference of a v1 block's window attention (no SDPA, no caching)."""
    B, H, W, C = x.shape
    ws, shift, heads = block.window_size, block.shift_size, block.attn.num_heads
    shifted = torch.roll(x, (-shift, -shift), (1, 2))
    windows = window_partition(shifted, ws).reshape(-1, ws * ws, C)
    qkv = block.attn.qkv(windows).reshape(windows.shape[0], -1, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    scores = (q * (C // heads) ** -0.5) @ k.transpose(-2, -1) + block.attn.position_bias().unsqueeze(0)
    mask = shift_attention_mask(H, W, ws, (shift, shift)).repeat(B, 1, 1)
    out = (scores + mask.unsqueeze(1)).softmax(-1) @ v
    out = block.attn.proj(out.transpose(1, 2).reshape(-1, ws * ws, C)).view(B, -1, ws * ws, C)
    return torch.roll(window_reverse(out, ws, H, W), (shift, shift), (1, 2))


def test_shifted_window_attention_matches_a_plain_reference():
    model = swinkit.create_model("swin_micro").eval()
    block = model.layers[0].blocks[1]
    assert block.shift_size == 2
    with torch.no_grad():
        block.attn.relative_position_bias_table.normal_()
        x = torch.randn(2, 8, 8, 32)
        torch.testing.assert_close(block.window_attention(x), _reference_window_attention(block, x))


def test_padding_matches_explicit_zero_padding_for_unshifted_blocks():
    model = swinkit.create_model("swin_micro").eval()
    block = model.layers[0].blocks[0]
    x = torch.randn(1, 6, 7, 32)
    with torch.no_grad():
        padded = F.pad(x, (0, 0, 0, 1, 0, 2))
        torch.testing.assert_close(block.window_attention(x), block.window_attention(padded)[:, :6, :7])


def test_bias_cache_is_reused_and_invalidated_by_parameter_updates():
    model = swinkit.create_model("swin_micro", num_classes=3).eval()
    attn = model.layers[0].blocks[1].attn
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
        first = attn.attention_bias((16, 16), (2, 2), torch.float32, torch.device("cpu"))
        assert attn.attention_bias((16, 16), (2, 2), torch.float32, torch.device("cpu")) is first
        attn.relative_position_bias_table[0].add_(5.0)  # what an optimizer step does: in place
        assert not torch.equal(model(x), before)
        fresh = attn.attention_bias((16, 16), (2, 2), torch.float32, torch.device("cpu"))
        assert fresh is not first


def test_bias_cache_is_bounded():
    model = swinkit.create_model("swin_micro").eval()
    with torch.no_grad():
        for side in range(8, 80, 4):
            model(torch.randn(1, 3, side, side + 4))
    assert all(len(m._bias_cache) <= 8 for m in model.modules() if hasattr(m, "_bias_cache"))


@pytest.mark.parametrize("name", ["swin_micro", "swinv2_micro"])
def test_gradients_flow_to_every_parameter(name):
    model = swinkit.create_model(name, num_classes=4, drop_path_rate=0.0)
    model.train()
    torch.manual_seed(0)
    with torch.no_grad():  # off init: v2 res-post norms start at zero, which would block what feeds them
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    loss = model(torch.randn(2, 3, 64, 64)).logsumexp(-1).sum()
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []


def test_gradient_checkpointing_gives_the_same_gradients():
    model = swinkit.create_model("swin_micro", num_classes=4, drop_path_rate=0.0).train()
    x = torch.randn(2, 3, 64, 64)
    model(x).sum().backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x).sum().backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, expected[n], msg=n)


def test_no_weight_decay_names_cover_norms_biases_and_tables():
    model = swinkit.create_model("swin_micro", absolute_pos_embed=True)
    names = model.no_weight_decay()
    assert "absolute_pos_embed" in names
    assert "layers.0.blocks.0.attn.relative_position_bias_table" in names
    assert "layers.0.blocks.0.norm1.weight" in names and "head.bias" in names
    assert "layers.0.blocks.0.attn.qkv.weight" not in names


def test_absolute_position_embedding_is_resized_for_other_inputs():
    model = swinkit.create_model("swin_micro", absolute_pos_embed=True, num_classes=2).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 96, 80)).shape == (1, 2)


def test_config_validation_is_a_user_error():
    with pytest.raises(ValueError):
        SwinConfig(embed_dim=30, num_heads=(4, 8, 16, 32))
    with pytest.raises(ValueError, match="unknown model preset"):
        swinkit.create_model("swin_tiny_patch4_window7")


def test_create_model_with_labels_sets_the_head():
    model = swinkit.create_model("swinv2_micro", labels=["a", "b"])
    assert model.head.out_features == 2 and model.config.label_names == ("a", "b")


def test_bf16_inference_runs():
    model = swinkit.create_model("swinv2_micro", num_classes=3).eval().to(torch.bfloat16)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64, dtype=torch.bfloat16)).dtype == torch.bfloat16


@pytest.mark.parametrize("name", ["swin_micro", "swinv2_micro"])
def test_training_after_inference_mode_at_the_same_size(name):
    """Caches filled under inference_mode (serving, evaluation) must not break a later training step."""
    model = swinkit.create_model(name, num_classes=3)
    x = torch.randn(2, 3, 40, 56)  # padded and shifted in every stage
    model.eval()
    with torch.inference_mode():
        model(x)
    for stage in model.layers[:2]:  # frozen stages: their biases come from the cache while grad is on
        stage.requires_grad_(False)
    model.train()
    model(x).sum().backward()
    assert model.head.weight.grad is not None


def test_the_trunk_config_has_no_classifier_fields_and_the_classifier_config_composes_it():
    """SwinConfig describes the trunk only; the classifier's head lives in ClassifierConfig (issue 10)."""
    from swinkit.models.mim import build_mim_model
    from swinkit.models.segmentation import build_upernet, get_segmentation_preset
    from swinkit.models.swin import ClassifierConfig

    trunk_fields = {f.name for f in __import__("dataclasses").fields(SwinConfig)}
    assert not trunk_fields & {"num_classes", "problem_type", "labels"}
    with pytest.raises(TypeError):
        SwinConfig(num_classes=10)
    classifier = swinkit.create_model("swinv2_micro", labels=["a", "b"])
    assert (
        isinstance(classifier.config, ClassifierConfig)
        and classifier.config.trunk == PRESETS["swinv2_micro"].config
    )
    assert (
        swinkit.create_model("swin_tiny_patch4_window7_224").config.num_classes == 1000
    )  # the preset's count
    for model in (
        swinkit.create_model("swinv2_micro", backbone=True),
        build_mim_model(PRESETS["swinv2_micro"].config),
        build_upernet(get_segmentation_preset("upernet_swin_micro").config).backbone,
    ):
        assert type(model.config) is SwinConfig
    with pytest.raises(TypeError, match="ClassifierConfig"):
        swinkit.build_model(PRESETS["swin_micro"].config)


def test_a_classifier_config_reads_the_flat_mapping_older_files_hold():
    """Run checkpoints and batch fingerprints keep the flat mapping SwinConfig.to_dict wrote before the move."""
    from swinkit.models.segmentation import UperNetConfig, get_segmentation_preset
    from swinkit.models.swin import ClassifierConfig

    config = swinkit.create_model("swinv2_micro", labels=["a", "b"]).config.replace(
        problem_type="multi_label_classification"
    )
    flat = config.to_dict()
    assert flat == {**config.trunk.to_dict(), "num_classes": 2, "labels": ["a", "b"],
                    "problem_type": "multi_label_classification"}  # fmt: skip
    assert ClassifierConfig.from_dict(flat) == config
    upernet = get_segmentation_preset("upernet_swin_micro").config
    legacy = upernet.to_dict()
    legacy["backbone"] = {**legacy["backbone"], "num_classes": 0, "problem_type": "single_label_classification",
                          "labels": None}  # fmt: skip
    assert UperNetConfig.from_dict(legacy) == upernet
    legacy["backbone"]["num_classes"] = 3
    with pytest.raises(ValueError, match="classifier field 'num_classes'"):
        UperNetConfig.from_dict(legacy)
