"""The deployment bundle: one directory, `bundle.json` + `labels.txt` + artifacts.

Written by `BundleWriter` into a temporary sibling directory and renamed into place only when complete, so
an error or Ctrl-C never leaves a half-written bundle and never destroys the previous one before the new
one is whole. `Bundle` reads and checks it; `Bundle.artifact(backend, precision)` finds what a runner needs.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import NinEdgeError
from .preprocess import Preprocess

SCHEMA = "nin-edge-bundle/1"

# (backend, precision) → artifact path inside the bundle, and the export command that makes it
LAYOUT: dict[tuple[str, str], tuple[str, str]] = {
    ("onnxruntime", "fp32"): ("model.onnx", "nin-edge export"),
    ("onnxruntime", "int8"): ("model.int8.onnx", "nin-edge export --int8"),
    ("onnxruntime-trt-qdq", "int8"): ("model.int8.trt.onnx", "nin-edge export --int8"),
    ("openvino", "fp32"): ("openvino/model.xml", "nin-edge export --formats onnx,openvino"),
    ("openvino", "fp16"): ("openvino/model.fp16.xml", "nin-edge export --formats onnx,openvino"),
    ("openvino", "int8"): ("openvino/model.int8.xml", "nin-edge export --int8 --formats onnx,openvino"),
    ("tensorrt", "fp32"): ("tensorrt/model.fp32.engine", "nin-edge export --formats onnx,tensorrt"),
    ("tensorrt", "fp16"): ("tensorrt/model.fp16.engine", "nin-edge export --formats onnx,tensorrt"),
    ("tensorrt", "int8"): ("tensorrt/model.int8.engine", "nin-edge export --int8 --formats onnx,tensorrt"),
    ("torch", "fp32"): ("model.pt", "nin-edge export"),
}


def sha256_of(path: Path) -> str:
    from .data import sha256_file

    return sha256_file(path)


@dataclass(frozen=True)
class Bundle:
    root: Path
    meta: dict

    @classmethod
    def load(cls, root: str | os.PathLike) -> "Bundle":
        root = Path(root)
        mp = root / "bundle.json"
        if not root.is_dir():
            raise NinEdgeError(f"{root}: bundle directory not found (make one with: nin-edge export --int8 --out {root})")
        if not mp.exists():
            raise NinEdgeError(f"{mp}: missing; {root} is not a nin-edge bundle")
        try:
            meta = json.loads(mp.read_text())
        except json.JSONDecodeError as e:
            raise NinEdgeError(f"{mp}: not valid JSON ({e})") from None
        if meta.get("schema") != SCHEMA:
            raise NinEdgeError(f"{mp}: schema {meta.get('schema')!r}, expected {SCHEMA!r}")
        return cls(root, meta)

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def arch(self) -> str:
        return self.meta["arch"]

    @property
    def input_size(self) -> int:
        return int(self.meta["input"]["size"])

    @property
    def preprocess(self) -> Preprocess:
        return Preprocess.from_dict(self.meta["preprocess"])

    @property
    def tta(self) -> str:
        """Test-time augmentation every artifact has in its graph (nin_edge/tta.py); bundles before it: none."""
        return (self.meta.get("tta") or {}).get("name", "none")

    @property
    def forward_passes(self) -> int:
        """Forward passes of the network per input image (2 with flip TTA): what latency and MACs scale with."""
        return int((self.meta.get("tta") or {}).get("forward_passes_per_image", 1))

    @property
    def artifacts(self) -> dict[str, dict]:
        return self.meta.get("artifacts", {})

    def artifact(self, backend: str, precision: str) -> Path:
        key = (backend, precision)
        if key not in LAYOUT:
            choices = sorted({p for b, p in LAYOUT if b == backend})
            raise NinEdgeError(f"backend '{backend}' has no precision '{precision}' (choose: {', '.join(choices) or 'none'})")
        rel, cmd = LAYOUT[key]
        p = self.root / rel
        if not p.exists():
            tta = f" --tta {self.tta}" if self.tta != "none" else ""
            raise NinEdgeError(f"{p}: the bundle has no {backend} {precision} artifact (make it with: {cmd}{tta} "
                               f"--out {self.root} --force)")
        return p

    def verify(self) -> list[str]:
        """Paths whose sha256 no longer matches bundle.json (empty when the bundle is intact)."""
        bad = []
        for rel, info in self.artifacts.items():
            p = self.root / rel
            if not p.exists() or sha256_of(p) != info.get("sha256"):
                bad.append(rel)
        return bad


class BundleWriter:
    """with BundleWriter(out, force) as w: write files under w.tmp; w.add_artifact(...); w.meta[...] = ...

    On clean exit: bundle.json written, tmp renamed to `out` (an existing `out` is replaced only with force,
    and only after the new bundle is complete). On any exception, including KeyboardInterrupt: tmp removed.
    """

    def __init__(self, out: str | os.PathLike, force: bool = False):
        self.out = Path(out)
        self.force = force
        if self.out.exists() and not force:
            raise NinEdgeError(f"{self.out}: already exists (use --force to replace it)")
        if self.out.exists() and not (self.out / "bundle.json").exists() and any(self.out.iterdir()):
            raise NinEdgeError(f"{self.out}: exists and is not a nin-edge bundle; refusing to replace it")
        self.meta: dict = {"schema": SCHEMA, "artifacts": {}}
        self.tmp: Path | None = None

    def __enter__(self) -> "BundleWriter":
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(dir=self.out.parent, prefix=f".{self.out.name}.tmp-"))
        return self

    def path(self, rel: str) -> Path:
        if self.tmp is None:
            raise RuntimeError("BundleWriter.path() used outside its `with` block")
        p = self.tmp / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def add_artifact(self, rel: str, backend: str, precision: str, **info) -> dict:
        p = self.path(rel)
        files = [p] + ([p.with_suffix(".bin")] if p.suffix == ".xml" else [])
        entry = {"backend": backend, "precision": precision, "sha256": sha256_of(p),
                 "bytes": sum(f.stat().st_size for f in files if f.exists()), **info}
        self.meta["artifacts"][rel] = entry
        return entry

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.tmp is None:
            return
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        try:
            (self.tmp / "bundle.json").write_text(json.dumps(self.meta, indent=2, sort_keys=False) + "\n")
            os.chmod(self.tmp, 0o755)
            if self.out.exists():
                old = self.out.with_name(f".{self.out.name}.old-{os.getpid()}")
                os.replace(self.out, old)
                os.replace(self.tmp, self.out)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(self.tmp, self.out)
        except BaseException:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise
