"""UPerNet + Swin: parity with transformers' UperNetForSemanticSegmentation (the oracle), mmseg checkpoints,
mmseg's loss reduction, and the ADE20K presets of mmsegmentation's Swin table."""

import re

import pytest
import torch
import torch.nn.functional as F
import transformers
from safetensors.torch import load_file

from swinkit.layouts.heads import hf_upernet, mmseg
from swinkit.loading import CheckpointMismatchError
from swinkit.models.segmentation import (
    ADE20K_CLASSES,
    SEGMENTATION_PRESETS,
    UperNetConfig,
    build_upernet,
    create_upernet,
    get_segmentation_preset,
    upernet_flops,
)
from swinkit.models.segmentation import checkpoints as ck

MICRO = dict(embed_dim=32, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8], window_size=4, image_size=64)
TINY = dict(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7, image_size=224)
STAGES = ["stage1", "stage2", "stage3", "stage4"]


def _perturb(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter and every BatchNorm running statistic moved off its initial value; eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=generator))
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.copy_(0.2 * torch.randn(buffer.shape, generator=generator))
            elif name.endswith("running_var"):
                buffer.copy_(0.5 + torch.rand(buffer.shape, generator=generator))
    return model.eval()


def _hf_upernet(swin: dict, **head) -> torch.nn.Module:
    backbone = transformers.SwinConfig(**swin, out_features=STAGES)
    config = transformers.UperNetConfig(backbone_config=backbone, **head)
    return _perturb(transformers.UperNetForSemanticSegmentation(config))


def _hf_micro() -> torch.nn.Module:
    return _hf_upernet(MICRO, hidden_size=32, auxiliary_channels=16, num_labels=5)


def _hf_auxiliary_logits(reference: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    features = reference.backbone(pixel_values=pixels).feature_maps
    aux = reference.auxiliary_head(features)
    return F.interpolate(aux, size=pixels.shape[2:], mode="bilinear", align_corners=False)


def _assert_same_logits(model, reference, size, auxiliary=False):
    pixels = torch.randn(1, 3, *size)
    with torch.no_grad():
        expected = reference(pixel_values=pixels).logits
        got = model(pixels)
        assert got.logits.shape == expected.shape == (1, reference.config.num_labels, *size)
        assert expected.abs().max() > 0.1  # not two near-zero tensors
        torch.testing.assert_close(got.logits, expected, atol=1e-4, rtol=0)
        if auxiliary:
            torch.testing.assert_close(
                got.auxiliary_logits, _hf_auxiliary_logits(reference, pixels), atol=1e-4, rtol=0
            )


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    reference = _hf_micro()
    folder = tmp_path_factory.mktemp("hf_upernet")
    reference.save_pretrained(folder)
    return folder, reference


@pytest.mark.parametrize("size", [(64, 64), (64, 96), (75, 100)])
def test_logits_match_transformers(hf_folder, size):
    folder, reference = hf_folder
    model = ck.load_hf(folder).eval()
    _assert_same_logits(model, reference, size, auxiliary=True)


def test_hub_folder_with_pytorch_model_bin_loads(hf_folder, tmp_path):
    folder, reference = hf_folder
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    torch.save(reference.state_dict(), tmp_path / "pytorch_model.bin")  # transformers' in-memory names
    _assert_same_logits(ck.load_hf(tmp_path).eval(), reference, (64, 64))
    (tmp_path / "pytorch_model.bin").unlink()
    with pytest.raises(ValueError, match="needs config.json and one of model.safetensors, pytorch_model.bin"):
        ck.load_hf(tmp_path)


def test_saved_folder_loads_in_transformers_with_the_same_logits(tmp_path):
    model = _perturb(create_upernet("upernet_swin_micro", num_classes=5), seed=3)
    ck.save_hf(model, tmp_path)
    reloaded, info = transformers.UperNetForSemanticSegmentation.from_pretrained(
        tmp_path, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    _assert_same_logits(model, reloaded.eval(), (64, 96))


def test_mmseg_checkpoint_has_the_documented_layout_and_reads_back_bit_exact(tmp_path):
    model = _perturb(create_upernet("upernet_swin_micro"), seed=4)
    ck.save_mmseg(model, tmp_path / "seg.pth")
    checkpoint = torch.load(tmp_path / "seg.pth", weights_only=True)
    assert set(checkpoint) == {"state_dict", "meta"}
    assert checkpoint["meta"]["dataset_meta"]["classes"] == list(ADE20K_CLASSES)
    keys = set(checkpoint["state_dict"])
    for name in (
        "backbone.patch_embed.projection.weight",
        "backbone.stages.0.blocks.1.attn.w_msa.qkv.weight",
        "backbone.stages.0.blocks.1.attn.w_msa.relative_position_index",
        "backbone.stages.2.blocks.0.ffn.layers.0.0.weight",
        "backbone.stages.2.blocks.0.ffn.layers.1.bias",
        "backbone.stages.1.downsample.reduction.weight",
        "backbone.norm0.weight",
        "backbone.norm3.bias",
        "decode_head.psp_modules.3.1.conv.weight",
        "decode_head.psp_modules.0.1.bn.running_var",
        "decode_head.bottleneck.bn.weight",
        "decode_head.lateral_convs.2.conv.weight",
        "decode_head.fpn_convs.0.bn.running_mean",
        "decode_head.fpn_bottleneck.conv.weight",
        "decode_head.conv_seg.bias",
        "auxiliary_head.convs.0.conv.weight",
        "auxiliary_head.convs.0.bn.num_batches_tracked",
        "auxiliary_head.conv_seg.weight",
    ):
        assert name in keys, name
    assert not any(re.match(r"backbone\.(layers|head)\.", k) or ".mlp." in k for k in keys)
    again = ck.load_mmseg(tmp_path / "seg.pth")
    assert again.config == model.config
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_mmseg_file_without_swinkit_meta_gets_its_architecture_from_the_shapes(tmp_path):
    model = create_upernet("upernet_swin_micro", num_classes=7, aux_num_convs=2, aux_concat_input=True)
    checkpoint = mmseg.to_checkpoint(model.state_dict(), model.config)
    checkpoint["meta"] = {"CLASSES": [f"c{i}" for i in range(7)]}  # an mmseg 0.x file
    torch.save(checkpoint, tmp_path / "seg.pth")
    config = ck.load_mmseg(tmp_path / "seg.pth").config
    assert (config.num_classes, config.channels, config.aux_channels, config.aux_in_index) == (7, 32, 16, 2)
    assert (config.aux_num_convs, config.aux_concat_input, config.labels) == (
        2,
        True,
        tuple(f"c{i}" for i in range(7)),
    )
    assert config.backbone.depths == (2, 2, 2, 2) and config.backbone.window_size == 4


def test_round_trip_mmseg_to_swinkit_to_hf_gives_transformers_logits(hf_folder, tmp_path):
    folder, reference = hf_folder
    ck.save_mmseg(ck.load_hf(folder), tmp_path / "seg.pth")
    from_mmseg = ck.load_mmseg(tmp_path / "seg.pth")
    ck.save_hf(from_mmseg, tmp_path / "hf")
    again = transformers.UperNetForSemanticSegmentation.from_pretrained(tmp_path / "hf").eval()
    pixels = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(
            again(pixel_values=pixels).logits, reference(pixel_values=pixels).logits, atol=1e-4, rtol=0
        )


# transformers' convert_swin_upernet_to_pytorch.py (mmseg -> transformers, checked there on the real mmseg
# checkpoints), run backwards: an mmseg file made without swinkit's layouts.
_HF_TO_MMSEG = [
    ("embeddings.patch_embeddings.projection.", "patch_embed.projection."),
    ("embeddings.norm.", "patch_embed.norm."),
    ("layernorm_before.", "norm1."),
    ("layernorm_after.", "norm2."),
    ("attention.self.relative_position_bias_table", "attn.w_msa.relative_position_bias_table"),
    ("attention.output.dense.", "attn.w_msa.proj."),
    ("intermediate.dense.", "ffn.layers.0.0."),
    ("output.dense.", "ffn.layers.1."),
    ("encoder.layers.", "stages."),
]


def _mmseg_from_transformers(hf_state: dict) -> dict:
    out = {}
    for key, value in hf_state.items():
        key = key.replace("batch_norm", "bn").replace("head.classifier.", "head.conv_seg.")
        if m := re.match(r"backbone\.hidden_states_norms\.stage(\d)\.(.+)", key):
            key = f"backbone.norm{int(m.group(1)) - 1}.{m.group(2)}"
        elif re.search(r"attention\.self\.(key|value)\.", key):
            continue
        elif m := re.match(r"(.+)\.attention\.self\.query\.(weight|bias)", key):
            parts = [
                hf_state[f"{m.group(1)}.attention.self.{w}.{m.group(2)}"] for w in ("query", "key", "value")
            ]
            key, value = f"{m.group(1)}.attn.w_msa.qkv.{m.group(2)}", torch.cat(parts)
        if "downsample.reduction" in key:  # correct_unfold_reduction_order
            out_c, in_c = value.shape
            value = (
                value.reshape(out_c, 4, in_c // 4)[:, [0, 2, 1, 3], :].transpose(1, 2).reshape(out_c, in_c)
            )
        elif "downsample.norm" in key:  # correct_unfold_norm_order
            value = value.reshape(4, -1)[[0, 2, 1, 3], :].transpose(0, 1).reshape(-1)
        for source, target in _HF_TO_MMSEG:
            key = key.replace(source, target)
        out[key] = value
    return out


def test_mmseg_file_converted_as_transformers_converts_gives_its_logits(hf_folder, tmp_path):
    folder, reference = hf_folder
    hf_state = load_file(str(folder / "model.safetensors"))
    state_dict = {k: v for k, v in _mmseg_from_transformers(hf_state).items() if "swin.layernorm" not in k}
    assert "backbone.stages.1.blocks.0.attn.w_msa.qkv.weight" in state_dict
    torch.save(
        {"state_dict": state_dict, "meta": {"CLASSES": ["a", "b", "c", "d", "bed "]}}, tmp_path / "seg.pth"
    )
    model = ck.load_mmseg(tmp_path / "seg.pth").eval()
    assert model.config.labels == ("a", "b", "c", "d", "bed")
    _assert_same_logits(model, reference, (64, 96), auxiliary=True)


def test_a_missing_tensor_and_an_unreadable_architecture_are_named(tmp_path):
    model = create_upernet("upernet_swin_micro")
    checkpoint = mmseg.to_checkpoint(model.state_dict(), model.config)
    del checkpoint["state_dict"]["decode_head.fpn_convs.1.conv.weight"]
    torch.save(checkpoint, tmp_path / "seg.pth")
    with pytest.raises(CheckpointMismatchError, match=r"missing: decode_head\.fpn_convs\.1\.conv\.weight"):
        ck.load_mmseg(tmp_path / "seg.pth")
    del checkpoint["meta"]  # the architecture now comes from the shapes
    checkpoint["state_dict"]["auxiliary_head.convs.0.conv.weight"] = torch.zeros(16, 100, 3, 3)
    torch.save(checkpoint, tmp_path / "seg.pth")
    with pytest.raises(
        ValueError, match=r"auxiliary head reads 100 channels, the width of no backbone stage"
    ):
        ck.load_mmseg(tmp_path / "seg.pth")


def test_swin_tiny_parameter_count_equals_transformers():
    with torch.device("meta"):
        model = build_upernet(
            get_segmentation_preset("upernet_swin_tiny_patch4_window7_224_1k_ade20k_512").config
        )
        backbone = transformers.SwinConfig(**TINY, out_features=STAGES)
        config = transformers.UperNetConfig(
            backbone_config=backbone, auxiliary_in_channels=384, num_labels=150
        )
        reference = transformers.UperNetForSemanticSegmentation(config)
    ours = sum(p.numel() for p in model.parameters())
    # transformers' SwinBackbone also owns SwinModel's final layernorm, which its forward never uses
    unused = sum(
        p.numel() for n, p in reference.named_parameters() if n.startswith("backbone.swin.layernorm.")
    )
    assert unused == 2 * 768
    assert ours == sum(p.numel() for p in reference.parameters()) - unused
    assert 59.5e6 < ours < 60.5e6  # the paper's 60M


@pytest.mark.parametrize(
    "preset, params, gflops",
    [
        ("upernet_swin_tiny_patch4_window7_224_1k_ade20k_512", 60, 945),
        ("upernet_swin_small_patch4_window7_224_1k_ade20k_512", 81, 1038),
        ("upernet_swin_base_patch4_window7_224_1k_ade20k_512", 121, 1188),
    ],
)
def test_parameters_and_flops_match_the_swin_paper_table(preset, params, gflops):
    """Swin paper, Table 3 (ADE20K val, UperNet, 512x2048 input): 60M/945G, 81M/1038G, 121M/1188G."""
    config = get_segmentation_preset(preset).config
    with torch.device("meta"):
        count = sum(p.numel() for p in build_upernet(config).parameters())
    assert round(count / 1e6) == params
    assert abs(upernet_flops(config, (512, 2048)) / 1e9 - gflops) < 0.002 * gflops


@pytest.mark.slow
def test_swin_tiny_logits_match_transformers_at_512(tmp_path):
    reference = _hf_upernet(TINY, auxiliary_in_channels=384, num_labels=150)
    reference.save_pretrained(tmp_path)
    model = ck.load_hf(tmp_path).eval()
    for size in [(512, 512), (512, 683)]:
        pixels = torch.randn(1, 3, *size)
        with torch.no_grad():
            expected = reference(pixel_values=pixels).logits
            got = model(pixels, auxiliary=False).logits
        assert expected.abs().max() > 0.1
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_output_type_does_not_change_with_training_mode():
    model = create_upernet("upernet_swin_micro", num_classes=3)
    pixels = torch.randn(2, 3, 32, 32)
    train = model.train()(pixels)
    evaluated = model.eval()(pixels)
    assert type(train) is type(evaluated)
    assert train.logits.shape == evaluated.auxiliary_logits.shape == (2, 3, 32, 32)
    assert model(pixels, auxiliary=False).auxiliary_logits is None
    without = create_upernet("upernet_swin_micro", num_classes=3, use_auxiliary_head=False)
    assert without.auxiliary_head is None and without(pixels).auxiliary_logits is None


def test_losses_average_as_mmseg_over_every_pixel_ignored_ones_as_zero():
    model = create_upernet("upernet_swin_micro", num_classes=4).eval()
    pixels = torch.randn(2, 3, 64, 64)
    labels = torch.randint(0, 4, (2, 64, 64))
    labels[:, :16] = 255  # a quarter ignored
    losses = model.losses(pixels, labels)
    assert set(losses) == {"loss_ce", "loss_aux"}
    with torch.no_grad():
        output = model(pixels)
    per_pixel = F.cross_entropy(output.logits, labels, reduction="none", ignore_index=255)
    torch.testing.assert_close(losses["loss_ce"], per_pixel.sum() / labels.numel())
    aux = F.cross_entropy(output.auxiliary_logits, labels, reduction="none", ignore_index=255)
    torch.testing.assert_close(losses["loss_aux"], 0.4 * aux.sum() / labels.numel())
    pytorch = create_upernet("upernet_swin_micro", num_classes=4, avg_non_ignore=True)
    pytorch.load_state_dict(model.state_dict())
    pytorch_losses = pytorch.eval().losses(pixels, labels)  # transformers' reduction: non-ignored pixels only
    torch.testing.assert_close(
        pytorch_losses["loss_ce"], F.cross_entropy(output.logits, labels, ignore_index=255)
    )
    assert pytorch_losses["loss_ce"] > losses["loss_ce"]


def test_every_parameter_gets_a_gradient_and_checkpointing_keeps_them():
    micro = get_segmentation_preset("upernet_swin_micro").config
    deterministic = micro.replace(
        num_classes=4, dropout=0.0, backbone=micro.backbone.replace(drop_path_rate=0.0)
    )
    model = _perturb(build_upernet(deterministic), seed=5).train()
    pixels = torch.randn(2, 3, 32, 32)
    labels = torch.randint(0, 4, (2, 32, 32))

    def gradients():
        model.zero_grad()
        sum(model.losses(pixels, labels).values()).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = gradients()
    assert set(plain) == {n for n, _ in model.named_parameters()}
    assert all(g.abs().sum() > 0 for g in plain.values())
    model.set_grad_checkpointing()
    for name, grad in gradients().items():
        torch.testing.assert_close(grad, plain[name], atol=1e-5, rtol=1e-4, msg=name)


def test_losses_reject_bad_labels_with_the_cause():
    model = create_upernet("upernet_swin_micro", num_classes=4)
    pixels = torch.randn(1, 3, 64, 64)
    with pytest.raises(ValueError, match=r"labels hold class 4 but the model has 4 classes"):
        model.losses(pixels, torch.full((1, 64, 64), 4))
    with pytest.raises(ValueError, match=r"do not fit images of shape \(1, 64, 64\)"):
        model.losses(pixels, torch.zeros(1, 32, 32, dtype=torch.long))
    with pytest.raises(ValueError, match="integer class indices"):
        model.losses(pixels, torch.zeros(1, 64, 64))
    with pytest.raises(ValueError, match="training needs at least 2 images per batch"):
        model.train().losses(pixels, torch.zeros(1, 64, 64, dtype=torch.long))


def test_presets_cover_every_row_of_the_mmseg_swin_table():
    zoo = {n: p for n, p in SEGMENTATION_PRESETS.items() if n != "upernet_swin_micro"}
    rows = {(p.config.backbone.embed_dim, p.pretrain, p.pretrain_image_size, p.miou) for p in zoo.values()}
    assert rows == {
        (96, "ImageNet-1K", 224, 44.41),
        (96, "ImageNet-1K", 224, 47.72),
        (128, "ImageNet-1K", 224, 47.99),
        (128, "ImageNet-22K", 224, 50.31),
        (128, "ImageNet-1K", 384, 48.35),
        (128, "ImageNet-22K", 384, 50.76),
        (192, "ImageNet-22K", 224, 51.17),
        (192, "ImageNet-22K", 384, 52.25),
    }
    hub = {
        p.hub_id: (p.config.backbone.embed_dim, p.config.backbone.window_size)
        for p in zoo.values()
        if p.hub_id
    }
    assert hub == {
        "openmmlab/upernet-swin-tiny": (96, 7),
        "openmmlab/upernet-swin-small": (96, 7),
        "openmmlab/upernet-swin-base": (128, 12),
        "openmmlab/upernet-swin-large": (192, 12),
    }
    for preset in zoo.values():
        config = preset.config
        assert config.labels == ADE20K_CLASSES and config.num_classes == 150
        assert config.backbone.window_size == (7 if preset.pretrain_image_size == 224 else 12)
        assert config.backbone.drop_path_rate == 0.3 and config.channels == 512 and config.aux_channels == 256
        assert preset.checkpoint_url.startswith("https://download.openmmlab.com/mmsegmentation/v0.5/swin/")
    assert len(ADE20K_CLASSES) == len(set(ADE20K_CLASSES)) == 150
    assert ADE20K_CLASSES[:3] == ("wall", "building", "sky") and ADE20K_CLASSES[-1] == "flag"
    with pytest.raises(ValueError, match="Did you mean: upernet_swin_micro"):
        get_segmentation_preset("upernet_swin_mikro")


def test_hf_config_round_trips_and_refuses_what_transformers_cannot_hold():
    config = get_segmentation_preset("upernet_swin_micro").config
    assert hf_upernet.config_from_hf(hf_upernet.config_to_hf(config)) == config
    with pytest.raises(ValueError, match="auxiliary head reads stage 2; this model's reads 1"):
        hf_upernet.config_to_hf(config.replace(aux_in_index=1))
    with pytest.raises(ValueError, match="always normalises the patch embedding"):
        hf_upernet.config_to_hf(config.replace(backbone=config.backbone.replace(patch_norm=False)))
    with pytest.raises(ValueError, match="names no stage"):
        UperNetConfig(backbone=config.backbone, num_classes=3, aux_in_index=4)
    with pytest.raises(ValueError, match="on a Swin v1 backbone; the config is Swin v2"):
        UperNetConfig(backbone=config.backbone.replace(version=2), num_classes=3)
