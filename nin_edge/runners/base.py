"""The one runner contract (Polygraphy's split): public methods validate; small per-backend hooks work.

    with create_runner("onnxruntime", bundle, precision="int8", threads=2) as r:
        r.prepare(batch=8)
        logits = r.infer(x)          # float32 (N,3,H,W) → float32 (N,classes)

Timing lives in bench.py only; runners never time themselves. A missing backend raises
`BackendUnavailable` naming the extra to install; nothing falls back to another backend or precision.
"""
from __future__ import annotations

import importlib
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import numpy as np

from ..bundle import Bundle
from ..errors import BackendUnavailable, NinEdgeError

PRECISIONS = ("fp32", "fp16", "bf16", "int8")


class Runner(ABC):
    name: ClassVar[str]
    precisions: ClassVar[tuple[str, ...]]
    devices: ClassVar[tuple[str, ...]] = ("cpu",)
    default_precision: ClassVar[str] = "fp32"

    def __init__(self, bundle: Bundle, precision: str = "fp32", device: str = "cpu", threads: int | None = None,
                 artifact: str | None = None):
        if precision not in self.precisions:
            raise NinEdgeError(f"runner '{self.name}' has no precision '{precision}' (choose: {', '.join(self.precisions)})")
        if device not in self.devices:
            raise NinEdgeError(f"runner '{self.name}' has no device '{device}' (choose: {', '.join(self.devices)})")
        if threads is not None and threads < 1:
            raise NinEdgeError(f"--threads {threads}: must be at least 1")
        self.bundle, self.precision, self.device, self.threads = bundle, precision, device, threads
        # artifact: a path relative to the bundle overriding the default (e.g. model.int8.trt.onnx in ORT)
        self.artifact_override = artifact
        self.size = bundle.input_size
        self.num_classes = len(bundle.classes)
        self.batch: int | None = None
        self._sample_shape = (3, self.size, self.size)
        self._out_shape: tuple[int, int] | None = None
        # what actually runs (artifact, executed precision, provider, threads used...): filled by the hooks,
        # reported by describe() in every bench row
        self.info: dict = {}
        self._closed = False
        self._load()

    # ---- public, validating API
    def prepare(self, batch: int) -> None:
        if not isinstance(batch, (int, np.integer)) or batch < 1:
            raise NinEdgeError(f"batch size {batch!r}: must be a positive integer")
        self._check_open()
        self._prepare(int(batch))
        self.batch = int(batch)
        self._out_shape = (self.batch, self.num_classes)

    def infer(self, x: np.ndarray) -> np.ndarray:
        # every check is cheap on the valid path (precomputed shapes, no temporaries): at batch 1 a call of the
        # trained int8 model is ~150 µs, and the runner's whole overhead is held to a few µs of it
        if self._closed:
            self._check_open()
        if not isinstance(x, np.ndarray):
            raise NinEdgeError(f"input must be a numpy array, got {type(x).__name__}")
        if x.dtype != np.float32:
            raise NinEdgeError(f"input dtype {x.dtype}: expected float32 (use nin_edge.preprocess.preprocess)")
        if x.shape[1:] != self._sample_shape:  # also rejects any other rank
            raise NinEdgeError(f"input shape {tuple(x.shape)}: expected (N, 3, {self.size}, {self.size})")
        if x.shape[0] != self.batch:
            self.prepare(x.shape[0])
        out = self._infer(x if x.flags.c_contiguous else np.ascontiguousarray(x))
        if out.shape != self._out_shape:
            raise NinEdgeError(f"runner '{self.name}' returned shape {out.shape}, expected {self._out_shape}")
        return out

    def synchronize(self) -> None:
        """No-op on the CPU; CUDA backends wait for the device."""

    def close(self) -> None:
        if not self._closed:
            self._close()
            self._closed = True

    def describe(self) -> dict:
        """What actually runs: artifact, precision executed, device, threads (reported in every bench row)."""
        return {"runner": self.name, "precision": self.precision, "device": self.device, "threads": self.threads,
                **self.info}

    @classmethod
    def present_devices(cls) -> tuple[str, ...]:
        """The devices of `devices` this machine has (used by `bench --target all`); backends override."""
        return ("cpu",) if "cpu" in cls.devices else ()

    def artifact_path(self, backend: str | None = None, precision: str | None = None) -> Path:
        """The bundle's artifact for (backend, precision), or the `artifact` override (relative to the bundle)."""
        if self.artifact_override:
            p = Path(self.artifact_override)
            p = p if p.is_absolute() else self.bundle.root / p
            if not p.exists():
                raise NinEdgeError(f"{p}: artifact not found in bundle {self.bundle.root}")
        else:
            p = self.bundle.artifact(backend or self.name, precision or self.precision)
        self.info["artifact"] = os.path.relpath(p, self.bundle.root)
        return p

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise NinEdgeError(f"runner '{self.name}' is closed")

    # ---- per-backend hooks
    @abstractmethod
    def _load(self) -> None: ...

    def _prepare(self, batch: int) -> None:  # noqa: B027 - optional hook
        pass

    @abstractmethod
    def _infer(self, x: np.ndarray) -> np.ndarray: ...

    def _close(self) -> None:  # noqa: B027 - optional hook
        pass


def default_threads() -> int:
    """Every core this process may run on (its affinity mask), so a runner's thread count is always explicit."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# name → ("module:Class", pip extra that provides it)
_REGISTRY: dict[str, tuple[str, str | None]] = {
    "torch": ("nin_edge.runners.torch_runner:TorchRunner", None),
    "onnxruntime": ("nin_edge.runners.onnxruntime_runner:OnnxRuntimeRunner", None),
    "openvino": ("nin_edge.runners.openvino_runner:OpenVinoRunner", "cpu"),
    "tensorrt": ("nin_edge.runners.tensorrt_runner:TensorRtRunner", "tensorrt"),
}


def list_runners() -> list[str]:
    return list(_REGISTRY)


def get_runner_class(name: str) -> type[Runner]:
    if name not in _REGISTRY:
        raise NinEdgeError(f"unknown target '{name}'; choose one of: {', '.join(_REGISTRY)}")
    target, extra = _REGISTRY[name]
    mod, cls = target.split(":")
    try:
        return getattr(importlib.import_module(mod), cls)
    except ImportError as e:
        raise BackendUnavailable(name, extra, why=f"{e.name or e} is not installed") from None


def create_runner(name: str, bundle: Bundle, precision: str = "fp32", device: str = "cpu",
                  threads: int | None = None, artifact: str | None = None) -> Runner:
    return get_runner_class(name)(bundle, precision=precision, device=device, threads=threads, artifact=artifact)


def available_runners() -> dict[str, str | None]:
    """name → None if importable here, else the reason it is not."""
    out: dict[str, str | None] = {}
    for name in _REGISTRY:
        try:
            get_runner_class(name)
            out[name] = None
        except BackendUnavailable as e:
            out[name] = str(e)
    return out
