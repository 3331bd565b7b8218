"""Test-time augmentation baked into the deployed graph (`nin-edge export --tta flip`).

`flip` classifies each image and its left-right mirror in one batch of 2N through the same network and
averages the two softmax distributions. It is exported *inside* model.onnx, so every artifact built from it
(ONNX Runtime fp32/INT8, the TensorRT Q/DQ form, OpenVINO IRs, TensorRT engines), the torch runner, `bench`
and the demo run the same thing with no per-backend code — and every one of them pays for it: two forward
passes of the network per image (measured in benchmarks/RESULTS.md).

The output is log(mean of the two softmaxes): log-probabilities. They are valid logits for everything that
consumes them (argmax, top-k, softmax returns the averaged probabilities exactly, since they already sum to 1).

Measured on the shipped `nin-cifar` weights (fp32, all 10,000 CIFAR-10 JPEG test images): 89.94 % → 90.30 %
top-1; on its 5,000-image validation split 89.80 → 89.72 % (RESULTS.md, issue 3 (x)).
"""
from __future__ import annotations

from enum import Enum

from torch import nn

from .errors import NinEdgeError


class Tta(str, Enum):
    none = "none"  # one forward pass per image
    flip = "flip"  # the image and its mirror; softmax averaged (2 forward passes)


# forward passes of the network per input image, by TTA: what latency and MACs scale with
PASSES = {Tta.none: 1, Tta.flip: 2}


# ONNX node-name scope of the averaging after the network (the torch exporter names nodes by module path). Both
# INT8 passes keep it in float (nin_edge/quantize.py): NNCF otherwise puts separate FakeQuantize ranges on the two
# halves' Subtract/Maximum inputs, and an image and its mirror then differed by up to 0.07 in log-probability.
FLOAT_SCOPE = "/tta_mean/"


class _MirrorMean(nn.Module):
    """Logits of [images; mirrors] (2N rows) → log of the mean of each pair's two softmaxes (N rows)."""

    def forward(self, logits):
        import torch

        y = torch.log_softmax(logits, dim=1)
        n = y.shape[0] // 2
        a, b = y[:n], y[n:]
        # log(p + p') by a stable log-sum-exp written out in elementwise ops; log_softmax of it = log((p + p') / 2).
        # (torch.logsumexp exports as ReduceLogSumExp, whose `axes` attribute OpenVINO 2026.4's ONNX reader ignores:
        # it reduced to a scalar here. A scalar "− log 2" made NNCF's INT8 pass fail. Max/Exp/Log/LogSoftmax convert
        # in ONNX Runtime, OpenVINO and NNCF alike.)
        m = torch.maximum(a, b)
        return torch.log_softmax(m + torch.log(torch.exp(a - m) + torch.exp(b - m)), dim=1)


class FlipAverage(nn.Module):
    """log(½·softmax(f(x)) + ½·softmax(f(mirror x))), with both views in one batch of 2N."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.tta_mean = _MirrorMean()  # the attribute name is FLOAT_SCOPE in the exported graph

    def forward(self, x):
        import torch

        return self.tta_mean(self.model(torch.cat([x, x.flip(3)], 0)))


def float_nodes(onnx_model) -> list[str]:
    """Names of the nodes of a loaded ONNX model that the INT8 passes leave in float (none without TTA)."""
    return [n.name for n in onnx_model.graph.node if n.name.startswith(FLOAT_SCOPE)]


def parse_tta(value: str | Tta | None, where: str = "--tta") -> Tta:
    if isinstance(value, Tta):
        return value
    try:
        return Tta(value or "none")
    except ValueError:
        raise NinEdgeError(f"{where} {value!r}: choose one of {', '.join(t.value for t in Tta)}") from None


def with_tta(model: nn.Module, tta: str | Tta | None) -> nn.Module:
    """`model` wrapped for the test-time augmentation `tta` (the model itself for none); eval mode kept."""
    t = parse_tta(tta)
    if t is Tta.none:
        return model
    return FlipAverage(model).train(model.training)
