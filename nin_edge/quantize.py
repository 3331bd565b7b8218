"""Post-training INT8: ONNX → Q/DQ ONNX (ONNX Runtime), OpenVINO IR → INT8 IR (NNCF), one calibration set.

    ranges = calibrate_onnx("model.onnx", cs, "minmax", workdir)       # activation ranges, computed once
    quantize_onnx("model.onnx", "model.int8.onnx", FORMS["ort-cpu"], ranges)
    quantize_onnx("model.onnx", "model.int8.trt.onnx", FORMS["tensorrt"], ranges)
    ir_int8 = quantize_openvino(ir_fp32, cs, "minmax")

Both Q/DQ forms are built from the same activation ranges (ONNX Runtime's calibration cache), so they
differ only in the form TensorRT or the CPU wants, not in what the calibration saw.

Issue 9's hook: `keep_float` — ONNX node names left in floating point (ORT `nodes_to_exclude`, NNCF ignored
scope), applied identically to every INT8 artifact.
"""
from __future__ import annotations

import contextlib
import io
import logging
import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from .calibration import CalibrationSet
from .errors import NinEdgeError


class CalibMethod(str, Enum):
    minmax = "minmax"          # the observed min/max of each activation tensor
    entropy = "entropy"        # the range minimising KL divergence between fp32 and int8 histograms
    percentile = "percentile"  # the 99.999th percentile of |activation| (ORT's default percentile)


# ORT's create_calibrator defaults entropy to 128 histogram bins and 128 quantized bins, which leaves one
# candidate threshold — the full range — so "entropy" would silently be max-abs calibration. These are
# TensorRT's entropy-calibrator settings (2,048 bins, thresholds searched from 128 bins up), a real KL search.
# Measured on the interim weights: slower (≈100-280 s on the busy 2-core machine) and further from fp32 than
# minmax (93.0% vs 98.4% same top-1 on bundled:val), which is why it is not the default.
CALIB_OPTIONS: dict[str, dict] = {
    "minmax": {},
    "entropy": {"num_bins": 2048, "num_quantized_bins": 128},
    "percentile": {"num_bins": 2048, "percentile": 99.999},
}


# How many calibration batches run before their outputs are reduced into ranges/histograms. With 50-image
# batches this holds at most 400 images' activations at once (≈ 90 MB for nin-cifar), so a 10,000-image
# calibration streams instead of keeping every intermediate output (what ORT's one-shot collect_data does).
CHUNK_BATCHES = 8


@dataclass(frozen=True)
class QdqForm:
    """One Q/DQ flavour of the INT8 ONNX model."""

    name: str
    activation_type: str       # onnxruntime.quantization.QuantType member name
    weight_type: str
    per_channel: bool
    activation_symmetric: bool
    op_types: tuple[str, ...] = ()          # () = every op type ORT can quantize
    extra: tuple[tuple[str, object], ...] = ()
    why: str = ""
    reduce_range: bool = False              # 7-bit weights (ORT's reduce_range): no int16 saturation on AVX2

    def describe(self) -> dict:
        return {"form": self.name, "activations": self.activation_type, "weights": self.weight_type,
                "weight_bits": 7 if self.reduce_range else 8, "reduce_range": self.reduce_range,
                "per_channel_weights": self.per_channel, "activation_symmetric": self.activation_symmetric,
                "weight_symmetric": True, "op_types": list(self.op_types) or "all ORT-quantizable",
                **{k: v for k, v in self.extra}, "why": self.why}


FORMS: dict[str, QdqForm] = {
    # U8S8 (QUInt8 activations, QInt8 weights), per-channel weights: ORT's quantize_static docstring (1.32)
    # for x86 CPUs. Measured at batch 1, 1 thread (benchmarks/export_quality.py --parts forms, RESULTS.md):
    # U8S8/S8S8 × per-tensor/per-channel all ran 0.264-0.266 ms (3.2× fp32) with the same top-1 on 5,000
    # held-out train images; per-channel weights kept 98.5% of fp32's top-1 decisions vs 97.7% per-tensor.
    # Weights in 7 bits (reduce_range), the same docstring's advice for x86 CPUs without VNNI: there MLAS
    # multiplies u8×s8 pairs with vpmaddubsw, whose int16 sum saturates when both weights of a pair are near
    # ±127. Measured on an AVX2-only AMD EPYC (RESULTS.md, export): 8-bit weights 86.14% top-1 on the 10,000
    # test images (92.1% same top-1 as fp32) against 89.79% for the same model computed without int8 kernels
    # (what a VNNI CPU computes); 7-bit weights 89.70% on both kinds of CPU (the fourth shipped weights). An
    # INT8 file moves between machines, so the default is the form that is exact everywhere; `ort-cpu-vnni`
    # keeps 8 bits.
    "ort-cpu": QdqForm("ort-cpu", "QUInt8", "QInt8", per_channel=True, activation_symmetric=False,
                       reduce_range=True,
                       why="U8S8, per-channel 7-bit weights: exact on every x86 CPU (no int16 saturation "
                           "without VNNI) and on ARM"),
    "ort-cpu-vnni": QdqForm("ort-cpu-vnni", "QUInt8", "QInt8", per_channel=True, activation_symmetric=False,
                            why="U8S8, per-channel 8-bit weights: only for CPUs with VNNI (AVX512-VNNI/AVX-VNNI) "
                                "or ARM; x86 CPUs without VNNI saturate int16 sums and lose accuracy"),
    # TensorRT explicit quantization: signed int8, symmetric (zero point 0) activations and weights,
    # per-channel weights on the output-channel axis. Q/DQ only on the inputs of weighted ops (Conv, Gemm,
    # MatMul), not on their outputs — NVIDIA's Q/DQ placement recommendation: TensorRT fuses ReLU/pooling
    # and moves the following Q itself, and an extra Q/DQ on the pre-ReLU output only adds rounding error.
    # Biases stay float: TensorRT's Q/DQ takes int8/fp8/int4/fp4, not the int32 bias DequantizeLinear ORT
    # writes by default.
    "tensorrt": QdqForm("tensorrt", "QInt8", "QInt8", per_channel=True, activation_symmetric=True,
                        op_types=("Conv", "Gemm", "MatMul"),
                        extra=(("QuantizeBias", False),
                               ("OpTypesToExcludeOutputQuantization", ["Conv", "Gemm", "MatMul"])),
                        why="TensorRT explicit quantization: symmetric signed int8, per-channel weights (axis 0), "
                            "Q/DQ on weighted-op inputs"),
}


def _ort_method(method: CalibMethod):
    from onnxruntime.quantization import CalibrationMethod

    return {CalibMethod.minmax: CalibrationMethod.MinMax, CalibMethod.entropy: CalibrationMethod.Entropy,
            CalibMethod.percentile: CalibrationMethod.Percentile}[CalibMethod(method)]


def _quantizable_op_types() -> list[str]:
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return sorted(set(QLinearOpsRegistry) | set(QDQRegistry))


@contextlib.contextmanager
def _quiet():
    """ORT's quantizer prints and logs progress chatter; the export shows its own per-stage progress."""
    root, nncf_log = logging.getLogger(), logging.getLogger("nncf")  # NNCF logs (e.g. ignored nodes) on its own
    level, nncf_level = root.level, nncf_log.level
    root.setLevel(logging.ERROR)
    nncf_log.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)
        nncf_log.setLevel(nncf_level)


def input_name(onnx_path: Path) -> str:
    import onnx

    m = onnx.load(str(onnx_path), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    return next(i.name for i in m.graph.input if i.name not in inits)


def calibrate_onnx(fp32: Path, cs: CalibrationSet, method: CalibMethod | str, workdir: Path,
                   chunk_batches: int = CHUNK_BATCHES) -> Path:
    """Run the calibration set through the fp32 model once → ORT calibration cache (JSON) in `workdir`."""
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    method = CalibMethod(method)
    name = input_name(fp32)
    workdir.mkdir(parents=True, exist_ok=True)
    with _quiet():
        cal = create_calibrator(Path(fp32), _quantizable_op_types(),
                                augmented_model_path=str(workdir / "augmented.onnx"),
                                calibrate_method=_ort_method(method),
                                extra_options={"symmetric": False, **CALIB_OPTIONS[method.value]})
        # collect_data reduces each call's outputs into ranges (minmax) or merged histograms (entropy,
        # percentile) before returning, so feeding it chunk by chunk keeps memory bounded.
        for start in range(0, cs.num_batches, chunk_batches):
            cal.collect_data(cs.ort_reader(name, start, start + chunk_batches))
        ranges = cal.compute_data()
    out = workdir / f"ranges-{method.value}.json"
    save_tensors_data(ranges, out)
    return out


def quantize_onnx(fp32: Path, out: Path, form: QdqForm, ranges: Path, method: CalibMethod | str,
                  keep_float: tuple[str, ...] = ()) -> dict:
    """fp32 ONNX + calibration ranges → Q/DQ INT8 ONNX in `form`. Returns what was done (for bundle.json)."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    model = onnx.load(str(fp32), load_external_data=False)
    names = {n.name for n in model.graph.node}
    unknown = [n for n in keep_float if n not in names]
    if unknown:
        raise NinEdgeError(f"keep-float node '{unknown[0]}' is not a node of {fp32.name}")
    from .tta import float_nodes

    excluded = float_region(model, keep_float)
    tail = [n for n in float_nodes(model) if n not in excluded]  # a TTA graph's averaging (nin_edge/tta.py)
    extra = {"ActivationSymmetric": form.activation_symmetric, "WeightSymmetric": True, **dict(form.extra)}
    with _quiet():
        quantize_static(str(fp32), str(out), calibration_data_reader=None, quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=list(form.op_types) or None, per_channel=form.per_channel,
                        reduce_range=form.reduce_range, activation_type=QuantType[form.activation_type],
                        weight_type=QuantType[form.weight_type], nodes_to_exclude=excluded + tail,
                        calibrate_method=_ort_method(method), extra_options=extra,
                        calibration_cache_path=str(ranges))
    if excluded or tail:
        _drop_qdq_into(out, set(excluded + tail))
    return {**form.describe(), "keep_float": list(keep_float),
            **({"nodes_excluded": excluded} if len(excluded) > len(keep_float) else {}),
            **({"tta_nodes_in_float": len(tail)} if tail else {})}


def float_region(model, keep_float: tuple[str, ...]) -> list[str]:
    """Issue 9: the nodes to leave unquantized so that the `keep_float` nodes get float inputs, not only float
    weights. Besides the named nodes, every node that is not itself weighted (Conv/Gemm/MatMul) and whose
    outputs feed only excluded nodes: ORT's CPU form otherwise still puts Q/DQ on a kept layer's input (a
    quantized MaxPool before it, or a ReLU folded into the previous Conv as a uint8 clamp), while NNCF's
    ignored scope and the TensorRT form leave that input in float."""
    if not keep_float:
        return []
    excluded = set(keep_float)
    graph_out = {o.name for o in model.graph.output}
    consumers: dict[str, list[str]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n.name)
    changed = True
    while changed:
        changed = False
        for n in model.graph.node:
            if n.name in excluded or n.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
                continue
            users = [u for o in n.output for u in consumers.get(o, [])]
            if users and all(u in excluded for u in users) and not graph_out.intersection(n.output):
                excluded.add(n.name)
                changed = True
    return [n.name for n in model.graph.node if n.name in excluded]


def _drop_qdq_into(path: Path, excluded: set[str]) -> None:
    """Remove each activation Q→DQ pair whose output feeds only excluded nodes. ORT's CPU form quantizes the
    output of every quantized Conv (for its QLinearConv fusion), so a kept-float layer after a quantized Conv
    would otherwise still read int8 values; the Conv before it then computes in float on int8 inputs."""
    import onnx

    m = onnx.load(str(path))
    inits = {i.name for i in m.graph.initializer}
    producers = {o: n for n in m.graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in m.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    graph_out = {o.name for o in m.graph.output}
    drop = []
    for dq in m.graph.node:
        if dq.op_type != "DequantizeLinear":  # checked first: a Constant node has no input
            continue
        q = producers.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear" or q.input[0] in inits:
            continue
        users = consumers.get(dq.output[0], [])
        if (users and all(u.name in excluded for u in users) and dq.output[0] not in graph_out
                and [c.name for c in consumers.get(q.output[0], [])] == [dq.name]):
            for u in users:
                u.input[:] = [q.input[0] if i == dq.output[0] else i for i in u.input]
            drop += [q.name, dq.name]
    if drop:
        keep = [n for n in m.graph.node if n.name not in drop]
        del m.graph.node[:]
        m.graph.node.extend(keep)
        used = {i for n in m.graph.node for i in n.input}
        unused = [i for i in m.graph.initializer if i.name not in used]
        for i in unused:
            m.graph.initializer.remove(i)
        onnx.save(m, str(path))


def quantize_openvino(ir, cs: CalibrationSet, method: CalibMethod | str, keep_float: tuple[str, ...] = ()):
    """fp32 OpenVINO model + the same calibration set → INT8 model (NNCF post-training quantization)."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    method = CalibMethod(method)
    adv = AdvancedQuantizationParameters()
    if method == CalibMethod.minmax:
        adv = AdvancedQuantizationParameters(activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX)
    ignored = None
    names = []
    if keep_float:  # ONNX node names → the converted model's weighted op names (issue 9)
        from .diagnose import openvino_names

        names = openvino_names(ir, keep_float)
    # a TTA graph's averaging stays float (nin_edge/tta.py); OpenVINO keeps the ONNX node names as friendly names
    from .tta import FLOAT_SCOPE

    tail = [op.get_friendly_name() for op in ir.get_ops() if op.get_friendly_name().startswith(FLOAT_SCOPE)]
    if names or tail:
        ignored = nncf.IgnoredScope(names=names, patterns=[f"^{re.escape(FLOAT_SCOPE)}"] if tail else [])
    with _quiet():
        q = nncf.quantize(ir, cs.nncf_dataset(), preset=nncf.QuantizationPreset.PERFORMANCE,
                          subset_size=cs.num_batches, ignored_scope=ignored, advanced_parameters=adv)
    return q, {"tool": "nncf.quantize", "preset": "performance (symmetric int8)",
               "activation_ranges": "min-max" if method == CalibMethod.minmax else "NNCF default estimators",
               "fast_bias_correction": True, "images": len(cs), "keep_float": list(keep_float),
               **({"tta_nodes_in_float": len(tail)} if tail else {})}


def trt_form_violations(path: Path) -> list[str]:
    """What in a Q/DQ ONNX breaks TensorRT's explicit-quantization form (empty = conforms): int8 zero points
    that are all 0, per-channel weight scales on axis 0 (one per output channel), per-tensor activations."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path))
    init = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    consumers: dict[str, list] = {}
    for n in m.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    bad = []
    qdq = [n for n in m.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    if not qdq:
        return [f"{path.name}: no QuantizeLinear/DequantizeLinear nodes"]
    for n in qdq:
        zp = init.get(n.input[2]) if len(n.input) > 2 and n.input[2] else None
        scale = init.get(n.input[1])
        if zp is None or zp.dtype != "int8" or zp.any():
            bad.append(f"{n.name}: zero point {None if zp is None else (zp.dtype, zp.ravel()[:3])} is not int8 0")
        axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
        if n.input[0] in init:  # a weight
            w = init[n.input[0]]
            if scale is None or scale.shape != (w.shape[0],) or axis != 0:
                bad.append(f"{n.name}: weight scale shape {None if scale is None else scale.shape}, axis {axis}: "
                           f"expected ({w.shape[0]},) on axis 0")
        elif scale is None or scale.size != 1:
            bad.append(f"{n.name}: activation scale is not per-tensor")
    return bad
