"""Packaging: the wheel carries the data, weights and spec files, and an installed (non-editable) copy finds them.

The wheel is built offline from a copy of the sources (`pip wheel --no-deps --no-build-isolation`, with the
setuptools already in this environment), so the working tree gets no build/ or egg-info litter.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "nin_edge"
SPEC_KINDS = ("calibration", "targets")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    shutil.copytree(PKG, src / "nin_edge", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for f in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / f, src / f)
    out = tmp / "dist"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                        "-w", str(out), str(src)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "deprecated" not in (r.stdout + r.stderr).lower(), r.stdout + r.stderr  # e.g. the license-table warning
    (whl,) = out.glob("nin_edge-*.whl")
    return whl


@pytest.fixture(scope="module")
def names(wheel) -> set[str]:
    with zipfile.ZipFile(wheel) as z:
        return set(z.namelist())


def test_wheel_has_bundled_subsets_and_weights(names):
    for f in ("assets/subsets/eval.npz", "assets/subsets/val.npz", "assets/subsets/calib.npz",
              "assets/subsets/manifest.json", "assets/weights/nin-cifar.pt"):
        assert f"nin_edge/{f}" in names, f
    shipped = {f"nin_edge/{p.relative_to(PKG)}" for p in (PKG / "assets" / "subsets").glob("*.npz")}
    assert shipped <= names


@pytest.mark.parametrize("kind", SPEC_KINDS)
def test_wheel_has_every_spec_file(names, kind):
    src = sorted((PKG / "specs" / kind).glob("*.toml"))
    if not src:
        pytest.skip(f"no nin_edge/specs/{kind}/*.toml in the tree yet (another issue adds them)")
    for p in src:
        assert f"nin_edge/specs/{kind}/{p.name}" in names, p.name


@pytest.mark.parametrize("kind", SPEC_KINDS)
def test_top_level_spec_dirs_point_into_the_package(kind):
    """calibration/ and targets/ at the repo top are symlinks into nin_edge/specs/, so a spec added where the
    README says lands in the package (and the wheel) without a copy that could drift."""
    top = REPO / kind
    assert top.is_symlink(), f"{kind}/ is not a symlink"
    assert top.resolve() == (PKG / "specs" / kind).resolve()


def test_wheel_metadata(wheel, names):
    with zipfile.ZipFile(wheel) as z:
        info = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        entry = z.read(info).decode()
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "nin-edge = nin_edge.cli:main" in entry
    requires = [ln for ln in meta.splitlines() if ln.startswith("Requires-Dist:")]
    trt = [ln for ln in requires if ln.split()[1].startswith("tensorrt")]
    assert trt and all('extra == "tensorrt"' in ln for ln in trt), trt  # never required
    for core in ("torch", "onnx", "onnxruntime", "typer", "opencv-python", "numpy"):
        assert any(ln.split()[1].startswith(core) and "extra ==" not in ln for ln in requires), core
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)


def test_installed_wheel_finds_its_files(wheel, names, tmp_path):
    target = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target",
                        str(target), str(wheel)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    code = (
        "import json, nin_edge\n"
        "from nin_edge.data import load_dataset\n"
        "from nin_edge.tomlspec import SPECS_DIR\n"
        "from nin_edge.checkpoint import shipped_weights\n"
        "ds = load_dataset('bundled:eval')\n"
        "print(json.dumps({'file': nin_edge.__file__, 'n': len(ds), 'specs': str(SPECS_DIR),\n"
        "  'tomls': sorted(str(p.relative_to(SPECS_DIR)) for p in SPECS_DIR.rglob('*.toml')),\n"
        "  'weights': str(shipped_weights()), 'weights_exist': shipped_weights().exists()}))\n")
    env = {**os.environ, "PYTHONPATH": str(target), "NIN_EDGE_CACHE": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["file"].startswith(str(target)), f"imported {got['file']}, not the installed copy"
    assert got["n"] == 1000
    assert got["specs"].startswith(str(target)) and got["weights"].startswith(str(target)) and got["weights_exist"]
    in_wheel = sorted(n[len("nin_edge/specs/"):] for n in names
                      if n.startswith("nin_edge/specs/") and n.endswith(".toml"))
    assert got["tomls"] == in_wheel
    r = subprocess.run([sys.executable, "-m", "nin_edge", "--help"], capture_output=True, text=True, timeout=120,
                       cwd=tmp_path, env=env)
    assert r.returncode == 0 and "Usage" in r.stdout, r.stderr
