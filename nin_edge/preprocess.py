"""THE preprocessing of nin-edge: one function from uint8 RGB images to float32 NCHW.

Training, calibration, every backend and the demo call `preprocess`; its description (`Preprocess.to_dict`)
is written into checkpoints and bundle.json so a deployment can reproduce it exactly.

Policy for images that are not the model's input size: resize the shorter side to `size` (area
interpolation when shrinking, linear when enlarging), then centre-crop to `size`×`size`. CIFAR-10 images
(32×32) pass through untouched. Grayscale images are replicated to 3 channels; RGBA drops alpha.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


@dataclass(frozen=True)
class Preprocess:
    size: int = 32
    mean: tuple[float, float, float] = CIFAR10_MEAN
    std: tuple[float, float, float] = CIFAR10_STD
    layout: str = "NCHW"
    color: str = "RGB"
    resize: str = "shorter-side-then-center-crop"

    def __post_init__(self):
        # Only one layout/colour/resize policy is implemented by `preprocess`; a spec naming another must fail
        # here instead of being run with the wrong policy.
        for key, want in (("layout", "NCHW"), ("color", "RGB"), ("resize", "shorter-side-then-center-crop")):
            if getattr(self, key) != want:
                raise ValueError(f"{key} {getattr(self, key)!r} is not supported (only {want!r})")
        if self.size < 1 or len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"size must be positive and mean/std three values with std > 0 (got {self})")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        d["scale"] = "x/255, then (x-mean)/std per channel"
        return d

    @classmethod
    def from_dict(cls, d: dict, where: str = "preprocessing metadata") -> "Preprocess":
        """Inverse of `to_dict` (e.g. from bundle.json); a malformed or unsupported description is a NinEdgeError."""
        from .errors import NinEdgeError

        try:
            kw = {k: str(d[k]) for k in ("layout", "color", "resize") if k in d}
            return cls(size=int(d["size"]), mean=tuple(float(v) for v in d["mean"]),
                       std=tuple(float(v) for v in d["std"]), **kw)
        except (KeyError, TypeError, ValueError) as e:
            raise NinEdgeError(f"{where}: invalid preprocessing description ({type(e).__name__}: {e})") from None


DEFAULT = Preprocess()


def to_rgb_uint8(img: np.ndarray) -> np.ndarray:
    """Any HxW, HxWx1, HxWx3 or HxWx4 uint8 image → HxWx3 RGB uint8 (gray replicated, alpha dropped)."""
    if img.dtype != np.uint8:
        raise ValueError(f"expected uint8 image, got {img.dtype}")
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3 or img.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an HxW, HxWx1, HxWx3 or HxWx4 image, got shape {img.shape}")
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    elif img.shape[2] == 4:
        img = img[:, :, :3]
    return np.ascontiguousarray(img)


def fit(img: np.ndarray, size: int) -> np.ndarray:
    """Resize the shorter side to `size` and centre-crop; a no-op for size×size input."""
    h, w = img.shape[:2]
    if (h, w) == (size, size):
        return img
    import cv2

    s = size / min(h, w)
    nh, nw = max(size, round(h * s)), max(size, round(w * s))
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    img = cv2.resize(img, (nw, nh), interpolation=interp)
    top, left = (nh - size) // 2, (nw - size) // 2
    return img[top : top + size, left : left + size]


def preprocess(images, spec: Preprocess = DEFAULT) -> np.ndarray:
    """uint8 RGB images (one HxWxC, a list of them, or an NHWC array) → float32 NCHW, normalised."""
    if isinstance(images, np.ndarray) and images.ndim == 4 and images.shape[1:3] == (spec.size, spec.size) \
            and images.shape[3] == 3 and images.dtype == np.uint8:
        batch = images
    else:
        if isinstance(images, np.ndarray) and images.ndim in (2, 3):
            images = [images]
        batch = np.stack([fit(to_rgb_uint8(np.asarray(im)), spec.size) for im in images])
    mean = np.asarray(spec.mean, np.float32) * 255.0
    inv_std = 1.0 / (np.asarray(spec.std, np.float32) * 255.0)
    x = (batch.astype(np.float32) - mean) * inv_std
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def preprocess_tensor(batch_u8_nhwc, spec: Preprocess = DEFAULT):
    """The same normalisation as `preprocess`, on a torch uint8 NHWC batch (training's augmented batches).

    Returns float32 NCHW in channels_last memory (no copy of the layout). Tested equal to `preprocess`.
    """
    import torch

    mean = torch.tensor(spec.mean, dtype=torch.float32) * 255.0
    inv_std = 1.0 / (torch.tensor(spec.std, dtype=torch.float32) * 255.0)
    x = (batch_u8_nhwc.float() - mean) * inv_std
    return x.permute(0, 3, 1, 2)
