"""ONNX Runtime runner: model.onnx (fp32) or model.int8.onnx (Q/DQ int8); CPU EP, CUDA EP when present.

Session options are set explicitly rather than left to defaults (so a row says what ran): intra-op threads
(default: every core of this process's affinity mask), one inter-op thread, sequential execution, all
graph optimizations. `artifact=` runs another ONNX file of the bundle, e.g. model.int8.trt.onnx.
"""
from __future__ import annotations

import numpy as np
import onnxruntime as ort

from ..errors import BackendUnavailable, NinEdgeError
from .base import Runner, default_threads

# device → execution provider; a device is offered only when this onnxruntime build has its provider
_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def saturation_warning(name: str, record: dict, isa: dict | None = None) -> str | None:
    """A Q/DQ INT8 artifact with 8-bit weights on an x86 CPU without VNNI: MLAS's u8×s8 kernel (vpmaddubsw) sums
    pairs of products in int16, which saturates — measured 92 % same top-1 as fp32 on an AVX2-only EPYC
    (nin_edge/quantize.py). The result is still what this CPU computes, so it is measured, not refused."""
    q = record.get("quantization")
    # U8S8 only: the TensorRT form's S8S8 measured 99.1 % same top-1 on that CPU (ORT runs it another way)
    if not isinstance(q, dict) or (q.get("activations"), q.get("weights")) != ("QUInt8", "QInt8") \
            or q.get("reduce_range"):
        return None
    if isa is None:
        from ..envinfo import cpu_info

        isa = cpu_info()["isa"]
    if not isa.get("avx2") or isa.get("avx512_vnni") or isa.get("avx_vnni"):
        return None  # ARM, or VNNI: int32 accumulation, no saturation
    return (f"{name} has 8-bit weights and this x86 CPU has no VNNI: ONNX Runtime's "
            f"int16 sums saturate and cost accuracy; re-export with `nin-edge export --int8 --ort-cpu any`")


class OnnxRuntimeRunner(Runner):
    name = "onnxruntime"
    precisions = ("fp32", "int8")
    devices = tuple(_PROVIDERS)
    default_precision = "int8"

    @classmethod
    def present_devices(cls) -> tuple[str, ...]:
        have = set(ort.get_available_providers())
        return tuple(d for d, ep in _PROVIDERS.items() if ep in have)

    def _load(self) -> None:
        ep = _PROVIDERS[self.device]
        if ep not in ort.get_available_providers():
            raise BackendUnavailable("onnxruntime", None, why=f"{ep} is not in this onnxruntime build "
                                     f"(it has {', '.join(ort.get_available_providers())}; CUDA needs onnxruntime-gpu)")
        path = self.artifact_path("onnxruntime", self.precision)
        threads = self.threads or default_threads()
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        try:
            self._sess = ort.InferenceSession(str(path), so, providers=[ep])
        except Exception as e:  # noqa: BLE001 - ORT raises its own Fail/InvalidGraph/... types
            raise NinEdgeError(f"{path}: ONNX Runtime cannot load it ({str(e).splitlines()[0][:200]})") from None
        inputs, outputs = self._sess.get_inputs(), self._sess.get_outputs()
        if len(inputs) != 1 or len(outputs) < 1:
            raise NinEdgeError(f"{path}: expected one input and one output, found {len(inputs)} and {len(outputs)}")
        shape = inputs[0].shape
        if len(shape) != 4 or list(shape[1:]) != [3, self.size, self.size]:
            raise NinEdgeError(f"{path}: input shape {shape} does not match the bundle's (N, 3, {self.size}, {self.size})")
        self._in, self._out = inputs[0].name, [outputs[0].name]
        out_shape = outputs[0].shape
        if len(out_shape) != 2 or out_shape[1] != self.num_classes:
            raise NinEdgeError(f"{path}: output shape {out_shape} is not (N, {self.num_classes})")
        used = self._sess.get_providers()[0]
        if used != ep:  # ORT never silently swaps providers for us; refuse if it did
            raise BackendUnavailable("onnxruntime", None, why=f"asked for {ep}, ORT created {used}")
        self.info.update(provider=ep, threads_used=threads, inter_op_threads=1, execution_mode="sequential",
                         graph_optimization="all",
                         executed_precision="int8 (Q/DQ)" if self.precision == "int8" else self.precision)
        if ep == "CPUExecutionProvider":
            warning = saturation_warning(self.info["artifact"], self.bundle.artifacts.get(self.info["artifact"], {}))
            if warning:
                self.info["warning"] = warning

    def _prepare(self, batch: int) -> None:
        # IO binding to buffers made once per batch size: no per-call output allocation or feed-dict
        # conversion — measured +3.2 % at batch 1 on nin-seed, +1.0 % on nin-cifar (20 interleaved rounds)
        self._xbuf = np.empty((batch, 3, self.size, self.size), np.float32)
        self._ybuf = np.empty((batch, self.num_classes), np.float32)
        self._io = self._sess.io_binding()
        self._io.bind_cpu_input(self._in, self._xbuf)
        self._io.bind_output(self._out[0], "cpu", 0, np.float32, list(self._ybuf.shape), self._ybuf.ctypes.data)

    def _infer(self, x: np.ndarray) -> np.ndarray:
        np.copyto(self._xbuf, x)
        self._sess.run_with_iobinding(self._io)
        return self._ybuf.copy()

    def _close(self) -> None:
        self._io = self._sess = self._xbuf = self._ybuf = None
