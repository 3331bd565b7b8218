"""Calibration sets: a spec (calibration/*.toml) or a folder of images → one re-iterable `CalibrationSet`.

    cs = build_calibration_set("default", preprocess=Preprocess(), exclude=load_dataset("bundled:eval"))
    for x in cs:                      # float32 NCHW batches of `cs.batch` images, preprocessed on the fly
        ...
    cs.ort_reader("input")            # an onnxruntime CalibrationDataReader over the same images
    cs.nncf_dataset()                 # an nncf.Dataset over the same images

The set keeps only uint8 pixels at the model's input size (3 KB per CIFAR image: 30 MB for 10,000) and
preprocesses one batch at a time, so float activations are never held for the whole set.

Policy on overlap with evaluation data (decided here; also in `nin-edge export --help`): calibration images whose
pixels equal an image of the evaluation set are REFUSED, not warned about — calibrating on the images the
INT8 accuracy is then measured on would make the reported drop look better than it is, and a warning in a
long log is easy to miss. Compare by sha256 of the decoded RGB pixels at the model's input size, so the same
photo under another file name or format is caught too.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Iterator

import numpy as np

from .data import IMAGE_EXTS, SPLITS, Dataset, decode_image, load_dataset
from .errors import NinEdgeError
from .preprocess import Preprocess, fit, preprocess
from .tomlspec import SPECS_DIR, load_toml_spec, resolve_spec_path

DEFAULT_BATCH = 50


class Sampling(str, Enum):
    stratified = "stratified"  # the same number of images per class (labelled sources only)
    random = "random"          # a uniform random draw without replacement


@dataclass(frozen=True)
class CalibrationSpec:
    """One calibration set. `size` images drawn from `source`/`split` by `sampling` with `seed`.

    The preprocessing is always the model's own (the weights' `preprocess`, recorded in bundle.json):
    calibrating with any other would measure ranges the deployed model never sees.
    """

    source: str = "bundled:calib"
    split: str = "train"
    size: int = 1000
    sampling: Sampling = Sampling.stratified
    seed: int = 0
    batch: int = DEFAULT_BATCH  # images per calibration step: bounds memory, not the result
    description: str = ""

    def __post_init__(self):
        if self.size < 1:
            raise ValueError(f"key 'size' = {self.size}: must be at least 1")
        if self.batch < 1:
            raise ValueError(f"key 'batch' = {self.batch}: must be at least 1")
        if self.seed < 0:
            raise ValueError(f"key 'seed' = {self.seed}: must be >= 0")
        if self.split not in SPLITS:
            raise ValueError(f"key 'split' = {self.split!r}: must be one of {', '.join(SPLITS)}")
        if not self.source:
            raise ValueError("key 'source' is empty")


def load_calibration_spec(name_or_path: str) -> tuple[CalibrationSpec, str]:
    """A shipped name (`default`) or a .toml path → (spec, where it came from)."""
    path = resolve_spec_path(name_or_path, "calibration")
    return load_toml_spec(CalibrationSpec, path), str(path)


def pixel_sha256(img: np.ndarray) -> str:
    """sha256 of an HxWx3 uint8 RGB image's pixels (shape included), independent of file name/format."""
    h = hashlib.sha256(f"{img.shape[0]}x{img.shape[1]}x{img.shape[2]}:".encode())
    h.update(np.ascontiguousarray(img, dtype=np.uint8).tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class CalibrationSet:
    """uint8 NHWC images at the model size + provenance; iterating yields preprocessed float32 batches."""

    images: np.ndarray               # (N, S, S, 3) uint8 RGB, already fitted to the input size
    ids: tuple[str, ...]
    hashes: tuple[str, ...]          # pixel_sha256 of each image
    preprocess: Preprocess
    batch: int = DEFAULT_BATCH
    provenance: tuple[tuple[str, object], ...] = ()  # source/spec/split/sampling/seed, for the manifest

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_batches(self) -> int:
        return -(-len(self) // self.batch)

    def batches(self, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        """Preprocessed batches number start..stop-1 (a fresh iterator each call: the set is re-iterable)."""
        stop = self.num_batches if stop is None else min(stop, self.num_batches)
        for b in range(start, stop):
            yield preprocess(self.images[b * self.batch:(b + 1) * self.batch], self.preprocess)

    def __iter__(self) -> Iterator[np.ndarray]:
        return self.batches()

    def manifest(self, method: str | None = None) -> dict:
        m = dict(self.provenance)
        m.update(count=len(self), method=method, batch=self.batch,
                 pixel_hash="sha256 of the decoded HxWx3 uint8 RGB pixels at the model input size",
                 preprocess=self.preprocess.to_dict(),
                 images=[{"id": i, "sha256": h} for i, h in zip(self.ids, self.hashes)])
        return m

    # ---- thin adapters (lazy imports: onnxruntime/nncf are only needed when these are called)
    def ort_reader(self, input_name: str, start: int = 0, stop: int | None = None):
        return make_ort_reader(self, input_name, start, stop)

    def nncf_dataset(self):
        import nncf

        return nncf.Dataset(_BatchedSource(self))


class _BatchedSource:
    """What nncf.Dataset iterates: one item per batch; `batch_size` tells NNCF statistics are batchwise."""

    def __init__(self, cs: CalibrationSet):
        self.cs = cs
        self.batch_size = cs.batch

    def __iter__(self):
        return self.cs.batches()

    def __len__(self) -> int:
        return self.cs.num_batches


def make_ort_reader(cs: CalibrationSet, input_name: str, start: int = 0, stop: int | None = None):
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):
        """Batches start..stop-1 of the set; `rewind` restarts. Calibrating in chunks of batches streams."""

        def __init__(self):
            self._it = cs.batches(start, stop)

        def get_next(self):
            x = next(self._it, None)
            return None if x is None else {input_name: x}

        def rewind(self):
            self._it = cs.batches(start, stop)

        def __len__(self):
            s = cs.num_batches if stop is None else min(stop, cs.num_batches)
            return max(0, s - start)

    return _Reader()


# --------------------------------------------------------------------------- building a set
def _sample(ds: Dataset, spec: CalibrationSpec, where: str) -> np.ndarray:
    n = len(ds)
    if spec.size > n:
        raise NinEdgeError(f"{where}: size {spec.size} is more than the {n} images in {spec.source} ({spec.split})")
    rng = np.random.default_rng(spec.seed)
    if spec.sampling == Sampling.random:
        return np.sort(rng.choice(n, spec.size, replace=False))
    k = len(ds.classes)
    counts = np.bincount(ds.labels, minlength=k)
    per = np.full(k, spec.size // k)
    per[rng.permutation(k)[: spec.size % k]] += 1  # the remainder goes to randomly chosen classes
    short = [ds.classes[c] for c in range(k) if counts[c] < per[c]]
    if short:
        raise NinEdgeError(f"{where}: stratified size {spec.size} needs {per.max()} images per class; "
                           f"class '{short[0]}' has only {counts[ds.classes.index(short[0])]}")
    idx = [rng.choice(np.flatnonzero(ds.labels == c), per[c], replace=False) for c in range(k) if per[c]]
    return np.sort(np.concatenate(idx))


def _from_spec(spec: CalibrationSpec, where: str, pp: Preprocess) -> tuple[np.ndarray, tuple[str, ...], dict]:
    ds = load_dataset(spec.source, spec.split)
    idx = _sample(ds, spec, where)
    sub = ds.subset(idx)
    imgs = sub.images
    if imgs.shape[1:3] != (pp.size, pp.size):
        imgs = np.stack([fit(im, pp.size) for im in imgs])
    ids = sub.ids or tuple(f"{spec.split}/{i:05d}" for i in idx)
    shipped = Path(where).resolve().parent == (SPECS_DIR / "calibration").resolve()
    prov = {"spec": f"calibration/{Path(where).name} (shipped)" if shipped else where, "source": spec.source, "split": spec.split, "sampling": spec.sampling.value,
            "seed": spec.seed, "requested": spec.size}
    return np.ascontiguousarray(imgs), tuple(ids), prov


def _from_folder(root: Path, pp: Preprocess) -> tuple[np.ndarray, tuple[str, ...], dict]:
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    images = [p for p in files if p.suffix.lower() in IMAGE_EXTS]
    if not images:
        first = f"; first file found: {files[0]}" if files else ""
        raise NinEdgeError(f"{root}: no images ({', '.join(IMAGE_EXTS)}) in this calibration folder{first}")
    out = np.empty((len(images), pp.size, pp.size, 3), np.uint8)
    for i, p in enumerate(images):
        try:
            data = p.read_bytes()
        except OSError as e:
            raise NinEdgeError(f"{p}: cannot read ({e.strerror})") from None
        # An unreadable file is refused (named), not skipped: a set silently smaller than the folder is not
        # what the user asked for.
        out[i] = fit(decode_image(data, str(p)), pp.size)
    ids = tuple(str(p.relative_to(root)) for p in images)
    return out, ids, {"spec": None, "source": str(root), "split": None, "sampling": "all", "seed": None,
                      "requested": len(images)}


def build_calibration_set(calib: str, pp: Preprocess, exclude: Dataset | None = None,
                          batch: int | None = None) -> CalibrationSet:
    """`calib`: a shipped spec name, a .toml path, or a folder of images (unlabelled is fine).

    `exclude`: the evaluation set; any calibration image with the same pixels is refused (see module doc).
    """
    p = Path(calib).expanduser()
    if p.is_dir():
        imgs, ids, prov = _from_folder(p, pp)
        b = batch or DEFAULT_BATCH
    else:
        spec, where = load_calibration_spec(calib)
        imgs, ids, prov = _from_spec(spec, where, pp)
        b = batch or spec.batch
    hashes = tuple(pixel_sha256(im) for im in imgs)
    if exclude is not None:
        ex = exclude.images
        if ex.shape[1:3] != (pp.size, pp.size):
            ex = np.stack([fit(im, pp.size) for im in ex])
        ex_hashes = {pixel_sha256(im): (exclude.ids[i] if exclude.ids else str(i)) for i, im in enumerate(ex)}
        both = [(ids[i], ex_hashes[h]) for i, h in enumerate(hashes) if h in ex_hashes]
        if both:
            raise NinEdgeError(f"{calib}: {len(both)} calibration image(s) are also in the evaluation set "
                               f"{exclude.source} (first: '{both[0][0]}' = '{both[0][1]}'); calibrating on "
                               "evaluation images inflates the measured INT8 accuracy — remove them")
    return CalibrationSet(imgs, ids, hashes, pp, b, tuple(prov.items()))
