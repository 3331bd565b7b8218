"""Quantization building blocks on a small calibration set: streaming calibration, both Q/DQ forms, keep_float."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from nin_edge.calibration import build_calibration_set
from nin_edge.checkpoint import load_model
from nin_edge.errors import NinEdgeError
from nin_edge.export import export_onnx, ort_logits
from nin_edge.models import fold_batchnorm
from nin_edge.preprocess import Preprocess
from nin_edge.quantize import FORMS, calibrate_onnx, quantize_onnx, trt_form_violations


@pytest.fixture(scope="module")
def fp32(tmp_path_factory):
    d = tmp_path_factory.mktemp("q")
    model, _ = load_model()
    path = d / "model.onnx"
    export_onnx(fold_batchnorm(model), path, 32, 17)
    return path


@pytest.fixture(scope="module")
def small_set():
    return build_calibration_set("small", Preprocess(), batch=20)  # 100 images, 5 batches


def _ranges(path):
    return json.loads(path.read_text())


def test_chunked_minmax_equals_one_pass(fp32, small_set, tmp_path):
    """Streaming (a chunk of batches per collect_data call) loses nothing: the same ranges as one pass."""
    a = _ranges(calibrate_onnx(fp32, small_set, "minmax", tmp_path / "a", chunk_batches=1))
    b = _ranges(calibrate_onnx(fp32, small_set, "minmax", tmp_path / "b", chunk_batches=100))
    assert a.keys() == b.keys()
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


@pytest.mark.parametrize("method", [pytest.param("entropy", marks=pytest.mark.slow), "percentile"])
def test_histogram_methods_run_chunked(fp32, small_set, tmp_path, method):
    """Both histogram methods stream chunk by chunk, and each narrows at least one activation range below
    min/max (entropy would equal max-abs with ORT's default 128/128 bins: a single candidate threshold)."""
    from onnxruntime.quantization.calibrate import load_tensors_data

    r = load_tensors_data(calibrate_onnx(fp32, small_set, method, tmp_path, chunk_batches=2)).data
    mm = load_tensors_data(calibrate_onnx(fp32, small_set, "minmax", tmp_path / "mm")).data
    assert set(r) == set(mm) and len(r) >= 10

    def width(td):
        lo, hi = td.range_value
        return float(np.max(hi)) - float(np.min(lo))

    assert any(width(r[k]) < 0.9 * width(mm[k]) for k in r), f"{method} ranges are all as wide as min/max"


@pytest.fixture(scope="module")
def both_forms(fp32, small_set, tmp_path_factory):
    d = tmp_path_factory.mktemp("forms")
    ranges = calibrate_onnx(fp32, small_set, "minmax", d)
    out = {}
    for name in ("ort-cpu", "ort-cpu-vnni", "tensorrt"):
        out[name] = d / f"{name}.onnx"
        quantize_onnx(fp32, out[name], FORMS[name], ranges, "minmax")
    return out


def _qdq(path):
    m = onnx.load(str(path))
    init = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    return m, init, [n for n in m.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]


def test_ort_cpu_form_is_u8s8(both_forms):
    _, init, qdq = _qdq(both_forms["ort-cpu"])
    act = {init[n.input[2]].dtype for n in qdq if n.input[0] not in init}
    wts = {init[n.input[2]].dtype for n in qdq if n.input[0] in init and n.input[0].endswith("weight_quantized")}
    assert act == {np.dtype("uint8")} and wts == {np.dtype("int8")}


def _weights(path):
    _, init, qdq = _qdq(path)
    return [init[n.input[0]] for n in qdq if n.input[0] in init and n.input[0].endswith("weight_quantized")]


def test_ort_cpu_form_has_7bit_weights_and_the_vnni_form_8bit(both_forms):
    """Default form: every int8 weight in [-64, 64] (ORT's symmetric reduce_range), so a u8×s8 pair sum fits in int16 on
    CPUs without VNNI (255·64·2 < 32767); the VNNI form uses the full 8 bits."""
    portable, vnni = _weights(both_forms["ort-cpu"]), _weights(both_forms["ort-cpu-vnni"])
    assert portable and len(portable) == len(vnni)
    assert max(int(np.abs(w.astype(np.int32)).max()) for w in portable) <= 64
    assert max(int(np.abs(w.astype(np.int32)).max()) for w in vnni) >= 127
    assert FORMS["ort-cpu"].describe()["weight_bits"] == 7 and FORMS["ort-cpu-vnni"].describe()["weight_bits"] == 8


def test_saturation_warning_only_for_8bit_u8s8_on_x86_without_vnni():
    from nin_edge.runners.onnxruntime_runner import saturation_warning

    avx2 = {"avx2": True, "avx512_vnni": False, "avx_vnni": False}
    rec = {"quantization": FORMS["ort-cpu-vnni"].describe()}
    msg = saturation_warning("model.int8.onnx", rec, avx2)
    assert msg and "model.int8.onnx" in msg and "--ort-cpu any" in msg
    # an old bundle's record (before reduce_range was recorded) is 8-bit too
    old = {k: v for k, v in rec["quantization"].items() if k not in ("reduce_range", "weight_bits")}
    assert saturation_warning("m", {"quantization": old}, avx2)
    assert saturation_warning("m", rec, {**avx2, "avx512_vnni": True}) is None
    assert saturation_warning("m", rec, {**avx2, "avx_vnni": True}) is None
    assert saturation_warning("m", rec, {"avx2": False, "neon": True}) is None          # ARM
    assert saturation_warning("m", {"quantization": FORMS["ort-cpu"].describe()}, avx2) is None
    assert saturation_warning("m", {"quantization": FORMS["tensorrt"].describe()}, avx2) is None
    assert saturation_warning("m", {}, avx2) is None                                    # fp32 artifact


def test_tensorrt_form_passes_its_structure_check(both_forms):
    assert trt_form_violations(both_forms["tensorrt"]) == []
    # ...and the check can fail: the ORT CPU form (uint8 activations, int32 biases) is rejected
    bad = trt_form_violations(both_forms["ort-cpu"])
    assert any("not int8 0" in b for b in bad)


def test_structure_check_catches_per_tensor_weights(fp32, small_set, tmp_path):
    from dataclasses import replace

    ranges = calibrate_onnx(fp32, small_set, "minmax", tmp_path)
    p = tmp_path / "pt.onnx"
    quantize_onnx(fp32, p, replace(FORMS["tensorrt"], per_channel=False), ranges, "minmax")
    assert any("expected" in b and "axis 0" in b for b in trt_form_violations(p))


def test_structure_check_catches_a_nonzero_zero_point(both_forms, tmp_path):
    m = onnx.load(str(both_forms["tensorrt"]))
    zp = next(i for i in m.graph.initializer if numpy_helper.to_array(i).dtype == np.int8 and i.dims == [])
    zp.CopyFrom(numpy_helper.from_array(np.array(3, np.int8), zp.name))
    p = tmp_path / "broken.onnx"
    onnx.save(m, str(p))
    assert any("not int8 0" in b for b in trt_form_violations(p))


def test_int8_models_track_fp32(both_forms, fp32, small_set):
    x = np.concatenate(list(small_set))
    ref = ort_logits(fp32, x).argmax(1)
    for name, path in both_forms.items():
        agree = (ort_logits(path, x).argmax(1) == ref).mean()
        assert agree >= 0.9, f"{name}: only {agree:.0%} same top-1 as fp32 on its own calibration images"


def test_keep_float_leaves_the_node_in_float(fp32, small_set, tmp_path):
    first_conv = next(n.name for n in onnx.load(str(fp32)).graph.node if n.op_type == "Conv")
    ranges = calibrate_onnx(fp32, small_set, "minmax", tmp_path)
    out = tmp_path / "kf.onnx"
    info = quantize_onnx(fp32, out, FORMS["tensorrt"], ranges, "minmax", keep_float=(first_conv,))
    assert info["keep_float"] == [first_conv]
    m = onnx.load(str(out))
    producers = {o: n for n in m.graph.node for o in n.output}
    conv = next(n for n in m.graph.node if n.name == first_conv)
    assert all(producers.get(i) is None or producers[i].op_type != "DequantizeLinear" for i in conv.input)
    other = next(n for n in m.graph.node if n.op_type == "Conv" and n.name != first_conv)
    assert any(producers.get(i) is not None and producers[i].op_type == "DequantizeLinear" for i in other.input)


def test_keep_float_unknown_node(fp32, small_set, tmp_path):
    ranges = calibrate_onnx(fp32, small_set, "minmax", tmp_path)
    with pytest.raises(NinEdgeError, match="keep-float node 'nope'"):
        quantize_onnx(fp32, tmp_path / "x.onnx", FORMS["ort-cpu"], ranges, "minmax", keep_float=("nope",))


def test_keep_float_applies_to_openvino_too(fp32, small_set, tmp_path):
    """The same ONNX node name leaves the matching OpenVINO convolution in float (NNCF ignored scope)."""
    pytest.importorskip("nncf", reason="nncf/openvino not installed (the 'cpu' extra)")
    from nin_edge.build.openvino import convert_onnx
    from nin_edge.quantize import quantize_openvino

    first_conv = next(n.name for n in onnx.load(str(fp32)).graph.node if n.op_type == "Conv")
    q, info = quantize_openvino(convert_onnx(fp32), small_set, "minmax", (first_conv,))
    assert info["keep_float"] == [first_conv]
    feeds = {o.get_friendly_name(): {i.get_source_output().get_node().get_type_name() for i in o.inputs()}
             for o in q.get_ops() if o.get_type_name() == "Convolution"}
    assert "FakeQuantize" not in feeds[f"{first_conv}/WithoutBiases"]
    assert sum("FakeQuantize" in v for v in feeds.values()) >= len(feeds) - 3  # the rest are quantized
    with pytest.raises(NinEdgeError, match="keep-float node 'nope'"):
        quantize_openvino(convert_onnx(fp32), small_set, "minmax", ("nope",))
