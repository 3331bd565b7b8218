"""TensorRT runner (TensorRT 10.x Python API): deserialize the bundle's engine, bind by tensor name, enqueueV3.

Engines are not portable across TensorRT versions or GPU architectures, so every engine has a sidecar
`<engine>.json` written when it was built; the runner refuses an engine whose sidecar names another TensorRT
version or compute capability, and says how to rebuild it. Device buffers are torch CUDA tensors (torch is a
core dependency), so no pycuda/cuda-python is needed. `device="dla"` deserializes onto the DLA core named in
the sidecar (Jetson Orin NX/AGX; layers TensorRT could not place there fall back to the GPU at build time).

The sidecar schema and its check live in build/tensorrt.py (SIDECAR_KEYS, check_sidecar), shared with both
builders: the Python API at export and tensorrt/build_engine.sh (trtexec) on the target. An engine without a
sidecar still runs — TensorRT refuses a plan from another version itself — and its row says the check was skipped. Not testable on the CPU-only dev machine: tests skip with
the reason; `benchmarks/gpu_check.sh` runs it where a GPU and TensorRT exist.
"""
from __future__ import annotations

import json

import numpy as np
import tensorrt as trt  # ImportError here → the registry reports BackendUnavailable('tensorrt', extra)

from ..build.tensorrt import check_sidecar
from ..errors import BackendUnavailable, NinEdgeError
from .base import Runner

_REBUILD = "nin-edge export --formats tensorrt --precision {p} --out {root} --force (on this machine)"


def _torch_cuda():
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a core dependency
        raise BackendUnavailable("tensorrt", None, why="torch is needed for CUDA buffers") from None
    if not torch.cuda.is_available():
        raise BackendUnavailable("tensorrt", None, why="no CUDA device is visible (torch.cuda.is_available() is False)")
    return torch


class TensorRtRunner(Runner):
    name = "tensorrt"
    precisions = ("fp32", "fp16", "int8")
    devices = ("cuda", "dla")
    default_precision = "int8"

    @classmethod
    def present_devices(cls) -> tuple[str, ...]:
        try:
            _torch_cuda()
        except BackendUnavailable:
            return ()
        return ("cuda",)

    def _load(self) -> None:
        torch = _torch_cuda()
        self._torch = torch
        path = self.artifact_path("tensorrt", self.precision)
        rebuild = _REBUILD.format(p=self.precision, root=self.bundle.root)
        side = path.with_name(path.name + ".json")
        meta: dict = {}
        if side.exists():
            try:
                meta = json.loads(side.read_text())
            except json.JSONDecodeError as e:
                raise NinEdgeError(f"{side}: not valid JSON ({e})") from None
            if not isinstance(meta, dict):
                raise NinEdgeError(f"{side}: expected a JSON object")
            check_sidecar(meta, path, tensorrt_version=trt.__version__,
                          compute_capability="{}.{}".format(*torch.cuda.get_device_capability()),
                          gpu_name=torch.cuda.get_device_name(), rebuild=rebuild)
            self.info["sidecar"] = f"checked ({side.name}, built by {meta.get('built_by') or '?'})"
        else:
            # an engine copied without its sidecar: TensorRT's own plan check still refuses a foreign version;
            # the row says the sidecar check did not happen
            self.info["sidecar"] = f"missing ({side.name}): version/GPU not checked by nin-edge"
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        if self.device == "dla":
            if self._runtime.num_DLA_cores < 1:
                raise BackendUnavailable("tensorrt", None, why="--device dla: this GPU has no DLA core")
            self._runtime.DLA_core = int(meta.get("dla_core") or 0)
        try:
            self._engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        except Exception as e:  # noqa: BLE001 - TensorRT raises RuntimeError/TypeError variants
            raise NinEdgeError(f"{path}: TensorRT could not deserialize it ({e}) (rebuild: {rebuild})") from None
        if self._engine is None:
            raise NinEdgeError(f"{path}: TensorRT could not deserialize the engine (rebuild: {rebuild})")
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        ins = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(ins) != 1 or len(outs) < 1:
            raise NinEdgeError(f"{path}: expected one input and one output tensor, found {ins} and {outs}")
        self._in_name, self._out_name = ins[0], outs[0]
        self._dtypes = {n: torch.from_numpy(np.zeros(0, trt.nptype(self._engine.get_tensor_dtype(n)))).dtype
                        for n in (self._in_name, self._out_name)}
        self._ctx = self._engine.create_execution_context()
        self._stream = torch.cuda.Stream()
        self.info.update(executed_precision=self.precision, engine_tensorrt=meta.get("tensorrt_version"),
                         gpu=torch.cuda.get_device_name(),
                         compute_capability="{}.{}".format(*torch.cuda.get_device_capability()),
                         framework=f"tensorrt {trt.__version__}", dla_core=meta.get("dla_core") if self.device == "dla" else None)

    def _prepare(self, batch: int) -> None:
        torch = self._torch
        lo, _, hi = self._engine.get_tensor_profile_shape(self._in_name, 0)
        if not lo[0] <= batch <= hi[0]:
            raise NinEdgeError(f"batch {batch}: this engine's optimization profile covers batch {lo[0]}..{hi[0]} "
                               "(rebuild with: nin-edge export --formats tensorrt --batch MIN:OPT:MAX)")
        shape = (batch, 3, self.size, self.size)
        if not self._ctx.set_input_shape(self._in_name, shape):
            raise NinEdgeError(f"TensorRT rejected input shape {shape}")
        self._inbuf = torch.empty(shape, dtype=self._dtypes[self._in_name], device="cuda")
        out_shape = tuple(self._ctx.get_tensor_shape(self._out_name))
        self._outbuf = torch.empty(out_shape, dtype=self._dtypes[self._out_name], device="cuda")
        self._ctx.set_tensor_address(self._in_name, self._inbuf.data_ptr())
        self._ctx.set_tensor_address(self._out_name, self._outbuf.data_ptr())

    def _infer(self, x: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.cuda.stream(self._stream):
            self._inbuf.copy_(torch.from_numpy(x), non_blocking=False)
            if not self._ctx.execute_async_v3(self._stream.cuda_stream):
                raise NinEdgeError("TensorRT execute_async_v3 failed (see the TensorRT log above)")
            out = self._outbuf.float().cpu()  # waits for the stream
        return out.reshape(out.shape[0], -1).numpy()

    def synchronize(self) -> None:
        self._stream.synchronize()

    def _close(self) -> None:
        self._ctx = self._engine = self._runtime = None
        self._inbuf = self._outbuf = None
