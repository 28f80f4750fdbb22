"""Numerical parity with Hugging Face transformers (the reference oracle) on random, perturbed weights."""

import json

import pytest
import torch
import transformers

import swinkit


def _perturbed(model: torch.nn.Module) -> torch.nn.Module:
    """Every parameter moved off its initial value, so no part of the network is trivially zero or one."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.05)
    return model.eval()


def _hf_classifier(version: int, **config) -> torch.nn.Module:
    if version == 1:
        return _perturbed(transformers.SwinForImageClassification(transformers.SwinConfig(**config)))
    return _perturbed(transformers.Swinv2ForImageClassification(transformers.Swinv2Config(**config)))


TINY = dict(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], num_labels=10)
CASES = {
    "swin_t_224": (
        1,
        dict(TINY, image_size=224, window_size=7),
        [(224, 224), (256, 320), (320, 320), (288, 224), (199, 222)],
    ),
    "swinv2_t_w8_256": (2, dict(TINY, image_size=256, window_size=8), [(256, 256), (256, 320)]),
    "swinv2_pretrained_windows": (
        2,
        dict(TINY, image_size=256, window_size=16, pretrained_window_sizes=[12, 12, 12, 6]),
        [(256, 256), (256, 320)],
    ),
}


@pytest.fixture(scope="module", params=list(CASES))
def saved_pair(request, tmp_path_factory):
    version, config, sizes = CASES[request.param]
    reference = _hf_classifier(version, **config)
    folder = tmp_path_factory.mktemp(request.param)
    reference.save_pretrained(folder)
    return folder, swinkit.from_pretrained(folder).eval(), sizes


def test_logits_match_transformers(saved_pair):
    folder, model, sizes = saved_pair
    for size in sizes:
        # a fresh transformers model per size: its Swin v1 keeps a shift it switched off for a smaller input
        reference = transformers.AutoModelForImageClassification.from_pretrained(folder).eval()
        pixels = torch.randn(2, 3, *size)
        with torch.no_grad():
            expected = reference(pixel_values=pixels).logits
            got = model(pixels)
        assert got.shape == expected.shape
        assert expected.abs().max() > 0.1  # the comparison is not between two near-zero tensors
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_saved_layout_loads_in_transformers(saved_pair, tmp_path):
    _, model, sizes = saved_pair
    swinkit.save_pretrained(model, tmp_path)
    reloaded = transformers.AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    pixels = torch.randn(2, 3, *sizes[0])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(pixel_values=pixels).logits, model(pixels), atol=1e-4, rtol=0)


def test_labels_and_problem_type_survive_the_hf_round_trip(tmp_path):
    model = swinkit.create_model("swin_micro", labels=["can", "carton", "milk"])
    model.config = model.config.replace(problem_type="multi_label_classification")
    swinkit.save_pretrained(model, tmp_path)
    reloaded = transformers.AutoConfig.from_pretrained(tmp_path)
    assert reloaded.id2label == {0: "can", 1: "carton", 2: "milk"}
    assert reloaded.problem_type == "multi_label_classification"
    again = swinkit.from_pretrained(tmp_path)
    assert again.config.labels == ("can", "carton", "milk")
    assert again.config.problem_type == "multi_label_classification"


@pytest.mark.parametrize("size", [(224, 224), (256, 320)])
def test_backbone_feature_maps_match_swin_backbone(tmp_path, size):
    config = transformers.SwinConfig(
        **dict(TINY, image_size=224), out_features=["stage1", "stage2", "stage3", "stage4"]
    )
    reference = _perturbed(transformers.SwinBackbone(config))
    reference.save_pretrained(tmp_path)
    backbone = swinkit.from_pretrained(tmp_path, backbone=True).eval()
    pixels = torch.randn(1, 3, *size)
    with torch.no_grad():
        expected = reference(pixel_values=pixels).feature_maps
        got = backbone(pixels)
    assert [f.shape for f in got] == [f.shape for f in expected]
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, atol=1e-4, rtol=0)
    assert backbone.out_channels == [96, 192, 384, 768]
    assert backbone.strides == [4, 8, 16, 32]


def test_v2_backbone_feature_maps_match_swinv2_backbone(tmp_path):
    config = transformers.Swinv2Config(
        **dict(TINY, image_size=256, window_size=8), out_features=["stage1", "stage2", "stage3", "stage4"]
    )
    reference = _perturbed(transformers.Swinv2Backbone(config))
    reference.save_pretrained(tmp_path)
    backbone = swinkit.from_pretrained(tmp_path, backbone=True).eval()  # no output norms there: identity
    pixels = torch.randn(1, 3, 256, 320)
    with torch.no_grad():
        expected = reference(pixel_values=pixels).feature_maps
        got = backbone(pixels)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, atol=1e-4, rtol=0)


def test_transformers_in_memory_state_dict_loads(tmp_path):
    """A plain torch.save(model.state_dict()) of transformers 5 (q_proj/k_proj/v_proj names) is read."""
    reference = _hf_classifier(
        1, embed_dim=32, depths=[2, 2], num_heads=[2, 4], image_size=64, window_size=4, num_labels=3
    )
    assert any(".q_proj." in k for k in reference.state_dict())
    torch.save(reference.state_dict(), tmp_path / "weights.pth")
    model = swinkit.from_pretrained(tmp_path / "weights.pth", image_size=64).eval()
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(pixels), reference(pixel_values=pixels).logits, atol=1e-4, rtol=0)


def test_two_stage_swinv2_saved_by_transformers_loads(tmp_path):
    reference = _hf_classifier(
        2, embed_dim=32, depths=[2, 2], num_heads=[2, 4], image_size=64, window_size=4, num_labels=3
    )
    reference.save_pretrained(tmp_path)
    model = swinkit.from_pretrained(tmp_path).eval()
    assert model.config.trunk.pretrained_window_sizes == (0, 0)
    pixels = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(pixels), reference(pixel_values=pixels).logits, atol=1e-4, rtol=0)


def test_single_label_problem_type_is_written(tmp_path):
    swinkit.save_pretrained(swinkit.create_model("swinv2_micro", num_classes=2), tmp_path)
    assert transformers.AutoConfig.from_pretrained(tmp_path).problem_type == "single_label_classification"


def test_saving_a_v1_model_transformers_cannot_run_warns(tmp_path, caplog):
    swinkit.save_pretrained(swinkit.create_model("swin_micro", num_classes=2), tmp_path)
    assert "transformers cannot run this architecture" in caplog.text
    assert swinkit.from_pretrained(tmp_path).config.trunk.stage_window_sizes == (4, 4, 4, 2)


def test_unnamed_classes_keep_their_head_when_named_later(tmp_path):
    model = swinkit.create_model("swinv2_micro", num_classes=3).eval()
    swinkit.save_pretrained(model, tmp_path)
    assert swinkit.from_pretrained(tmp_path).config.labels is None  # LABEL_i are placeholders
    named = swinkit.from_pretrained(tmp_path, labels=["a", "b", "c"]).eval()
    pixels = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(named(pixels), model(pixels))
    assert named.config.labels == ("a", "b", "c")


def test_models_without_patch_norm_round_trip(tmp_path):
    model = swinkit.create_model("swinv2_micro", num_classes=2, patch_norm=False).eval()
    swinkit.save_pretrained(model, tmp_path)
    again = swinkit.from_pretrained(tmp_path).eval()
    pixels = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(again(pixels), model(pixels))


def test_masked_image_modeling_checkpoint_loads_its_encoder(tmp_path):
    config = transformers.SwinConfig(
        embed_dim=32, depths=[2, 2], num_heads=[2, 4], image_size=64, window_size=4
    )
    torch.manual_seed(0)
    mim = transformers.SwinForMaskedImageModeling(config).eval()
    with torch.no_grad():  # off init, so a norm or bias left at its default would show
        for p in mim.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    mim.save_pretrained(tmp_path)
    backbone = swinkit.from_pretrained(tmp_path, backbone=True, out_norms=False).eval()
    assert backbone.out_channels == [32, 64]
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = mim.swin(pixels, output_hidden_states=True)
        stages = backbone(pixels)
        pooled = swinkit.from_pretrained(tmp_path).eval()(pixels)  # headless: the final norm, then the mean
    torch.testing.assert_close(stages[-1], expected.reshaped_hidden_states[-1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pooled, expected.last_hidden_state.mean(1), rtol=1e-5, atol=1e-5)


def test_saved_files_follow_the_umask(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        swinkit.save_pretrained(swinkit.create_model("swinv2_micro", num_classes=2), tmp_path)
    finally:
        os.umask(old)
    assert oct((tmp_path / "model.safetensors").stat().st_mode & 0o777) == oct(0o644)
    assert oct((tmp_path / "config.json").stat().st_mode & 0o777) == oct(0o644)


@pytest.mark.parametrize("format", ["safetensors", "bin"])
def test_sharded_checkpoint_folder_loads(tmp_path, format):
    """transformers writes model-0000k-of-0000n shards and an index for large models; both formats load."""
    micro = dict(embed_dim=32, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8], window_size=4, image_size=64)
    reference = _hf_classifier(2, **micro, num_labels=5)
    reference.save_pretrained(tmp_path, max_shard_size="100KB")
    if format == "bin":  # the same shards as pickled tensors, as older transformers wrote them
        from safetensors.torch import load_file

        index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
        renamed = {}
        for shard in sorted(set(index["weight_map"].values())):
            new = shard.replace("model", "pytorch_model").replace(".safetensors", ".bin")
            torch.save(load_file(tmp_path / shard), tmp_path / new)
            (tmp_path / shard).unlink()
            renamed[shard] = new
        index["weight_map"] = {k: renamed[v] for k, v in index["weight_map"].items()}
        (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps(index))
        (tmp_path / "model.safetensors.index.json").unlink()
    shards = list(tmp_path.glob("*-of-*"))
    assert len(shards) > 2 and not (tmp_path / "model.safetensors").exists()
    model = swinkit.from_pretrained(tmp_path).eval()
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(pixels), reference(pixel_values=pixels).logits, atol=1e-5, rtol=0)
    shards[0].unlink()
    with pytest.raises(FileNotFoundError, match="no such checkpoint file"):
        swinkit.from_pretrained(tmp_path)
