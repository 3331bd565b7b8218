"""The runner contract for every backend installed here: parity with torch, validation, lifecycle.

Tolerances (stated, against torch fp32 on the bundle's model.pt, real bundled:eval images):
  * fp32 (ONNX Runtime, OpenVINO f32): max |Δlogit| ≤ 1e-4 (BatchNorm folding reorders float sums only);
  * bf16 (torch, OpenVINO): max |Δlogit| ≤ 0.5 and ≥ 90 % equal top-1 (8-bit mantissa);
  * int8 (both ORT Q/DQ forms, OpenVINO NNCF): ≥ 85 % equal top-1 on 64 images (the interim low-accuracy
    weights have many near-ties; export measures ~98 % agreement on 1,000 images).
"""
from __future__ import annotations

import importlib.util
import shutil

import numpy as np
import pytest

from nin_edge.bundle import Bundle
from nin_edge.errors import BackendUnavailable, NinEdgeError
from nin_edge.runners import available_runners, create_runner, get_runner_class, list_runners

N = 64


def _have(mod: str) -> bool:
    return importlib.util.find_spec(mod) is not None


@pytest.fixture(scope="module")
def images(default_bundle):
    from nin_edge.data import load_dataset
    from nin_edge.preprocess import preprocess

    ds = load_dataset("bundled:eval")
    return preprocess(ds.images[:N], default_bundle.preprocess)


@pytest.fixture(scope="module")
def torch_ref(default_bundle, images):
    import torch

    from nin_edge.checkpoint import load_model

    model, _ = load_model(default_bundle.root / "model.pt")
    with torch.inference_mode():
        return model(torch.from_numpy(images)).numpy()


CASES = [  # (runner, precision, artifact override, kind of tolerance)
    ("torch", "fp32", None, "fp32"),
    ("torch", "bf16", None, "bf16"),
    ("onnxruntime", "fp32", None, "fp32"),
    ("onnxruntime", "int8", None, "int8"),
    ("onnxruntime", "int8", "model.int8.trt.onnx", "int8"),
    ("openvino", "fp32", None, "fp32"),
    ("openvino", "bf16", None, "bf16"),
    ("openvino", "int8", None, "int8"),
]


def _skip_unless(name: str, precision: str) -> None:
    why = available_runners()[name]
    if why:
        pytest.skip(why)
    if name == "openvino" and precision == "bf16":
        import openvino as ov

        if "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            pytest.skip("this CPU has no bf16 compute in OpenVINO")
    if name == "torch" and precision == "bf16":
        from nin_edge.envinfo import cpu_info

        if not cpu_info()["isa"].get("avx512_bf16"):
            pytest.skip("no AVX512_BF16 here: torch bf16 on the CPU would be emulated")


@pytest.mark.parametrize("name,precision,artifact,kind", CASES, ids=[f"{c[0]}-{c[1]}{'-' + c[2] if c[2] else ''}" for c in CASES])
def test_parity_with_torch(default_bundle, images, torch_ref, name, precision, artifact, kind):
    _skip_unless(name, precision)
    with create_runner(name, default_bundle, precision=precision, threads=2, artifact=artifact) as r:
        out = np.concatenate([r.infer(images[:16]), r.infer(images[16:])])  # two batch sizes, same runner
        d = r.describe()
    assert out.shape == (N, len(default_bundle.classes)) and out.dtype == np.float32
    diff = float(np.abs(out - torch_ref).max())
    agree = float((out.argmax(1) == torch_ref.argmax(1)).mean())
    if kind == "fp32":
        assert diff <= 1e-4, diff
    elif kind == "bf16":
        assert diff <= 0.5 and agree >= 0.90, (diff, agree)
    else:
        assert agree >= 0.85, agree
    # every runner states what it executed and with how many threads
    assert d["threads_used"] == 2
    assert d["artifact"] == (artifact or d["artifact"])
    assert precision in d["executed_precision"]


@pytest.mark.parametrize("name", ["torch", "onnxruntime", "openvino"])
def test_validation_errors(default_bundle, images, name):
    _skip_unless(name, "fp32")
    with create_runner(name, default_bundle, precision="fp32") as r:
        with pytest.raises(NinEdgeError, match="dtype float64"):
            r.infer(images[:2].astype(np.float64))
        with pytest.raises(NinEdgeError, match=r"input shape \(2, 3, 16, 16\)"):
            r.infer(np.zeros((2, 3, 16, 16), np.float32))
        with pytest.raises(NinEdgeError, match=r"input shape \(3, 32, 32\)"):
            r.infer(images[0])
        with pytest.raises(NinEdgeError, match=r"input shape \(1, 3, 32, 32, 1\)"):
            r.infer(images[:1, ..., None])
        with pytest.raises(NinEdgeError, match="numpy array"):
            r.infer(images[:2].tolist())
        with pytest.raises(NinEdgeError, match="batch size 0"):
            r.prepare(0)
        # non-contiguous input is accepted (copied), the result equals the contiguous one's
        nc = np.asfortranarray(images[:4])
        assert np.allclose(r.infer(nc), r.infer(np.ascontiguousarray(images[:4])), atol=1e-5)


@pytest.mark.parametrize("name", ["torch", "onnxruntime", "openvino"])
def test_each_call_returns_its_own_result(default_bundle, images, name):
    """The runners reuse their input/output buffers between calls (OpenVINO's are the request's own memory);
    a returned array must be the caller's, never a view that the next call overwrites."""
    _skip_unless(name, "fp32")
    with create_runner(name, default_bundle, precision="fp32") as r:
        first = r.infer(images[:1])
        kept = first.copy()
        second = r.infer(images[1:2])
        again = r.infer(images[:1])
    assert np.array_equal(first, kept)  # untouched by the later calls
    assert not np.allclose(first, second)
    assert np.allclose(first, again, atol=1e-5)


@pytest.mark.parametrize("name", ["torch", "onnxruntime", "openvino"])
def test_closed_runner_and_context_manager(default_bundle, images, name):
    _skip_unless(name, "fp32")
    with create_runner(name, default_bundle, precision="fp32") as r:
        r.infer(images[:1])
    with pytest.raises(NinEdgeError, match="is closed"):
        r.infer(images[:1])
    with pytest.raises(NinEdgeError, match="is closed"):
        r.prepare(1)
    r.close()  # idempotent


def test_bad_constructor_arguments(default_bundle):
    with pytest.raises(NinEdgeError, match="no precision 'int8'.*fp32"):
        create_runner("torch", default_bundle, precision="int8")
    with pytest.raises(NinEdgeError, match="no device 'tpu'"):
        create_runner("onnxruntime", default_bundle, device="tpu")
    with pytest.raises(NinEdgeError, match="--threads 0"):
        create_runner("onnxruntime", default_bundle, threads=0)
    with pytest.raises(NinEdgeError, match="unknown target 'tflite'.*onnxruntime"):
        create_runner("tflite", default_bundle)
    with pytest.raises(NinEdgeError, match="artifact not found"):
        create_runner("onnxruntime", default_bundle, precision="int8", artifact="nope.onnx")


def test_missing_artifact_names_file_and_export_command(default_bundle, tmp_path):
    b = tmp_path / "b"
    shutil.copytree(default_bundle.root, b)
    (b / "model.int8.onnx").unlink()
    with pytest.raises(NinEdgeError, match=r"model\.int8\.onnx.*nin-edge export --int8"):
        create_runner("onnxruntime", Bundle.load(b), precision="int8")


def test_openvino_reports_and_refuses_precisions(default_bundle, images):
    _skip_unless("openvino", "fp32")
    import openvino as ov

    caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    with create_runner("openvino", default_bundle, precision="fp32") as r:
        r.infer(images[:1])
        # OpenVINO would run an fp32 IR in bf16 on AVX512_BF16 CPUs; the runner pins and reports f32
        assert r.describe()["executed_precision"] == "fp32"
        assert r.describe()["streams"] == 1 and r.describe()["performance_hint"] == "LATENCY"
    if "FP16" not in caps:
        with pytest.raises(NinEdgeError, match="cannot compute in FP16"):
            create_runner("openvino", default_bundle, precision="fp16")
    else:
        with create_runner("openvino", default_bundle, precision="fp16") as r:
            assert r.describe()["executed_precision"] == "fp16"


def test_openvino_c_api_and_python_binding_paths_agree(default_bundle, images, monkeypatch):
    """The runner calls OpenVINO through its C API where the wheel ships it, else through the Python binding;
    both must compile the same model with the same settings and return the very same logits."""
    _skip_unless("openvino", "int8")
    from nin_edge.runners import _ov_capi

    got = {}
    for path in ("c", "python"):
        if path == "python":
            monkeypatch.setattr(_ov_capi, "load", lambda: None)
        elif _ov_capi.load() is None:
            pytest.skip("this OpenVINO wheel has no usable libopenvino_c (ov_core_compile_model_props)")
        with create_runner("openvino", default_bundle, precision="int8", threads=2) as r:
            got[path] = (r.infer(images[:8]), r.infer(images[:1]), r.describe())
    (c8, c1, cd), (p8, p1, pd) = got["c"], got["python"]
    assert cd.pop("call_path") == "OpenVINO C API (ctypes)" and pd.pop("call_path") == "OpenVINO Python binding"
    assert cd == pd  # precision executed, threads, streams, hint, pinning: read back the same way
    assert np.array_equal(c8, p8) and np.array_equal(c1, p1)
    assert np.array_equal(c1[0], c8[0])  # batch 1 and 8 are separate compiled models; same image, same logits


def test_openvino_c_api_errors_name_the_file(default_bundle, tmp_path):
    _skip_unless("openvino", "fp32")
    from nin_edge.runners import _ov_capi

    lib = _ov_capi.load()
    if lib is None:
        pytest.skip("this OpenVINO wheel has no usable libopenvino_c")
    bad = tmp_path / "model.xml"
    bad.write_text("<net>not an IR")
    with pytest.raises(_ov_capi.OvCError, match="read model"):
        _ov_capi.Model(lib, str(bad))
    m = _ov_capi.Model(lib, str(default_bundle.root / "openvino" / "model.xml"))
    with pytest.raises(_ov_capi.OvCError, match=r"reshape to \[1, 3, 5\]"):
        m.compile((1, 3, 5), "CPU", {})
    m.close()
    m.close()  # idempotent: the finalizer frees each handle once


def test_openvino_c_api_handles_are_freed(default_bundle, images):
    """close() frees every C handle (request, tensors, compiled model, model, core); a runner the caller drops
    without closing is freed by the finalizers, children first."""
    _skip_unless("openvino", "fp32")
    import gc

    from nin_edge.runners import _ov_capi

    if _ov_capi.load() is None:
        pytest.skip("this OpenVINO wheel has no usable libopenvino_c")
    r = create_runner("openvino", default_bundle, precision="fp32")
    r.infer(images[:2])
    req, model = r._req, r._cmodel
    assert req._handles and model._handles
    r.close()
    assert not req._handles and not model._handles
    dropped = create_runner("openvino", default_bundle, precision="fp32")
    dropped.infer(images[:1])
    handles = dropped._cmodel._handles
    del dropped
    gc.collect()
    assert handles == []


def test_onnxruntime_cuda_without_provider(default_bundle):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime build has CUDA")
    with pytest.raises(BackendUnavailable, match="CUDAExecutionProvider"):
        create_runner("onnxruntime", default_bundle, precision="fp32", device="cuda")


def test_torch_fp16_needs_cuda(default_bundle):
    with pytest.raises(NinEdgeError, match="fp16 runs on --device cuda only"):
        create_runner("torch", default_bundle, precision="fp16", device="cpu")


def test_torch_cuda(default_bundle, images, torch_ref):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device visible to torch on this machine")
    with create_runner("torch", default_bundle, precision="fp32", device="cuda") as r:
        out = r.infer(images)
        r.synchronize()
    assert np.abs(out - torch_ref).max() <= 1e-3


def test_tensorrt_runner(default_bundle, images):
    if not _have("tensorrt"):
        with pytest.raises(BackendUnavailable, match=r"nin-edge\[tensorrt\]"):
            get_runner_class("tensorrt")
        pytest.skip("tensorrt is not installed here: TensorRtRunner cannot be exercised (unavailability checked)")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("tensorrt is installed but no CUDA device is visible")
    if not (default_bundle.root / "tensorrt" / "model.int8.engine").exists():
        pytest.skip("the default bundle has no TensorRT engine (export --formats tensorrt on this machine)")
    with create_runner("tensorrt", default_bundle, precision="int8", device="cuda") as r:
        out = r.infer(images[:8])
    assert out.shape == (8, len(default_bundle.classes))


def test_registry_names_fixed():
    assert list_runners() == ["torch", "onnxruntime", "openvino", "tensorrt"]
    for name, why in available_runners().items():
        assert why is None or name in why
