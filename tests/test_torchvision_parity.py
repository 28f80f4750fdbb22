"""torchvision checkpoints reproduce torchvision's forward at every input size.

The reference is ``torchvision_reference`` (a slow port of torchvision's code, sharing nothing with swinkit);
the checkpoint goes through the ordinary loading path, which records torchvision's rules in the config.
"""

import foreign_layouts as fl
import pytest
import torch
import torchvision_reference as tvr

from swinkit.layers.window import relative_position_index
from swinkit.layouts import hf
from swinkit.loading import from_pretrained
from swinkit.models.factory import build_model
from swinkit.models.swin import ClassifierConfig
from swinkit.presets import SwinConfig

# swin_t / swin_v2_t geometry (window 7 at 224, window 8 at 256) with tiny widths
ARCH = {
    1: dict(version=1, image_size=224, window_size=7),
    2: dict(version=2, image_size=256, window_size=8),
}
TINY = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), drop_path_rate=0.0)


def _torchvision_checkpoint(version: int) -> dict[str, torch.Tensor]:
    """A torchvision-layout state dict of a random tiny model, every parameter perturbed away from init."""
    torch.manual_seed(version)
    model = build_model(ClassifierConfig(SwinConfig(**ARCH[version], **TINY), num_classes=5))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    sd = fl.to_torchvision({k: v for k, v in model.state_dict().items() if "relative_coords" not in k})
    window = ARCH[version]["window_size"]
    for key in [k for k in sd if k.endswith("relative_position_index")]:
        sd[key] = relative_position_index(window).flatten()
    return sd


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """(torchvision state dict, swinkit model loaded from its saved file) per version."""
    out = {}
    for version in (1, 2):
        sd = _torchvision_checkpoint(version)
        path = tmp_path_factory.mktemp(f"tv{version}") / "swin.pth"
        torch.save(sd, path)
        out[version] = sd, from_pretrained(path).eval()
    return out


def _reference(sd: dict, version: int, images: torch.Tensor) -> torch.Tensor:
    arch = ARCH[version]
    return tvr.swin_forward(
        sd,
        images,
        depths=TINY["depths"],
        num_heads=TINY["num_heads"],
        window_size=arch["window_size"],
        patch_size=4,
        v2=version == 2,
    )


@pytest.mark.parametrize(
    ("version", "size"),
    [(1, (224, 224)), (1, (232, 192)), (1, (228, 188)), (1, (230, 190)), (2, (256, 256)), (2, (301, 219))],
)
def test_torchvision_checkpoint_matches_torchvision(checkpoints, version, size):
    sd, model = checkpoints[version]
    images = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model(images)
    assert (ours - _reference(sd, version, images)).abs().max() < 1e-4


def test_torchvision_rules_are_recorded_and_round_trip(checkpoints):
    config = checkpoints[1][1].config
    assert (config.trunk.shift_rule, config.trunk.patch_padding) == ("torchvision", False)
    assert hf.config_from_hf(hf.config_to_hf(config)) == config


def test_transformers_rule_keeps_the_shift_off_on_both_axes_and_pads_the_image():
    config = SwinConfig(**ARCH[1], **TINY)
    model = build_model(ClassifierConfig(config, num_classes=5))
    block = model.layers[3].blocks[1]
    assert block._geometry(8, 6) == ((14, 7), (0, 0))
    assert model.patch_embed(torch.zeros(1, 3, 230, 190)).shape[1:3] == (58, 48)
    tv = build_model(
        ClassifierConfig(config.replace(shift_rule="torchvision", patch_padding=False), num_classes=5)
    )
    assert tv.layers[3].blocks[1]._geometry(8, 6) == ((14, 7), (3, 0))
    assert tv.patch_embed(torch.zeros(1, 3, 230, 190)).shape[1:3] == (57, 47)


def test_unknown_shift_rule_is_a_user_error():
    with pytest.raises(ValueError, match="shift_rule"):
        SwinConfig(shift_rule="timm")
