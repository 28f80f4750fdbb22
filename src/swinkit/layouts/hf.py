"""Hugging Face ``transformers`` on-disk layout (Swin, Swinv2; Model, ForImageClassification, Backbone, MIM).

Names on disk: ``swin.encoder.layers.{i}.blocks.{j}.attention.self.{query,key,value}``,
``layernorm_before/after``, ``intermediate.dense``, ``output.dense``, ``classifier``; Swinv2 adds
``continuous_position_bias_mlp`` and ``logit_scale`` and has no key bias; ``SwinBackbone`` has no
``swin.`` prefix and per-stage ``hidden_states_norms.stage{n}``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from swinkit.layouts.common import rename
from swinkit.models.swin import ClassifierConfig
from swinkit.presets import SwinConfig

NAME = "hf"

# (HF on-disk name, canonical name) for everything but the split query/key/value projections and the head.
# A name ending in "." is a prefix, any other a whole name; {i} stands for a stage, {j} for a block.
_NAMES = [
    ("embeddings.patch_embeddings.projection.", "patch_embed.proj."),
    ("embeddings.norm.", "patch_embed.norm."),
    ("embeddings.position_embeddings", "absolute_pos_embed"),
    ("embeddings.mask_token", "mask_token"),
    ("encoder.layers.{i}.blocks.{j}.layernorm_before.", "layers.{i}.blocks.{j}.norm1."),
    ("encoder.layers.{i}.blocks.{j}.layernorm_after.", "layers.{i}.blocks.{j}.norm2."),
    ("encoder.layers.{i}.blocks.{j}.intermediate.dense.", "layers.{i}.blocks.{j}.mlp.fc1."),
    ("encoder.layers.{i}.blocks.{j}.output.dense.", "layers.{i}.blocks.{j}.mlp.fc2."),
    ("encoder.layers.{i}.blocks.{j}.attention.output.dense.", "layers.{i}.blocks.{j}.attn.proj."),
    (
        "encoder.layers.{i}.blocks.{j}.attention.self.relative_position_bias_table",
        "layers.{i}.blocks.{j}.attn.relative_position_bias_table",
    ),
    ("encoder.layers.{i}.blocks.{j}.attention.self.logit_scale", "layers.{i}.blocks.{j}.attn.logit_scale"),
    (
        "encoder.layers.{i}.blocks.{j}.attention.self.continuous_position_bias_mlp.",
        "layers.{i}.blocks.{j}.attn.cpb_mlp.",
    ),
    ("encoder.layers.{i}.downsample.", "layers.{i}.downsample."),
    ("layernorm.", "norm."),
]
# Read, never written: transformers >= 5 in-memory names of Swin v1 (a plain torch.save(model.state_dict())).
_IN_MEMORY_NAMES = [
    ("encoder.layers.{i}.blocks.{j}.attention.o_proj.", "layers.{i}.blocks.{j}.attn.proj."),
    (
        "encoder.layers.{i}.blocks.{j}.attention.relative_position_bias.relative_position_bias_table",
        "layers.{i}.blocks.{j}.attn.relative_position_bias_table",
    ),
    ("encoder.layers.{i}.blocks.{j}.mlp.fc1.", "layers.{i}.blocks.{j}.mlp.fc1."),
    ("encoder.layers.{i}.blocks.{j}.mlp.fc2.", "layers.{i}.blocks.{j}.mlp.fc2."),
]


def _rule(source: str, target: str) -> tuple[str, str]:
    """A :func:`rename` rule turning the name template ``source`` into ``target``."""
    pattern = re.escape(source).replace(r"\{i\}", r"(?P<i>\d+)").replace(r"\{j\}", r"(?P<j>\d+)")
    if not source.endswith("."):
        pattern += "$"
    return pattern, target.replace("{i}", r"\g<i>").replace("{j}", r"\g<j>")


_RULES = [
    *(_rule(hf_name, canonical) for hf_name, canonical in _NAMES + _IN_MEMORY_NAMES),
    (r"classifier\.", "head."),
    (r"hidden_states_norms\.stage(\d+)\.", lambda m: f"norm{int(m.group(1)) - 1}."),
]
_REVERSE = [_rule(canonical, hf_name) for hf_name, canonical in _NAMES]
_QKV = re.compile(
    r"encoder\.layers\.(\d+)\.blocks\.(\d+)\.attention\.(?:self\.)?(query|key|value|q_proj|k_proj|v_proj)\.(weight|bias)$"
)
_QKV_NAMES = {"q_proj": "query", "k_proj": "key", "v_proj": "value"}
_DROPPED = re.compile(
    r"(relative_position_index|relative_coords_table|attn_mask|num_batches_tracked)$|^decoder\."
)
_PREFIX = re.compile(r"^(swin|swinv2)\.")


def detect(state_dict: Mapping[str, Any]) -> float:
    """Confidence in [0, 1] that ``state_dict`` is in this layout."""
    keys = list(state_dict)
    hits = sum(
        1
        for k in keys
        if ".attention.self." in k or ".attention.q_proj." in k or "embeddings.patch_embeddings" in k
    )
    return 1.0 if hits else 0.0


def to_canonical(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF names to canonical names; query/key/value are fused into ``qkv`` (v2: ``q_bias``/``v_bias``)."""
    out: dict[str, torch.Tensor] = {}
    parts: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for name, tensor in state_dict.items():
        key = _PREFIX.sub("", name)
        if _DROPPED.search(key):
            continue
        m = _QKV.match(key)
        if m:
            stage, block, which, kind = m.groups()
            which = _QKV_NAMES.get(which, which)
            parts.setdefault((f"layers.{stage}.blocks.{block}.attn", kind), {})[which] = tensor
            continue
        out[rename(key, _RULES)] = tensor
    for (prefix, kind), qkv in parts.items():
        if kind == "weight":
            out[f"{prefix}.qkv.weight"] = torch.cat([qkv["query"], qkv["key"], qkv["value"]])
        elif "key" in qkv:  # v1: all three biases
            out[f"{prefix}.qkv.bias"] = torch.cat([qkv["query"], qkv["key"], qkv["value"]])
        else:  # v2: the key projection has no bias
            out[f"{prefix}.q_bias"] = qkv["query"]
            out[f"{prefix}.v_bias"] = qkv["value"]
    return out


_CANON_ATTN = re.compile(r"^layers\.(\d+)\.blocks\.(\d+)\.attn\.(qkv\.weight|qkv\.bias|q_bias|v_bias)$")


def from_canonical(state_dict: Mapping[str, torch.Tensor], config: SwinConfig) -> dict[str, torch.Tensor]:
    """Canonical names to the on-disk names of ``Swin(v2)ForImageClassification`` (or ``Swin(v2)Model``)."""
    prefix = "swin." if config.version == 1 else "swinv2."
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state_dict.items():
        m = _CANON_ATTN.match(name)
        if m:
            stage, block, what = m.groups()
            base = f"{prefix}encoder.layers.{stage}.blocks.{block}.attention.self."
            if what.startswith("qkv"):
                kind = what.split(".")[1]
                q, k, v = tensor.chunk(3)
                out[base + f"query.{kind}"], out[base + f"value.{kind}"] = q, v
                if config.version == 1 or kind == "weight":
                    out[base + f"key.{kind}"] = k
            else:
                out[base + ("query.bias" if what == "q_bias" else "value.bias")] = tensor
            continue
        if name.startswith("head."):
            out["classifier." + name[len("head.") :]] = tensor
            continue
        if re.match(r"^norm\d+\.", name):
            raise ValueError(f"{name}: backbone output norms have no place in the classification layout")
        out[prefix + rename(name, _REVERSE)] = tensor
    return out


def config_from_hf(hf: Mapping[str, Any]) -> ClassifierConfig:
    """A ClassifierConfig from a transformers ``config.json`` (model_type ``swin`` or ``swinv2``): the trunk
    and, for a ``...ForImageClassification``, its head (any other architecture: no head)."""
    id2label = hf.get("id2label") or {}
    architectures = hf.get("architectures") or []
    is_classifier = any(a.endswith("ForImageClassification") for a in architectures)
    labels = tuple(id2label[str(i)] if str(i) in id2label else id2label[i] for i in range(len(id2label)))
    num_classes = len(labels) if is_classifier else 0
    if labels == tuple(f"LABEL_{i}" for i in range(len(labels))):
        labels = ()  # transformers' placeholder names: the classes are unnamed
    return ClassifierConfig(
        trunk_from_hf(hf),
        num_classes=num_classes,
        problem_type=hf.get("problem_type") or "single_label_classification",
        labels=labels if is_classifier and labels else None,
    )


def trunk_from_hf(hf: Mapping[str, Any]) -> SwinConfig:
    """The trunk's SwinConfig from a transformers ``config.json`` (model_type ``swin`` or ``swinv2``)."""
    model_type = hf.get("model_type")
    if model_type not in ("swin", "swinv2"):
        raise ValueError(f"config.json has model_type {model_type!r}; swinkit reads 'swin' and 'swinv2'")
    image_size = hf.get("image_size", 224)
    if isinstance(image_size, list | tuple):
        if len(set(image_size)) != 1:
            raise ValueError(f"non-square native image_size {image_size} is not supported")
        image_size = image_size[0]
    patch_size = hf.get("patch_size", 4)
    patch_size = patch_size[0] if isinstance(patch_size, list | tuple) else patch_size
    depths = tuple(hf.get("depths", (2, 2, 6, 2)))
    return SwinConfig(
        version=2 if model_type == "swinv2" else 1,
        image_size=image_size,
        patch_size=patch_size,
        in_channels=hf.get("num_channels", 3),
        embed_dim=hf.get("embed_dim", 96),
        depths=depths,
        num_heads=tuple(hf.get("num_heads", (3, 6, 12, 24))),
        window_size=hf.get("window_size", 7),
        # transformers writes four entries whatever the number of stages
        pretrained_window_sizes=tuple(
            (hf.get("pretrained_window_sizes") or (0,) * len(depths))[: len(depths)]
        ),
        mlp_ratio=hf.get("mlp_ratio", 4.0),
        qkv_bias=hf.get("qkv_bias", True),
        drop_rate=hf.get("hidden_dropout_prob", 0.0),
        attn_drop_rate=hf.get("attention_probs_dropout_prob", 0.0),
        drop_path_rate=hf.get("drop_path_rate", 0.1),
        absolute_pos_embed=hf.get("use_absolute_embeddings", False),
        patch_norm=hf.get("patch_norm", True),  # written by swinkit only; transformers always has it
        layer_norm_eps=hf.get("layer_norm_eps", 1e-5),
        shift_rule=hf.get("shift_rule", "transformers"),  # swinkit's extra keys, ignored by transformers
        patch_padding=hf.get("patch_padding", True),
    )


def trunk_to_hf(config: SwinConfig) -> dict[str, Any]:
    """The trunk's keys of a transformers Swin(v2) ``config.json`` (no architectures, labels or problem type)."""
    v2 = config.version == 2
    hf: dict[str, Any] = {
        "model_type": "swinv2" if v2 else "swin",
        "image_size": config.image_size,
        "patch_size": config.patch_size,
        "num_channels": config.in_channels,
        "embed_dim": config.embed_dim,
        "depths": list(config.depths),
        "num_heads": list(config.num_heads),
        "window_size": config.window_size,
        "mlp_ratio": config.mlp_ratio,
        "qkv_bias": config.qkv_bias,
        "hidden_dropout_prob": config.drop_rate,
        "attention_probs_dropout_prob": config.attn_drop_rate,
        "drop_path_rate": config.drop_path_rate,
        "hidden_act": "gelu",
        "use_absolute_embeddings": config.absolute_pos_embed,
        "patch_norm": config.patch_norm,
        "layer_norm_eps": config.layer_norm_eps,
        "initializer_range": 0.02,
        "encoder_stride": config.patch_size * 2 ** (config.num_stages - 1),
    }
    if v2:
        hf["pretrained_window_sizes"] = list(config.pretrained_window_sizes)
    # swinkit's run-time rules (torchvision checkpoints differ); transformers ignores unknown keys
    hf["shift_rule"] = config.shift_rule
    hf["patch_padding"] = config.patch_padding
    return hf


def config_to_hf(config: ClassifierConfig) -> dict[str, Any]:
    """A transformers ``config.json`` dict for ``Swin(v2)ForImageClassification`` (keys in transformers'
    order: the trunk's, the labels, ``pretrained_window_sizes``, ``problem_type``, swinkit's rules)."""
    trunk = trunk_to_hf(config.trunk)
    tail = {k: trunk.pop(k) for k in ("pretrained_window_sizes", "shift_rule", "patch_padding") if k in trunk}
    labels = config.label_names
    v2 = config.trunk.version == 2
    return {
        "architectures": ["Swinv2ForImageClassification" if v2 else "SwinForImageClassification"],
        **trunk,
        "id2label": {str(i): name for i, name in enumerate(labels)},
        "label2id": {name: i for i, name in enumerate(labels)},
        **({"pretrained_window_sizes": tail["pretrained_window_sizes"]} if v2 else {}),
        "problem_type": config.problem_type,
        "shift_rule": tail["shift_rule"],
        "patch_padding": tail["patch_padding"],
    }


def transformers_can_run(config: SwinConfig) -> bool:
    """Whether transformers can run this architecture.

    Its Swin v1 sizes every relative position table for ``window_size``, so a v1 model whose native stage
    maps are smaller than the window (the official rule shrinks those windows) has no transformers form;
    nor has a model without the patch-embedding norm (transformers always applies one).
    """
    windows_fit = config.version == 2 or all(w == config.window_size for w in config.stage_window_sizes)
    return windows_fit and config.patch_norm


# Masked image modeling (Swin(v2)ForMaskedImageModeling): the encoder as above, the decoder kept as is.
# Canonical MIM names are the official SimMIM ones: ``encoder.`` + trunk names, ``decoder.0.*``.
MIM_ARCHITECTURES = {1: "SwinForMaskedImageModeling", 2: "Swinv2ForMaskedImageModeling"}


def mim_to_canonical(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A ``Swin(v2)ForMaskedImageModeling`` state dict to canonical MIM names (mask token and decoder kept)."""
    if not any(k.startswith("decoder.") for k in state_dict):
        raise ValueError("this checkpoint has no decoder: it is not a masked-image-modeling model")
    encoder = to_canonical({k: v for k, v in state_dict.items() if not k.startswith("decoder.")})
    out = {"encoder." + k: v for k, v in encoder.items()}
    out.update({k: v for k, v in state_dict.items() if k.startswith("decoder.")})
    return out


def mim_from_canonical(state_dict: Mapping[str, torch.Tensor], config: SwinConfig) -> dict[str, torch.Tensor]:
    """Canonical MIM names to the on-disk names of ``Swin(v2)ForMaskedImageModeling``."""
    encoder = {k[len("encoder.") :]: v for k, v in state_dict.items() if k.startswith("encoder.")}
    rest = {k: v for k, v in state_dict.items() if not k.startswith("encoder.")}
    unknown = [k for k in rest if not k.startswith("decoder.")]
    if unknown:
        raise ValueError(f"{unknown[0]}: neither an encoder nor a decoder tensor of a SimMIM model")
    return {**from_canonical(encoder, config), **rest}


def mim_config_to_hf(config: SwinConfig, encoder_stride: int) -> dict[str, Any]:
    """A transformers ``config.json`` dict for ``Swin(v2)ForMaskedImageModeling``."""
    hf = config_to_hf(ClassifierConfig(config, num_classes=0))  # a headless model's keys, as SwinModel's
    hf["architectures"] = [MIM_ARCHITECTURES[config.version]]
    hf["encoder_stride"] = encoder_stride
    return hf
