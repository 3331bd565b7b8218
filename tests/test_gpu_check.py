"""benchmarks/gpu_check.sh — the one-pass GPU check. Its GPU steps need an NVIDIA GPU; here we check that the
script parses and that, without CUDA, it records the environment and stops with exit 2 and the reason."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"


def test_gpu_check_script_parses():
    r = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present: run benchmarks/gpu_check.sh itself (minutes)")
def test_gpu_check_without_cuda_records_env_and_exits_2(tmp_path):
    out = tmp_path / "gc"
    r = subprocess.run(["bash", str(SCRIPT), str(out)], capture_output=True, text=True, timeout=300,
                       env={"PATH": "/usr/bin:/bin", "NIN_EDGE_PY": sys.executable, "HOME": str(tmp_path)})
    assert r.returncode == 2, r.stdout + r.stderr
    summary = (out / "summary.txt").read_text()
    assert summary.startswith("env") and "SKIP no CUDA device visible to torch" in summary
    env = (out / "env.txt").read_text()
    assert f"module torch: {torch.__version__}" in env and "module tensorrt:" in env
