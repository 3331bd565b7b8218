"""Checkpoints: weights + metadata, written atomically, read with `torch.load(weights_only=True)`."""
from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

import torch

from . import __version__
from .atomic import atomic_write
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
    atomic_write(path, lambda tmp: torch.save(obj, tmp))

def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a nin-edge checkpoint or a plain state_dict. Always `weights_only=True`.

    Plain state_dicts come back as {"format": "state_dict", "state_dict": ...}; a `{"state_dict": {...}}`
    wrapper and the "module." prefix of a state_dict saved from a DDP-wrapped model are accepted too.
    """
    p = Path(path)
    if not p.exists():
        raise NinEdgeError(f"{p}: weights file not found")
    if p.is_dir():
        raise NinEdgeError(f"{p}: is a directory, expected a .pt checkpoint file")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated zip, pickle with forbidden globals, garbage
        lines = str(e).splitlines() or [""]
        msg = next((ln.strip() for ln in lines if "Unsupported global" in ln), lines[0])[:160]
        raise NinEdgeError(f"{p}: not a readable checkpoint (corrupt or truncated? {type(e).__name__}: {msg})") from None
    if isinstance(obj, dict) and isinstance(obj.get("format"), str) and obj["format"].startswith("nin-edge-checkpoint/"):
        if obj["format"] != FORMAT:
            raise NinEdgeError(f"{p}: checkpoint format {obj['format']!r} is not supported by this nin-edge "
                               f"({__version__} reads {FORMAT!r})")
        if not _is_state_dict(obj.get("state_dict")):
            raise NinEdgeError(f"{p}: nin-edge checkpoint without a state_dict (damaged)")
        return obj
    if isinstance(obj, dict) and _is_state_dict(obj.get("state_dict")) and len(obj) <= 3:
        obj = obj["state_dict"]
    if _is_state_dict(obj):
        sd = {k.removeprefix("module."): v for k, v in obj.items()}
        return {"format": "state_dict", "state_dict": sd}
    raise NinEdgeError(f"{p}: neither a nin-edge checkpoint nor a state_dict")


def run_history(path: str | os.PathLike, ck: dict) -> list[dict]:
    """The whole per-epoch history of the run `ck` (read from `path`) belongs to: best.pt's ends at its own
    epoch, so the run's last.pt next to it is preferred when it records the same run."""
    path = Path(path)
    sib = path.with_name("last.pt")
    if sib != path and sib.is_file():
        rec = load_checkpoint(sib)
        if rec.get("run") == ck.get("run"):
            return list(rec.get("history") or ck.get("history") or [])
    return list(ck.get("history") or [])


def _is_state_dict(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                       for k, v in obj.items())


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


def _out_features(state_dict: dict) -> int | None:
    """Class count of a zoo model's state_dict: rows of its last weight (the head or the class-map conv)."""
    weights = [v for k, v in state_dict.items() if k.endswith("weight") and v.ndim >= 2]
    return int(weights[-1].shape[0]) if weights else None


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
    if arch not in list_models():
        raise NinEdgeError(f"{path}: checkpoint names arch '{arch}', which is not in the zoo "
                           f"({', '.join(list_models())})")
    classes = tuple(ck.get("classes") or CIFAR10_CLASSES)
    n_out = _out_features(sd)
    if ck["format"] == "state_dict" and n_out is not None and n_out != len(classes):
        raise NinEdgeError(f"{path}: plain state_dict has {n_out} output classes, but without recorded class names "
                           f"only CIFAR-10's {len(classes)} are known; use a nin-edge checkpoint (nin-edge train "
                           f"records the class names)")
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


@functools.lru_cache(maxsize=None)
def code_commit() -> str | None:
    """git commit of the nin_edge sources (+"-dirty" if they differ from it); None outside a git checkout."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}  # read-only: never refresh the index from here
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                              text=True, timeout=10, env=env)
        if head.returncode:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--",
                                "nin_edge"], capture_output=True, text=True, timeout=10, env=env)
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def make_checkpoint(model, arch: str, classes, **meta) -> dict:
    sd = {k: v.detach().clone().cpu() for k, v in model.state_dict().items()}
    return {"format": FORMAT, "arch": arch, "classes": list(classes), "num_classes": len(classes),
            "preprocess": DEFAULT.to_dict(), "code_version": __version__, "code_commit": code_commit(),
            "torch_version": str(torch.__version__), "state_dict": sd, **meta}
