"""Checkpoints: weights + metadata, written atomically, read with `torch.load(weights_only=True)`."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from . import __version__
from .data import CIFAR10_CLASSES
from .errors import NinEdgeError
from .models import create_model, list_models
from .preprocess import DEFAULT

FORMAT = "nin-edge-checkpoint/1"
SHIPPED_DIR = Path(__file__).parent / "assets" / "weights"
SHIPPED_ARCH = "nin-cifar"


def shipped_weights() -> Path:
    return SHIPPED_DIR / f"{SHIPPED_ARCH}.pt"


def atomic_torch_save(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a nin-edge checkpoint or a plain state_dict. Always `weights_only=True`."""
    p = Path(path)
    if not p.exists():
        raise NinEdgeError(f"{p}: weights file not found")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated zip, pickle with forbidden globals, garbage
        raise NinEdgeError(f"{p}: not a readable checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        return obj
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {"format": "state_dict", "state_dict": obj}
    raise NinEdgeError(f"{p}: neither a nin-edge checkpoint nor a state_dict")


def _guess_arch(state_dict: dict) -> str | None:
    for name in list_models():
        if name == "nin-imagenet":
            continue
        m = create_model(name)
        sd = m.state_dict()
        if sd.keys() == state_dict.keys():
            if all(sd[k].shape[1:] == state_dict[k].shape[1:] for k in sd):
                return name
    return None


def load_model(weights: str | os.PathLike | None = None, arch: str | None = None):
    """→ (model in eval mode, metadata dict). `weights=None` loads the shipped default."""
    path = Path(weights) if weights is not None else shipped_weights()
    ck = load_checkpoint(path)
    sd = ck["state_dict"]
    ck_arch = ck.get("arch")
    if arch and ck_arch and arch != ck_arch:
        raise NinEdgeError(f"{path}: checkpoint is for arch '{ck_arch}', not '{arch}'")
    arch = arch or ck_arch or _guess_arch(sd)
    if arch is None:
        raise NinEdgeError(f"{path}: plain state_dict matches no zoo model; pass --arch")
    classes = tuple(ck.get("classes") or CIFAR10_CLASSES)
    model = create_model(arch, num_classes=len(classes))
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        detail = next((ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln), first)
        raise NinEdgeError(f"{path}: weights do not fit arch '{arch}' with {len(classes)} classes ({detail[:160]})") from None
    model.eval()
    meta = {k: v for k, v in ck.items() if k not in ("state_dict", "optimizer")}
    meta.update(arch=arch, classes=list(classes), weights=str(path),
                preprocess=ck.get("preprocess") or DEFAULT.to_dict())
    return model, meta


def make_checkpoint(model, arch: str, classes, **meta) -> dict:
    sd = {k: v.detach().clone().cpu() for k, v in model.state_dict().items()}
    return {"format": FORMAT, "arch": arch, "classes": list(classes), "num_classes": len(classes),
            "preprocess": DEFAULT.to_dict(), "code_version": __version__, "state_dict": sd, **meta}
