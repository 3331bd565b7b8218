"""ONNX → OpenVINO IR (fp32 and fp16-compressed), and running an IR for the export-time checks."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from ..errors import BackendUnavailable


def require_openvino(int8: bool) -> None:
    """Fail before any work if OpenVINO (and NNCF for INT8) is missing; nothing falls back."""
    for mod in ("openvino",) + (("nncf",) if int8 else ()):
        if importlib.util.find_spec(mod) is None:
            raise BackendUnavailable("openvino", "cpu", why=f"the '{mod}' package is not installed")


def convert_onnx(onnx_path: Path):
    import openvino as ov

    return ov.convert_model(str(onnx_path))


def save_ir(model, xml: Path, compress_to_fp16: bool) -> None:
    """ov.save_model compresses weights to fp16 by default; the flag is always passed explicitly so
    model.xml is the exact fp32 IR and model.fp16.xml the fp16-compressed one (computed in fp32 or the
    plugin's inference precision on CPU; fp16 weights halve the file)."""
    import openvino as ov

    xml.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(xml), compress_to_fp16=compress_to_fp16)


def ir_weight_types(xml: Path) -> list[str]:
    """Element types of the IR's Constant weights (to record/verify fp32 vs fp16 vs int8 storage)."""
    import openvino as ov

    m = ov.Core().read_model(str(xml))
    return sorted({op.get_output_element_type(0).get_type_name() for op in m.get_ops()
                   if op.get_type_name() == "Constant" and len(op.get_output_shape(0)) >= 1
                   and int(np.prod(op.get_output_shape(0))) > 16})


def infer_ir(xml: Path, x: np.ndarray, batch: int = 250, threads: int | None = None) -> np.ndarray:
    """Logits of an IR on float32 NCHW input, in fp32 inference precision (so the check measures the
    artifact, not the CPU plugin's bf16 default on AVX-512 BF16 machines)."""
    import openvino as ov

    core = ov.Core()
    cfg = {"INFERENCE_PRECISION_HINT": "f32"}
    if threads:
        cfg["INFERENCE_NUM_THREADS"] = threads
    compiled = core.compile_model(core.read_model(str(xml)), "CPU", cfg)
    req = compiled.create_infer_request()
    out = []
    for i in range(0, len(x), batch):
        r = req.infer({0: x[i:i + batch]})
        out.append(np.asarray(r[compiled.output(0)]).copy())
    return np.concatenate(out)
