"""OpenVINO runner: fp32 / fp16 / int8 IRs, and bf16 execution of the fp32 IR; CPU, GPU/NPU when present.

Honest precision: OpenVINO runs an fp32 IR in bf16 by default on CPUs with AVX512_BF16/AMX (measured here:
11 of 10,000 CIFAR-10 predictions changed), and asking a CPU without fp16 compute for f16 gives bf16. So the
runner always sets INFERENCE_PRECISION_HINT explicitly (int8 IRs: f32 for the layers NNCF left unquantized),
reads back what the compiled model will execute, and refuses a mismatch instead of reporting the wrong
precision. bf16 is its own precision choice (the fp32 IR executed in bf16).

Low overhead: per batch size the model is reshaped to a static shape and compiled once (LATENCY hint, one
stream, explicit threads); `infer` copies into the pre-created request's input memory and makes the one
synchronous call OpenVINO's own `benchmark_app -api sync` times — through OpenVINO's C API (`_ov_capi`, ctypes)
where the wheel ships it, else through the Python binding's `infer`. `info["call_path"]` says which.
"""
from __future__ import annotations

import functools

import numpy as np
import openvino as ov

from ..errors import BackendUnavailable, NinEdgeError
from . import _ov_capi
from .base import Runner, default_threads

_DEVICES = {"cpu": "CPU", "gpu": "GPU", "npu": "NPU"}
# precision → (bundle artifact precision, execution precision hint, device capability it needs)
_PLAN = {
    "fp32": ("fp32", "f32", "FP32"),
    "fp16": ("fp16", "f16", "FP16"),
    "bf16": ("fp32", "bf16", "BF16"),
    "int8": ("int8", "f32", "INT8"),
}

_NAMES = {"f32": "fp32", "f16": "fp16", "bf16": "bf16"}


def _sync_call(req: ov.InferRequest):
    """The cheapest synchronous call on a request whose input/output buffers the runner already holds.

    The public `InferRequest.infer` is a Python wrapper over the C++ binding's `infer`: it dispatches inputs,
    copies every output into a new array and wraps them in an OVDict. The binding itself, called with no inputs
    and shared outputs, does none of that. Measured at batch 1 (nin-cifar int8, 2 threads, 3,000 calls each,
    interleaved), Python-timed call minus the request's own C++-timed latency: wrapper 8.7 µs, binding 7.3 µs.
    """
    binding = next((c for c in type(req).__mro__ if c.__module__ == "openvino._pyopenvino"), None)
    call = req.infer if binding is None else functools.partial(binding.infer, req, {}, True, False)
    # (inputs, share_outputs, decode_strings); a future OpenVINO without the split: the public call is correct

    def run() -> int:  # the C path's contract: 0 = OK (the binding raises on failure)
        call()
        return 0
    return run


def _c_value(v) -> str:
    """A compile property as the C API's string form (the Python API also takes ints and bools)."""
    return ("YES" if v else "NO") if isinstance(v, bool) else str(v)


def _core() -> ov.Core:
    return ov.Core()


class OpenVinoRunner(Runner):
    name = "openvino"
    precisions = ("fp32", "fp16", "bf16", "int8")
    devices = tuple(_DEVICES)
    default_precision = "int8"

    @classmethod
    def present_devices(cls) -> tuple[str, ...]:
        have = {d.split(".")[0] for d in _core().available_devices}
        return tuple(d for d, ov_name in _DEVICES.items() if ov_name in have)

    def _load(self) -> None:
        self._core = _core()
        self._dev = _DEVICES[self.device]
        if self._dev not in {d.split(".")[0] for d in self._core.available_devices}:
            raise BackendUnavailable("openvino", None, why=f"device {self._dev} not found "
                                     f"(OpenVINO sees: {', '.join(self._core.available_devices) or 'none'})")
        art_precision, hint, capability = _PLAN[self.precision]
        caps = list(self._core.get_property(self._dev, "OPTIMIZATION_CAPABILITIES"))
        if capability not in caps:
            raise NinEdgeError(f"openvino {self.precision}: {self._dev} cannot compute in {capability} "
                               f"(its capabilities: {', '.join(caps)}); OpenVINO would silently run another "
                               "precision — choose one it has")
        self._path = self.artifact_path("openvino", art_precision)
        try:
            self._model = self._core.read_model(str(self._path))
        except Exception as e:  # noqa: BLE001 - OpenVINO raises RuntimeError subclasses with long messages
            raise NinEdgeError(f"{self._path}: OpenVINO cannot read it ({str(e).splitlines()[0][:200]})") from None
        if len(self._model.inputs) != 1:
            raise NinEdgeError(f"{self._path}: expected one input, found {len(self._model.inputs)}")
        shape = self._model.input(0).get_partial_shape()
        if shape.rank.get_length() != 4 or [str(d) for d in shape][1:] != ["3", str(self.size), str(self.size)]:
            raise NinEdgeError(f"{self._path}: input shape {shape} does not match the bundle's (N, 3, {self.size}, {self.size})")
        self._hint = hint
        self._compiled: dict[int, tuple] = {}  # batch → (request, input view, output view, call, property reader)
        lib = _ov_capi.load()
        try:
            self._cmodel = _ov_capi.Model(lib, str(self._path)) if lib else None
        except _ov_capi.OvCError as e:
            raise NinEdgeError(f"{self._path}: OpenVINO's C API cannot read it ({e})") from None
        if self._cmodel:
            self._model = None  # read above to check the input; the C API compiles its own copy
        self.info["call_path"] = "OpenVINO C API (ctypes)" if self._cmodel else "OpenVINO Python binding"
        self._config: dict = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1, "INFERENCE_PRECISION_HINT": hint}
        if self._dev == "CPU":
            self._config["INFERENCE_NUM_THREADS"] = self.threads or default_threads()
            # No thread pinning: pinned to a core that another process is using, the sync call stalls — measured
            # here with a training job running: pinned rounds of 3–4 ms against 0.26–0.32 ms unpinned (int8,
            # batch 1, 2 threads, interleaved); unpinned was never slower in those rounds.
            self._config["ENABLE_CPU_PINNING"] = False

    def _prepare(self, batch: int) -> None:
        if batch not in self._compiled:
            # static shapes: the CPU plugin plans memory and picks kernels once instead of per call
            shape = (batch, 3, self.size, self.size)
            try:
                self._compiled[batch] = (self._compile_c if self._cmodel else self._compile_py)(shape)
            except (RuntimeError, _ov_capi.OvCError) as e:  # OpenVINO raises RuntimeError subclasses
                raise NinEdgeError(f"{self._path}: OpenVINO cannot compile it for {self._dev} "
                                   f"({str(e).splitlines()[0][:200]})") from None
            props = self._compiled[batch][-1]
            executed = props("INFERENCE_PRECISION_HINT")
            if executed != self._hint:
                self._compiled.pop(batch)
                raise NinEdgeError(f"openvino {self.precision}: asked {self._dev} for {self._hint}, it would execute "
                                   f"{executed}; refusing to report a precision that did not run")
            self.info.update(
                executed_precision=("int8 (unquantized layers f32)" if self.precision == "int8"
                                    else _NAMES.get(executed, executed)),
                device_name=self._dev, performance_hint=props("PERFORMANCE_HINT"),
                streams=int(props("NUM_STREAMS")), framework=f"openvino {ov.get_version().split('-')[0]}")
            if self._dev == "CPU":
                self.info.update(threads_used=int(props("INFERENCE_NUM_THREADS")),
                                 cpu_pinning=props("ENABLE_CPU_PINNING") in ("YES", "True", "true"))
        self._req, self._in, self._out, self._run = self._compiled[batch][:4]

    def _compile_c(self, shape: tuple[int, ...]) -> tuple:
        req = self._cmodel.compile(shape, self._dev, {k: _c_value(v) for k, v in self._config.items()})
        in_view, out_view = req.view("input", shape), req.view("output", (shape[0], self.num_classes))
        return req, in_view, out_view, req.call, req.get_property

    def _compile_py(self, shape: tuple[int, ...]) -> tuple:
        self._model.reshape(list(shape))
        cm = self._core.compile_model(self._model, self._dev, self._config)
        req = cm.create_infer_request()
        # numpy views of the request's own input/output memory, made once: with a static shape the plugin
        # keeps these buffers for the request's lifetime (saves ~1.5 µs of a ~200 µs call, measured)
        in_view, out_view = req.get_input_tensor(0).data, req.get_output_tensor(0).data

        def props(key: str) -> str:
            v = cm.get_property(key)
            return v.get_type_name() if isinstance(v, ov.Type) else str(v)
        return req, in_view, out_view, _sync_call(req), props

    def _infer(self, x: np.ndarray) -> np.ndarray:
        np.copyto(self._in, x)
        if self._run():
            raise NinEdgeError(f"openvino: inference failed ({self._req.last_error()})")
        return self._out.copy()

    def _close(self) -> None:
        if self._cmodel:
            for entry in self._compiled.values():
                entry[0].close()  # request and compiled model before the model and core
            self._cmodel.close()
        self._compiled.clear()
        self._req = self._in = self._out = self._run = self._model = self._cmodel = None
