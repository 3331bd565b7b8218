"""Checkpoint writing and loading: nin-edge checkpoints, plain state_dicts, and every bad file named clearly."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from nin_edge.checkpoint import (FORMAT, atomic_torch_save, load_checkpoint, load_model, make_checkpoint,
                                 shipped_weights)
from nin_edge.data import CIFAR10_CLASSES
from nin_edge.errors import NinEdgeError
from nin_edge.models import create_model


@pytest.fixture()
def seed_ck(tmp_path):
    torch.manual_seed(0)
    m = create_model("nin-seed", 10)
    p = tmp_path / "seed.pt"
    atomic_torch_save(make_checkpoint(m, "nin-seed", CIFAR10_CLASSES, epoch=3, val_top1=50.0, seed=7), p)
    return m, p


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_checkpoint_round_trip_with_weights_only_and_metadata(seed_ck):
    m, p = seed_ck
    raw = torch.load(p, map_location="cpu", weights_only=True)
    assert raw["format"] == FORMAT and raw["arch"] == "nin-seed" and raw["classes"] == list(CIFAR10_CLASSES)
    assert raw["preprocess"]["mean"] and raw["code_version"] and raw["torch_version"]
    assert raw["epoch"] == 3 and raw["seed"] == 7
    model, meta = load_model(p)
    assert _same(model, m) and not model.training
    assert meta["arch"] == "nin-seed" and meta["val_top1"] == 50.0 and "state_dict" not in meta
    assert not [f for f in os.listdir(p.parent) if f.endswith(".tmp")]


def test_plain_state_dict_loads_with_guessed_arch_and_common_wrappers(tmp_path):
    torch.manual_seed(1)
    m = create_model("nin-cifar", 10)
    for name, obj in (("plain.pt", m.state_dict()),
                      ("wrapped.pt", {"state_dict": m.state_dict(), "epoch": 4}),
                      ("ddp.pt", {f"module.{k}": v for k, v in m.state_dict().items()})):
        torch.save(obj, tmp_path / name)
        model, meta = load_model(tmp_path / name)
        assert meta["arch"] == "nin-cifar" and meta["classes"] == list(CIFAR10_CLASSES), name
        assert _same(model, m), name
    # an explicit --arch is honoured for a plain state_dict
    torch.save(create_model("nin-bn", 10).state_dict(), tmp_path / "bn.pt")
    assert load_model(tmp_path / "bn.pt", arch="nin-bn")[1]["arch"] == "nin-bn"


def test_state_dict_for_another_class_count_fails_clearly(tmp_path):
    torch.save(create_model("nin-cifar", 5).state_dict(), tmp_path / "five.pt")
    with pytest.raises(NinEdgeError, match=r"five\.pt: plain state_dict has 5 output classes, but without recorded class names"):
        load_model(tmp_path / "five.pt")
    # a nin-edge checkpoint records its class names, so 5 classes load fine ...
    names = ("a", "b", "c", "d", "e")
    atomic_torch_save(make_checkpoint(create_model("nin-cifar", 5), "nin-cifar", names), tmp_path / "five-ck.pt")
    model, meta = load_model(tmp_path / "five-ck.pt")
    assert meta["classes"] == list(names) and model(torch.zeros(1, 3, 32, 32)).shape == (1, 5)
    # ... but not if its weights disagree with its class list
    ck = make_checkpoint(create_model("nin-cifar", 5), "nin-cifar", CIFAR10_CLASSES)
    atomic_torch_save(ck, tmp_path / "liar.pt")
    with pytest.raises(NinEdgeError, match=r"liar\.pt: weights do not fit arch 'nin-cifar' with 10 classes \(size mismatch"):
        load_model(tmp_path / "liar.pt")


def test_checkpoint_for_another_arch_fails_clearly(seed_ck, tmp_path):
    _, p = seed_ck
    with pytest.raises(NinEdgeError, match=r"seed\.pt: checkpoint is for arch 'nin-seed', not 'nin-cifar'"):
        load_model(p, arch="nin-cifar")
    torch.save(create_model("nin-seed", 10).state_dict(), tmp_path / "plain-seed.pt")
    with pytest.raises(NinEdgeError, match=r"plain-seed\.pt: weights do not fit arch 'nin-cifar'"):
        load_model(tmp_path / "plain-seed.pt", arch="nin-cifar")
    ck = make_checkpoint(create_model("nin-seed", 10), "nin-seed", CIFAR10_CLASSES)
    ck["arch"] = "nin-huge"
    torch.save(ck, tmp_path / "unknown.pt")
    with pytest.raises(NinEdgeError, match=r"unknown\.pt: checkpoint names arch 'nin-huge', which is not in the zoo"):
        load_model(tmp_path / "unknown.pt")
    torch.save({"w": torch.zeros(3)}, tmp_path / "alien.pt")
    with pytest.raises(NinEdgeError, match=r"alien\.pt: plain state_dict matches no zoo model; pass --arch"):
        load_model(tmp_path / "alien.pt")


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "flipped-tail"])
def test_corrupt_or_truncated_checkpoint_names_the_file(seed_ck, tmp_path, damage):
    _, good = seed_ck
    data = good.read_bytes()
    bad = tmp_path / f"{damage}.pt"
    if damage == "truncated":
        bad.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif damage == "empty":
        bad.write_bytes(b"")
    else:  # the zip's central directory at the end is destroyed
        bad.write_bytes(data[:-200] + bytes(200))
    for fn in (load_checkpoint, load_model):
        with pytest.raises(NinEdgeError, match=rf"{damage}\.pt: not a readable checkpoint"):
            fn(bad)


def test_other_bad_files(tmp_path):
    with pytest.raises(NinEdgeError, match=r"missing\.pt: weights file not found"):
        load_model(tmp_path / "missing.pt")
    with pytest.raises(NinEdgeError, match="is a directory"):
        load_checkpoint(tmp_path)
    # a pickle that needs a non-allow-listed global is refused by weights_only=True, not executed
    torch.save({"arr": np.arange(3)}, tmp_path / "numpy.pt")
    with pytest.raises(NinEdgeError, match=r"numpy\.pt: not a readable checkpoint .*Unsupported global"):
        load_checkpoint(tmp_path / "numpy.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(NinEdgeError, match=r"list\.pt: neither a nin-edge checkpoint nor a state_dict"):
        load_checkpoint(tmp_path / "list.pt")
    torch.save({"format": "nin-edge-checkpoint/9", "state_dict": {"w": torch.zeros(1)}}, tmp_path / "future.pt")
    with pytest.raises(NinEdgeError, match=r"future\.pt: checkpoint format 'nin-edge-checkpoint/9' is not supported"):
        load_checkpoint(tmp_path / "future.pt")
    torch.save({"format": FORMAT, "arch": "nin-seed"}, tmp_path / "hollow.pt")
    with pytest.raises(NinEdgeError, match=r"hollow\.pt: nin-edge checkpoint without a state_dict"):
        load_checkpoint(tmp_path / "hollow.pt")


def test_atomic_save_keeps_the_old_file_when_writing_fails(seed_ck):
    _, p = seed_ck
    before = p.read_bytes()

    class Unsaveable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle this")

    with pytest.raises(RuntimeError):
        atomic_torch_save({"x": Unsaveable()}, p)
    assert p.read_bytes() == before
    assert sorted(os.listdir(p.parent)) == ["seed.pt"]


def test_shipped_weights_load():
    if not shipped_weights().exists():
        pytest.skip(f"{shipped_weights()} not present in this checkout")
    model, meta = load_model()
    assert meta["arch"] == "nin-cifar" and len(meta["classes"]) == 10
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
