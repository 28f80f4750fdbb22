"""FLOPs are counted as the papers count them (one multiply-add = one FLOP) and match the official tables."""

import pytest
import torch

import swinkit
from swinkit.flops import config_flops, count_flops, count_flops_by_op
from swinkit.presets import PRESETS


@pytest.mark.parametrize(
    ("name", "official_gflops"),
    [
        ("swin_tiny_patch4_window7_224", 4.5),
        ("swin_base_patch4_window12_384", 47.1),
        ("swinv2_tiny_patch4_window8_256", 5.9),
    ],
)
def test_native_flops_match_the_official_tables(name, official_gflops):
    gflops = config_flops(PRESETS[name].config) / 1e9
    assert gflops == pytest.approx(official_gflops, rel=0.05)


def _attention_macs(config, image_size):
    """Q K^T and A V of every block: 2 * tokens * window tokens * width, for maps that tile evenly."""
    total, side = 0, image_size // config.patch_size
    for depth, dim, window in zip(config.depths, config.stage_dims, config.stage_window_sizes):
        total += depth * 2 * side * side * window * window * dim
        side //= 2
    return total


@pytest.mark.parametrize("name", ["swin_micro", "swinv2_micro"])
def test_a_real_cpu_model_counts_its_fused_attention(name):
    model = swinkit.create_model(name).eval()
    by_op = count_flops_by_op(model, 64)
    attention = by_op["aten._scaled_dot_product_flash_attention_for_cpu"]
    assert attention == _attention_macs(model.config.trunk, 64)
    assert sum(by_op.values()) == config_flops(model.config)


def test_flops_follow_the_input_size_including_padding():
    model = swinkit.create_model("swin_micro").eval()
    config = model.config
    native = count_flops(model, 64)
    assert count_flops(model, 128) == pytest.approx(4 * native, rel=0.05)
    # 33x47 pads the 9x12 token map of stage 1 to 12x12: more than the unpadded area alone would cost
    assert count_flops(model, (33, 47)) == config_flops(config, (33, 47)) > native * 33 * 47 / 64**2
    assert count_flops(model, 64, batch_size=3) == 3 * native


def test_counting_leaves_the_model_untouched():
    model = swinkit.create_model("swin_micro")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    count_flops(model, 64)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_bad_sizes_are_user_errors():
    model = swinkit.create_model("swin_micro")
    with pytest.raises(ValueError, match="positive"):
        count_flops(model, 0)
