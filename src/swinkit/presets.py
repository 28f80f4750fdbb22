"""Model configuration and the named presets of the official Swin checkpoints.

A preset name is the official checkpoint's name (``swin_tiny_patch4_window7_224``,
``swinv2_base_patch4_window12_192_22k``, ...). Each preset knows its architecture, native image
size, class count (the classifier's default), evaluation preprocessing and, where one exists, its Hugging
Face hub id. ``SwinConfig`` describes the trunk only; each task's config composes it (the classifier's
``swinkit.models.swin.ClassifierConfig``, UPerNet's ``UperNetConfig``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ShiftRule = Literal["transformers", "torchvision"]


@dataclass(frozen=True)
class SwinConfig:
    """Architecture of a Swin v1 or v2 trunk (names follow the papers and the official code); no task head."""

    version: int = 1  # 1: pre-norm, relative position bias; 2: res-post-norm, cosine attention, CPB
    image_size: int = 224  # native (training) resolution; fixes the per-stage window sizes
    patch_size: int = 4  # side of the square patches embedded by the stem convolution
    in_channels: int = 3  # channels of the input image
    embed_dim: int = 96  # channels of stage 1; doubled at every patch merging
    depths: tuple[int, ...] = (2, 2, 6, 2)  # number of Swin blocks in each stage
    num_heads: tuple[int, ...] = (3, 6, 12, 24)  # attention heads in each stage
    window_size: int = 7  # side of the attention windows (clamped per stage to the map size)
    pretrained_window_sizes: tuple[int, ...] = ()  # v2: each stage's pretraining window (0: own; () all 0)
    mlp_ratio: float = 4.0  # hidden width of the MLP relative to the block width
    qkv_bias: bool = True  # bias on query/value (and key in v1) projections
    drop_rate: float = 0.0  # dropout after the embedding, the MLP and the attention projection
    attn_drop_rate: float = 0.0  # dropout on attention probabilities
    drop_path_rate: float = 0.1  # stochastic depth, linearly increasing to this rate over all blocks
    absolute_pos_embed: bool = False  # learned absolute position embedding added after the stem
    patch_norm: bool = True  # LayerNorm after the patch embedding
    layer_norm_eps: float = 1e-5  # epsilon of every LayerNorm
    shift_rule: ShiftRule = (
        "transformers"  # torchvision: unclamped windows, shift dropped per single-window axis
    )
    patch_padding: bool = True  # pad the image to patch multiples; False drops the remainder (torchvision)

    def __post_init__(self) -> None:
        if self.version not in (1, 2):
            raise ValueError(f"version must be 1 or 2, got {self.version}")
        if self.shift_rule not in ("transformers", "torchvision"):
            raise ValueError(f"shift_rule must be 'transformers' or 'torchvision', got {self.shift_rule!r}")
        if len(self.depths) != len(self.num_heads):
            raise ValueError("depths and num_heads must have one entry per stage")
        if not self.pretrained_window_sizes:
            object.__setattr__(self, "pretrained_window_sizes", (0,) * len(self.depths))
        if len(self.pretrained_window_sizes) != len(self.depths):
            raise ValueError("pretrained_window_sizes must have one entry per stage")
        for i, heads in enumerate(self.num_heads):
            if self.stage_dims[i] % heads:
                raise ValueError(f"stage {i} width {self.stage_dims[i]} is not divisible by {heads} heads")

    @property
    def num_stages(self) -> int:
        return len(self.depths)

    @property
    def stage_dims(self) -> tuple[int, ...]:
        """Channels of each stage's output."""
        return tuple(self.embed_dim * 2**i for i in range(len(self.depths)))

    @property
    def num_features(self) -> int:
        """Channels of the last stage (the pooled feature fed to the head)."""
        return self.stage_dims[-1]

    @property
    def stage_resolutions(self) -> tuple[int, ...]:
        """Side of each stage's token map at the native image size."""
        grid = self.image_size // self.patch_size
        return tuple(grid // 2**i for i in range(len(self.depths)))

    @property
    def stage_window_sizes(self) -> tuple[int, ...]:
        """The official rule, applied once at the native size: a map no larger than the window is one window.

        torchvision never shrinks a window: every stage keeps ``window_size``.
        """
        if self.shift_rule == "torchvision":
            return (self.window_size,) * self.num_stages
        return tuple(min(self.window_size, r) for r in self.stage_resolutions)

    @property
    def stage_shift_sizes(self) -> tuple[int, ...]:
        """Shift of the odd blocks of each stage, before the run-time rule drops it along an axis whose padded
        map is a single window.

        v1 (as transformers' Swin and torchvision): half the window in every stage, so a stage that is one
        window at the native size shifts on larger inputs. v2 (as transformers' Swinv2): fixed at the native
        size, 0 where the native map is a single window. torchvision (both versions): half the window everywhere.
        """
        if self.version == 1 or self.shift_rule == "torchvision":
            return tuple(w // 2 for w in self.stage_window_sizes)
        return tuple(0 if r <= w else w // 2 for r, w in zip(self.stage_resolutions, self.stage_window_sizes))

    def replace(self, **changes: Any) -> SwinConfig:
        """A copy with some fields changed (validated again)."""
        for key in ("depths", "num_heads", "pretrained_window_sizes"):
            if key in changes:
                changes[key] = tuple(changes[key])
        if "depths" in changes and "pretrained_window_sizes" not in changes:
            if len(changes["depths"]) != len(self.pretrained_window_sizes):
                changes["pretrained_window_sizes"] = (0,) * len(changes["depths"])
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SwinConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown SwinConfig fields: {sorted(unknown)}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)


@dataclass(frozen=True)
class Preprocessing:
    """How a checkpoint expects its input images to be prepared for evaluation."""

    image_size: tuple[int, int] = (224, 224)  # (height, width) fed to the model
    crop_pct: float | None = None  # shortest edge to size / crop_pct, then centre crop; None: plain resize
    interpolation: Literal["bicubic", "bilinear", "nearest"] = "bicubic"  # resampling filter
    mean: tuple[float, float, float] = IMAGENET_MEAN  # per-channel mean after rescaling to [0, 1]
    std: tuple[float, float, float] = IMAGENET_STD  # per-channel standard deviation


@dataclass(frozen=True)
class Preset:
    """A named official checkpoint: architecture, classifier classes, preprocessing and where to download it."""

    name: str
    config: SwinConfig
    num_classes: int = 1000  # the classifier's outputs (0: a headless SimMIM model), its default head
    hub_id: str | None = None  # Hugging Face hub repository holding these weights
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    description: str = ""


_V1_SIZES = {
    "tiny": dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), drop_path_rate=0.2),
    "small": dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), drop_path_rate=0.3),
    "base": dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), drop_path_rate=0.5),
    "large": dict(embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48), drop_path_rate=0.2),
}

# The official evaluation resizes the shortest edge to 256/224 of the input size, then centre crops.
OFFICIAL_CROP_PCT = 224 / 256


def _preset(
    name: str,
    hub_id: str | None,
    description: str,
    crop_pct: float | None = OFFICIAL_CROP_PCT,
    num_classes: int = 1000,
    **arch: Any,
) -> Preset:
    config = SwinConfig(**arch)
    size = config.image_size
    preprocessing = Preprocessing(image_size=(size, size), crop_pct=crop_pct)
    return Preset(name, config, num_classes, hub_id, preprocessing, description)


def _build_presets() -> dict[str, Preset]:
    presets: list[Preset] = []
    for size in ("tiny", "small", "base", "large"):
        arch = _V1_SIZES[size]
        presets.append(
            _preset(
                f"swin_{size}_patch4_window7_224",
                f"microsoft/swin-{size}-patch4-window7-224",
                f"Swin-{size[0].upper()} ImageNet-1k, 224",
                window_size=7,
                image_size=224,
                **arch,
            )
        )
    for size in ("base", "large"):
        arch = _V1_SIZES[size]
        presets.append(
            _preset(
                f"swin_{size}_patch4_window7_224_22k",
                f"microsoft/swin-{size}-patch4-window7-224-in22k",
                f"Swin-{size[0].upper()} ImageNet-22k, 224",
                window_size=7,
                image_size=224,
                num_classes=21841,
                **arch,
            )
        )
        for suffix, classes, hub_suffix in (("", 1000, ""), ("_22k", 21841, "-in22k")):
            presets.append(
                _preset(
                    f"swin_{size}_patch4_window12_384{suffix}",
                    f"microsoft/swin-{size}-patch4-window12-384{hub_suffix}",
                    f"Swin-{size[0].upper()} ImageNet-{'22k' if classes > 1000 else '1k'}, 384",
                    crop_pct=None,
                    window_size=12,
                    image_size=384,
                    num_classes=classes,
                    **arch,
                )
            )
    v2_sizes = {k: {**v} for k, v in _V1_SIZES.items()}
    for size in ("tiny", "small", "base"):
        for window in (8, 16):
            presets.append(
                _preset(
                    f"swinv2_{size}_patch4_window{window}_256",
                    f"microsoft/swinv2-{size}-patch4-window{window}-256",
                    f"SwinV2-{size[0].upper()} ImageNet-1k, 256, window {window}",
                    version=2,
                    window_size=window,
                    image_size=256,
                    **v2_sizes[size],
                )
            )
    for size in ("base", "large"):
        presets.append(
            _preset(
                f"swinv2_{size}_patch4_window12_192_22k",
                f"microsoft/swinv2-{size}-patch4-window12-192-22k",
                f"SwinV2-{size[0].upper()} ImageNet-22k, 192",
                version=2,
                window_size=12,
                image_size=192,
                num_classes=21841,
                **v2_sizes[size],
            )
        )
        for window, image in ((16, 256), (24, 384)):
            presets.append(
                _preset(
                    f"swinv2_{size}_patch4_window12to{window}_192to{image}_22kto1k_ft",
                    f"microsoft/swinv2-{size}-patch4-window12to{window}-192to{image}-22kto1k-ft",
                    f"SwinV2-{size[0].upper()} 22k->1k fine-tuned, {image}, window {window}",
                    crop_pct=None if image == 384 else OFFICIAL_CROP_PCT,
                    version=2,
                    window_size=window,
                    image_size=image,
                    pretrained_window_sizes=(12, 12, 12, 6),
                    **v2_sizes[size],
                )
            )
    micro = dict(embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), drop_path_rate=0.1)
    presets.append(
        _preset(
            "swin_micro", None, "small CPU model for tests and demos", window_size=4, image_size=64, **micro
        )
    )
    presets.append(
        _preset(
            "swinv2_micro",
            None,
            "small CPU model for tests and demos",
            version=2,
            window_size=4,
            image_size=64,
            **micro,
        )
    )
    return {p.name: p for p in presets}


PRESETS: dict[str, Preset] = _build_presets()


def _mim_preset(name: str, hub_id: str | None, description: str, **arch: Any) -> Preset:
    """A SimMIM pre-training preset: headless, evaluated by plain resizing to the native size."""
    return _preset(name, hub_id, description, crop_pct=None, num_classes=0, **arch)


def _build_mim_presets() -> dict[str, Preset]:
    """The published SimMIM models: microsoft/SimMIM README and microsoft/Swin-Transformer MODELHUB.md.

    Architectures follow the official pre-training configs (``simmim_pretrain__swin_base__img192_window6``,
    ``..._swin_large__img192_window12``, ``..._swinv2_base__img192_window12``): image 192, drop path 0.0 (v1)
    and 0.1 (v2).
    """
    v1 = {size: {**arch, "drop_path_rate": 0.0} for size, arch in _V1_SIZES.items()}
    presets = [
        _mim_preset(
            "swin_base_simmim_window6_192",
            "microsoft/swin-base-simmim-window6-192",
            "SimMIM Swin-B, 192, window 6 (transformers' SwinForMaskedImageModeling example)",
            window_size=6,
            image_size=192,
            **v1["base"],
        )
    ]
    for size, window, epochs in (("base", 6, 100), ("base", 6, 800), ("large", 12, 800)):
        tag = f"simmim_pretrain__swin_{size}__img192_window{window}__{epochs}ep"
        presets.append(
            _mim_preset(
                f"swin_{size}_simmim_window{window}_192_{epochs}ep",
                None,
                f"SimMIM Swin-{size[0].upper()}, 192, window {window}, ImageNet-1k {epochs} epochs; official "
                f"download: the {tag} pre-trained model of the microsoft/SimMIM README (Google Drive)",
                window_size=window,
                image_size=192,
                **v1[size],
            )
        )
    for size in ("small", "base", "large"):
        presets.append(
            _mim_preset(
                f"swinv2_{size}_simmim_1k_500k",
                None,
                f"SimMIM SwinV2-{size[0].upper()}, 192, window 12, ImageNet-1k 500k iterations; official "
                f"download: simmim-release/swinv2/pretrain/swinv2_{size}_1k_500k.pth (Swin-Transformer MODELHUB)",
                version=2,
                window_size=12,
                image_size=192,
                **{**_V1_SIZES[size], "drop_path_rate": 0.1},
            )
        )
    micro = dict(embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), window_size=4, image_size=64)
    presets.append(_mim_preset("swin_micro_simmim", None, "small SimMIM model for tests", **micro))
    presets.append(
        _mim_preset("swinv2_micro_simmim", None, "small SimMIM model for tests", version=2, **micro)
    )
    return {p.name: p for p in presets}


# Masked-image-modeling presets, apart from PRESETS: SwinConfig describes the trunk, not the task.
MIM_PRESETS: dict[str, Preset] = _build_mim_presets()


def get_mim_preset(name: str) -> Preset:
    """The SimMIM preset called ``name``; a ValueError lists the known ones when it does not exist."""
    if name not in MIM_PRESETS:
        raise ValueError(f"unknown SimMIM preset {name!r}; known: {', '.join(sorted(MIM_PRESETS))}")
    return MIM_PRESETS[name]


def list_models() -> list[str]:
    """Names of every preset, sorted."""
    return sorted(PRESETS)


P = TypeVar("P")


def lookup_preset(table: Mapping[str, P], name: str, kind: str) -> P:
    """``table[name]``; a ValueError naming the close matches (``kind``: e.g. "model preset") otherwise."""
    try:
        return table[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, table, n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else " See `swinkit models`."
        raise ValueError(f"unknown {kind} {name!r}.{hint}") from None


def get_preset(name: str) -> Preset:
    """The preset called ``name``; a ValueError names close matches when it does not exist."""
    return lookup_preset(PRESETS, name, "model preset")


def preset_for_hub_id(hub_id: str) -> Preset | None:
    """The preset whose weights live at ``hub_id``, if any."""
    for preset in PRESETS.values():
        if preset.hub_id == hub_id:
            return preset
    return None
