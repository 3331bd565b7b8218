"""Accuracy-aware INT8: which layer costs accuracy (`nin-edge diagnose`), and the `--max-drop` fallback.

    d = diagnose(DiagnoseOptions(bundle="bundle"))          # ranked per-layer sensitivity of model.int8.onnx
    ac = accuracy_control(fp32, ranges, "entropy", cs, 0.3, "bundled:val", workdir)   # used by export

Per quantized layer (Conv/ConvTranspose/Gemm/MatMul node of model.int8.onnx):
  * ``sqnr_db`` — SQNR of the layer's output in the INT8 model against the same node's output in the fp32
    model, both run side by side on calibration images (intermediate outputs exposed as extra graph outputs,
    INT8 and fp32 tensors matched by node name). Accumulates every upstream error too.
  * ``local_sqnr_db`` — the error the layer adds by itself: the fp32 model's input activation goes through
    this layer's own activation Q/DQ, weights through its weight Q/DQ, and the layer's output is compared with
    fp32. Computed for the bundle's artifact and for each calibration method (minmax/entropy/percentile, all
    calibrated on the same images), which names the method that suits the layer best.
  * ``delta_top1`` — top-1 gained when ONLY this layer is left in float: the model is re-quantized with that
    node excluded, reusing the activation ranges recovered from model.int8.onnx's own Q/DQ scales (so no
    re-calibration; re-quantizing with no node excluded reproduces the artifact, checked every run), and
    evaluated on held-out data (default bundled:val) that may not overlap the calibration images.

`accuracy_control` is the greedy search behind `nin-edge export --int8 --max-drop D`: rank layers by the
accuracy of "only this layer in float", return them to float in that order until every INT8 artifact is
within D points of fp32 on the held-out set, then drop any kept layer that is no longer needed.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from .errors import NinEdgeError

WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
METHODS = ("minmax", "entropy", "percentile")
SQNR_CAP_DB = 200.0  # identical tensors: reported as this cap (JSON has no infinity)
# Calibration images for the SQNRs and the method comparison: an evenly spaced subset of the bundle's set (keeps
# the class balance) bounds the time; the ranges compared per method are all computed on this same subset.
DEFAULT_CALIB_IMAGES = 300


# --------------------------------------------------------------------------- graph helpers
def _load(path: Path):
    import onnx

    return onnx.load(str(path))


def weighted_nodes(model) -> list:
    return [n for n in model.graph.node if n.op_type in WEIGHTED_OPS]


def quantized_layers(int8_model) -> list[str]:
    """Weighted nodes that read at least one DequantizeLinear output (i.e. are quantized), in graph order."""
    producers = {o: n for n in int8_model.graph.node for o in n.output}
    return [n.name for n in weighted_nodes(int8_model)
            if any(i in producers and producers[i].op_type == "DequantizeLinear" for i in n.input)]


def float_inputs(model, node_name: str) -> bool:
    """True when no input of `node_name` (activations, weights, bias) comes out of a DequantizeLinear."""
    producers = {o: n for n in model.graph.node for o in n.output}
    node = next((n for n in model.graph.node if n.name == node_name), None)
    if node is None:
        raise NinEdgeError(f"node '{node_name}' not found")
    return not any(i in producers and producers[i].op_type == "DequantizeLinear" for i in node.input)


def _session(model, threads: int | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    src = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model)
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def _with_outputs(model, names: Iterable[str]):
    """A copy of `model` that also outputs the named intermediate tensors (float, shape left to ORT)."""
    from onnx import TensorProto, helper

    m = copy.deepcopy(model)
    have = {o.name for o in m.graph.output}
    for n in dict.fromkeys(names):
        if n not in have:
            m.graph.output.append(helper.make_tensor_value_info(n, TensorProto.FLOAT, None))
    return m


class _Sqnr:
    """Running signal and noise power per key; SQNR = 10·log10(Σ ref² / Σ (ref − test)²)."""

    def __init__(self):
        self.sig: dict[str, float] = {}
        self.noise: dict[str, float] = {}

    def add(self, key: str, ref: np.ndarray, test: np.ndarray) -> None:
        r = ref.astype(np.float64)
        self.sig[key] = self.sig.get(key, 0.0) + float(np.square(r).sum())
        self.noise[key] = self.noise.get(key, 0.0) + float(np.square(r - test.astype(np.float64)).sum())

    def db(self, key: str) -> float:
        s, n = self.sig.get(key, 0.0), self.noise.get(key, 0.0)
        if n <= 0.0:
            return SQNR_CAP_DB
        if s <= 0.0:
            return -SQNR_CAP_DB
        return round(min(SQNR_CAP_DB, 10.0 * math.log10(s / n)), 2)


def cumulative_sqnr(fp32_model, int8_model, layers: list[str], batches: Iterable[np.ndarray],
                    threads: int | None = None) -> dict[str, float]:
    """SQNR (dB) of each layer's output in the INT8 model vs the same-named node's output in fp32."""
    f_nodes = {n.name: n for n in fp32_model.graph.node}
    q_nodes = {n.name: n for n in int8_model.graph.node}
    pairs = {}
    for name in layers:
        if name in f_nodes and name in q_nodes:
            # Compare node outputs, not tensor names: ORT folds a ReLU into the preceding Conv (the Conv then
            # writes a tensor named after the ReLU, holding pre-ReLU values); the node's own output is the
            # same quantity in both graphs.
            pairs[name] = (f_nodes[name].output[0], q_nodes[name].output[0])
    fs = _session(_with_outputs(fp32_model, [f for f, _ in pairs.values()]), threads)
    qs = _session(_with_outputs(int8_model, [q for _, q in pairs.values()]), threads)
    f_in, q_in = fs.get_inputs()[0].name, qs.get_inputs()[0].name
    f_names = [o.name for o in fs.get_outputs()]
    q_names = [o.name for o in qs.get_outputs()]
    acc = _Sqnr()
    for x in batches:
        fo = dict(zip(f_names, fs.run(None, {f_in: x})))
        qo = dict(zip(q_names, qs.run(None, {q_in: x})))
        for name, (f, q) in pairs.items():
            acc.add(name, fo[f], qo[q])
    return {name: acc.db(name) for name in pairs}


def _probe_model(fp32_model, int8_model, layers: list[str]):
    """The fp32 model plus, for each layer, a copy of its INT8 version fed with the fp32 activations:
    probe/<layer> = layer(DQ(Q(x_fp32)), DQ(W_q), ...) with the INT8 model's own scales and zero points.
    Returns (model, {layer: (fp32 output, probe output)}); layers whose inputs cannot be matched are left out."""
    import onnx
    from onnx import helper

    probe = copy.deepcopy(fp32_model)
    f_nodes = {n.name: n for n in fp32_model.graph.node}
    f_tensors = {i.name for i in fp32_model.graph.input} | {o for n in fp32_model.graph.node for o in n.output}
    q_init = {i.name: i for i in int8_model.graph.initializer}
    producers = {o: n for n in int8_model.graph.node for o in n.output}
    copied: set[str] = set()

    def init(name: str) -> str:
        new = f"probe::{name}"
        if name not in copied:
            t = onnx.TensorProto()
            t.CopyFrom(q_init[name])
            t.name = new
            probe.graph.initializer.append(t)
            copied.add(name)
        return new

    def clone(node, inputs, output, tag):
        n = helper.make_node(node.op_type, inputs, [output], name=f"probe/{tag}", domain=node.domain or None)
        n.attribute.extend(node.attribute)
        probe.graph.node.append(n)

    pairs = {}
    for name in layers:
        q_node = next((n for n in int8_model.graph.node if n.name == name), None)
        if q_node is None or name not in f_nodes:
            continue
        new_inputs, ok = [], True
        for k, inp in enumerate(q_node.input):
            p = producers.get(inp)
            tag = f"{name}/in{k}"
            if not inp:
                new_inputs.append("")
            elif p is not None and p.op_type == "DequantizeLinear":
                src = p.input[0]
                dq_in = [init(i) if i else "" for i in p.input[1:]]
                if src in q_init:  # a quantized initializer (weight or bias)
                    clone(p, [init(src), *dq_in], tag, tag + "/dq")
                elif ((q := producers.get(src)) is not None and q.op_type == "QuantizeLinear"
                      and q.input[0] in f_tensors):
                    clone(q, [q.input[0], *[init(i) if i else "" for i in q.input[1:]]], tag + "/q", tag + "/q")
                    clone(p, [tag + "/q", *dq_in], tag, tag + "/dq")
                else:
                    ok = False
                    break
                new_inputs.append(tag)
            elif inp in q_init:
                new_inputs.append(init(inp))
            elif inp in f_tensors:
                new_inputs.append(inp)
            else:
                ok = False
                break
        if not ok:
            continue
        out = f"probe/{name}/out"
        clone(q_node, new_inputs, out, name)
        pairs[name] = (f_nodes[name].output[0], out)
    del probe.opset_import[:]
    probe.opset_import.extend(int8_model.opset_import)
    return _with_outputs(probe, [t for pair in pairs.values() for t in pair]), pairs


def local_sqnr(fp32_model, int8_model, layers: list[str], batches: Iterable[np.ndarray],
               threads: int | None = None) -> dict[str, float | None]:
    """SQNR (dB) of each layer's output when only that layer is quantized (fp32 inputs, its own Q/DQ)."""
    probe, pairs = _probe_model(fp32_model, int8_model, layers)
    s = _session(probe, threads)
    name_in = s.get_inputs()[0].name
    outs = [o.name for o in s.get_outputs()]
    acc = _Sqnr()
    for x in batches:
        got = dict(zip(outs, s.run(None, {name_in: x})))
        for name, (f, p) in pairs.items():
            acc.add(name, got[f], got[p])
    return {name: (acc.db(name) if name in pairs else None) for name in layers}


# --------------------------------------------------------------------------- calibration ranges
def ranges_from_qdq(int8_model, fp32_model, out: Path, symmetric: bool, method: str) -> Path:
    """The activation ranges a Q/DQ model was built from, recovered from its QuantizeLinear scales and zero
    points, as an ONNX Runtime calibration cache: rmin = (qmin − zp)·s, rmax = (qmax − zp)·s. ORT turns such a
    range back into the same scale and zero point, so re-quantizing reproduces the model (checked by
    `diagnose`, which reports `reproduces_artifact`)."""
    from onnx import numpy_helper
    from onnxruntime.quantization.calibrate import TensorData, TensorsData, save_tensors_data

    from .quantize import _ort_method

    init = {i.name: numpy_helper.to_array(i) for i in int8_model.graph.initializer}
    f_tensors = {i.name for i in fp32_model.graph.input} | {o for n in fp32_model.graph.node for o in n.output}
    consumers = {i: n for n in int8_model.graph.node for i in n.input}
    data = {}
    for n in int8_model.graph.node:
        if n.op_type != "QuantizeLinear" or n.input[0] in init:
            continue
        key = n.input[0]
        if key not in f_tensors:  # a graph output: ORT renamed the tensor before its Q ("logits_QuantizeLinear_Input")
            dq = consumers.get(n.output[0])
            key = dq.output[0] if dq is not None and dq.output[0] in f_tensors else None
        if key is None:
            continue
        scale = init[n.input[1]].ravel()[0]
        zp = init[n.input[2]] if len(n.input) > 2 and n.input[2] else np.zeros(1, np.uint8)
        lo, hi = _range_for(np.float32(scale), zp.ravel()[0], symmetric)
        data[key] = TensorData(lowest=np.array([lo], np.float32), highest=np.array([hi], np.float32))
    # ORT folds a ReLU into the Conv before it only if the ReLU's input has a range too; its value is not used
    # then (the folded output takes the ReLU's range), so give it the ReLU's.
    for n in fp32_model.graph.node:
        if n.op_type in ("Relu", "Clip") and n.output[0] in data and n.input[0] not in data:
            data[n.input[0]] = data[n.output[0]]
    out.parent.mkdir(parents=True, exist_ok=True)
    # tagged with the artifact's method: ORT refuses a cache whose method differs from the one it is given
    save_tensors_data(TensorsData(_ort_method(method), data), out)
    return out


def _range_for(scale: np.float32, zp, symmetric: bool) -> tuple[np.float32, np.float32]:
    """A float32 (rmin, rmax) that ONNX Runtime's compute_scale_zp maps to exactly (scale, zp): the analytic
    range, nudged by a few ulps where float32 rounding of rmin/rmax would change the scale's last bit."""
    from onnx import TensorProto
    from onnxruntime.quantization.quant_utils import compute_scale_zp, get_qmin_qmax_for_qType

    qtype = {np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.int8): TensorProto.INT8,
             np.dtype(np.uint16): TensorProto.UINT16, np.dtype(np.int16): TensorProto.INT16}[np.asarray(zp).dtype]
    qmin, qmax = get_qmin_qmax_for_qType(qtype, symmetric=symmetric)
    s, z = np.float64(scale), float(zp)
    if symmetric:
        lo, hi = np.float32(-(float(qmax) - float(qmin)) / 2 * s), np.float32((float(qmax) - float(qmin)) / 2 * s)
    else:
        lo, hi = np.float32((float(qmin) - z) * s), np.float32((float(qmax) - z) * s)
    for _ in range(16):
        got_zp, got_s = compute_scale_zp(np.array(lo), np.array(hi), qmin, qmax, symmetric)
        if np.float32(got_s) == scale and int(got_zp) == int(zp):
            break
        step = -np.inf if np.float32(got_s) > scale else np.inf
        hi = np.nextafter(hi, np.float32(step))
        if symmetric:
            lo = -hi
    return lo, hi


def same_quantization(a, b) -> list[str]:
    """Differences between two Q/DQ models' quantization parameters and quantized weights (empty: identical)."""
    from onnx import numpy_helper

    def params(m):
        init = {i.name: i for i in m.graph.initializer}
        out = {}
        for n in m.graph.node:
            if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
                for i in n.input:
                    if i in init:
                        out[i] = numpy_helper.to_array(init[i])
        return out

    pa, pb = params(a), params(b)
    diffs = [f"{k}: only in one model" for k in sorted(set(pa) ^ set(pb))]
    for k in sorted(set(pa) & set(pb)):
        if pa[k].shape != pb[k].shape or not np.array_equal(pa[k], pb[k]):
            diffs.append(f"{k}: differs")
    return diffs


def _activation_scales(model) -> list[tuple[str, float]]:
    from onnx import numpy_helper

    init = {i.name: i for i in model.graph.initializer}
    return [(n.input[0], float(numpy_helper.to_array(init[n.input[1]]).ravel()[0]))
            for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in init]


# --------------------------------------------------------------------------- data
def check_disjoint(ds, calib_hashes: Iterable[str], calib_ids: Iterable[str], calib_source: str | None,
                   size: int, what: str) -> None:
    """Refuse an evaluation set that shares images with the calibration set: same pixels at the model's input
    size (sha256 of the decoded RGB pixels, as in the calibration manifest), or, for the same source, the
    same image id. Measuring the accuracy of choices on calibration images flatters them."""
    from .calibration import pixel_sha256
    from .preprocess import fit

    calib_hashes = set(calib_hashes)
    for i, im in enumerate(ds.images):
        if im.shape[:2] != (size, size):
            im = fit(im, size)
        if pixel_sha256(im) in calib_hashes:
            name = ds.ids[i] if ds.ids else f"image {i}"
            raise NinEdgeError(f"{what} {ds.source}: '{name}' is also a calibration image; choices measured on "
                               "calibration images look better than they are — use held-out images (e.g. bundled:val)")
    if calib_source is not None and ds.source == calib_source and ds.ids:
        both = set(ds.ids) & set(calib_ids)
        if both:
            raise NinEdgeError(f"{what} {ds.source}: '{sorted(both)[0]}' is also a calibration image "
                               f"({len(both)} shared); use held-out images (e.g. bundled:val)")


def _eval_set(data: str, split: str, classes, pp, calib_hashes, calib_ids, calib_source, what: str):
    from .data import check_classes, load_dataset
    from .preprocess import preprocess

    ds = load_dataset(data, split)
    check_classes(ds, tuple(classes))
    check_disjoint(ds, calib_hashes, calib_ids, calib_source, pp.size, what)
    return preprocess(ds.images, pp), ds.labels, len(ds)


def calibration_set_from_manifest(manifest: dict, pp, batch: int | None = None):
    """Rebuild the bundle's calibration images from its manifest and check they are the same pixels."""
    from .calibration import CalibrationSpec, Sampling, _from_spec, build_calibration_set, pixel_sha256

    src = manifest.get("source")
    try:
        if manifest.get("spec") and Path(manifest["spec"]).exists():
            cs = build_calibration_set(manifest["spec"], pp, batch=batch)
        elif manifest.get("sampling") == "all":  # a folder of the user's images
            cs = build_calibration_set(src, pp, batch=batch)
        else:
            spec = CalibrationSpec(source=src, split=manifest["split"], size=int(manifest["requested"]),
                                   sampling=Sampling(manifest["sampling"]), seed=int(manifest["seed"]))
            imgs, ids, _ = _from_spec(spec, f"calibration manifest ({src})", pp)
            from .calibration import CalibrationSet

            cs = CalibrationSet(imgs, ids, tuple(pixel_sha256(im) for im in imgs), pp, batch or spec.batch)
    except NinEdgeError as e:
        raise NinEdgeError(f"the bundle's calibration images ({src}) cannot be rebuilt: {e}") from None
    except (KeyError, ValueError, TypeError) as e:
        raise NinEdgeError(f"bundle.json: calibration manifest incomplete ({type(e).__name__}: {e})") from None
    want = [im["sha256"] for im in manifest.get("images", [])]
    if list(cs.hashes) != want:
        raise NinEdgeError(f"the calibration images rebuilt from {src} differ from the bundle's calibration "
                           "manifest (source changed since export?)")
    return cs


def _subset(cs, n: int | None):
    from .calibration import CalibrationSet

    if n is None or n >= len(cs):
        return cs
    # every k-th image keeps the stratification of the set
    idx = np.linspace(0, len(cs) - 1, n).round().astype(int)
    return CalibrationSet(cs.images[idx], tuple(cs.ids[i] for i in idx), tuple(cs.hashes[i] for i in idx),
                          cs.preprocess, cs.batch, cs.provenance)


def _top1(path: Path, x: np.ndarray, labels: np.ndarray, threads: int | None) -> float:
    from .export import ort_logits

    return round(100.0 * float((ort_logits(path, x, threads).argmax(1) == labels).mean()), 2)


# --------------------------------------------------------------------------- diagnose
_FORM_KEYS = {"form", "activations", "weights", "per_channel_weights", "activation_symmetric", "weight_symmetric",
              "op_types", "why", "keep_float", "nodes_excluded", "weight_bits", "reduce_range"}


def form_from_record(info: dict, where: str):
    """The Q/DQ form an artifact was built with, from its bundle.json record (`QdqForm.describe()`), so a
    re-quantization matches the artifact even if this version's default forms have changed since."""
    from .quantize import FORMS, QdqForm

    try:
        ops = info["op_types"]
        return QdqForm(info["form"], info["activations"], info["weights"],
                       per_channel=bool(info["per_channel_weights"]),
                       activation_symmetric=bool(info["activation_symmetric"]),
                       op_types=tuple(ops) if isinstance(ops, list) else (),
                       reduce_range=bool(info.get("reduce_range", False)),  # absent: 8-bit (before it existed)
                       extra=tuple((k, v) for k, v in info.items() if k not in _FORM_KEYS))
    except (KeyError, TypeError):
        name = info.get("form", "ort-cpu") if isinstance(info, dict) else None
        if name in FORMS:
            return FORMS[name]
        raise NinEdgeError(f"{where}: no usable quantization form recorded ({name!r})") from None


@dataclass(frozen=True)
class DiagnoseOptions:
    bundle: str
    data: str = "bundled:val"          # held-out images for "top-1 with only this layer in float"
    split: str = "test"                # split of --data for CIFAR/folder sources
    calib_images: int | None = DEFAULT_CALIB_IMAGES  # calibration images for the SQNRs (None: all)
    methods: tuple[str, ...] = METHODS
    threads: int | None = None

    def validate(self) -> None:
        if self.calib_images is not None and self.calib_images < 1:
            raise NinEdgeError(f"--calib-images {self.calib_images}: must be at least 1")
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise NinEdgeError(f"--methods: {'unknown method ' + repr(bad[0]) if bad else 'none given'} "
                               f"(choose from {', '.join(METHODS)})")
        if self.threads is not None and self.threads < 1:
            raise NinEdgeError(f"--threads {self.threads}: must be at least 1")


@dataclass(frozen=True)
class LayerSensitivity:
    node: str
    op_type: str
    sqnr_db: float                     # this layer's output in the INT8 model vs fp32 (upstream error included)
    local_sqnr_db: float | None        # the error this layer adds alone (fp32 inputs, its own Q/DQ)
    top1_float: float                  # top-1 (%) with only this layer in float
    delta_top1: float                  # top1_float − INT8 top-1, in points (positive: the layer costs accuracy)
    method_local_sqnr_db: dict[str, float | None] = field(default_factory=dict)
    best_method: str | None = None     # the calibration method with the best local SQNR for this layer


@dataclass(frozen=True)
class Diagnosis:
    bundle: str
    artifact: str
    form: str
    method: str
    data: str
    images: int
    calib_images: int
    fp32_top1: float
    int8_top1: float
    reproduces_artifact: bool          # re-quantizing from the recovered ranges gives model.int8.onnx exactly
    layers: tuple[LayerSensitivity, ...]  # most sensitive first
    seconds: float
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        d = asdict(self)
        d["schema"] = "nin-edge-diagnose/1"
        d["definitions"] = {
            "sqnr_db": "10·log10(Σ fp32² / Σ (int8 − fp32)²) of the layer's output, INT8 model vs fp32 model run "
                       "side by side on calibration images (includes upstream error)",
            "local_sqnr_db": "the same with fp32 inputs: only this layer's own Q/DQ (activations and weights)",
            "top1_float": "top-1 on the evaluation data with only this layer left in float (re-quantized)",
            "delta_top1": "top1_float − int8_top1, points",
            "best_method": "calibration method with the highest local SQNR for this layer (same images for all)",
        }
        return d


def _rank_key(s: LayerSensitivity):
    return (-s.delta_top1, s.local_sqnr_db if s.local_sqnr_db is not None else SQNR_CAP_DB, s.sqnr_db)


def diagnose(opts: DiagnoseOptions, progress: Callable[[str], None] | None = None) -> Diagnosis:
    import tempfile

    from .bundle import Bundle
    from .quantize import calibrate_onnx, quantize_onnx

    say = progress or (lambda _m: None)
    t0 = time.perf_counter()
    opts.validate()
    b = Bundle.load(opts.bundle)
    rel = "model.int8.onnx"
    int8_path = b.root / rel
    if not int8_path.exists():
        raise NinEdgeError(f"{int8_path}: the bundle has no INT8 model to diagnose "
                           f"(make one with: nin-edge export --int8 --out {b.root} --force)")
    fp32_path = b.artifact("onnxruntime", "fp32")
    form = form_from_record(b.artifacts.get(rel, {}).get("quantization", {}), f"{b.root}/bundle.json ({rel})")
    manifest = b.meta.get("calibration") or {}
    method = manifest.get("method") or "entropy"
    pp = b.preprocess

    images = manifest.get("images", [])
    x, labels, n_eval = _eval_set(opts.data, opts.split, b.classes, pp, [i["sha256"] for i in images],
                                  [i["id"] for i in images], manifest.get("source"), "--data")
    from .data import trained_on

    if why := trained_on((b.meta.get("weights") or {}).get("training"), opts.data):
        raise NinEdgeError(f"--data {opts.data}: {why} ({b.root}/bundle.json); measure on images they did not "
                           "train on")
    say(f"rebuilding the calibration set ({manifest.get('count', '?')} images of {manifest.get('source')})")
    cs = calibration_set_from_manifest(manifest, pp, batch=manifest.get("batch"))
    sub = _subset(cs, opts.calib_images)

    fp32_model, int8_model = _load(fp32_path), _load(int8_path)
    layers = quantized_layers(int8_model)
    if not layers:
        raise NinEdgeError(f"{int8_path}: no quantized Conv/Gemm/MatMul node found")
    notes = []
    if rel in b.verify():
        notes.append(f"{rel} no longer matches the sha256 recorded in bundle.json (modified since export)")
    with tempfile.TemporaryDirectory(prefix="nin-edge-diagnose-") as work:
        work = Path(work)
        say(f"SQNR per layer on {len(sub)} calibration images")
        cum = cumulative_sqnr(fp32_model, int8_model, layers, sub.batches(), opts.threads)
        loc = local_sqnr(fp32_model, int8_model, layers, sub.batches(), opts.threads)

        by_method: dict[str, dict[str, float | None]] = {}
        scales: dict[str, list] = {}
        for m in opts.methods:
            say(f"calibration method {m} on {len(sub)} images")
            r = calibrate_onnx(fp32_path, sub, m, work / m)
            q = work / f"{m}.onnx"
            quantize_onnx(fp32_path, q, form, r, m)
            qm = _load(q)
            by_method[m] = local_sqnr(fp32_model, qm, layers, sub.batches(), opts.threads)
            scales[m] = _activation_scales(qm)
        for i, m in enumerate(opts.methods):
            same = [o for o in opts.methods[:i] if scales[o] == scales[m]]
            if same:
                notes.append(f"calibration method {m} gave exactly the same activation scales as {same[0]} "
                             "(check its calibrator settings in quantize.CALIB_OPTIONS)")

        ranges = ranges_from_qdq(int8_model, fp32_model, work / "recovered.json", form.activation_symmetric, method)
        full = work / "requantized.onnx"
        quantize_onnx(fp32_path, full, form, ranges, method)
        diffs = same_quantization(_load(full), int8_model)
        if diffs:
            notes.append(f"re-quantizing from the recovered ranges does not reproduce {rel} exactly "
                         f"({len(diffs)} parameters differ, first: {diffs[0]}); top-1 deltas are against the "
                         "re-quantized model")
        say(f"top-1 on {n_eval} images of {opts.data}: fp32, INT8, and INT8 with each of {len(layers)} layers in float")
        fp32_top1 = _top1(fp32_path, x, labels, opts.threads)
        int8_top1 = _top1(int8_path, x, labels, opts.threads)
        base = int8_top1 if not diffs else _top1(full, x, labels, opts.threads)
        out = []
        for name in layers:
            p = work / "one-float.onnx"
            quantize_onnx(fp32_path, p, form, ranges, method, (name,))
            t1 = _top1(p, x, labels, opts.threads)
            ms = {m: by_method[m].get(name) for m in opts.methods}
            valid = {m: v for m, v in ms.items() if v is not None}
            node = next(n for n in int8_model.graph.node if n.name == name)
            out.append(LayerSensitivity(
                node=name, op_type=node.op_type, sqnr_db=cum.get(name, float("nan")), local_sqnr_db=loc.get(name),
                top1_float=t1, delta_top1=round(t1 - base, 2), method_local_sqnr_db=ms,
                best_method=max(valid, key=valid.get) if valid else None))
    out.sort(key=_rank_key)
    return Diagnosis(bundle=str(b.root), artifact=rel, form=form.name, method=method, data=opts.data, images=n_eval,
                     calib_images=len(sub), fp32_top1=fp32_top1, int8_top1=int8_top1, reproduces_artifact=not diffs,
                     layers=tuple(out), seconds=round(time.perf_counter() - t0, 2), notes=tuple(notes))


def plot_diagnosis(d: Diagnosis, path: Path) -> None:
    """Two bar charts, layers in rank order: top-1 gained when left in float, and SQNR (cumulative, local)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [s.node for s in d.layers]
    y = np.arange(len(names))
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 0.45 * len(names) + 1.8), sharey=True)
    a.barh(y, [s.delta_top1 for s in d.layers], color=["#c0392b" if s.delta_top1 > 0 else "#7f8c8d" for s in d.layers])
    a.set_yticks(y, names, fontsize=8)
    a.invert_yaxis()
    a.axvline(0, color="black", lw=0.8)
    a.set_xlabel("top-1 gained with only this layer in float (points)")
    a.set_title(f"{d.data}: fp32 {d.fp32_top1:.2f}%, INT8 {d.int8_top1:.2f}%", fontsize=9)
    h = 0.38
    b.barh(y - h / 2, [s.sqnr_db for s in d.layers], h, label="in the INT8 model (cumulative)")
    b.barh(y + h / 2, [s.local_sqnr_db if s.local_sqnr_db is not None else 0 for s in d.layers], h,
           label="this layer alone (local)")
    b.set_xlabel("output SQNR vs fp32 (dB), higher is better")
    b.set_title(f"{d.calib_images} calibration images, {d.method} ranges, {d.form} form", fontsize=9)
    b.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.09), ncol=2, frameon=False)
    fig.suptitle(f"INT8 sensitivity per layer — {d.bundle}/{d.artifact}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


# --------------------------------------------------------------------------- OpenVINO names and checks
OV_WEIGHTED = ("Convolution", "GroupConvolution", "ConvolutionBackpropData", "MatMul")


def openvino_names(ov_model, onnx_nodes: Iterable[str]) -> list[str]:
    """OpenVINO op names (what NNCF's IgnoredScope takes) of the given ONNX weighted nodes in a model converted
    from that ONNX file. The ONNX frontend names the op after the ONNX node and splits a Conv with bias into
    Convolution '<name>/WithoutBiases' + Add '<name>'; the weighted op is found through the ONNX node's output
    tensor name, walking back through the bias Add/Multiply."""
    by_tensor = {}
    by_name = {}
    for op in ov_model.get_ops():
        by_name[op.get_friendly_name()] = op
        for o in op.outputs():
            for t in o.get_names():
                by_tensor[t] = op
    return [_ov_weighted(n, by_name, by_tensor) for n in onnx_nodes]


def _ov_weighted(onnx_name: str, by_name: dict, by_tensor: dict) -> str:
    start = [by_name.get(onnx_name), by_name.get(f"{onnx_name}/WithoutBiases")]
    for op in [o for o in start if o is not None]:
        for _ in range(3):
            if op.get_type_name() in OV_WEIGHTED:
                return op.get_friendly_name()
            ins = [i.get_source_output().get_node() for i in op.inputs()]
            nxt = [i for i in ins if i.get_type_name() not in ("Constant", "Convert")]
            if len(nxt) != 1:
                break
            op = nxt[0]
    raise NinEdgeError(f"keep-float node '{onnx_name}' has no weighted OpenVINO op in the converted model")


def ir_float_layers(ov_model) -> dict[str, bool]:
    """For every weighted op of an (NNCF-quantized) OpenVINO model: True if it runs in float — no FakeQuantize
    on its activation input and no FakeQuantize or int8/uint8 constant behind its weights."""

    def quantized_chain(out, depth=0) -> bool:
        node = out.get_node()
        t = node.get_type_name()
        if t == "FakeQuantize":
            return True
        if t == "Constant":
            return node.get_output_element_type(0).get_type_name() in ("i8", "u8", "i4", "u4")
        if depth > 4 or t not in ("Convert", "Subtract", "Multiply", "Reshape", "Transpose"):
            return False
        return any(quantized_chain(i.get_source_output(), depth + 1) for i in node.inputs())

    res = {}
    for op in ov_model.get_ops():
        if op.get_type_name() in OV_WEIGHTED:
            act = op.input(0).get_source_output().get_node().get_type_name() == "FakeQuantize"
            wq = quantized_chain(op.input(1).get_source_output())
            res[op.get_friendly_name()] = not act and not wq
    return res


# --------------------------------------------------------------------------- accuracy control (export --max-drop)
class Unreachable(NinEdgeError):
    pass


def greedy_keep_float(ranked: list[str], drop_of: Callable[[tuple[str, ...]], float], max_drop: float,
                      start: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Return layers to float in `ranked` order until drop_of(kept) ≤ max_drop, then remove every kept layer
    that is not needed, least sensitive first. `drop_of` results should be cached by the caller.

    (Pruning the layer with the most MACs first instead was tried on the sensitised NIN of
    benchmarks/accuracy_control.py: it kept 4 layers where this order keeps 3, so the fewest-layers rule wins.)"""
    keep = list(start)
    if drop_of(tuple(keep)) <= max_drop:
        return tuple(keep)
    for name in ranked:
        if name in keep:
            continue
        keep.append(name)
        if drop_of(tuple(keep)) <= max_drop:
            break
    else:
        raise Unreachable(f"--max-drop {max_drop:g}: not reachable — with every one of the {len(keep)} quantized "
                          f"layers in float the INT8 top-1 drop is still {drop_of(tuple(keep)):.2f} points "
                          "(what remains quantized: model input and pooling/output Q/DQ); no bundle written")
    # The last layer added is needed given the others; each earlier one is tried without.
    for name in reversed(keep[:-1]):
        trial = tuple(k for k in keep if k != name)
        if name not in start and drop_of(trial) <= max_drop:
            keep = list(trial)
    return tuple(keep)


@dataclass(frozen=True)
class AccuracyControl:
    max_drop: float
    data: str
    images: int
    fp32_top1: float
    int8_top1: dict[str, float]        # artifact → top-1 with every layer quantized
    final_top1: dict[str, float]       # artifact → top-1 with keep_float in float
    keep_float: tuple[str, ...]
    ranking: tuple[dict, ...]          # {node, top1_float}: the order layers are returned to float
    trials: tuple[dict, ...]           # every (keep_float → top-1 per artifact) evaluated
    seconds: float
    latency_ms_batch1: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["final_drop"] = round(self.fp32_top1 - min(self.final_top1.values()), 2) if self.final_top1 else None
        d["rule"] = ("greedy: layers ranked by top-1 with only that layer in float (ORT CPU form); returned to "
                     "float in that order until every INT8 artifact is within max_drop of fp32 on the data, "
                     "then each kept layer that is not needed is removed")
        return d


def _quick_latency(paths: dict[str, Path], x: np.ndarray, rounds: int = 7, iters: int = 30) -> dict[str, float]:
    """Batch-1 median latency (ms) per model, interleaved A B A B… so machine drift hits every model alike.
    A quick check recorded with the choice; `nin-edge bench` measures properly."""
    sess = {k: _session(p) for k, p in paths.items()}
    name = {k: s.get_inputs()[0].name for k, s in sess.items()}
    one = x[:1]
    times: dict[str, list[float]] = {k: [] for k in sess}
    for k, s in sess.items():
        for _ in range(5):
            s.run(None, {name[k]: one})
    for _ in range(rounds):
        for k, s in sess.items():
            for _ in range(iters):
                t = time.perf_counter_ns()
                s.run(None, {name[k]: one})
                times[k].append((time.perf_counter_ns() - t) / 1e6)
    return {k: round(float(np.median(v)), 4) for k, v in times.items()}


def accuracy_control(fp32: Path, ranges: Path, method: str, cs, max_drop: float, data: str, classes,
                     workdir: Path, split: str = "test", openvino: bool = False, start: tuple[str, ...] = (),
                     threads: int | None = None, say: Callable[[str], None] | None = None,
                     ort_form: str = "ort-cpu") -> AccuracyControl:
    """The `--max-drop` search: the fewest layers to keep in float so that every INT8 artifact (ORT CPU form,
    TensorRT form, and the NNCF OpenVINO IR when `openvino`) is within `max_drop` points of fp32 top-1 on
    `data` (held out: may not overlap the calibration set `cs`). Raises `Unreachable` if even every layer in
    float is not enough."""
    from .quantize import FORMS, quantize_onnx

    say = say or (lambda _m: None)
    t0 = time.perf_counter()
    if not 0 <= max_drop < float("inf"):
        raise NinEdgeError(f"--max-drop {max_drop:g}: must be a non-negative number of top-1 points")
    x, labels, n = _eval_set(data, split, classes, cs.preprocess, cs.hashes, cs.ids,
                             dict(cs.provenance).get("source"), "--max-drop-data")
    fp32_model = _load(fp32)
    layers = [node.name for node in weighted_nodes(fp32_model)]
    fp32_top1 = _top1(fp32, x, labels, threads)
    forms = {"model.int8.onnx": FORMS[ort_form], "model.int8.trt.onnx": FORMS["tensorrt"]}
    OV = "openvino/model.int8.xml"
    workdir.mkdir(parents=True, exist_ok=True)
    top1_cache: dict[tuple[frozenset, str], float] = {}
    trials: list[dict] = []
    ir = None

    def top1(keep: tuple[str, ...], rel: str) -> float:
        key = (frozenset(keep), rel)
        if key not in top1_cache:
            if rel == OV:
                nonlocal ir
                from .build.openvino import convert_onnx
                from .quantize import quantize_openvino

                ir = ir if ir is not None else convert_onnx(fp32)
                q, _ = quantize_openvino(ir, cs, method, keep)
                top1_cache[key] = _ov_top1(q, x, labels, threads)
            else:
                p = workdir / f"trial-{rel}"
                quantize_onnx(fp32, p, forms[rel], ranges, method, keep)
                top1_cache[key] = _top1(p, x, labels, threads)
        return top1_cache[key]

    def drop_of(keep: tuple[str, ...], with_ov: bool) -> float:
        t = {rel: top1(keep, rel) for rel in [*forms, *([OV] if with_ov else [])]}
        d = round(fp32_top1 - min(t.values()), 2)
        rec = {"keep_float": list(keep), "top1": t, "drop": d}
        if rec not in trials:
            trials.append(rec)
            detail = ", ".join(f"{k} {v:.2f}%" for k, v in t.items())
            say(f"  {len(keep)} layer(s) in float: drop {d:.2f} ({detail})")
        return d

    say(f"fp32 top-1 {fp32_top1:.2f}% on {n} images of {data}")
    keep = tuple(start)
    ranking: list[dict] = []
    if drop_of(keep, False) > max_drop or (openvino and drop_of(keep, True) > max_drop):
        # Sensitivity = top-1 of the ORT CPU form with only that layer in float (what `nin-edge diagnose` shows).
        for name in layers:
            if name not in start:
                ranking.append({"node": name, "top1_float": top1(keep + (name,), "model.int8.onnx")})
        ranking.sort(key=lambda r: -r["top1_float"])
        order = [r["node"] for r in ranking]
        say("sensitivity order: " + ", ".join(f"{r['node']} ({r['top1_float']:.2f}%)" for r in ranking))
        keep = greedy_keep_float(order, lambda k: drop_of(k, False), max_drop, keep)
        if openvino and drop_of(keep, True) > max_drop:
            # The IR is quantized by NNCF (its own ranges, bias correction): continue in the same order with the
            # IR in the criterion too, keeping what the ONNX forms needed.
            keep = greedy_keep_float(order, lambda k: drop_of(k, True), max_drop, keep)
    rels = [*forms, *([OV] if openvino else [])]
    int8_all = {rel: top1(tuple(start), rel) for rel in rels}
    final = {rel: top1(keep, rel) for rel in rels}
    lat = {}
    if keep != tuple(start):
        a, b = workdir / "lat-int8.onnx", workdir / "lat-mixed.onnx"
        quantize_onnx(fp32, a, FORMS[ort_form], ranges, method, tuple(start))
        quantize_onnx(fp32, b, FORMS[ort_form], ranges, method, keep)
        lat = _quick_latency({"fp32": fp32, "int8": a, "int8_mixed": b}, x)
    return AccuracyControl(max_drop=max_drop, data=data, images=n, fp32_top1=fp32_top1, int8_top1=int8_all,
                           final_top1=final, keep_float=keep, ranking=tuple(ranking), trials=tuple(trials),
                           seconds=round(time.perf_counter() - t0, 2), latency_ms_batch1=lat)


def _ov_top1(model, x: np.ndarray, labels: np.ndarray, threads: int | None) -> float:
    import openvino as ov

    cfg = {"INFERENCE_PRECISION_HINT": "f32"}
    if threads:
        cfg["INFERENCE_NUM_THREADS"] = threads
    compiled = ov.Core().compile_model(model, "CPU", cfg)
    req = compiled.create_infer_request()
    out = [np.asarray(req.infer({0: x[i:i + 250]})[compiled.output(0)]).copy() for i in range(0, len(x), 250)]
    return round(100.0 * float((np.concatenate(out).argmax(1) == labels).mean()), 2)


# --------------------------------------------------------------------------- a reproducible failure case
def sensitised_copy(model, pair: int = 3, channel: int = 0, factor: float = 50.0):
    """A copy of a zoo NIN computing the same function whose plain INT8 quantization fails (demos, tests).

    ReLU is positively homogeneous, so multiplying output channel `channel` of the `pair`-th conv (its
    BatchNorm's γ and β, or the conv's weight and bias without BatchNorm) by `factor` and the next conv's
    weights for that input channel by 1/factor leaves the network's output unchanged. But the activation
    between them now has one channel `factor`× larger than before: a per-tensor activation scale sized for
    it leaves the other channels a few int8 levels, and the shrunken weights round towards zero — the real
    failure mode of per-tensor quantization with an outlier channel. Only the pair's second conv needs float
    to fix it. `pair` counts conv→(BN)→ReLU→conv pairs with nothing else in between."""
    import torch
    from torch import nn

    m = copy.deepcopy(model).eval()
    mods = list(m.features)
    pairs = []
    for i, mod in enumerate(mods):
        if not isinstance(mod, nn.Conv2d):
            continue
        j = i + 1
        bn = mods[j] if j < len(mods) and isinstance(mods[j], nn.BatchNorm2d) else None
        j += bn is not None
        if j < len(mods) and isinstance(mods[j], nn.ReLU) and j + 1 < len(mods) and isinstance(mods[j + 1], nn.Conv2d):
            pairs.append((mod, bn, mods[j + 1]))
    if not 0 <= pair < len(pairs):
        raise NinEdgeError(f"pair {pair}: the model has {len(pairs)} conv→ReLU→conv pairs")
    if factor <= 0:
        raise NinEdgeError(f"factor {factor}: must be positive (ReLU commutes only with positive scaling)")
    first, bn, second = pairs[pair]
    with torch.no_grad():
        if bn is not None:
            bn.weight[channel] *= factor
            bn.bias[channel] *= factor
        else:
            first.weight[channel] *= factor
            if first.bias is not None:
                first.bias[channel] *= factor
        second.weight[:, channel] /= factor
    return m
