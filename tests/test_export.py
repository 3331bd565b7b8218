"""`nin-edge export`: the bundle (contents, parity, INT8 agreement, TensorRT form, script), atomicity, bad input, CLI.

The full INT8 bundle is the session fixture `default_bundle` (tests/conftest.py), exported once. Extra
exports here are fp32-only and evaluate on a 260-image folder so each takes seconds.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from nin_edge.build.tensorrt import SIDECAR_KEYS, check_sidecar, engine_sidecar
from nin_edge.bundle import Bundle
from nin_edge.calibration import pixel_sha256
from nin_edge.checkpoint import load_model, make_checkpoint
from nin_edge.data import load_dataset
from nin_edge.errors import BackendUnavailable, NinEdgeError
from nin_edge.export import ExportOptions, export_bundle
from nin_edge.models import create_model
from nin_edge.preprocess import preprocess

# Bound for INT8 vs fp32: same top-1 on at least this share of bundled:eval. The weaker the model, the more
# images sit near a decision boundary, so this is set for the interim weights (~60% top-1; measured 97.7-98.5%
# agreement) and holds with margin for the final ones.
MIN_INT8_AGREEMENT = 95.0


def _have(mod: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(mod) is not None


@pytest.fixture(scope="module")
def eval_data():
    ds = load_dataset("bundled:eval")
    return ds, preprocess(ds.images)


@pytest.fixture(scope="module")
def small_eval(tmp_path_factory):
    """A 260-image labelled folder (26 per class, PNG) cut from bundled:eval: fast parity/top-1 for extra exports."""
    import cv2

    ds = load_dataset("bundled:eval")
    root = tmp_path_factory.mktemp("smalleval")
    for c, name in enumerate(ds.classes):
        d = root / "test" / name
        d.mkdir(parents=True)
        for k, i in enumerate(np.flatnonzero(ds.labels == c)[:26]):
            cv2.imwrite(str(d / f"{k:03d}.png"), ds.images[i][:, :, ::-1])
    return str(root)


def _fp32(out, small_eval, **kw):
    return ExportOptions(out=str(out), formats=("onnx",), progress=False, eval_data=small_eval, **kw)


def _ort(path, x):
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


# --------------------------------------------------------------------------- the default bundle
def test_bundle_is_complete_and_intact(default_bundle: Bundle):
    b = default_bundle
    expected = {"model.pt", "model.onnx", "model.int8.onnx", "model.int8.trt.onnx"}
    if _have("openvino"):
        expected |= {"openvino/model.xml", "openvino/model.fp16.xml", "openvino/model.int8.xml"}
    assert set(b.artifacts) == expected
    assert b.verify() == []
    for rel, info in b.artifacts.items():
        assert (b.root / rel).exists() and info["bytes"] > 0 and len(info["sha256"]) == 64
        assert 0 <= info["top1_at_export"] <= 100, rel
    m = b.meta
    assert m["arch"] == "nin-cifar" and len(m["classes"]) == 10 and m["opset"] == 17
    assert m["input"] == {"name": "input", "size": 32, "shape": ["batch", 3, 32, 32], "layout": "NCHW", "dtype": "float32"}
    assert m["preprocess"]["mean"] and m["versions"]["onnxruntime"] != "not installed"
    assert (b.root / "labels.txt").read_text().split() == m["classes"]
    assert not list(b.root.parent.glob(".b.tmp-*")), "temporary directory left behind"


def test_fp32_onnx_parity_with_pytorch(default_bundle, eval_data):
    """Re-checked here, independent of the export's own check: 256 real images, |Δlogit| ≤ 1e-4, same top-1."""
    import torch

    _, x = eval_data
    x = x[::4][:256]
    model, _ = load_model()
    with torch.inference_mode():
        ref = model(torch.from_numpy(x)).numpy()
    got = _ort(default_bundle.root / "model.onnx", x)
    assert np.abs(got - ref).max() <= 1e-4
    assert (got.argmax(1) == ref.argmax(1)).all()
    p = default_bundle.meta["parity"]
    assert p["images"] >= 256 and p["max_abs_logit_diff"] <= 1e-4 and p["top1_identical"]


def test_onnx_file_properties(default_bundle, eval_data):
    path = default_bundle.root / "model.onnx"
    m = onnx.load(str(path))
    onnx.checker.check_model(m, full_check=True)
    assert next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) == 17
    assert "BatchNormalization" not in {n.op_type for n in m.graph.node}
    assert not list(path.parent.glob("*.data")) and all(i.data_location == 0 for i in m.graph.initializer)
    _, x = eval_data
    for n in (1, 3):  # dynamic batch axis
        assert _ort(path, x[:n]).shape == (n, 10)


def test_model_pt_is_a_loadable_checkpoint(default_bundle):
    model, meta = load_model(default_bundle.root / "model.pt")
    ref, _ = load_model()
    assert meta["arch"] == "nin-cifar"
    for (k, v), (k2, v2) in zip(model.state_dict().items(), ref.state_dict().items()):
        assert k == k2 and bool((v == v2).all())


@pytest.fixture(scope="module")
def fp32_logits(default_bundle, eval_data):
    return _ort(default_bundle.root / "model.onnx", eval_data[1])


@pytest.mark.parametrize("rel", ["model.int8.onnx", "model.int8.trt.onnx"])
def test_ort_int8_agrees_with_fp32(default_bundle, eval_data, fp32_logits, rel):
    ds, x = eval_data
    fp = fp32_logits.argmax(1)
    q = _ort(default_bundle.root / rel, x).argmax(1)
    agree = 100 * (fp == q).mean()
    assert agree >= MIN_INT8_AGREEMENT, f"{rel}: {agree:.1f}% same top-1 as fp32"
    info = default_bundle.artifacts[rel]
    # the CPU form is the portable one by default: 7-bit weights (exact without VNNI too, see quantize.py)
    assert info["quantization"]["weight_bits"] == (7 if rel == "model.int8.onnx" else 8)
    assert info["top1_agreement_with_fp32"] == pytest.approx(agree, abs=0.01)
    assert info["top1_at_export"] == pytest.approx(100 * (q == ds.labels).mean(), abs=0.01)


def test_openvino_irs(default_bundle, eval_data, fp32_logits):
    if not _have("openvino"):
        pytest.skip("openvino is not installed (the 'cpu' extra): no IR in the bundle")
    from nin_edge.build.openvino import infer_ir

    _, x = eval_data
    root, arts = default_bundle.root, default_bundle.artifacts
    fp = fp32_logits
    ir32 = infer_ir(root / "openvino/model.xml", x)
    assert np.abs(ir32 - fp).max() < 1e-3
    assert arts["openvino/model.xml"]["compress_to_fp16"] is False and arts["openvino/model.xml"]["weight_types"] == ["f32"]
    assert arts["openvino/model.fp16.xml"]["compress_to_fp16"] is True and arts["openvino/model.fp16.xml"]["weight_types"] == ["f16"]
    assert 'element_type="f16"' in (root / "openvino/model.fp16.xml").read_text()
    assert 'element_type="f16"' not in (root / "openvino/model.xml").read_text()
    s32 = (root / "openvino/model.bin").stat().st_size
    assert 0.45 < (root / "openvino/model.fp16.bin").stat().st_size / s32 < 0.55
    q = infer_ir(root / "openvino/model.int8.xml", x)
    agree = 100 * (q.argmax(1) == fp.argmax(1)).mean()
    assert agree >= MIN_INT8_AGREEMENT, f"OpenVINO INT8: {agree:.1f}% same top-1 as fp32"
    assert "i8" in arts["openvino/model.int8.xml"]["weight_types"]


def test_tensorrt_form_structure(default_bundle):
    """model.int8.trt.onnx: every zero point int8 0, weight scales per output channel (axis 0), activation
    scales per tensor — checked here directly on the graph (not with the exporter's own checker)."""
    m = onnx.load(str(default_bundle.root / "model.int8.trt.onnx"))
    init = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    qdq = [n for n in m.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    convs = [n for n in m.graph.node if n.op_type == "Conv"]
    assert qdq and convs
    weights_seen = 0
    for n in qdq:
        zp = init[n.input[2]]
        assert zp.dtype == np.int8 and not zp.any(), n.name
        axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
        if n.input[0] in init:
            w = init[n.input[0]]
            assert w.dtype == np.int8 and init[n.input[1]].shape == (w.shape[0],) and axis == 0, n.name
            weights_seen += 1
        else:
            assert init[n.input[1]].size == 1, n.name
    assert weights_seen == len(convs)  # every conv's weight is quantized per channel
    producers = {o: n for n in m.graph.node for o in n.output}
    for c in convs:  # both conv inputs come from DequantizeLinear (TensorRT's explicit-quantization pattern)
        assert all(producers[i].op_type == "DequantizeLinear" for i in c.input[:2]), c.name


def test_calibration_manifest(default_bundle):
    cal = default_bundle.meta["calibration"]
    calib = load_dataset("bundled:calib")
    assert cal["source"] == "bundled:calib" and cal["method"] == ExportOptions().method and cal["seed"] == 0
    assert cal["count"] == 1000 and cal["sampling"] == "stratified"
    by_id = dict(zip(calib.ids, calib.images))
    for entry in cal["images"][::97]:
        assert pixel_sha256(by_id[entry["id"]]) == entry["sha256"]
    ev = {pixel_sha256(im) for im in load_dataset(default_bundle.meta["evaluation"]["data"]).images}
    assert not ev & {e["sha256"] for e in cal["images"]}


def test_build_engine_script(default_bundle, tmp_path):
    script = default_bundle.root / "tensorrt" / "build_engine.sh"
    text = script.read_text()
    assert script.stat().st_mode & stat.S_IXUSR
    assert text.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in text
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    assert default_bundle.meta["tensorrt"]["script_sha256"]
    # Run it (in a copy of the bundle: it writes engines next to itself) against a stand-in trtexec that records
    # its arguments: the commands it would run on a Jetson.
    shutil.copytree(default_bundle.root, tmp_path / "bundle")
    script = tmp_path / "bundle" / "tensorrt" / "build_engine.sh"
    log = tmp_path / "calls.txt"
    fake = tmp_path / "trtexec"
    fake.write_text(f'#!/usr/bin/env bash\necho "$@" >> {log}\n'
                    'for a in "$@"; do case "$a" in --saveEngine=*) echo plan > "${a#--saveEngine=}";; esac; done\n')
    fake.chmod(0o755)
    # a stand-in nvidia-smi answering the query the script makes, and no python3 tensorrt: version unknown
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text('#!/usr/bin/env bash\necho "NVIDIA H200, 9.0"\n')
    smi.chmod(0o755)
    env = {**os.environ, "TRTEXEC": str(fake), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    engines = script.parent
    r = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    for prec, src in (("fp32", "model.onnx"), ("fp16", "model.onnx"), ("int8", "model.int8.trt.onnx")):
        assert (engines / f"model.{prec}.engine").read_text() == "plan\n"
        side = json.loads((engines / f"model.{prec}.engine.json").read_text())
        assert set(side) == set(SIDECAR_KEYS)
        assert side["precision"] == prec and side["source"] == src and side["strongly_typed"] == (prec == "int8")
        assert side["gpu_name"] == "NVIDIA H200" and side["compute_capability"] == "9.0"
        assert side["profile"] == {"min": 1, "opt": 1, "max": 64} and side["dla_core"] is None
        # the runner's check accepts what the script wrote, and refuses it on another GPU or TensorRT
        check_sidecar(side, engines / f"model.{prec}.engine", tensorrt_version="10.9.0",
                      compute_capability="9.0", gpu_name="NVIDIA H200", rebuild="x")
        with pytest.raises(NinEdgeError, match=r"built for NVIDIA H200 \(compute 9.0\).*compute 8.7"):
            check_sidecar(side, engines / f"model.{prec}.engine", tensorrt_version="10.9.0",
                          compute_capability="8.7", gpu_name="Orin", rebuild="x")
    assert not list(engines.glob("*.tmp"))
    py_side = engine_sidecar("int8", "model.int8.trt.onnx", tensorrt_version="10.9.0", gpu_name="NVIDIA H200",
                             compute_capability="9.0")
    assert set(py_side) == set(SIDECAR_KEYS)  # one schema for both builders
    with pytest.raises(NinEdgeError, match="built with TensorRT 10.9.0, this is TensorRT 10.13"):
        check_sidecar(py_side, engines / "model.int8.engine", tensorrt_version="10.13", compute_capability="9.0",
                      gpu_name="NVIDIA H200", rebuild="x")
    with pytest.raises(NinEdgeError, match="unknown sidecar key"):
        check_sidecar({**py_side, "tensorrt": "10"}, engines / "x.engine", tensorrt_version="10.9.0",
                      compute_capability="9.0", gpu_name="NVIDIA H200", rebuild="x")
    for f in engines.glob("model.*.engine*"):
        f.unlink()
    calls = log.read_text().splitlines()
    assert len(calls) == 3
    fp32, fp16, int8 = calls
    root = str(tmp_path / "bundle")
    assert f"--onnx={root}/model.onnx" in fp32 and "--fp16" not in fp32 and "--stronglyTyped" not in fp32
    assert f"--onnx={root}/model.onnx" in fp16 and "--fp16" in fp16
    assert f"--onnx={root}/model.int8.trt.onnx" in int8 and "--stronglyTyped" in int8 and "--int8" not in int8
    assert "--minShapes=input:1x3x32x32" in int8 and "--saveEngine=" in int8
    log.unlink()
    r = subprocess.run(["bash", str(script), "int8"], capture_output=True, text=True,
                       env={**env, "DLA_CORE": "0"})
    assert r.returncode == 0 and "--useDLACore=0 --allowGPUFallback" in log.read_text()
    assert json.loads((engines / "model.int8.engine.json").read_text())["dla_core"] == 0
    for f in engines.glob("model.*.engine*"):
        f.unlink()
    # a trtexec that fails leaves no engine and no sidecar behind
    fake.write_text("#!/usr/bin/env bash\nexit 3\n")
    r = subprocess.run(["bash", str(script), "fp32"], capture_output=True, text=True, env=env)
    assert r.returncode == 3 and not list(engines.glob("model.fp32.engine*"))
    r = subprocess.run(["bash", str(script)], capture_output=True, text=True,
                       env={**os.environ, "TRTEXEC": str(tmp_path / "missing")})
    assert r.returncode == 2 and "trtexec not found" in r.stderr


# --------------------------------------------------------------------------- extra exports (fp32, fast)
def test_fp32_only_bundle(fp32_bundle):
    b = Bundle.load(fp32_bundle)
    assert set(b.artifacts) == {"model.pt", "model.onnx"} and b.meta["opset"] == 17
    assert b.meta["calibration"] is None and b.meta["parity"]["images"] == 260
    assert (b.root / "tensorrt" / "build_engine.sh").exists()  # always shipped
    assert set(b.meta["export"]["stages"]) == {"export", "parity", "verify"}


def test_force_replaces_and_refuses_without_it(tmp_path, small_eval, fp32_bundle):
    out = tmp_path / "b"
    shutil.copytree(fp32_bundle, out)
    with pytest.raises(NinEdgeError, match="already exists.*--force"):
        export_bundle(_fp32(out, small_eval))
    (out / "stale.txt").write_text("from the old bundle")
    export_bundle(_fp32(out, small_eval, force=True, opset=13))
    assert Bundle.load(out).meta["opset"] == 13 and Bundle.load(out).verify() == []
    assert not (out / "stale.txt").exists()  # replaced as a whole, not merged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


@pytest.fixture(scope="module")
def fp32_bundle(tmp_path_factory, small_eval):
    """One fp32-only bundle, copied by the tests that need an existing bundle at --out."""
    out = tmp_path_factory.mktemp("fp32") / "b"
    export_bundle(_fp32(out, small_eval))
    return out


@pytest.mark.parametrize("exc", [RuntimeError("injected"), KeyboardInterrupt()])
def test_failure_midway_leaves_nothing(tmp_path, small_eval, fp32_bundle, monkeypatch, exc):
    """A failure after model.onnx was written (here: at the start of the parity stage) leaves no bundle and no
    temp dir; an existing bundle at --out survives a failed --force export untouched."""
    import nin_edge.export as ex

    def boom(*a, **k):
        assert list(tmp_path.glob(".*.tmp-*/model.onnx")), "failure injected before model.onnx was written"
        raise exc

    monkeypatch.setattr(ex, "torch_logits", boom)
    with pytest.raises(type(exc)):
        export_bundle(_fp32(tmp_path / "new", small_eval))
    assert not (tmp_path / "new").exists()
    assert [p.name for p in tmp_path.iterdir()] == []
    # existing bundle + --force + failure: the old bundle is kept as it was
    old = tmp_path / "old"
    shutil.copytree(fp32_bundle, old)
    before = (old / "bundle.json").read_text()
    with pytest.raises(type(exc)):
        export_bundle(_fp32(old, small_eval, force=True))
    assert (old / "bundle.json").read_text() == before and Bundle.load(old).verify() == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old"]


def test_parity_failure_is_an_error_and_writes_nothing(tmp_path, small_eval, monkeypatch):
    import nin_edge.export as ex

    real = ex.ort_logits
    monkeypatch.setattr(ex, "ort_logits", lambda *a, **k: real(*a, **k) + 1e-3)
    with pytest.raises(NinEdgeError, match="parity check failed.*no bundle written"):
        export_bundle(_fp32(tmp_path / "b", small_eval))
    assert not (tmp_path / "b").exists()


# --------------------------------------------------------------------------- bad input
@pytest.fixture(scope="module")
def bad_weights(tmp_path_factory):
    import torch

    d = tmp_path_factory.mktemp("w")
    (d / "corrupt.pt").write_bytes(b"PK\x03\x04 definitely not a checkpoint")
    seed = create_model("nin-seed")
    ck = make_checkpoint(seed, "nin-cifar", [f"c{i}" for i in range(10)])  # says nin-cifar, holds nin-seed
    torch.save(ck, d / "wrong_arch.pt")
    five = create_model("nin-cifar", num_classes=5)
    torch.save(make_checkpoint(five, "nin-cifar", ["a", "b", "c", "d", "e"]), d / "five_classes.pt")
    return d


@pytest.mark.parametrize("kw, msg", [
    (dict(weights="/nonexistent/w.pt"), "weights file not found"),
    (dict(weights="corrupt.pt"), "not a readable checkpoint"),
    (dict(weights="wrong_arch.pt"), "do not fit arch 'nin-cifar'"),
    (dict(weights="five_classes.pt"), "classes .* differ"),
    (dict(opset=21), "--opset 21: must be between 13 and 20"),
    (dict(opset=12), "--opset 12"),
    (dict(formats=("onnx", "coreml")), "unknown format 'coreml'"),
    (dict(method="kl"), "--method 'kl'"),
    (dict(int8=True, ort_cpu="avx2"), "--ort-cpu 'avx2': choose one of any, vnni"),
    (dict(max_drop=0.3), "--max-drop applies to INT8 exports"),
    (dict(keep_float=("x",)), "keep_float only applies to INT8"),
    (dict(int8=True, calib="no-such-spec"), "unknown calibration spec 'no-such-spec'"),
    (dict(eval_data="bundled:nope"), "bundled:nope"),
])
def test_bad_input(tmp_path, bad_weights, kw, msg):
    if "weights" in kw and not kw["weights"].startswith("/"):
        kw["weights"] = str(bad_weights / kw["weights"])
    with pytest.raises(NinEdgeError, match=msg):
        export_bundle(ExportOptions(**{"out": str(tmp_path / "b"), "progress": False, "formats": ("onnx",), **kw}))
    assert not (tmp_path / "b").exists()


def test_bad_calibration_specs(tmp_path):
    for text, msg in [("size = 0\n", "size"), ("colour = 1\n", "unknown key 'colour'"),
                      ("size = 5000\n", "size 5000 is more than the 1000 images")]:
        p = tmp_path / "c.toml"
        p.write_text(text)
        with pytest.raises(NinEdgeError, match=msg):
            export_bundle(ExportOptions(out=str(tmp_path / "b"), int8=True, calib=str(p), formats=("onnx",),
                                        progress=False))
        assert not (tmp_path / "b").exists()


def test_calibration_overlapping_evaluation_is_refused(tmp_path):
    import cv2

    d = tmp_path / "imgs"
    d.mkdir()
    cv2.imwrite(str(d / "x.png"), load_dataset("bundled:eval").images[5][:, :, ::-1])
    with pytest.raises(NinEdgeError, match="also in the evaluation set"):
        export_bundle(ExportOptions(out=str(tmp_path / "b"), int8=True, calib=str(d), formats=("onnx",),
                                    progress=False))


def test_tensorrt_format_fails_clearly_without_tensorrt(tmp_path):
    if _have("tensorrt"):
        pytest.skip("tensorrt is installed here; the absent-TensorRT path cannot be exercised")
    with pytest.raises(BackendUnavailable, match="TensorRT is not installed here.*build_engine.sh"):
        export_bundle(ExportOptions(out=str(tmp_path / "b"), formats=("onnx", "tensorrt"), progress=False))
    assert not (tmp_path / "b").exists()


def test_out_exists_and_is_not_a_bundle(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "precious.txt").write_text("keep me")
    with pytest.raises(NinEdgeError, match="not a nin-edge bundle"):
        export_bundle(ExportOptions(out=str(tmp_path / "b"), force=True, formats=("onnx",), progress=False))
    assert (tmp_path / "b" / "precious.txt").read_text() == "keep me"


# --------------------------------------------------------------------------- CLI
def test_cli_exit_codes(tmp_path, small_eval):
    from typer.testing import CliRunner

    from nin_edge.cli import app

    run = CliRunner().invoke
    out = str(tmp_path / "b")
    r = run(app, ["export", "--out", out, "--formats", "onnx", "--eval-data", small_eval, "--quiet"])
    assert r.exit_code == 0, r.output
    assert "bundle written" in r.output and "model.onnx" in r.output
    r = run(app, ["export", "--out", out, "--formats", "onnx", "--quiet"])
    assert r.exit_code == 2 and "already exists" in r.output and "Traceback" not in r.output
    r = run(app, ["export", "--out", str(tmp_path / "c"), "--opset", "30"])
    assert r.exit_code == 2 and "--opset 30" in r.output
    r = run(app, ["export", "--out", str(tmp_path / "c"), "--method", "kl"])
    assert r.exit_code == 2
    r = run(app, ["export", "--out", str(tmp_path / "c"), "--weights", str(tmp_path / "none.pt")])
    assert r.exit_code == 2 and "weights file not found" in r.output
    if not _have("tensorrt"):
        r = run(app, ["export", "--out", str(tmp_path / "c"), "--formats", "onnx,tensorrt"])
        assert r.exit_code == 2 and "TensorRT is not installed here" in r.output
    assert not (tmp_path / "c").exists()
    shutil.rmtree(out)
