"""Model zoo: registry, forward shapes, and parameter/MAC counts against hand counts.

Hand counts: a conv with a k×k kernel, cin inputs and cout outputs has (k·k·cin + 1)·cout parameters with
bias, k·k·cin·cout without; per output position it does k·k·cin·cout multiply-accumulates. BatchNorm adds
2·c parameters (running mean/var are buffers, not parameters) and no MACs (folded away at export).
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from nin_edge.errors import NinEdgeError
from nin_edge.models import count_macs, count_params, create_model, list_models, model_info

ZOO = ("nin-bn", "nin-cifar", "nin-cifar-wide", "nin-imagenet", "nin-paper", "nin-seed")


def conv_p(k: int, cin: int, cout: int, bias: bool = True) -> int:
    return (k * k * cin + (1 if bias else 0)) * cout


def conv_m(hw: int, k: int, cin: int, cout: int) -> int:
    return hw * hw * k * k * cin * cout


# --------------------------------------------------------------------------- registry
def test_registry_lists_the_zoo():
    assert tuple(list_models()) == ZOO


def test_unknown_model_lists_choices():
    with pytest.raises(NinEdgeError) as e:
        create_model("nin-huge")
    msg = str(e.value)
    assert "nin-huge" in msg and "\n" not in msg
    for name in ZOO:
        assert name in msg


@pytest.mark.parametrize("name", ZOO)
def test_forward_shape(name):
    info = model_info(name)
    m = create_model(name).eval()
    assert m.arch == name
    default_classes = 1000 if name == "nin-imagenet" else 10
    with torch.no_grad():
        assert tuple(m(torch.zeros(2, 3, info.input_size, info.input_size)).shape) == (2, default_classes)
        m7 = create_model(name, num_classes=7).eval()
        assert tuple(m7(torch.zeros(1, 3, info.input_size, info.input_size)).shape) == (1, 7)


def test_count_macs_keeps_training_mode():
    m = create_model("nin-paper").train()
    count_macs(m, 32)
    assert m.training


# --------------------------------------------------------------------------- nin-seed = the source document
class SourceNIN(nn.Module):
    """Copied from the source document's exercise ("练习: 在32*32 的 cifar10 上进行十分类"), unchanged but for
    NUM_CLASSES, to compare nin-seed against it layer by layer."""

    def __init__(self, num_classes=10):
        super(SourceNIN, self).__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(64, 64, kernel_size=1, stride=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(64, 64, kernel_size=1, stride=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2),

            nn.Conv2d(64, 192, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(192, 192, kernel_size=1, stride=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(192, 192, kernel_size=1, stride=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2),

            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 384, kernel_size=1, stride=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=1, stride=1),
            nn.ReLU(inplace=True),
            nn.AvgPool2d(kernel_size=4),
        )
        self.classifier = nn.Linear(256, 10)

    def forward(self, x):
        x = self.features(x)
        x = x.view(x.size(0), -1)
        x = self.classifier(x)
        return x


def _layer_signature(mod: nn.Module):
    if isinstance(mod, nn.Conv2d):
        return ("conv", mod.in_channels, mod.out_channels, mod.kernel_size, mod.stride, mod.padding, mod.bias is not None)
    if isinstance(mod, (nn.MaxPool2d, nn.AvgPool2d)):
        return (type(mod).__name__, mod.kernel_size, mod.stride, mod.padding)
    return (type(mod).__name__,)


def test_nin_seed_is_exactly_the_source_network():
    src, ours = SourceNIN(), create_model("nin-seed")
    assert [_layer_signature(m) for m in ours.features] == [_layer_signature(m) for m in src.features]
    assert (ours.head.in_features, ours.head.out_features) == (src.classifier.in_features, src.classifier.out_features)
    # same weights → same logits (only the classifier's attribute name differs)
    sd = {k.replace("classifier.", "head."): v for k, v in src.state_dict().items()}
    ours.load_state_dict(sd, strict=True)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), src.eval()(x), rtol=0, atol=0)


def test_nin_seed_counts():
    # by hand, layer by layer from the source: 32 → stem stride 2 → 16 → pool → 8 → pool → 4 → avgpool 4 → 1
    params = (conv_p(3, 3, 64) + conv_p(1, 64, 64) * 2
              + conv_p(3, 64, 192) + conv_p(1, 192, 192) * 2
              + conv_p(3, 192, 384) + conv_p(1, 384, 384) + conv_p(1, 384, 256)
              + (256 + 1) * 10)
    macs = (conv_m(16, 3, 3, 64) + 2 * conv_m(16, 1, 64, 64)
            + conv_m(8, 3, 64, 192) + 2 * conv_m(8, 1, 192, 192)
            + conv_m(4, 3, 192, 384) + conv_m(4, 1, 384, 384) + conv_m(4, 1, 384, 256)
            + 256 * 10)
    assert params == 1_107_914 and macs == 28_887_552  # the formulas above, evaluated
    m = create_model("nin-seed")
    assert count_params(m) == params == count_params(SourceNIN())
    assert count_macs(m, 32) == macs


def test_nin_bn_counts():
    # nin-seed's convs without bias, BatchNorm (γ, β) after every one of its nine convs
    m = create_model("nin-bn")
    channels = [64, 64, 64, 192, 192, 192, 384, 384, 256]
    seed = create_model("nin-seed")
    assert count_params(m) == count_params(seed) - sum(channels) + 2 * sum(channels)
    assert sum(isinstance(x, nn.BatchNorm2d) for x in m.modules()) == 9
    assert count_macs(m, 32) == count_macs(seed, 32)


def _bn_nin_counts(w1: int, w2: int, w3: int) -> tuple[int, int]:
    """Parameters and MACs of nin-cifar's layout at widths w1/w2/w3, from the layer formulas."""
    # stride-1 stem: 32×32 → pool 16 → pool 8 → GAP; BN after every conv except the class maps; no bias
    # anywhere (BN's β replaces it; the class-map conv has none either).
    weights = (conv_p(3, 3, w1, False) + 2 * conv_p(1, w1, w1, False)
               + conv_p(3, w1, w2, False) + 2 * conv_p(1, w2, w2, False)
               + conv_p(3, w2, w3, False) + conv_p(1, w3, w3, False) + conv_p(1, w3, 10, False))
    bn = 2 * (3 * w1 + 3 * w2 + 2 * w3)
    macs = (conv_m(32, 3, 3, w1) + 2 * conv_m(32, 1, w1, w1)
            + conv_m(16, 3, w1, w2) + 2 * conv_m(16, 1, w2, w2)
            + conv_m(8, 3, w2, w3) + conv_m(8, 1, w3, w3) + conv_m(8, 1, w3, 10))
    return weights + bn, macs


def test_nin_cifar_counts():
    params, macs = _bn_nin_counts(64, 192, 384)
    m = create_model("nin-cifar")
    assert count_params(m) == params == 1_012_160
    assert count_macs(m, 32) == macs == 109_494_272


def test_nin_cifar_wide_counts():
    # nin-cifar's layout at widths 96/256/512: same formulas, ~1.9× the MACs, still no FC
    params, macs = _bn_nin_counts(96, 256, 512)
    m = create_model("nin-cifar-wide")
    assert count_params(m) == params == 1_824_352
    assert count_macs(m, 32) == macs
    assert not any(isinstance(x, nn.Linear) for x in m.modules())


def test_nin_paper_counts():
    # Lin et al.'s CIFAR-10 NIN: 5×5 192-160-96 → pool 3/2 (32→16) → 5×5 192-192-192 → pool 3/2 (16→8)
    # → 3×3 192-192-10 → GAP. About 0.97 M parameters, as usually quoted for it.
    params = (conv_p(5, 3, 192) + conv_p(1, 192, 160) + conv_p(1, 160, 96)
              + conv_p(5, 96, 192) + 2 * conv_p(1, 192, 192)
              + conv_p(3, 192, 192) + conv_p(1, 192, 192) + conv_p(1, 192, 10))
    macs = (conv_m(32, 5, 3, 192) + conv_m(32, 1, 192, 160) + conv_m(32, 1, 160, 96)
            + conv_m(16, 5, 96, 192) + 2 * conv_m(16, 1, 192, 192)
            + conv_m(8, 3, 192, 192) + conv_m(8, 1, 192, 192) + conv_m(8, 1, 192, 10))
    m = create_model("nin-paper")
    assert count_params(m) == params == 966_986
    assert count_macs(m, 32) == macs
    assert sum(isinstance(x, nn.Dropout) for x in m.modules()) == 2
    assert not any(isinstance(x, nn.Linear) for x in m.modules())  # GAP is the classifier, no FC


# --------------------------------------------------------------------------- nin-imagenet = the source table
# The table (网络层 / 输入尺寸 / 核尺寸 / 输出尺寸 / 可训练参数量), one row per layer:
#   (name, kernel, cin, cout, output side)
TABLE = [
    ("C1", 11, 3, 96, 55), ("CCCP1", 1, 96, 96, 55), ("CCCP2", 1, 96, 96, 55),
    ("S", 3, None, None, 27),
    ("C2", 5, 96, 256, 27), ("CCCP3", 1, 256, 256, 27), ("CCCP4", 1, 256, 256, 27),
    ("S", 3, None, None, 13),
    ("C3", 3, 256, 384, 13), ("CCCP5", 1, 384, 384, 13), ("CCCP6", 1, 384, 384, 13),
    ("S", 3, None, None, 6),
    ("C4", 3, 384, 1024, 6), ("CCCP7", 1, 1024, 1024, 6), ("CCCP8", 1, 1024, 1000, 6),
]


def _imagenet_layers():
    """(module, output shape) for every conv and pool of nin-imagenet on one 224×224 image, in order."""
    m = create_model("nin-imagenet").eval()
    seen = []
    hooks = [mod.register_forward_hook(lambda mod, i, o: seen.append((mod, tuple(o.shape))))
             for mod in m.features if isinstance(mod, (nn.Conv2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d))]
    with torch.no_grad():
        out = m(torch.zeros(1, 3, 224, 224))
    for h in hooks:
        h.remove()
    return m, seen, out


def test_nin_imagenet_matches_the_table_layer_by_layer():
    m, seen, out = _imagenet_layers()
    assert tuple(out.shape) == (1, 1000)
    assert len(seen) == len(TABLE) + 1  # + the global average pooling that replaces the FC layers
    for (name, k, cin, cout, side), (mod, shape) in zip(TABLE, seen):
        assert shape[2:] == (side, side), f"{name}: output {shape}, table says {side}×{side}"
        if cin is None:  # 下采样层 S: 3×3/2 max pooling, 0 parameters
            assert isinstance(mod, nn.MaxPool2d) and (mod.kernel_size, mod.stride) == (3, 2), name
            continue
        assert isinstance(mod, nn.Conv2d) and mod.kernel_size == (k, k), name
        assert (mod.in_channels, mod.out_channels) == (cin, cout) and shape[1] == cout, name
        # the table's formula (k·k·cin + 1)·cout — WITHOUT its trailing "×2", see below
        assert sum(p.numel() for p in mod.parameters()) == (k * k * cin + 1) * cout, name
    assert seen[-1][1] == (1, 1000, 1, 1)  # GAP over CCCP8's 6×6×1000 class maps


def test_nin_imagenet_totals():
    params = sum((k * k * cin + 1) * cout for _, k, cin, cout, _ in TABLE if cin is not None)
    macs = sum(side * side * k * k * cin * cout for _, k, cin, cout, side in TABLE if cin is not None)
    m = create_model("nin-imagenet")
    assert count_params(m) == params == 7_595_176  # ≈ 7.6 M, the figure usually quoted for NIN on ImageNet
    assert count_macs(m, 224) == macs


def test_why_the_tables_x2_and_55_are_alexnet_leftovers():
    """The table's parameter column reads e.g. (11×11×3+1)×96×2, and C1's output 55×55 from a 224×224 input.

    Both come from AlexNet's table, which this lesson's table was adapted from. AlexNet split each layer over
    two GPUs — 48 kernels on each — and its table writes (11×11×3+1)×48×2. Here the column already says all
    96 kernels, so the ×2 would count every kernel twice; NIN (the paper and its Caffe model) has no two-GPU
    split and no grouped convolutions, so a layer's parameters are (k·k·cin+1)·cout, which is what we check
    (and what the model holds: C1 has 34,944 parameters, not 69,888).

    55×55 is AlexNet's too: an 11×11 stride-4 conv gives ⌊(224−11)/4⌋+1 = 54 on 224×224; 55 needs a 227 input
    or 2 pixels of padding. nin-imagenet keeps the table's 224 input and pads by 2, and then every size in the
    table (55, 27, 13, 6) comes out exactly.
    """
    m = create_model("nin-imagenet")
    c1 = m.features[0]
    assert isinstance(c1, nn.Conv2d) and c1.groups == 1 and c1.padding == (2, 2)
    with_x2 = (11 * 11 * 3 + 1) * 96 * 2
    assert count_params(c1) == (11 * 11 * 3 + 1) * 96 == 34_944 == with_x2 // 2
    unpadded = nn.Conv2d(3, 96, 11, stride=4)
    assert tuple(unpadded(torch.zeros(1, 3, 224, 224)).shape[2:]) == (54, 54)
    assert tuple(unpadded(torch.zeros(1, 3, 227, 227)).shape[2:]) == (55, 55)


@pytest.mark.parametrize("name", ["nin-bn", "nin-cifar", "nin-cifar-wide"])
def test_fold_batchnorm_keeps_the_function_and_leaves_the_model_alone(name):
    from nin_edge.models import fold_batchnorm

    torch.manual_seed(0)
    model = create_model(name)
    for m in model.modules():  # statistics far from the defaults, so a fold that skipped them would show
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.3, 3.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.3, 0.3)
    model.train()
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert model.training and any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # a copy
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        want, got = model.eval()(x), folded(x)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))
