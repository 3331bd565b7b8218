"""PyTorch eager runner (cpu, cuda): the bundle's model.pt through `checkpoint.load_model`.

The fp32 reference every exported artifact is checked against. `torch.set_num_threads` is process-wide, so
the runner sets it for its lifetime and restores the previous value on close.
"""
from __future__ import annotations

import numpy as np
import torch

from ..checkpoint import load_model
from ..errors import BackendUnavailable, NinEdgeError
from ..tta import with_tta
from .base import Runner, default_threads

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class TorchRunner(Runner):
    name = "torch"
    precisions = ("fp32", "fp16", "bf16")
    devices = ("cpu", "cuda")
    default_precision = "fp32"

    @classmethod
    def present_devices(cls) -> tuple[str, ...]:
        return ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",)

    def _load(self) -> None:
        if self.device == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable("torch", None, why="--device cuda: torch sees no CUDA device")
        if self.device == "cpu" and self.precision == "fp16":
            # fp16 convolutions on the CPU are emulated and slower than fp32: not a deployment precision there.
            raise NinEdgeError("torch fp16 runs on --device cuda only (on the CPU use fp32 or bf16)")
        path = self.artifact_path("torch", "fp32")  # one checkpoint; the precision is the execution dtype
        model, meta = load_model(path)
        if list(meta["classes"]) != self.bundle.classes:
            raise NinEdgeError(f"{path}: classes {meta['classes']} differ from bundle.json's {self.bundle.classes}")
        model = with_tta(model, self.bundle.tta)  # the exported graphs have it inside; model.pt is the bare network
        self._dtype = _DTYPES[self.precision]
        self._dev = torch.device(self.device)
        self._prev_threads = None
        if self.device == "cpu":
            self._prev_threads = torch.get_num_threads()
            torch.set_num_threads(self.threads or default_threads())
        # channels_last: oneDNN's bf16 convolutions and CUDA tensor cores want NHWC; measured here at batch 1
        # (noisy, loaded machine): CPU bf16 1.2 ms in channels_last vs 26 ms in NCHW
        self._model = model.to(self._dev, self._dtype).to(memory_format=torch.channels_last).eval()
        if self.device == "cuda":
            torch.backends.cudnn.benchmark = True  # cuDNN picks its fastest kernels per shape
        self.info.update(executed_precision=self.precision, threads_used=torch.get_num_threads(),
                         framework=f"torch {torch.__version__} eager",
                         memory_format="channels_last")

    def _infer(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            t = torch.from_numpy(x).to(self._dev, self._dtype).contiguous(memory_format=torch.channels_last)
            return self._model(t).float().cpu().numpy()

    def synchronize(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()

    def _close(self) -> None:
        self._model = None
        if self._prev_threads is not None:
            torch.set_num_threads(self._prev_threads)
