"""Net2WiderNet widening (nin_edge/widen.py) and `train --init-from` a narrower arch (CPU, seconds)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from test_train import cfg, make_image_folder  # the tiny image-folder data of the training tests

from nin_edge.checkpoint import load_checkpoint
from nin_edge.data import load_dataset
from nin_edge.errors import NinEdgeError
from nin_edge.modelcard import write_model_card
from nin_edge.models import create_model
from nin_edge.train import _init_weights, data_fingerprint, train
from nin_edge.widen import widen_into


def _trained_like(name: str, seed: int = 0, num_classes: int = 10) -> nn.Module:
    """A zoo model with random weights and non-trivial BatchNorm parameters and statistics (a fresh BN layer is
    the identity up to eps, which would hide a wrong copy of its statistics)."""
    torch.manual_seed(seed)
    m = create_model(name, num_classes=num_classes)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.2, 0.2)
                mod.running_mean.uniform_(-0.3, 0.3)
                mod.running_var.uniform_(0.5, 2.0)
    return m.eval()


@torch.no_grad()
def test_widening_preserves_the_function():
    src, dst = _trained_like("nin-cifar"), create_model("nin-cifar-wide").eval()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    before = dst(x)
    widen_into(src, dst, torch.Generator().manual_seed(0))
    want, got = src(x), dst(x)
    assert not torch.allclose(before, want, atol=1e-2)  # the check below is not a coincidence of two inits
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max())), \
        float((got - want).abs().max())
    # every narrow conv's weights reappear in the wide one's first channels, so channels were copied, not drawn
    s_convs = [m for m in src.features if isinstance(m, nn.Conv2d)]
    d_convs = [m for m in dst.features if isinstance(m, nn.Conv2d)]
    assert any(d.out_channels > s.out_channels for s, d in zip(s_convs, d_convs))
    assert torch.equal(d_convs[0].weight[:s_convs[0].out_channels], s_convs[0].weight)


def test_copies_become_different_units_after_a_training_step():
    """With outgoing weights split 1/k among k copies, the copies get identical gradients forever; the random
    split must let one SGD step tell them apart."""
    src, dst = _trained_like("nin-cifar"), create_model("nin-cifar-wide")
    widen_into(src, dst, torch.Generator().manual_seed(0))
    w0 = dst.features[0].weight.detach().clone()
    n_src = src.features[0].out_channels
    # the wide layer's extra channels are copies of narrow ones: find one copy and its original
    j = n_src
    orig = next(i for i in range(n_src) if torch.equal(w0[j], w0[i]))
    dst.train()
    opt = torch.optim.SGD(dst.parameters(), lr=0.1)
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    nn.functional.cross_entropy(dst(x), torch.arange(8) % 10).backward()
    opt.step()
    w1 = dst.features[0].weight.detach()
    assert not torch.equal(w1[j], w0[j])  # it trained ...
    assert not torch.allclose(w1[j], w1[orig], atol=1e-7)  # ... and no longer equals its original


@pytest.mark.parametrize("src_name,dst_name,classes,match", [
    ("nin-seed", "nin-cifar-wide", 10, "no linear head"),      # the seed's classifier is a head
    ("nin-paper", "nin-cifar-wide", 10, "layers differ"),      # other kernels, dropout
    ("nin-cifar-wide", "nin-cifar", 10, "layers differ"),      # a width would shrink
    ("nin-cifar", "nin-cifar-wide", 5, "different class counts"),
])
def test_widening_refuses_what_is_not_a_wider_copy(src_name, dst_name, classes, match):
    src = create_model(src_name, num_classes=classes)
    dst = create_model(dst_name)
    with pytest.raises(NinEdgeError, match=f"cannot widen '{src_name}' into '{dst_name}': .*{match}"):
        widen_into(src, dst, torch.Generator().manual_seed(0), src_name, dst_name)


def test_train_init_from_a_narrower_checkpoint_widens_it(tmp_path, capsys):
    data = make_image_folder(tmp_path / "data", classes=tuple("abcdefghij"), n_train=6, n_test=2)
    a = tmp_path / "narrow"
    train(cfg(data, a, arch="nin-cifar", epochs=1, batch_size=20, val_size=10))
    capsys.readouterr()

    # the library step: the wide model starts with the narrow run's function
    narrow = create_model("nin-cifar")
    narrow.load_state_dict(load_checkpoint(a / "best.pt")["state_dict"])
    wide = create_model("nin-cifar-wide")
    c = cfg(data, tmp_path / "w0", arch="nin-cifar-wide", val_size=10, init_from=str(a / "best.pt"))
    sha = data_fingerprint(str(data), load_dataset(str(data), "train"))
    meta = _init_weights(c, wide, tuple(load_checkpoint(a / "best.pt")["classes"]), sha)
    assert meta["widened_from"] == "nin-cifar"
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want, got = narrow.eval()(x), wide.eval()(x)
    assert torch.allclose(got, want, atol=1e-4 * float(want.abs().max()))

    # the command: it says so, records it, and the card tells the reader
    w = tmp_path / "wide"
    train(cfg(data, w, arch="nin-cifar-wide", epochs=1, batch_size=20, val_size=10, init_from=str(a / "best.pt")))
    assert "(nin-cifar) widened into nin-cifar-wide" in capsys.readouterr().out
    ck = load_checkpoint(w / "last.pt")
    assert ck["arch"] == "nin-cifar-wide" and ck["init_from"]["widened_from"] == "nin-cifar"
    assert "a narrower `nin-cifar`" in write_model_card(w).markdown
    # a checkpoint naming an arch the zoo does not have fails naming the file
    odd = load_checkpoint(a / "best.pt")
    odd["arch"] = "nin-huge"
    torch.save(odd, tmp_path / "odd.pt")
    with pytest.raises(NinEdgeError, match=r"--init-from .*odd\.pt: unknown model 'nin-huge'"):
        train(cfg(data, tmp_path / "bad", arch="nin-cifar-wide", val_size=10, init_from=str(tmp_path / "odd.pt")))
    # a layout that cannot be widened fails naming both
    with pytest.raises(NinEdgeError, match="cannot widen .*nin-cifar.* into 'nin-seed'"):
        train(cfg(data, tmp_path / "bad", arch="nin-seed", val_size=10, init_from=str(a / "best.pt")))
