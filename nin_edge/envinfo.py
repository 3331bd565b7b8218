"""What machine and library versions a result was measured on (used by `info`, bench and reports)."""
from __future__ import annotations

import importlib.metadata as md
import os
import platform
import shutil
import subprocess

PACKAGES = ("nin-edge", "torch", "onnx", "onnxruntime", "openvino", "nncf", "tensorrt", "opencv-python", "numpy")
ISA_FLAGS = {"avx2": "avx2", "avx512f": "avx512f", "avx512_vnni": "avx512_vnni", "avx_vnni": "avx_vnni",
             "avx512_bf16": "avx512_bf16", "amx_tile": "amx_tile", "neon": "asimd"}


def versions() -> dict[str, str]:
    out = {}
    for p in PACKAGES:
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            out[p] = "not installed"
    return out


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
