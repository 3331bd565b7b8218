"""`export --tta flip`: mirror averaging inside every artifact of a bundle (nin_edge/tta.py).

The property that only a graph with the averaging inside can have: an image and its mirror give the same
output. Each artifact is checked for it, and for being the averaged probabilities of the bare network.
"""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from nin_edge.bundle import Bundle
from nin_edge.data import load_dataset
from nin_edge.errors import NinEdgeError
from nin_edge.export import ExportOptions, export_bundle
from nin_edge.models import create_model
from nin_edge.preprocess import preprocess
from nin_edge.runners.base import create_runner
from nin_edge.tta import FlipAverage, Tta, parse_tta, with_tta

HAVE_OV = importlib.util.find_spec("openvino") is not None


def _mirror(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x[:, :, :, ::-1])


def test_flip_average_is_the_log_of_the_mean_softmax():
    from nin_edge.checkpoint import load_model

    net, _ = load_model(None)  # the shipped weights on real images: a random net's outputs barely vary
    x = torch.from_numpy(preprocess(load_dataset("bundled:eval").images[:5]))
    with torch.inference_mode():
        out = with_tta(net, "flip")(x)
        want = ((net(x).softmax(1) + net(x.flip(3)).softmax(1)) / 2).log()
        bare = net(x)
    torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.exp().sum(1), torch.ones(5))
    assert not torch.allclose(bare.log_softmax(1), out, atol=1e-3)  # the averaging changed something


def test_with_tta_choices():
    net = create_model("nin-seed")
    assert with_tta(net, "none") is net and with_tta(net, None) is net
    wrapped = with_tta(net.eval(), Tta.flip)
    assert isinstance(wrapped, FlipAverage) and not wrapped.training
    with pytest.raises(NinEdgeError, match=r"--tta 'mirror': choose one of none, flip"):
        parse_tta("mirror")
    with pytest.raises(NinEdgeError, match="--tta 'mirror'"):
        ExportOptions(tta="mirror").validate()


@pytest.fixture(scope="module")
def flip_bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("flip") / "b"
    formats = ("onnx", "openvino") if HAVE_OV else ("onnx",)
    export_bundle(ExportOptions(out=str(out), int8=True, formats=formats, progress=False, tta="flip"))
    return Bundle.load(out)


@pytest.fixture(scope="module")
def images():
    ds = load_dataset("bundled:eval")
    return preprocess(ds.images[:64])


def test_a_plain_bundle_records_no_tta(default_bundle):
    b = default_bundle
    assert b.meta["tta"] == {"name": "none", "forward_passes_per_image": 1}
    assert (b.tta, b.forward_passes) == ("none", 1) and b.meta["output"]["meaning"].startswith("logits")


def test_bundle_records_the_tta(flip_bundle):
    b = flip_bundle
    assert b.tta == "flip" and b.meta["tta"] == {"name": "flip", "forward_passes_per_image": 2}
    assert b.forward_passes == 2
    assert "mirror" in b.meta["output"]["meaning"]
    # the graph holds the mirror: a Slice with step −1 on the width axis feeding a Concat on the batch axis
    import onnx

    ops = [n.op_type for n in onnx.load(str(b.root / "model.onnx")).graph.node]
    assert "Concat" in ops and "Slice" in ops and "LogSoftmax" in ops
    # a hint for a missing artifact names the option that makes the bundle again
    (b.root / "model.int8.onnx").rename(b.root / "moved")
    try:
        with pytest.raises(NinEdgeError, match="--tta flip --out"):
            b.artifact("onnxruntime", "int8")
    finally:
        (b.root / "moved").rename(b.root / "model.int8.onnx")


CASES = [("onnxruntime", "fp32", 1e-4), ("onnxruntime", "int8", 1e-4), ("torch", "fp32", 1e-4)]
if HAVE_OV:
    CASES += [("openvino", "fp32", 1e-4), ("openvino", "int8", 1e-4)]


@pytest.mark.parametrize("runner,precision,tol", CASES)
def test_every_artifact_averages_the_mirror(flip_bundle, images, runner, precision, tol):
    with create_runner(runner, flip_bundle, precision) as r:
        out = np.concatenate([r.infer(images[i:i + 16]) for i in range(0, len(images), 16)])
        mirrored = np.concatenate([r.infer(_mirror(images[i:i + 16])) for i in range(0, len(images), 16)])
    assert np.isfinite(out).all()
    np.testing.assert_allclose(np.exp(out).sum(1), 1.0, atol=1e-4)  # log-probabilities
    assert np.abs(out - mirrored).max() < tol  # an image and its mirror: the same output


def test_torch_runner_matches_the_onnx_graph(flip_bundle, images):
    with create_runner("torch", flip_bundle, "fp32") as t, create_runner("onnxruntime", flip_bundle, "fp32") as o:
        a, b = t.infer(images), o.infer(images)
    assert np.abs(a - b).max() < 1e-4
    # and it is the shipped network's mirror average, not the bare network
    from nin_edge.checkpoint import load_model

    net, _ = load_model(flip_bundle.root / "model.pt")
    with torch.inference_mode():
        x = torch.from_numpy(images)
        want = ((net(x).softmax(1) + net(x.flip(3)).softmax(1)) / 2).log().numpy()
    assert np.abs(a - want).max() < 1e-4


def test_bench_reports_the_tta(flip_bundle):
    from nin_edge.bench import BenchOptions, run_bench
    from nin_edge.report import to_json_dict, to_markdown

    rep = run_bench(BenchOptions(bundle=str(flip_bundle.root), targets=("onnxruntime",), precision="int8",
                                 iters=10, warmup=2, rounds=2))
    b = to_json_dict(rep)["bundle"]
    assert (b["tta"], b["forward_passes_per_image"]) == ("flip", 2)
    assert "with flip TTA (2 forward passes per image)" in to_markdown(rep)


def test_cli_export_tta(tmp_path):
    from typer.testing import CliRunner

    from nin_edge.cli import app

    r = CliRunner().invoke(app, ["export", "--out", str(tmp_path / "c"), "--tta", "mirror"])
    assert r.exit_code == 2 and "mirror" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "c").exists()


def test_pipeline_rebuilds_its_cached_bundle_when_the_tta_changes():
    from nin_edge.checkpoint import shipped_weights
    from nin_edge.pipeline import _EXPORT_CODE, bundle_key

    w = shipped_weights()
    keys = {t: bundle_key(w, ExportOptions(out="x", int8=True, tta=t), "default") for t in ("none", "flip")}
    assert keys["none"] != keys["flip"]
    assert "tta.py" in _EXPORT_CODE  # an edit of the averaging invalidates cached bundles too
