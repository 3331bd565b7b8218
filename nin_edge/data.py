"""Data sources → (uint8 NHWC RGB images, int64 labels, class names).

Sources (`load_dataset(source, split)`):
  * ``bundled:eval`` / ``bundled:val`` / ``bundled:calib`` — the 1,000-image subsets shipped in the package
    (see subsets.py);
  * the official CIFAR-10 python tarball ``cifar-10-python.tar.gz`` or its extracted ``cifar-10-batches-py/``;
  * an image-folder tree ``ROOT/<split>/<class>/*.(jpg|jpeg|png|bmp)`` or a .tar/.tar.gz of one (any single
    top-level folder is allowed, e.g. ``cifar10/train/cat/0001.jpg``). Dot-files and ``__MACOSX/`` are skipped.
Archives are read in memory, member by member; nothing is ever extracted, so no path can escape.
Decoded arrays are cached (keyed by the archive's sha256 and CACHE_VERSION) so 60,000 JPEGs are decoded once;
a cache file that fails its zip CRC or a consistency check is rebuilt, never trusted.
Grayscale images are replicated to RGB and RGBA drops alpha (see preprocess.to_rgb_uint8).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import tarfile
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import NinEdgeError
from .preprocess import to_rgb_uint8

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
SUBSETS_DIR = Path(__file__).parent / "assets" / "subsets"
SPLITS = ("train", "test")


@dataclass(frozen=True)
class Dataset:
    images: np.ndarray  # (N, H, W, 3) uint8 RGB
    labels: np.ndarray  # (N,) int64
    classes: tuple[str, ...]
    source: str
    ids: tuple[str, ...] = field(default=(), repr=False)  # stable per-image names (for manifests/overlap)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx) -> "Dataset":
        idx = np.asarray(idx)
        ids = tuple(self.ids[i] for i in idx) if self.ids else ()
        return Dataset(self.images[idx], self.labels[idx], self.classes, self.source, ids)


VAL_SPLIT = (5000, 0)  # (--val-size, --split-seed) of the training runs' held-out split that bundled:val is drawn from


def split_seed_of(run: dict) -> int:
    """The seed of a run's validation split (its --split-seed, else its --seed), from a checkpoint's `run`."""
    split = run.get("split_seed")
    return int(run.get("seed", 0) if split is None else split)


def training_record(meta: dict) -> dict:
    """What a checkpoint's metadata says about the train images it saw (kept in bundle.json's weights entry)."""
    run = meta.get("run") or {}
    return {"data_sha256": meta.get("data_sha256"), "val_size": run.get("val_size"),
            "split_seed": split_seed_of(run) if run else None,  # no run record (plain weights): nothing to tell
            "hold_out": (run.get("hold_out") or {}).get("source")}


def trained_on(training: dict | None, source: str) -> str | None:
    """Why the bundled subset `source` is among the images weights with this `training_record` trained on, or
    None when it is not (or the record cannot tell: weights from elsewhere, or trained on other data)."""
    if not training or not str(source).startswith("bundled:"):
        return None
    name = str(source).split(":", 1)[1]
    manifest = json.loads((SUBSETS_DIR / "manifest.json").read_text())
    if name == "eval" or training.get("data_sha256") != manifest.get("source_sha256"):
        return None  # test images, or another training archive
    split_seed = training.get("split_seed", training.get("seed"))  # "seed": bundles written before --split-seed
    if name == "val" and ((training.get("val_size"), split_seed) == VAL_SPLIT
                          or training.get("hold_out") == "bundled:val"):
        return None
    how = ("they are train images outside the validation split" if name != "val" else
           f"the weights were trained with --val-size {training.get('val_size')} --split-seed {split_seed}"
           f"{'' if training.get('hold_out') else ' and no --hold-out bundled:val'}")
    return f"the weights trained on these images ({how})"


def default_cache_dir() -> Path:
    return Path(os.environ.get("NIN_EDGE_CACHE", Path.home() / ".cache" / "nin-edge"))


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def decode_image(data: bytes, name: str) -> np.ndarray:
    """Encoded bytes → HxWx3 RGB uint8 (grayscale replicated, alpha dropped). Names the file if undecodable."""
    import cv2

    arr = None
    if data:
        # OpenCV logs its own "buffer is incomplete" warnings to stderr; the one named error below replaces them.
        level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
        try:
            arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        except cv2.error:
            arr = None
        finally:
            cv2.utils.logging.setLogLevel(level)
    if arr is None:
        raise NinEdgeError(f"{name}: cannot decode image (corrupt or not an image)")
    if arr.dtype != np.uint8:  # 16-bit PNG
        arr = (arr / 257).astype(np.uint8)
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = arr[:, :, ::-1]
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, [2, 1, 0]]
    return to_rgb_uint8(np.ascontiguousarray(arr))


def _stack(images: list[np.ndarray], where: str) -> np.ndarray:
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        from .preprocess import fit

        size = min(min(s[:2]) for s in shapes)
        images = [fit(im, size) for im in images]
    return np.stack(images)


# --------------------------------------------------------------------------- official CIFAR-10 pickles
class _SafeUnpickler(pickle.Unpickler):
    """CIFAR-10 batches are pickled dicts of bytes, lists and numpy arrays; refuse anything else."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"forbidden global {module}.{name}")


def _read_cifar_batch(data: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        d = _SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
        raw = np.asarray(d[b"data"], dtype=np.uint8)
        labels = np.asarray(d[b"labels"], dtype=np.int64)
        images = raw.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    except Exception as e:  # noqa: BLE001 - any malformed batch is one user-facing error
        raise NinEdgeError(f"{name}: not a valid CIFAR-10 python batch ({e})") from None
    if len(images) != len(labels):
        raise NinEdgeError(f"{name}: {len(images)} images but {len(labels)} labels")
    return np.ascontiguousarray(images), labels


def _cifar_batch_names(split: str) -> list[str]:
    return [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]


def _load_cifar_python(files: dict[str, bytes], split: str, source: str) -> Dataset:
    images, labels = [], []
    for bn in _cifar_batch_names(split):
        if bn not in files:
            raise NinEdgeError(f"{source}: missing CIFAR-10 batch '{bn}' for split '{split}'")
        im, lb = _read_cifar_batch(files[bn], f"{source}:{bn}")
        images.append(im)
        labels.append(lb)
    classes = CIFAR10_CLASSES
    if "batches.meta" in files:
        try:
            meta = _SafeUnpickler(io.BytesIO(files["batches.meta"]), encoding="bytes").load()
            classes = tuple(c.decode() if isinstance(c, bytes) else str(c) for c in meta[b"label_names"])
        except Exception:  # noqa: BLE001
            raise NinEdgeError(f"{source}: batches.meta is not a valid CIFAR-10 meta file") from None
    imgs, lbls = np.concatenate(images), np.concatenate(labels)
    ids = tuple(f"{split}/{i:05d}" for i in range(len(lbls)))
    return Dataset(imgs, lbls, classes, source, ids)


# --------------------------------------------------------------------------- image folders / archives
def _check_member_name(name: str, source: str) -> list[str]:
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if name.startswith("/") or ".." in parts:
        raise NinEdgeError(f"{source}: unsafe member name {name!r} in archive (refused)")
    return parts


def _from_entries(entries: list[tuple[str, str, str, bytes]], split: str, source: str) -> Dataset:
    """entries: (split, class, filename, bytes) → Dataset for `split`, classes sorted alphabetically."""
    splits = sorted({e[0] for e in entries})
    mine = [e for e in entries if e[0] == split]
    if not mine:
        raise NinEdgeError(f"{source}: split folder '{split}' not found (found: {', '.join(splits) or 'none'})")
    classes = sorted({e[1] for e in mine})
    images, labels, ids = [], [], []
    for sp, cls, fname, data in sorted(mine, key=lambda e: (e[1], e[2])):
        images.append(decode_image(data, f"{source}:{sp}/{cls}/{fname}"))
        labels.append(classes.index(cls))
        ids.append(f"{sp}/{cls}/{fname}")
    return Dataset(_stack(images, source), np.asarray(labels, np.int64), tuple(classes), source, tuple(ids))


def _hidden(name: str) -> bool:
    """Dot-files and macOS archive litter (``._x.jpg`` AppleDouble files, ``__MACOSX/``) are not data."""
    return name.startswith(".") or name == "__MACOSX"


def _scan_folder(root: Path, split: str) -> Dataset:
    split_dir = root / split
    if not split_dir.is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir() and not _hidden(p.name))
        if len(found) == 1 and (root / found[0] / split).is_dir():  # one enclosing folder, as archives allow
            return _scan_folder(root / found[0], split)
        raise NinEdgeError(f"{root}: split folder '{split}' not found (found: {', '.join(found) or 'none'})")
    entries = []
    class_dirs = sorted(p for p in split_dir.iterdir() if p.is_dir() and not _hidden(p.name))
    if not class_dirs:
        raise NinEdgeError(f"{split_dir}: no class folders inside")
    for cdir in class_dirs:
        files = sorted(p for p in cdir.iterdir()
                       if p.suffix.lower() in IMAGE_EXTS and p.is_file() and not _hidden(p.name))
        if not files:
            raise NinEdgeError(f"{cdir}: class folder has no images ({', '.join(IMAGE_EXTS)})")
        for f in files:
            entries.append((split, cdir.name, f.name, f.read_bytes()))
    return _from_entries(entries, split, str(root))


def _read_tar(path: Path) -> tuple[list[tuple[str, str, str, bytes]], dict[str, bytes]]:
    """Read a tar(.gz) in memory. Returns image-folder entries and any CIFAR python batch files."""
    entries: list[tuple[str, str, str, bytes]] = []
    batches: dict[str, bytes] = {}
    empty_class_dirs: set[tuple[str, str]] = set()
    try:
        with tarfile.open(path, "r:*") as tf:
            for m in tf:
                parts = _check_member_name(m.name, str(path))
                if any(_hidden(p) for p in parts):
                    continue
                if m.isdir():
                    if len(parts) >= 2:
                        empty_class_dirs.add(tuple(parts[-2:]))
                    continue
                if not m.isfile():
                    continue  # links/devices are never followed
                base = parts[-1]
                if base in ("batches.meta", "test_batch") or base.startswith("data_batch_"):
                    batches[base] = tf.extractfile(m).read()
                elif base.lower().endswith(IMAGE_EXTS) and len(parts) >= 3:
                    entries.append((parts[-3], parts[-2], base, tf.extractfile(m).read()))
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise NinEdgeError(f"{path}: truncated or corrupt archive ({e})") from None
    seen = {(e[0], e[1]) for e in entries}
    for sp_cls in empty_class_dirs:
        if sp_cls[0] in {e[0] for e in entries} and sp_cls not in seen:
            raise NinEdgeError(f"{path}: class folder '{'/'.join(sp_cls)}' has no images")
    return entries, batches


# --------------------------------------------------------------------------- cache
# Bump when the decoded content for the same archive bytes changes (decoder, ordering, ids), so old caches are
# ignored rather than trusted.
CACHE_VERSION = 1


def _cache_path(key: str, split: str, cache_dir: Path | None) -> Path:
    return (cache_dir or default_cache_dir()) / f"{key[:24]}-v{CACHE_VERSION}-{split}.npz"


def _cache_load(p: Path, source: str) -> Dataset | None:
    if not p.exists():
        return None
    try:  # the zip CRC of each member catches flipped bytes; truncation fails to open
        with np.load(p, allow_pickle=False) as z:
            ds = Dataset(z["images"], z["labels"], tuple(str(c) for c in z["classes"]), source,
                         tuple(str(i) for i in z["ids"]))
    except Exception:  # noqa: BLE001 - a bad cache file is rebuilt, never trusted
        return None
    n = len(ds.labels)
    if (ds.images.dtype != np.uint8 or ds.images.ndim != 4 or ds.images.shape[3] != 3 or len(ds.images) != n
            or len(ds.ids) != n or n == 0 or ds.labels.min() < 0 or ds.labels.max() >= len(ds.classes)):
        return None
    return ds


def _cache_save(p: Path, ds: Dataset) -> None:
    """Best effort: an unwritable cache directory costs a re-decode next time, never an error."""
    tmp = None
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=p.parent, suffix=".tmp.npz")
        os.close(fd)
        np.savez(tmp, images=ds.images, labels=ds.labels, classes=np.asarray(ds.classes),
                 ids=np.asarray(ds.ids))
        os.replace(tmp, p)
    except OSError:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


# --------------------------------------------------------------------------- bundled subsets
def load_bundled(name: str) -> Dataset:
    p = SUBSETS_DIR / f"{name}.npz"
    if not name or "/" in name or not p.exists():
        shipped = ", ".join(f"bundled:{q.stem}" for q in sorted(SUBSETS_DIR.glob("*.npz")))
        raise NinEdgeError(f"bundled:{name}: no such bundled subset (choose one of: {shipped})")
    with np.load(p, allow_pickle=False) as z:
        blob, offsets = z["blob"], z["offsets"]
        names = [str(n) for n in z["names"]]
        images = [decode_image(blob[offsets[i]:offsets[i + 1]].tobytes(), f"bundled:{name}:{names[i]}")
                  for i in range(len(names))]
        return Dataset(np.stack(images), z["labels"].astype(np.int64), tuple(str(c) for c in z["classes"]),
                       f"bundled:{name}", tuple(names))


# --------------------------------------------------------------------------- entry point
def load_dataset(source: str | os.PathLike, split: str = "test", cache_dir: Path | None = None,
                 use_cache: bool = True) -> Dataset:
    """Load images+labels+classes from any supported source (see module doc). Errors name the source."""
    src = str(source)
    if src.startswith("bundled:"):
        return load_bundled(src.split(":", 1)[1])
    if split not in SPLITS:
        raise NinEdgeError(f"split '{split}' is not one of: {', '.join(SPLITS)}")
    path = Path(src).expanduser()
    if not path.exists():
        raise NinEdgeError(f"{path}: no such file or directory")
    if path.is_dir():
        if (path / "cifar-10-batches-py").is_dir():
            path = path / "cifar-10-batches-py"
        if (path / "test_batch").exists() or (path / "data_batch_1").exists():
            files = {p.name: p.read_bytes() for p in path.iterdir()
                     if p.name in ("batches.meta", "test_batch") or p.name.startswith("data_batch_")}
            return _load_cifar_python(files, split, str(path))
        return _scan_folder(path, split)
    if not tarfile.is_tarfile(path) and not path.name.endswith((".tar", ".tar.gz", ".tgz")):
        raise NinEdgeError(f"{path}: not a directory or a .tar/.tar.gz archive")
    key = sha256_file(path)
    cp = _cache_path(key, split, cache_dir)
    if use_cache and (ds := _cache_load(cp, str(path))) is not None:
        return ds
    entries, batches = _read_tar(path)
    if batches and not entries:
        ds = _load_cifar_python(batches, split, str(path))
    elif entries:
        ds = _from_entries(entries, split, str(path))
    else:
        raise NinEdgeError(f"{path}: archive holds no images and no CIFAR-10 batches")
    if use_cache:
        _cache_save(cp, ds)
    return ds


def check_classes(ds: Dataset, classes: tuple[str, ...] | list[str], what: str = "model") -> None:
    if tuple(ds.classes) != tuple(classes):
        raise NinEdgeError(f"{ds.source}: classes {list(ds.classes)} differ from the {what}'s {list(classes)}")


def download_cifar10(dest_dir: Path, url: str = CIFAR10_URL, md5: str = CIFAR10_MD5) -> Path:
    """Fetch the official tarball with MD5 verification (written to a temp name, renamed when verified)."""
    import urllib.request

    dest_dir.mkdir(parents=True, exist_ok=True)
    out = dest_dir / "cifar-10-python.tar.gz"
    if out.exists() and hashlib.md5(out.read_bytes()).hexdigest() == md5:
        return out
    fd, tmp = tempfile.mkstemp(dir=dest_dir, suffix=".part")
    h = hashlib.md5()
    try:
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=60) as r:
            while chunk := r.read(1 << 20):
                h.update(chunk)
                f.write(chunk)
        if h.hexdigest() != md5:
            raise NinEdgeError(f"{url}: checksum mismatch (md5 {h.hexdigest()}, expected {md5})")
        os.replace(tmp, out)
    except (OSError, ValueError) as e:  # URLError is an OSError; ValueError: not a URL at all
        raise NinEdgeError(f"{url}: download failed ({e})") from None
    finally:
        Path(tmp).unlink(missing_ok=True)
    return out
