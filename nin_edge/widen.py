"""Function-preserving widening of a trained NIN into a wider zoo member (Net2WiderNet; Chen, Goodfellow,
Shlens, ICLR 2016) — `nin-edge train --arch nin-cifar-wide --init-from <a nin-cifar checkpoint>`.

Why: a wider NIN trained from scratch needs more epochs than a 2-core CPU gives in one session (nin-cifar-wide:
~3–3.5 min per epoch in bf16 on the AVX-512 CPU with a flip-averaged teacher), while the narrower runs it would
improve on already sit at their teachers' level (benchmarks/RESULTS.md (g)–(i)). Widening starts the wide model
at the narrow model's exact function (same logits), so training spends its epochs on the extra capacity.
Measured so far: two such runs from the shipped (g) weights ended at their teacher's validation level too
(RESULTS.md (r), (s): 90.02 / 90.00 % vs 90.02 %), so the tool is here, the accuracy gain is not yet.

How: every mlpconv layer's output channels are extended by copying randomly chosen existing channels (with
their BatchNorm parameters and statistics); the next layer's weights for a channel copied k times are split
among the k copies. The split is random per weight (positive shares that sum to 1), not 1/k each: with equal
shares the copies would receive identical gradients forever and never become different units. ReLU, max
pooling and global average pooling act per channel, so the copies carry the same values as the original and
the logits are unchanged (up to float rounding).
"""
from __future__ import annotations

import torch
from torch import nn

from .errors import NinEdgeError


def _layers(model: nn.Module) -> list[nn.Module] | None:
    """The layer list of a NIN whose last conv gives the class scores (global average pooling, no linear head)."""
    feats = getattr(model, "features", None)
    if not isinstance(feats, nn.Sequential) or getattr(model, "head", None) is not None:
        return None
    return list(feats)


def _same_layout(s: nn.Module, d: nn.Module) -> bool:
    if type(s) is not type(d):
        return False
    if isinstance(s, nn.Conv2d):
        return (s.kernel_size, s.stride, s.padding, s.groups, s.bias is None) == \
               (d.kernel_size, d.stride, d.padding, d.groups, d.bias is None) and s.groups == 1 \
               and d.out_channels >= s.out_channels
    if isinstance(s, (nn.MaxPool2d, nn.AvgPool2d)):
        return (s.kernel_size, s.stride, s.padding) == (d.kernel_size, d.stride, d.padding)
    if isinstance(s, nn.AdaptiveAvgPool2d):
        return s.output_size == d.output_size
    return isinstance(s, (nn.BatchNorm2d, nn.ReLU, nn.Dropout))


def _split_shares(groups: torch.Tensor, n_rows: int, gen: torch.Generator) -> torch.Tensor:
    """Random positive shares [n_rows, len(groups)] that sum to 1 over the columns of each source channel."""
    u = torch.rand(n_rows, len(groups), generator=gen, dtype=torch.float64) + 0.5  # in [0.5, 1.5): no tiny shares
    total = torch.zeros(n_rows, int(groups.max()) + 1, dtype=torch.float64).index_add_(1, groups, u)
    return u / total[:, groups]


@torch.no_grad()
def widen_into(src: nn.Module, dst: nn.Module, gen: torch.Generator, src_name: str = "source",
               dst_name: str = "target") -> None:
    """Load `src`'s function into the wider `dst` (same layout, every width ≥). Raises NinEdgeError if the
    layouts differ. `gen` draws which channels are copied and how their outgoing weights are split."""
    s_layers, d_layers = _layers(src), _layers(dst)
    if s_layers is None or d_layers is None:
        raise NinEdgeError(f"cannot widen '{src_name}' into '{dst_name}': only NINs whose last mlpconv gives the "
                           f"class scores (global average pooling, no linear head) can be widened")
    if len(s_layers) != len(d_layers) or not all(_same_layout(a, b) for a, b in zip(s_layers, d_layers)):
        raise NinEdgeError(f"cannot widen '{src_name}' into '{dst_name}': the layers differ in kind, kernel, "
                           f"stride or order, or a width shrinks (only a wider copy of the same layout works)")
    convs = [(a, b) for a, b in zip(s_layers, d_layers) if isinstance(a, nn.Conv2d)]
    if convs[-1][0].out_channels != convs[-1][1].out_channels:
        raise NinEdgeError(f"cannot widen '{src_name}' into '{dst_name}': they have different class counts "
                           f"({convs[-1][0].out_channels} vs {convs[-1][1].out_channels})")
    if convs[0][0].in_channels != convs[0][1].in_channels:
        raise NinEdgeError(f"cannot widen '{src_name}' into '{dst_name}': they take different input channels")
    mapping = torch.arange(convs[0][0].in_channels)  # dst channel j carries src channel mapping[j]
    for s, d in zip(s_layers, d_layers):
        if isinstance(s, nn.Conv2d):
            w = s.weight.double()[:, mapping]  # [out_s, in_d, k, k]: inputs copied ...
            w = w * _split_shares(mapping, w.shape[0], gen)[:, :, None, None]  # ... and split among the copies
            extra = torch.randint(0, s.out_channels, (d.out_channels - s.out_channels,), generator=gen)
            mapping = torch.cat([torch.arange(s.out_channels), extra])
            d.weight.copy_(w[mapping].to(d.weight.dtype))
            if s.bias is not None:
                d.bias.copy_(s.bias[mapping])
        elif isinstance(s, nn.BatchNorm2d):
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(d, name).copy_(getattr(s, name)[mapping])
            d.num_batches_tracked.copy_(s.num_batches_tracked)
