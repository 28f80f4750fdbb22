"""Standard PyTorch tools work on swinkit models: every Linear and Conv is called as a module.

``quantize_dynamic`` swaps ``nn.Linear`` modules, PEFT LoRA wraps them and ``torch.compile`` traces the
forward; each only sees a projection that the forward actually calls as a module.
"""

import math
import warnings

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from torch.ao.nn.quantized import dynamic as quantized_dynamic

import swinkit

NAMES = ["swin_micro", "swinv2_micro"]
TARGETS = ("qkv", "proj", "fc1", "fc2")
# Logits of _filled(name) on _pixels(), computed before the projections became module calls (float32 CPU).
REFERENCE_LOGITS = {
    "swin_micro": [
        [0.8095628, 0.15792714, 2.2312427, 1.377985, 1.9742897],
        [1.6589115, -0.018850103, 2.0727417, 1.0083547, 0.67629153],
    ],
    "swinv2_micro": [
        [1.8057058, -0.96264994, 2.0331743, 1.1851671, -0.89117712],
        [2.022156, 0.67766416, 2.3652043, 0.53239501, -1.5931861],
    ],
}


def _filled(name: str) -> nn.Module:
    """A 5-class micro model whose every parameter (v2 q/v biases included) is drawn from a fixed generator."""
    model = swinkit.create_model(name, num_classes=5)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for param_name, param in sorted(model.named_parameters()):
            base = 0.0
            if param_name.endswith("logit_scale"):
                base = math.log(10.0)
            elif "norm" in param_name and param_name.endswith("weight"):
                base = 1.0
            param.copy_(base + 0.1 * torch.randn(param.shape, generator=generator))
    return model.eval()


def _pixels() -> torch.Tensor:
    """(2, 3, 56, 72): padded, shifted and unshifted windows all occur in the micro models."""
    return torch.randn(2, 3, 56, 72, generator=torch.Generator().manual_seed(4))


def _target_names(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_modules() if name.rsplit(".", 1)[-1] in TARGETS]


@pytest.mark.parametrize("name", NAMES)
def test_logits_equal_the_numbers_before_the_change(name):
    with torch.no_grad():
        got = _filled(name)(_pixels())
    torch.testing.assert_close(got, torch.tensor(REFERENCE_LOGITS[name]), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_quantize_dynamic_replaces_every_projection(name):
    model = _filled(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.ao.quantization points to torchao
        quantized = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    modules = dict(quantized.named_modules())
    linear_targets = [n for n in _target_names(quantized) if n != "patch_embed.proj"]
    assert len(linear_targets) == 4 * sum(model.config.trunk.depths)
    assert all(isinstance(modules[n], quantized_dynamic.Linear) for n in linear_targets)
    pixels = _pixels()
    with torch.no_grad():
        expected, got = model(pixels), quantized(pixels)
    # int8 weights and activations on a random network: about 9% of the largest logit at most
    assert (got - expected).abs().max() < 0.15 * expected.abs().max()
    assert torch.equal(got.argmax(-1), expected.argmax(-1))


def _lora_model(name: str) -> nn.Module:
    config = LoraConfig(r=4, lora_alpha=4, target_modules=list(TARGETS), lora_dropout=0.0)
    return get_peft_model(_filled(name), config)


@pytest.mark.parametrize("name", NAMES)
def test_lora_adapters_are_called_and_change_the_output(name):
    model = _lora_model(name)
    pixels = _pixels()
    with torch.no_grad():
        before = model(pixels)  # PEFT starts lora_B at zero: the base model's output
        torch.testing.assert_close(before, torch.tensor(REFERENCE_LOGITS[name]), atol=1e-6, rtol=0)
    called = set()
    adapters = {n: m for n, m in model.named_modules() if n.endswith("lora_A.default")}
    assert len(adapters) == len(_target_names(model.base_model.model))
    for adapter_name, adapter in adapters.items():
        adapter.register_forward_hook(lambda *_, key=adapter_name: called.add(key))
    with torch.no_grad():
        for param_name, param in model.named_parameters():
            if "lora_B" in param_name:
                param.normal_(std=0.1)
        after = model(pixels)
    assert called == set(adapters), f"adapters never called: {sorted(set(adapters) - called)[:3]}"
    assert (after - before).abs().max() > 1e-2


@pytest.mark.parametrize("name", NAMES)
def test_lora_training_updates_only_the_adapters(name):
    model = _lora_model(name).train()
    with torch.no_grad():
        for param_name, param in model.named_parameters():
            if "lora_B" in param_name:
                param.normal_(std=0.02)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    pixels, labels = _pixels(), torch.tensor([1, 3])
    for _ in range(3):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(pixels), labels).backward()
        optimizer.step()
    for param_name, param in model.named_parameters():
        changed = not torch.equal(param, start[param_name])
        assert changed == ("lora_" in param_name), param_name


@pytest.mark.parametrize("name", NAMES)
def test_torch_compile_traces_one_graph_with_the_same_logits(name):
    torch._dynamo.reset()
    model = _filled(name)
    compiled = torch.compile(model, backend="eager", fullgraph=True)  # fullgraph: a graph break fails
    with torch.no_grad():
        torch.testing.assert_close(compiled(_pixels()), model(_pixels()), atol=1e-5, rtol=0)
