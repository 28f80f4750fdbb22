"""SimMIM masked image modeling: parity with transformers, layouts, the official mask generator, presets."""

import json
import math

import numpy as np
import pytest
import torch
import transformers

from swinkit.data.masking import MaskGenerator
from swinkit.layouts import common, hf, official
from swinkit.models.mim import (
    SwinForMaskedImageModeling,
    build_mim_model,
    load_mim,
    save_mim_official,
    save_mim_pretrained,
)
from swinkit.presets import MIM_PRESETS, PRESETS, get_mim_preset

MICRO = dict(embed_dim=32, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8], window_size=4)
# transformers' Swin v1 cannot shrink a window to a smaller stage map (see hf.transformers_can_run), so v1
# runs at 128 (last stage 4x4); v2 at the micro preset's 64.
NATIVE = {1: 128, 2: 64}
NON_SQUARE = {1: (128, 160), 2: (64, 96)}
VERSIONS = [pytest.param(1, marks=pytest.mark.slow), 2]  # v1 at 128 pixels takes several seconds


def _perturbed(model: torch.nn.Module) -> torch.nn.Module:
    """Every parameter, the mask token included, moved off its initial value."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.05)
    return model.eval()


def _hf_mim(version: int) -> torch.nn.Module:
    torch.manual_seed(0)
    if version == 1:
        model = transformers.SwinForMaskedImageModeling(
            transformers.SwinConfig(encoder_stride=32, image_size=128, **MICRO)
        )
    else:
        model = transformers.Swinv2ForMaskedImageModeling(
            transformers.Swinv2Config(encoder_stride=32, image_size=64, **MICRO)
        )
    return _perturbed(model)


def _swinkit_from(hf_model: torch.nn.Module, tmp_path) -> SwinForMaskedImageModeling:
    hf_model.save_pretrained(tmp_path)
    return load_mim(tmp_path).eval()


def _random_mask(batch: int, patches: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, patches, generator=torch.Generator().manual_seed(seed)) < 0.6


@pytest.mark.parametrize("version", VERSIONS)
def test_loss_and_reconstruction_match_transformers_at_the_native_size(version, tmp_path):
    reference = _hf_mim(version)
    model = _swinkit_from(reference, tmp_path)
    size = NATIVE[version]
    pixels = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(2))
    mask = _random_mask(2, (size // 4) ** 2)
    with torch.no_grad():
        expected = reference(pixels, bool_masked_pos=mask)
        got = model(pixels, mask)
    torch.testing.assert_close(got.reconstruction, expected.reconstruction, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got.loss, expected.loss, rtol=1e-4, atol=1e-4)
    assert model.encoder.mask_token.abs().sum() > 0  # the perturbed token was read, not left at zero


def _hf_non_square(reference: torch.nn.Module, pixels: torch.Tensor, mask: torch.Tensor) -> tuple:
    """transformers' MIM forward at a non-square size: its encoder and decoder, reshaped to the real grid.

    ``Swin(v2)ForMaskedImageModeling.forward`` itself assumes a square token map (``height = width =
    sqrt(L)``) and a mask of the config's size, so it cannot run on 64x96; its parts can.
    """
    trunk = reference.swin if hasattr(reference, "swin") else reference.swinv2
    hidden = trunk(pixels, bool_masked_pos=mask).last_hidden_state  # (B, h*w, C)
    h, w = pixels.shape[2] // 32, pixels.shape[3] // 32
    grid = hidden.transpose(1, 2).reshape(pixels.shape[0], -1, h, w)  # (B, C, h, w)
    reconstruction = reference.decoder(grid)
    pixel_mask = mask.reshape(-1, h * 8, w * 8).repeat_interleave(4, 1).repeat_interleave(4, 2).unsqueeze(1)
    error = torch.nn.functional.l1_loss(pixels, reconstruction, reduction="none")
    return reconstruction, (error * pixel_mask).sum() / (pixel_mask.sum() + 1e-5) / 3


@pytest.mark.parametrize("version", VERSIONS)
def test_loss_and_reconstruction_match_transformers_at_a_non_square_size(version, tmp_path):
    reference = _hf_mim(version)
    model = _swinkit_from(reference, tmp_path)
    height, width = NON_SQUARE[version]
    pixels = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(3))
    mask = _random_mask(2, height * width // 16, seed=1)
    with torch.no_grad():
        with pytest.raises(RuntimeError):  # why the oracle is assembled from transformers' parts
            reference(pixels, bool_masked_pos=mask)
        reconstruction, loss = _hf_non_square(reference, pixels, mask)
        got = model(pixels, mask)
    torch.testing.assert_close(got.reconstruction, reconstruction, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got.loss, loss, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("version", VERSIONS)
def test_transformers_loads_what_swinkit_writes_with_identical_outputs(version, tmp_path):
    name = "swin_micro_simmim" if version == 1 else "swinv2_micro_simmim"
    size = NATIVE[version]
    model = _perturbed(build_mim_model(get_mim_preset(name).config.replace(image_size=size)))
    save_mim_pretrained(model, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == [hf.MIM_ARCHITECTURES[version]]
    assert config["encoder_stride"] == 32
    cls = (
        transformers.SwinForMaskedImageModeling if version == 1 else transformers.Swinv2ForMaskedImageModeling
    )
    loaded, info = cls.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    pixels = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(4))
    mask = _random_mask(2, (size // 4) ** 2, seed=2)
    with torch.no_grad():
        expected = loaded.eval()(pixels, bool_masked_pos=mask)
        got = model(pixels, mask)
    torch.testing.assert_close(got.reconstruction, expected.reconstruction, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.loss, expected.loss, rtol=1e-5, atol=1e-5)


def _official_checkpoint(version: int) -> dict[str, torch.Tensor]:
    """A SimMIM checkpoint in the documented official key layout, with the buffers official files keep."""
    name = "swin_micro_simmim" if version == 1 else "swinv2_micro_simmim"
    state = _perturbed(build_mim_model(get_mim_preset(name).config)).state_dict()
    tensors = {k: v.clone() for k, v in state.items()}
    tensors["encoder.layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(16, 16, dtype=torch.long)
    return tensors


@pytest.mark.parametrize("version", [1, 2])
def test_an_official_simmim_checkpoint_round_trips(version, tmp_path):
    original = _official_checkpoint(version)
    assert {"encoder.mask_token", "encoder.norm.weight", "decoder.0.weight", "decoder.0.bias"} <= set(
        original
    )
    torch.save({"model": original, "epoch": 3}, tmp_path / "simmim.pth")
    model = load_mim(tmp_path / "simmim.pth")
    assert model.config.version == version and model.config.window_size == 4
    save_mim_official(model, tmp_path / "again.pth")
    again = torch.load(tmp_path / "again.pth", weights_only=True)["model"]
    expected = {k: v for k, v in original.items() if not k.endswith("relative_position_index")}
    assert set(again) == set(expected)
    for key, tensor in expected.items():
        assert torch.equal(again[key], tensor), key


def test_an_official_checkpoint_needs_its_decoder():
    tensors = _official_checkpoint(1)
    del tensors["decoder.0.weight"], tensors["decoder.0.bias"]
    with pytest.raises(ValueError, match="decoder"):
        official.mim_to_canonical(tensors)


def test_classification_loading_still_drops_the_simmim_decoder():
    canonical = official.to_canonical(_official_checkpoint(2))
    assert "patch_embed.proj.weight" in canonical
    assert not any(k.startswith(("decoder.", "encoder.")) for k in canonical)


def test_losses_is_the_named_loss_of_forward():
    model = build_mim_model(get_mim_preset("swin_micro_simmim").config).train()
    pixels = torch.randn(2, 3, 64, 64)
    mask = _random_mask(2, 256)
    torch.manual_seed(0)
    losses = model.losses(pixels, mask)
    torch.manual_seed(0)
    output = model(pixels, mask)
    assert set(losses) == {"loss_mim"}
    torch.testing.assert_close(losses["loss_mim"], output.loss)
    assert model.eval()(pixels).loss is None  # same type without a mask: the reconstruction only


def test_the_loss_is_the_mean_absolute_error_over_the_masked_pixels_and_channels():
    model = build_mim_model(get_mim_preset("swin_micro_simmim").config).eval()
    pixels = torch.randn(1, 3, 64, 64)
    mask = torch.zeros(1, 16, 16, dtype=torch.bool)
    mask[0, :8] = True  # the top half of the patches: 32 x 64 pixels
    with torch.no_grad():
        output = model(pixels, mask)
    error = (pixels - output.reconstruction).abs()[..., :32, :]
    torch.testing.assert_close(output.loss, error.sum() / (32 * 64 + 1e-5) / 3)


def test_sizes_the_decoder_cannot_reconstruct_are_refused():
    model = build_mim_model(get_mim_preset("swin_micro_simmim").config)
    with pytest.raises(ValueError, match="encoder stride 32"):
        model(torch.randn(1, 3, 64, 80))
    with pytest.raises(ValueError, match="16x16 token grid"):
        model(torch.randn(1, 3, 64, 64), torch.zeros(1, 100, dtype=torch.bool))


def _official_mask_loop(permutation, rand_size, scale, mask_count):
    """The official algorithm written as explicit loops over cells and pixels (square and non-square)."""
    rows, cols = rand_size
    chosen = set(int(i) for i in permutation[:mask_count])
    out = np.zeros((rows * scale, cols * scale), dtype=np.int64)
    for cell in chosen:
        r, c = divmod(cell, cols)
        for dr in range(scale):
            for dc in range(scale):
                out[r * scale + dr, c * scale + dc] = 1
    return out


@pytest.mark.parametrize("size", [192, (192, 256), 64])
def test_mask_generator_follows_the_official_algorithm(size):
    generator = MaskGenerator(size, mask_patch_size=32, model_patch_size=4, mask_ratio=0.6, rng=0)
    height, width = (size, size) if isinstance(size, int) else size
    cells = (height // 32) * (width // 32)
    assert generator.mask_count == math.ceil(cells * 0.6)
    permutation = np.random.default_rng(5).permutation(cells)
    mask = generator.mask_from_permutation(permutation)
    assert mask.shape == (height // 4, width // 4)
    np.testing.assert_array_equal(
        mask, _official_mask_loop(permutation, (height // 32, width // 32), 8, generator.mask_count)
    )
    assert mask.sum() == generator.mask_count * 64


def test_mask_generator_is_reproducible_with_a_seed():
    first = [MaskGenerator(rng=7)(), MaskGenerator(rng=7)()]
    np.testing.assert_array_equal(first[0], first[1])
    other = MaskGenerator(rng=8)()
    assert not np.array_equal(first[0], other)
    assert first[0].shape == (48, 48) and first[0].sum() == math.ceil(36 * 0.6) * 64


def test_a_random_state_draws_the_official_masks():
    state = np.random.get_state()
    try:
        np.random.seed(11)
        official = []
        for _ in range(3):  # the official __call__, drawing from the global numpy state
            cells = np.zeros(36, dtype=int)
            cells[np.random.permutation(36)[: math.ceil(36 * 0.6)]] = 1
            official.append(cells.reshape(6, 6).repeat(8, axis=0).repeat(8, axis=1))
    finally:
        np.random.set_state(state)
    generator = MaskGenerator(rng=np.random.RandomState(11))
    for expected in official:
        np.testing.assert_array_equal(generator(), expected)


def test_mask_generator_takes_a_torch_generator():
    first = MaskGenerator(64, rng=torch.Generator().manual_seed(3))()
    again = MaskGenerator(64, rng=torch.Generator().manual_seed(3))()
    np.testing.assert_array_equal(first, again)
    expected = torch.randperm(4, generator=torch.Generator().manual_seed(3)).numpy()
    np.testing.assert_array_equal(first, MaskGenerator(64).mask_from_permutation(expected))


def test_mask_generator_refuses_sizes_it_cannot_tile():
    with pytest.raises(ValueError, match="multiple of the mask patch"):
        MaskGenerator(200)
    with pytest.raises(ValueError, match="multiple of the model patch"):
        MaskGenerator(180, mask_patch_size=30, model_patch_size=4)


def test_generated_masks_drive_the_model():
    generator = MaskGenerator(64, mask_patch_size=32, model_patch_size=4, mask_ratio=0.6, rng=0)
    mask = torch.from_numpy(np.stack([generator(), generator()])).bool()  # (2, 16, 16)
    model = build_mim_model(get_mim_preset("swinv2_micro_simmim").config).eval()
    with torch.no_grad():
        output = model(torch.randn(2, 3, 64, 64), mask)
    assert output.reconstruction.shape == (2, 3, 64, 64) and output.loss > 0


def test_simmim_presets_name_their_published_weights():
    preset = get_mim_preset("swin_base_simmim_window6_192")
    assert preset.hub_id == "microsoft/swin-base-simmim-window6-192"
    assert (preset.config.image_size, preset.config.window_size, preset.config.embed_dim) == (192, 6, 128)
    assert not set(MIM_PRESETS) & set(PRESETS)
    for name, preset in MIM_PRESETS.items():
        model = SwinForMaskedImageModeling(preset.config) if "micro" in name else None
        if model is not None:
            assert model.encoder_stride == 32
        if preset.hub_id is None and "micro" not in name:
            assert "official download" in preset.description
    with pytest.raises(ValueError, match="unknown SimMIM preset"):
        get_mim_preset("swin_base_simmim")


def test_a_simmim_preset_without_hub_weights_names_its_official_download():
    with pytest.raises(ValueError, match="swinv2_base_1k_500k.pth"):
        load_mim("swinv2_base_simmim_1k_500k")


def test_a_folder_whose_encoder_stride_disagrees_is_refused(tmp_path):
    model = build_mim_model(get_mim_preset("swinv2_micro_simmim").config)
    save_mim_pretrained(model, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "encoder_stride": 16}))
    with pytest.raises(ValueError, match="encoder_stride 16"):
        load_mim(tmp_path)


def test_an_official_v2_checkpoint_tells_its_window_by_its_buffers(tmp_path):
    config = get_mim_preset("swinv2_micro_simmim").config.replace(window_size=2)
    state = build_mim_model(config).state_dict()
    state["encoder.layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(4, 4, dtype=torch.long)
    torch.save({"model": state}, tmp_path / "simmim.pth")
    assert load_mim(tmp_path / "simmim.pth").config.window_size == 2


@pytest.mark.parametrize("name", ["swin_base_simmim_window6_192", "swinv2_base_simmim_1k_500k"])
def test_a_published_preset_has_the_tensors_transformers_builds_for_it(name):
    config = get_mim_preset(name).config
    with torch.device("meta"):
        model = SwinForMaskedImageModeling(config)
        hf_config = hf.mim_config_to_hf(config, model.encoder_stride)
        cls = transformers.SwinConfig if config.version == 1 else transformers.Swinv2Config
        hf_model_cls = getattr(transformers, hf.MIM_ARCHITECTURES[config.version])
        reference = hf_model_cls(cls(**{k: v for k, v in hf_config.items() if k != "architectures"}))
    ours = {k: v for k, v in model.state_dict().items() if not common.DROPPED_BUFFERS.search(k)}
    theirs = hf.mim_to_canonical(reference.state_dict())  # transformers 5 keeps other names in memory
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in theirs.items()}


def test_the_optimizer_recipe_sees_the_mask_token_and_the_decoder():
    from swinkit.engine.optim import layer_ids, no_weight_decay

    model = build_mim_model(get_mim_preset("swin_micro_simmim").config)
    ids, num_layers = layer_ids(model)
    assert ids["encoder.mask_token"] == 0 and ids["decoder.0.weight"] == num_layers - 1
    skip = no_weight_decay(model)
    assert "encoder.mask_token" in skip and "decoder.0.weight" not in skip
    model.losses(torch.randn(2, 3, 64, 64), _random_mask(2, 256))["loss_mim"].backward()
    assert model.encoder.mask_token.grad.abs().sum() > 0 and model.decoder[0].weight.grad.abs().sum() > 0


def test_normalized_targets_match_a_loop_over_neighbourhoods():
    """SwinV2 SimMIM's NORM_TARGET: each pixel minus its k x k mean, over sqrt(unbiased variance + 1e-6)."""
    from swinkit.models.mim import normalized_targets

    x = torch.randn(2, 3, 7, 9, generator=torch.Generator().manual_seed(0))
    for k in (3, 5):
        got = normalized_targets(x, k)
        want = torch.empty_like(x)
        r = k // 2
        for i in range(7):
            for j in range(9):
                block = x[:, :, max(i - r, 0) : i + r + 1, max(j - r, 0) : j + r + 1].flatten(
                    2
                )  # cut at borders
                mean, var = block.mean(-1), block.var(-1, unbiased=True)
                want[:, :, i, j] = (x[:, :, i, j] - mean) / (var + 1e-6).sqrt()
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="must be odd"):
        normalized_targets(x, 4)


def test_the_model_loss_uses_normalized_targets_when_asked():
    from swinkit.models.mim import masked_l1_loss, normalized_targets

    model = build_mim_model(get_mim_preset("swinv2_micro_simmim").config).eval()
    pixels = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    mask = torch.rand(2, 16 * 16, generator=torch.Generator().manual_seed(2)) < 0.6
    with torch.no_grad():
        raw = model(pixels, mask)
        model.norm_target_patch = 47
        normed = model(pixels, mask)
    torch.testing.assert_close(normed.reconstruction, raw.reconstruction)
    token_mask = mask.reshape(2, 16, 16).float()
    expected = masked_l1_loss(normalized_targets(pixels, 47), normed.reconstruction, token_mask, 4)
    torch.testing.assert_close(normed.loss, expected)
    assert not torch.allclose(normed.loss, raw.loss)


def test_the_held_out_masked_l1_is_against_the_models_target():
    from types import SimpleNamespace

    from swinkit.engine.distributed import DistContext
    from swinkit.models.mim import normalized_targets
    from swinkit.tasks.masked_image_modeling import MaskedL1Evaluator

    pixels = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    mask = torch.ones(2, 4, 4)
    perfect = SimpleNamespace(reconstruction=normalized_targets(pixels, 5))
    for k, expected_zero in ((5, True), (0, False)):
        evaluator = MaskedL1Evaluator(4, DistContext(), norm_target_patch=k)
        evaluator.process((pixels, mask), perfect)
        assert (evaluator.compute()["masked_l1"] < 1e-6) == expected_zero
