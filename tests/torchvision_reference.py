"""A slow, independent reference of torchvision's Swin forward (v1 ``swin_t`` family and v2 ``swin_v2_t``).

Written from pytorch/vision ``torchvision/models/swin_transformer.py`` at b3054b4d, behaviour for behaviour,
as plain functions over a torchvision-layout state dict (``features.*``, ``norm.*``, ``head.*``). It shares
no code with swinkit. The rules that matter on small or odd inputs:

* the stem is a plain strided convolution: image rows/columns past the last whole patch are dropped;
* every block keeps the configured window; odd blocks are shifted by half of it, and the shift is dropped
  along an axis whose *padded* map is no larger than the window (per axis);
* the shift mask labels 3x3 slice regions of the padded map; patch merging pads odd maps.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _position_index(ws: int) -> torch.Tensor:
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous()
    rel[:, :, 0] += ws - 1
    rel[:, :, 1] += ws - 1
    rel[:, :, 0] *= 2 * ws - 1
    return rel.sum(-1).flatten()


def _coords_table(ws: int) -> torch.Tensor:
    span = torch.arange(-(ws - 1), ws, dtype=torch.float32)
    table = (
        torch.stack(torch.meshgrid([span, span], indexing="ij")).permute(1, 2, 0).contiguous().unsqueeze(0)
    )
    table[..., 0] /= ws - 1
    table[..., 1] /= ws - 1
    table *= 8
    return torch.sign(table) * torch.log2(torch.abs(table) + 1.0) / 3.0


def _position_bias(sd: dict, p: str, ws: int, heads: int, v2: bool) -> torch.Tensor:
    N = ws * ws
    if v2:
        hidden = F.relu(F.linear(_coords_table(ws), sd[p + "cpb_mlp.0.weight"], sd[p + "cpb_mlp.0.bias"]))
        table = F.linear(hidden, sd[p + "cpb_mlp.2.weight"]).view(-1, heads)
    else:
        table = sd[p + "relative_position_bias_table"]
    bias = table[_position_index(ws)].view(N, N, -1).permute(2, 0, 1).contiguous().unsqueeze(0)
    return 16 * torch.sigmoid(bias) if v2 else bias


def shifted_window_attention(x: torch.Tensor, sd: dict, p: str, ws: int, heads: int, shift: int, v2: bool):
    """torchvision's ``shifted_window_attention`` for a square window and shift, (B, H, W, C) in and out."""
    B, H, W, C = x.shape
    x = F.pad(x, (0, 0, 0, (ws - W % ws) % ws, 0, (ws - H % ws) % ws))
    _, pH, pW, _ = x.shape
    shift_size = [shift, shift]
    if ws >= pH:
        shift_size[0] = 0
    if ws >= pW:
        shift_size[1] = 0
    if sum(shift_size) > 0:
        x = torch.roll(x, shifts=(-shift_size[0], -shift_size[1]), dims=(1, 2))
    nW = (pH // ws) * (pW // ws)
    x = x.view(B, pH // ws, ws, pW // ws, ws, C).permute(0, 1, 3, 2, 4, 5).reshape(B * nW, ws * ws, C)
    qkv_bias = sd[p + "qkv.bias"]
    if v2:
        qkv_bias = qkv_bias.clone()
        qkv_bias[C : 2 * C] = 0
    qkv = F.linear(x, sd[p + "qkv.weight"], qkv_bias)
    q, k, v = qkv.reshape(x.size(0), x.size(1), 3, heads, C // heads).permute(2, 0, 3, 1, 4)
    if v2:
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        attn = attn * torch.clamp(sd[p + "logit_scale"], max=math.log(100.0)).exp()
    else:
        attn = (q * (C // heads) ** -0.5) @ k.transpose(-2, -1)
    attn = attn + _position_bias(sd, p, ws, heads, v2)
    if sum(shift_size) > 0:
        mask = x.new_zeros((pH, pW))
        h_slices = ((0, -ws), (-ws, -shift_size[0]), (-shift_size[0], None))
        w_slices = ((0, -ws), (-ws, -shift_size[1]), (-shift_size[1], None))
        count = 0
        for h in h_slices:
            for w in w_slices:
                mask[h[0] : h[1], w[0] : w[1]] = count
                count += 1
        mask = mask.view(pH // ws, ws, pW // ws, ws).permute(0, 2, 1, 3).reshape(nW, ws * ws)
        mask = mask.unsqueeze(1) - mask.unsqueeze(2)
        mask = mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)
        attn = attn.view(B, nW, heads, x.size(1), x.size(1)) + mask.unsqueeze(1).unsqueeze(0)
        attn = attn.view(-1, heads, x.size(1), x.size(1))
    x = (attn.softmax(-1) @ v).transpose(1, 2).reshape(x.size(0), x.size(1), C)
    x = F.linear(x, sd[p + "proj.weight"], sd[p + "proj.bias"])
    x = x.view(B, pH // ws, pW // ws, ws, ws, C).permute(0, 1, 3, 2, 4, 5).reshape(B, pH, pW, C)
    if sum(shift_size) > 0:
        x = torch.roll(x, shifts=(shift_size[0], shift_size[1]), dims=(1, 2))
    return x[:, :H, :W, :].contiguous()


def _norm(x: torch.Tensor, sd: dict, p: str) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], sd[p + "weight"], sd[p + "bias"], 1e-5)


def _mlp(x: torch.Tensor, sd: dict, p: str) -> torch.Tensor:
    x = F.gelu(F.linear(x, sd[p + "0.weight"], sd[p + "0.bias"]))
    return F.linear(x, sd[p + "3.weight"], sd[p + "3.bias"])


def _patch_merging(x: torch.Tensor, sd: dict, p: str, v2: bool) -> torch.Tensor:
    H, W, _ = x.shape[-3:]
    x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
    x = torch.cat(
        [x[..., 0::2, 0::2, :], x[..., 1::2, 0::2, :], x[..., 0::2, 1::2, :], x[..., 1::2, 1::2, :]], -1
    )
    if v2:
        return _norm(F.linear(x, sd[p + "reduction.weight"]), sd, p + "norm.")
    return F.linear(_norm(x, sd, p + "norm."), sd[p + "reduction.weight"])


@torch.no_grad()
def swin_forward(
    sd: dict[str, torch.Tensor],
    images: torch.Tensor,
    *,
    depths: tuple[int, ...],
    num_heads: tuple[int, ...],
    window_size: int,
    patch_size: int,
    v2: bool,
) -> torch.Tensor:
    """torchvision ``SwinTransformer.forward`` (eval mode): (B, 3, H, W) images to (B, classes) logits."""
    x = F.conv2d(images, sd["features.0.0.weight"], sd["features.0.0.bias"], stride=patch_size)
    x = _norm(x.permute(0, 2, 3, 1), sd, "features.0.2.")
    for stage, (depth, heads) in enumerate(zip(depths, num_heads)):
        for j in range(depth):
            p = f"features.{2 * stage + 1}.{j}."
            shift = 0 if j % 2 == 0 else window_size // 2
            if v2:
                x = x + _norm(
                    shifted_window_attention(x, sd, p + "attn.", window_size, heads, shift, v2),
                    sd,
                    p + "norm1.",
                )
                x = x + _norm(_mlp(x, sd, p + "mlp."), sd, p + "norm2.")
            else:
                x = x + shifted_window_attention(
                    _norm(x, sd, p + "norm1."), sd, p + "attn.", window_size, heads, shift, v2
                )
                x = x + _mlp(_norm(x, sd, p + "norm2."), sd, p + "mlp.")
        if stage < len(depths) - 1:
            x = _patch_merging(x, sd, f"features.{2 * stage + 2}.", v2)
    x = _norm(x, sd, "norm.").permute(0, 3, 1, 2).mean(dim=(2, 3))
    return F.linear(x, sd["head.weight"], sd["head.bias"])
