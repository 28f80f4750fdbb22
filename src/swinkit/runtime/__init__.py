"""Runtimes a predictor runs its network on: PyTorch, ONNX Runtime and OpenVINO, at fp32, bf16 or int8.

A backend (``swinkit.runtime.backends``) is a callable (B, 3, H, W) float32 pixels -> the network's raw
output (a tensor, or a tuple of tensors for a graph with several outputs), used by a task's predictor in
place of its ``nn.Module``; every post-processing step (softmax, NMS, resizing) stays in the predictor, shared
by all runtimes. ``swinkit.runtime.export`` writes ONNX files and OpenVINO IR folders that ``from_pretrained``
loads; ``swinkit.runtime.quantize`` makes int8 graphs and checks them against fp32.
"""

from swinkit.runtime.backends import PRECISIONS, RUNTIMES, Backend, check_pair

__all__ = ["PRECISIONS", "RUNTIMES", "Backend", "check_pair"]
