"""What machine and library versions a result was measured on (used by `info`, bench and reports)."""
from __future__ import annotations

import importlib
import importlib.metadata as md
import importlib.util
import os
import platform
import shutil
import subprocess

PACKAGES = ("nin-edge", "torch", "onnx", "onnxruntime", "openvino", "nncf", "tensorrt", "opencv-python", "numpy")
# The same import under other distribution names (GPU/headless/CUDA-suffixed wheels); without these an
# `onnxruntime-gpu` or `opencv-python-headless` install would read "not installed".
ALT_DISTS = {
    "onnxruntime": ("onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml"),
    "tensorrt": ("tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu11"),
    "opencv-python": ("opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless"),
}
# Installed without pip metadata (JetPack's apt packages python3-libnvinfer, python3-opencv): found by module.
MODULE_FALLBACK = {"tensorrt": "tensorrt", "opencv-python": "cv2"}
ISA_FLAGS = {"avx2": "avx2", "avx512f": "avx512f", "avx512_vnni": "avx512_vnni", "avx_vnni": "avx_vnni",
             "avx512_bf16": "avx512_bf16", "amx_tile": "amx_tile", "neon": "asimd"}


def _version(pkg: str) -> str:
    for dist in (pkg, *ALT_DISTS.get(pkg, ())):
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            continue
    mod = MODULE_FALLBACK.get(pkg)
    if mod and importlib.util.find_spec(mod) is not None:
        try:  # only reached where the module exists without metadata (e.g. Jetson); `info` may import it
            return str(getattr(importlib.import_module(mod), "__version__", "installed (version unknown)"))
        except Exception as e:  # noqa: BLE001 - a broken install is reported, not raised
            return f"broken ({type(e).__name__})"
    return "not installed"


def versions() -> dict[str, str]:
    return {p: _version(p) for p in PACKAGES}


def cpu_info() -> dict:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "Model")) and model in ("", platform.machine(), platform.processor()):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith(("flags", "Features")):
                    flags |= set(line.split(":", 1)[1].split())
    except OSError:
        pass
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"model": model, "arch": platform.machine(), "threads": threads,
            "isa": {k: v in flags for k, v in ISA_FLAGS.items()}}


def gpus() -> list[str]:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        r = subprocess.run([exe, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=10)
        return [ln.strip() for ln in r.stdout.splitlines() if ln.strip()]
    except (OSError, subprocess.SubprocessError):
        return []


def environment() -> dict:
    return {"versions": versions(), "cpu": cpu_info(), "gpus": gpus(), "python": platform.python_version(),
            "os": f"{platform.system()} {platform.release()}"}
