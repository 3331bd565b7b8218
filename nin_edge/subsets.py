"""Cut the bundled subsets from a CIFAR-10 image archive: `python -m nin_edge.subsets ARCHIVE`.

  eval  — 1,000 test images, 100 per class: quick evaluation (never used to choose anything).
  val   — 1,000 train images, 100 per class, drawn from the training run's held-out validation split
          (`train.split_train_val`, seed 0): the shipped weights never saw them, so choices (calibration
          method, --max-drop layers) are made here, not on the test split.
  calib — 1,000 train images, 100 per class, outside that validation split: the default calibration set.
The original JPEG bytes are stored (no re-encoding: pixels equal the archive's), in one .npz per subset
(blob + offsets, no pickle), with manifest.json listing every file and its sha256.
"""
from __future__ import annotations

import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path

import numpy as np

from .data import SUBSETS_DIR, VAL_SPLIT, load_dataset
from .train import split_train_val

PER_CLASS = 100
SEED = 20261201


def _raw_bytes(archive: Path) -> dict[str, bytes]:
    out = {}
    with tarfile.open(archive, "r:*") as tf:
        for m in tf:
            if m.isfile() and m.name.lower().endswith((".jpg", ".jpeg", ".png")):
                parts = m.name.split("/")
                out["/".join(parts[-3:])] = tf.extractfile(m).read()
    return out


def _pick(ds, idx_pool: np.ndarray, rng) -> list[int]:
    chosen = []
    for c in range(len(ds.classes)):
        pool = idx_pool[ds.labels[idx_pool] == c]
        chosen.extend(sorted(rng.choice(pool, PER_CLASS, replace=False).tolist()))
    return chosen


def cut(archive: Path, out_dir: Path = SUBSETS_DIR) -> dict:
    raw = _raw_bytes(archive)
    rng = np.random.default_rng(SEED)
    train = load_dataset(archive, "train")
    test = load_dataset(archive, "test")
    _, val = split_train_val(train, *VAL_SPLIT)
    val_ids = set(val.ids)
    train_idx = np.arange(len(train))
    in_val = np.array([i in val_ids for i in train.ids])
    picks = {
        "eval": (test, _pick(test, np.arange(len(test)), rng)),
        "val": (train, _pick(train, train_idx[in_val], rng)),
        "calib": (train, _pick(train, train_idx[~in_val], rng)),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = {"source": archive.name, "source_sha256": hashlib.sha256(archive.read_bytes()).hexdigest(),
                "seed": SEED, "per_class": PER_CLASS, "subsets": {}}
    for name, (ds, idx) in picks.items():
        names = [ds.ids[i] for i in idx]
        blobs = [raw[n] for n in names]
        offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
        buf = io.BytesIO()
        np.savez_compressed(buf, blob=np.frombuffer(b"".join(blobs), np.uint8), offsets=offsets,
                            labels=ds.labels[idx].astype(np.int16), names=np.asarray(names),
                            classes=np.asarray(ds.classes))
        (out_dir / f"{name}.npz").write_bytes(buf.getvalue())
        manifest["subsets"][name] = {"count": len(names),
                                     "files": {n: hashlib.sha256(b).hexdigest() for n, b in zip(names, blobs)}}
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m nin_edge.subsets CIFAR10_IMAGE_ARCHIVE.tar.gz")
    m = cut(Path(sys.argv[1]))
    print({k: v["count"] for k, v in m["subsets"].items()})
