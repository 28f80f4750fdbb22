"""Loading into another window or image size: v1 tables and absolute embeddings resized bicubically, v2 as is."""

import pytest
import torch
import torch.nn.functional as F

import swinkit


def _saved(tmp_path, name: str, **overrides) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """A preset model with every parameter perturbed, saved in the HF layout at ``tmp_path``."""
    model = swinkit.create_model(name, num_classes=3, **overrides)
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn(param.shape, generator=generator))
    swinkit.save_pretrained(model, tmp_path)
    return model.eval(), {k: v.clone() for k, v in model.state_dict().items()}


def _bicubic_table(table: torch.Tensor, side: int) -> torch.Tensor:
    """The official fine-tuning resize of a (L, nH) table to (side*side, nH)."""
    heads = table.shape[1]
    old = round(table.shape[0] ** 0.5)
    grid = F.interpolate(table.T.reshape(1, heads, old, old), size=(side, side), mode="bicubic")
    return grid.reshape(heads, side * side).T


def test_v1_window_change_resizes_relative_position_tables(tmp_path):
    _, original = _saved(tmp_path, "swin_micro")  # window 4 at 64 px: stage windows 4, 4, 4, 2
    model = swinkit.from_pretrained(tmp_path, window_size=8).eval()  # stage windows 8, 8, 4, 2
    state = model.state_dict()
    for stage, (old_side, new_side) in enumerate([(7, 15), (7, 15), (7, 7), (3, 3)]):
        for block in range(2):
            key = f"layers.{stage}.blocks.{block}.attn.relative_position_bias_table"
            assert original[key].shape[0] == old_side**2
            assert state[key].shape[0] == new_side**2
            expected = _bicubic_table(original[key], new_side) if new_side != old_side else original[key]
            torch.testing.assert_close(state[key], expected, atol=1e-6, rtol=0)
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()


def test_absolute_position_embedding_follows_the_image_size(tmp_path):
    _, original = _saved(tmp_path, "swin_micro", absolute_pos_embed=True)
    model = swinkit.from_pretrained(tmp_path, image_size=128).eval()
    old = original["absolute_pos_embed"]  # (1, 16*16, C)
    grid = old.reshape(1, 16, 16, -1).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(32, 32), mode="bicubic").permute(0, 2, 3, 1).reshape(1, 32 * 32, -1)
    torch.testing.assert_close(model.state_dict()["absolute_pos_embed"], expected, atol=1e-6, rtol=0)
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 128, 128))
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("window", [2, 8])
def test_v2_loads_other_windows_without_any_resize(tmp_path, window):
    reference, original = _saved(tmp_path, "swinv2_micro")
    model = swinkit.from_pretrained(tmp_path, window_size=window).eval()
    state = model.state_dict()
    for key, tensor in original.items():
        if key in state:
            assert torch.equal(state[key], tensor), key
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits, before = model(pixels), reference(pixels)
    assert torch.isfinite(logits).all()
    assert not torch.allclose(logits, before, atol=1e-4)  # the window really changed


def test_plain_state_dict_with_shrunken_last_window_reloads_exactly(tmp_path):
    model = swinkit.create_model("swin_micro").eval()  # 64 px: stage windows (4, 4, 4, 2)
    torch.save({"model": model.state_dict()}, tmp_path / "micro.pth")
    again = swinkit.from_pretrained(tmp_path / "micro.pth").eval()
    assert again.config.trunk.image_size == 64 and again.config.trunk.stage_window_sizes == (4, 4, 4, 2)
    pixels = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(again(pixels), model(pixels))


def test_v2_window_transfer_keeps_the_trained_windows_as_the_official_fine_tunes(tmp_path):
    """12 -> 16 at 192 -> 256 sets pretrained_window_sizes (12, 12, 12, 6) officially; the same rule here."""
    from transformers import Swinv2ForImageClassification

    _saved(tmp_path, "swinv2_micro")  # window 4 at 64 px: stage windows 4, 4, 4, 2
    model = swinkit.from_pretrained(tmp_path, window_size=8, image_size=128).eval()
    assert model.config.trunk.stage_window_sizes == (8, 8, 8, 4)
    assert model.config.trunk.pretrained_window_sizes == (4, 4, 4, 2)
    explicit = swinkit.from_pretrained(tmp_path, window_size=8, pretrained_window_sizes=(0, 0, 0, 0))
    assert explicit.config.trunk.pretrained_window_sizes == (0, 0, 0, 0)  # what the caller says wins
    reference = Swinv2ForImageClassification.from_pretrained(
        tmp_path, window_size=8, image_size=128, pretrained_window_sizes=[4, 4, 4, 2]
    ).eval()
    pixels = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(model(pixels), reference(pixels).logits, atol=1e-4, rtol=0)
    again = swinkit.from_pretrained(tmp_path, image_size=64).eval()  # same stage windows: unchanged
    assert again.config.trunk.pretrained_window_sizes == (0, 0, 0, 0)
