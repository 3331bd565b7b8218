"""Trained weights → one verified deployment bundle (`nin-edge export`).

Stages (each shown with its time): export (torch → ONNX, BatchNorm folded), parity (ONNX Runtime vs PyTorch
on real images), calibrate (one calibration set → activation ranges), quantize (two Q/DQ INT8 forms),
openvino (IR fp32/fp16 + NNCF INT8 IR), verify (top-1 of every artifact on the evaluation subset).
Everything is written by `BundleWriter` into a temporary sibling directory and renamed into place only
when complete, so a failed check, an exception or Ctrl-C leaves no partial bundle.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import numpy as np

from .bundle import LAYOUT, Bundle, BundleWriter, sha256_of
from .errors import NinEdgeError
from .quantize import FORMS, CalibMethod

OPSET_MIN, OPSET_MAX = 13, 20  # 13: per-channel QuantizeLinear (axis); 21+: ORT's static INT8 refuses it
PARITY_MIN_IMAGES = 256
PARITY_MAX_ABS = 1e-4
INPUT_NAME, OUTPUT_NAME = "input", "logits"
STAGES = ("export", "parity", "calibrate", "accuracy", "quantize", "openvino", "tensorrt", "verify")


class Format(str, Enum):
    onnx = "onnx"
    openvino = "openvino"
    tensorrt = "tensorrt"


class OrtCpu(str, Enum):
    """The CPUs model.int8.onnx is for (its Q/DQ form in nin_edge/quantize.py's FORMS)."""
    any = "any"    # 7-bit weights: exact on every x86 CPU (AVX2 included) and on ARM
    vnni = "vnni"  # 8-bit weights: CPUs with VNNI or ARM only; AVX2-only x86 saturates int16 sums


ORT_FORMS = {OrtCpu.any: "ort-cpu", OrtCpu.vnni: "ort-cpu-vnni"}


def _path(backend: str, precision: str) -> str:
    return LAYOUT[(backend, precision)][0]


@dataclass(frozen=True)
class ExportOptions:
    weights: str | None = None      # None = the shipped weights
    out: str = "bundle"
    int8: bool = False
    calib: str = "default"          # calibration spec name/path, or a folder of images
    # minmax: tied for the best top-1 / fp32 agreement on 5,000 held-out train images with every other method
    # and size, at 5 s of calibration vs 12 s (entropy) and 116 s (percentile) for 1,000 images; see RESULTS.md
    method: str = "minmax"
    formats: tuple[str, ...] = ("onnx", "openvino")
    opset: int = 17
    force: bool = False
    progress: bool = True
    eval_data: str = "bundled:eval"  # per-artifact top1_at_export, and the parity images
    keep_float: tuple[str, ...] = ()  # ONNX node names left in float in every INT8 artifact (issue 9's hook)
    max_drop: float | None = None     # issue 9: max INT8 top-1 drop (points); layers fall back to float (diagnose.py)
    max_drop_data: str = "bundled:val"  # held-out images the --max-drop choice is measured on (never calibration)
    threads: int | None = None        # ORT/OpenVINO threads for the checks (None: the libraries' default)
    ort_cpu: str = "any"              # the CPUs model.int8.onnx is for (OrtCpu): its weights' bits
    tta: str = "none"                 # test-time augmentation baked into model.onnx (nin_edge/tta.py): none|flip

    def validate(self) -> tuple[Format, ...]:
        if self.max_drop is not None:
            if not self.int8:
                raise NinEdgeError("--max-drop applies to INT8 exports (add --int8)")
            if not 0 <= self.max_drop < float("inf"):  # also rejects NaN
                raise NinEdgeError(f"--max-drop {self.max_drop:g}: must be a non-negative number of top-1 points")
        if not OPSET_MIN <= self.opset <= OPSET_MAX:
            raise NinEdgeError(f"--opset {self.opset}: must be between {OPSET_MIN} and {OPSET_MAX} "
                               "(ONNX Runtime's static INT8 quantization does not support opset 21+)")
        try:
            method = CalibMethod(self.method)
        except ValueError:
            raise NinEdgeError(f"--method {self.method!r}: choose one of {', '.join(m.value for m in CalibMethod)}") from None
        del method
        try:
            OrtCpu(self.ort_cpu)
        except ValueError:
            raise NinEdgeError(f"--ort-cpu {self.ort_cpu!r}: choose one of {', '.join(m.value for m in OrtCpu)}") from None
        from .tta import parse_tta

        parse_tta(self.tta)
        fmts = []
        names = self.formats.split(",") if isinstance(self.formats, str) else self.formats
        for f in names:
            try:
                fmts.append(Format(f.strip().lower()))
            except ValueError:
                raise NinEdgeError(f"--formats: unknown format {f!r} (choose from {', '.join(m.value for m in Format)})") from None
        if not fmts:
            raise NinEdgeError("--formats: give at least one of onnx, openvino, tensorrt")
        if self.keep_float and not self.int8:
            raise NinEdgeError("keep_float only applies to INT8 exports (add --int8)")
        if self.threads is not None and self.threads < 1:
            raise NinEdgeError(f"--threads {self.threads}: must be at least 1")
        # model.onnx is always written: every other artifact is built from it and checked against it.
        return tuple(dict.fromkeys([Format.onnx, *fmts]))


@dataclass(frozen=True)
class ExportResult:
    bundle: Bundle
    seconds: float
    stages: dict[str, float] = field(default_factory=dict)
    top1: dict[str, float] = field(default_factory=dict)        # artifact path → top-1 % on eval_data
    agreement: dict[str, float] = field(default_factory=dict)   # artifact path → % same top-1 as fp32


# --------------------------------------------------------------------------- progress
class _Stages:
    """Per-stage progress (rich, on stderr) and timing."""

    def __init__(self, show: bool):
        self.seconds: dict[str, float] = {}
        self._progress = None
        if show:
            from rich.console import Console
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._progress = Progress(SpinnerColumn(finished_text="[green]✓"), TextColumn("{task.description}"),
                                      TimeElapsedColumn(), console=Console(stderr=True), transient=False)

    def __enter__(self):
        if self._progress:
            self._progress.start()
        return self

    def __exit__(self, *exc):
        if self._progress:
            self._progress.stop()

    @contextlib.contextmanager
    def stage(self, name: str, what: str):
        task = self._progress.add_task(f"{name:<9} {what}", total=1) if self._progress else None
        t0 = time.perf_counter()
        try:
            yield
        except BaseException:
            if self._progress is not None:
                self._progress.update(task, description=f"[red]✗ {name:<9} {what} (failed)")
            raise
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
        if self._progress is not None:
            self._progress.update(task, completed=1)

    def note(self, text: str) -> None:
        if self._progress:
            self._progress.console.print(text)


# --------------------------------------------------------------------------- torch → ONNX
def export_onnx(model, path: Path, size: int, opset: int) -> dict:
    """torch → ONNX with the TorchScript exporter (`dynamo=False`): it writes the requested opset directly and
    one self-contained file. (torch 2.13's default dynamo exporter builds opset 18 and converts down, and
    puts weights in a separate .onnx.data.) Then verifies what was written."""
    import torch

    x = torch.zeros(2, 3, size, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], do_constant_folding=True,
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    return check_onnx(path, opset)


def check_onnx(path: Path, opset: int) -> dict:
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    try:
        onnx.checker.check_model(m, full_check=True)
    except onnx.checker.ValidationError as e:
        raise NinEdgeError(f"{path.name}: fails onnx.checker ({str(e).splitlines()[0][:200]})") from None
    got = next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), None)
    if got != opset:
        raise NinEdgeError(f"{path.name}: exported with opset {got}, not the requested {opset}")
    external = [i.name for i in m.graph.initializer if i.data_location == onnx.TensorProto.EXTERNAL]
    if external or list(path.parent.glob(path.name + ".data")):
        raise NinEdgeError(f"{path.name}: weights were written to an external data file; expected one file")
    bn = [n.name for n in m.graph.node if n.op_type == "BatchNormalization"]
    if bn:
        raise NinEdgeError(f"{path.name}: BatchNormalization node '{bn[0]}' left in the graph (not folded)")
    dim0 = m.graph.input[0].type.tensor_type.shape.dim[0]
    if not dim0.dim_param:
        raise NinEdgeError(f"{path.name}: batch axis is not dynamic")
    return {"opset": got, "nodes": len(m.graph.node), "ops": sorted({n.op_type for n in m.graph.node}),
            "batchnorm_folded": True, "dynamic_batch": dim0.dim_param}


# --------------------------------------------------------------------------- running artifacts
def ort_logits(path: Path, x: np.ndarray, threads: int | None = None, batch: int = 250) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i:i + batch]})[0] for i in range(0, len(x), batch)])


def torch_logits(model, x: np.ndarray, batch: int = 250) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return np.concatenate([model(torch.from_numpy(x[i:i + batch])).numpy() for i in range(0, len(x), batch)])


def _top1(logits: np.ndarray, labels: np.ndarray) -> float:
    return round(100.0 * float((logits.argmax(1) == labels).mean()), 2)


def _agree(a: np.ndarray, b: np.ndarray) -> float:
    return round(100.0 * float((a.argmax(1) == b.argmax(1)).mean()), 2)


def _weights_info(meta: dict) -> dict:
    from .bundle import sha256_of
    from .data import training_record

    p = Path(meta["weights"])
    keep = ("epoch", "val_top1", "test_top1", "seed", "data_sha256", "note", "code_version", "bn_update", "average")
    return {"path": p.name, "sha256": sha256_of(p), **{k: meta[k] for k in keep if k in meta},
            **({"training": training_record(meta)} if meta.get("run") else {})}


# --------------------------------------------------------------------------- the export
def export_bundle(opts: ExportOptions) -> ExportResult:
    from . import envinfo
    from .checkpoint import load_model, make_checkpoint
    from .models import fold_batchnorm
    from .data import check_classes, load_dataset
    from .preprocess import Preprocess, preprocess
    from .tta import PASSES, parse_tta, with_tta

    t_start = time.perf_counter()
    formats = opts.validate()
    # Fail before any work when a requested backend is missing.
    if Format.openvino in formats:
        from .build.openvino import require_openvino

        require_openvino(opts.int8)
    if Format.tensorrt in formats:
        from .build.tensorrt import require_tensorrt

        require_tensorrt()

    model, meta = load_model(opts.weights)
    tta = parse_tta(opts.tta)
    graph = with_tta(model, tta)  # what every artifact computes: the network, or its mirror average
    classes = tuple(meta["classes"])
    pp = Preprocess.from_dict(meta["preprocess"])
    from .models import model_info

    if model_info(meta["arch"]).input_size != pp.size:
        raise NinEdgeError(f"{meta['weights']}: preprocessing size {pp.size} differs from arch "
                           f"'{meta['arch']}' input size {model_info(meta['arch']).input_size}")
    if opts.int8 and opts.max_drop is not None:  # fail before any work: choices measured on training images
        from .data import trained_on, training_record

        if why := trained_on(training_record(meta), opts.max_drop_data):
            raise NinEdgeError(f"--max-drop-data {opts.max_drop_data}: {why}; measure the choice on images they "
                               "did not train on")
    ev = load_dataset(opts.eval_data, "test")
    check_classes(ev, classes)
    if len(ev) < PARITY_MIN_IMAGES:
        raise NinEdgeError(f"{opts.eval_data}: {len(ev)} images; the parity check needs at least {PARITY_MIN_IMAGES}")
    x_eval = preprocess(ev.images, pp)
    labels = ev.labels

    cs = None
    if opts.int8:
        from .calibration import build_calibration_set

        cs = build_calibration_set(opts.calib, pp, exclude=ev)

    top1: dict[str, float] = {}
    agree: dict[str, float] = {}
    with BundleWriter(opts.out, force=opts.force) as w, _Stages(opts.progress) as st, \
            tempfile.TemporaryDirectory(prefix="nin-edge-export-") as work:
        work = Path(work)
        onnx_path = w.path(_path("onnxruntime", "fp32"))

        with st.stage("export", f"torch → ONNX opset {opts.opset} (BatchNorm folded, dynamic batch"
                      + (", flip TTA in the graph)" if tta.value != "none" else ")")):
            folded = fold_batchnorm(graph)
            onnx_info = export_onnx(folded, onnx_path, pp.size, opts.opset)

        with st.stage("parity", f"ONNX Runtime vs PyTorch on {len(ev)} images of {opts.eval_data}"):
            ref = torch_logits(graph, x_eval)
            fp32 = ort_logits(onnx_path, x_eval, opts.threads)
            dmax = float(np.abs(fp32 - ref).max())
            same = _agree(fp32, ref)
            if not (dmax <= PARITY_MAX_ABS and same == 100.0):
                raise NinEdgeError(f"parity check failed: ONNX vs PyTorch max |Δlogit| = {dmax:.3g} (limit "
                                   f"{PARITY_MAX_ABS:g}), same top-1 on {same}% of {len(ev)} images; no bundle written")
            parity = {"images": len(ev), "data": opts.eval_data, "max_abs_logit_diff": dmax,
                      "limit": PARITY_MAX_ABS, "top1_identical": True}
            top1["model.pt"] = _top1(ref, labels)
            top1["model.onnx"] = _top1(fp32, labels)
            agree["model.onnx"] = agree["model.pt"] = 100.0

        quant_info: dict = {}
        keep_float, accuracy = tuple(opts.keep_float), None
        if opts.int8:
            if cs is None:  # built above whenever int8 is set; a guard, not user-input validation
                raise RuntimeError("calibration set missing for an INT8 export")
            from .quantize import calibrate_onnx, quantize_onnx

            with st.stage("calibrate", f"{opts.method} on {len(cs)} images ({cs.num_batches} batches)"):
                ranges = calibrate_onnx(onnx_path, cs, opts.method, work)
            ort_form = ORT_FORMS[OrtCpu(opts.ort_cpu)]  # the Q/DQ form of model.int8.onnx (--ort-cpu)
            if opts.max_drop is not None:  # issue 9: choose the layers to keep in float (nin_edge/diagnose.py)
                from .diagnose import accuracy_control

                with st.stage("accuracy", f"--max-drop {opts.max_drop:g} on {opts.max_drop_data}"):
                    accuracy = accuracy_control(onnx_path, ranges, opts.method, cs, opts.max_drop, opts.max_drop_data,
                                                classes, work / "accuracy", openvino=Format.openvino in formats,
                                                start=tuple(opts.keep_float), threads=opts.threads, say=st.note,
                                                ort_form=ort_form)
                keep_float = accuracy.keep_float
            with st.stage("quantize", "Q/DQ INT8: ONNX Runtime CPU form + TensorRT form"):
                for backend, form in (("onnxruntime", FORMS[ort_form]), ("onnxruntime-trt-qdq", FORMS["tensorrt"])):
                    rel = _path(backend, "int8")
                    quant_info[rel] = quantize_onnx(onnx_path, w.path(rel), form, ranges, opts.method, keep_float)

        ov_info: dict = {}
        if Format.openvino in formats:
            from .build.openvino import convert_onnx, ir_weight_types, save_ir

            with st.stage("openvino", "IR fp32 + fp16-compressed" + (" + NNCF INT8" if opts.int8 else "")):
                ir = convert_onnx(onnx_path)
                for prec, fp16 in (("fp32", False), ("fp16", True)):
                    rel = _path("openvino", prec)
                    save_ir(ir, w.path(rel), compress_to_fp16=fp16)
                    ov_info[rel] = {"compress_to_fp16": fp16, "weight_types": ir_weight_types(w.path(rel))}
                if opts.int8:
                    from .quantize import quantize_openvino

                    q, qinfo = quantize_openvino(ir, cs, opts.method, keep_float)
                    rel = _path("openvino", "int8")
                    save_ir(q, w.path(rel), compress_to_fp16=False)
                    ov_info[rel] = {"compress_to_fp16": False, "weight_types": ir_weight_types(w.path(rel)), **qinfo}

        from .build.tensorrt import build_script

        script = w.path("tensorrt/build_engine.sh")
        script.write_text(build_script(INPUT_NAME, pp.size))
        script.chmod(0o755)
        trt_info: dict = {}
        if Format.tensorrt in formats:
            from .build.tensorrt import build_engine

            with st.stage("tensorrt", "engines with the TensorRT Python API"):
                precs = [("fp32", onnx_path), ("fp16", onnx_path)]
                if opts.int8:
                    precs.append(("int8", w.path(_path("onnxruntime-trt-qdq", "int8"))))
                for prec, src in precs:
                    rel = _path("tensorrt", prec)
                    trt_info[rel] = build_engine(src, w.path(rel), prec, INPUT_NAME, pp.size)

        with st.stage("verify", f"top-1 of every artifact on {len(ev)} images"):
            if opts.int8:
                from .quantize import trt_form_violations

                bad = trt_form_violations(w.path(_path("onnxruntime-trt-qdq", "int8")))
                if bad:
                    raise NinEdgeError(f"model.int8.trt.onnx is not in TensorRT's explicit-quantization form: {bad[0]}")
            for rel in quant_info:
                lg = ort_logits(w.path(rel), x_eval, opts.threads)
                top1[rel], agree[rel] = _top1(lg, labels), _agree(lg, fp32)
            if ov_info:
                from .build.openvino import infer_ir

                for rel in ov_info:
                    lg = infer_ir(w.path(rel), x_eval, threads=opts.threads)
                    top1[rel], agree[rel] = _top1(lg, labels), _agree(lg, fp32)
                    ov_info[rel]["checked_with_inference_precision"] = "f32"

        # ---- the rest of the bundle, then bundle.json
        import torch

        ck = make_checkpoint(model, meta["arch"], classes,
                             **{k: v for k, v in meta.items() if k not in ("arch", "classes", "num_classes",
                                                                            "preprocess", "code_version",
                                                                            "format", "weights")})
        torch.save(ck, w.path(_path("torch", "fp32")))
        w.path("labels.txt").write_text("\n".join(classes) + "\n")

        def add(backend, precision, **info):
            rel = _path(backend, precision)
            w.add_artifact(rel, backend, precision, top1_at_export=top1.get(rel),
                           top1_agreement_with_fp32=agree.get(rel), **info)

        add("torch", "fp32", note="original (unfolded) weights + metadata for the torch runner")
        add("onnxruntime", "fp32", opset=opts.opset, batchnorm_folded=True)
        if opts.int8:
            add("onnxruntime", "int8", quantization=quant_info[_path("onnxruntime", "int8")])
            add("onnxruntime-trt-qdq", "int8", quantization=quant_info[_path("onnxruntime-trt-qdq", "int8")],
                note="TensorRT explicit-quantization form; top-1 measured in ONNX Runtime on the CPU")
        for rel, info in ov_info.items():
            prec = next(p for (b, p), (r, _) in LAYOUT.items() if b == "openvino" and r == rel)
            add("openvino", prec, **info)
        for rel, info in trt_info.items():
            prec = next(p for (b, p), (r, _) in LAYOUT.items() if b == "tensorrt" and r == rel)
            add("tensorrt", prec, **info)

        seconds = time.perf_counter() - t_start
        w.meta.update({
            "arch": meta["arch"],
            "classes": list(classes),
            "input": {"name": INPUT_NAME, "size": pp.size, "shape": ["batch", 3, pp.size, pp.size],
                      "layout": "NCHW", "dtype": "float32"},
            "output": {"name": OUTPUT_NAME, "shape": ["batch", len(classes)], "dtype": "float32",
                       "meaning": "logits (apply softmax for probabilities)" if tta.value == "none" else
                       "log of the mean softmax over the image and its mirror (softmax or exp gives the "
                       "probabilities)"},
            "tta": {"name": tta.value, "forward_passes_per_image": PASSES[tta]},
            "preprocess": pp.to_dict(),
            "opset": opts.opset,
            "onnx": onnx_info,
            "weights": _weights_info(meta),
            "versions": envinfo.versions(),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "evaluation": {"data": opts.eval_data, "images": len(ev),
                           "note": "top1_at_export of every artifact is measured on these images"},
            "parity": parity,
            "int8": bool(opts.int8),
            "calibration": cs.manifest(opts.method) if cs is not None else None,
            "keep_float": list(keep_float),
            "accuracy_control": accuracy.to_dict() if accuracy is not None else None,
            "tensorrt": {"script": "tensorrt/build_engine.sh", "script_sha256": sha256_of(script),
                         "engines_built_here": bool(trt_info)},
            "export": {"formats": [f.value for f in formats], "seconds": round(seconds, 2),
                       "stages": {k: round(v, 2) for k, v in st.seconds.items()}},
        })
        stages = dict(st.seconds)
    return ExportResult(Bundle.load(opts.out), seconds, stages, top1, agree)
