"""Data layer: every source format, the bundled subsets, the cache, the download, and every bad input.

All data is made here (tiny pickled CIFAR batches, PNG/JPEG trees written with OpenCV, tar archives of them);
the real archive in /work/shared is never used by unit tests.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from nin_edge import data as D
from nin_edge.data import CIFAR10_CLASSES, check_classes, download_cifar10, load_dataset
from nin_edge.errors import NinEdgeError

RNG = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Every test gets its own empty default cache directory."""
    monkeypatch.setenv("NIN_EDGE_CACHE", str(tmp_path / "default-cache"))


# --------------------------------------------------------------------------- builders
def _cifar_pickle(obj, numpy_module: str = "numpy.core") -> bytes:
    """Pickle like the official files: protocol 2, `data` a uint8 ndarray. The 2009 release was written by
    numpy 1.x, whose arrays name `numpy.core.multiarray`; numpy 2 writes `numpy._core.multiarray`."""
    b = pickle.dumps(obj, protocol=2)
    return b.replace(b"cnumpy._core.multiarray\n", f"c{numpy_module}.multiarray\n".encode())


def make_cifar_dir(root: Path, per_batch: int = 10, numpy_module: str = "numpy.core",
                   label_names=CIFAR10_CLASSES) -> tuple[Path, dict]:
    """A `cifar-10-batches-py/` folder in the official format, `per_batch` images per batch file."""
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    raw = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        rows = RNG.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in RNG.integers(0, len(label_names), per_batch)]
        raw[name] = (rows, labels)
        obj = {b"batch_label": name.encode(), b"labels": labels, b"data": rows,
               b"filenames": [f"img_{i}.png".encode() for i in range(per_batch)]}
        (d / name).write_bytes(_cifar_pickle(obj, numpy_module))
    meta = {b"num_cases_per_batch": per_batch, b"label_names": [n.encode() for n in label_names], b"num_vis": 3072}
    (d / "batches.meta").write_bytes(_cifar_pickle(meta, numpy_module))
    (d / "readme.html").write_text("<html>not a batch</html>")
    return d, raw


def make_tar(src: Path, out: Path, arcname: str | None, mode: str = "w:gz") -> Path:
    """tar `src` as `arcname` (None: its children at the archive's top level, no enclosing folder)."""
    with tarfile.open(out, mode) as tf:
        if arcname is not None:
            tf.add(src, arcname=arcname)
        else:
            for child in sorted(src.iterdir()):
                tf.add(child, arcname=child.name)
    return out


def write_png(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = rgb[:, :, ::-1] if rgb.ndim == 3 and rgb.shape[2] == 3 else rgb
    if rgb.ndim == 3 and rgb.shape[2] == 4:
        img = rgb[:, :, [2, 1, 0, 3]]
    assert cv2.imwrite(str(path), img)


def make_tree(root: Path, classes=("cat", "dog", "frog"), per_class: int = 3, ext: str = ".png",
              splits=("train", "test")) -> dict:
    """ROOT/<split>/<class>/NNN.<ext>; returns {id: rgb array written} (lossless for .png)."""
    written = {}
    for split in splits:
        for cls in classes:
            for i in range(per_class):
                rgb = RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                p = root / split / cls / f"{i:03d}{ext}"
                write_png(p, rgb)
                written[f"{split}/{cls}/{p.name}"] = rgb
    return written


def tree_expected(written: dict, split: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    ids = sorted((k for k in written if k.startswith(split + "/")), key=lambda k: (k.split("/")[1], k))
    classes = tuple(sorted({k.split("/")[1] for k in ids}))
    return np.stack([written[k] for k in ids]), np.array([classes.index(k.split("/")[1]) for k in ids]), classes


def one_line_error(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg, f"error message spans lines: {msg!r}"
    return msg


# --------------------------------------------------------------------------- official CIFAR-10 python format
def _cifar_expected(raw: dict, split: str) -> tuple[np.ndarray, np.ndarray]:
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    rows = np.concatenate([raw[n][0] for n in names])
    labels = np.concatenate([raw[n][1] for n in names])
    # official layout: 1024 red, 1024 green, 1024 blue, each row-major 32×32
    return rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


@pytest.mark.parametrize("numpy_module", ["numpy.core", "numpy._core"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_cifar_python_folder(tmp_path, split, numpy_module):
    d, raw = make_cifar_dir(tmp_path, numpy_module=numpy_module)
    ds = load_dataset(d, split)
    images, labels = _cifar_expected(raw, split)
    assert ds.images.dtype == np.uint8 and ds.images.shape == (len(labels), 32, 32, 3)
    np.testing.assert_array_equal(ds.images, images)
    np.testing.assert_array_equal(ds.labels, labels)
    assert ds.labels.dtype == np.int64
    assert ds.classes == CIFAR10_CLASSES
    assert len(ds) == (50 if split == "train" else 10) and len(set(ds.ids)) == len(ds)
    # spot-check the channel layout against the raw row directly (pixel (r=3, c=5) of image 1)
    row = raw["data_batch_1" if split == "train" else "test_batch"][0][1]
    assert tuple(ds.images[1, 3, 5]) == (row[3 * 32 + 5], row[1024 + 3 * 32 + 5], row[2048 + 3 * 32 + 5])


def test_cifar_python_parent_folder_and_meta_names(tmp_path):
    names = tuple(f"class{i}" for i in range(10))
    make_cifar_dir(tmp_path, label_names=names)
    ds = load_dataset(tmp_path, "test")  # the folder that holds cifar-10-batches-py/
    assert ds.classes == names  # read from batches.meta, not assumed


def test_cifar_python_tarball_equals_folder(tmp_path):
    d, raw = make_cifar_dir(tmp_path / "src")
    tgz = make_tar(d, tmp_path / "cifar-10-python.tar.gz", "cifar-10-batches-py")
    for split in ("train", "test"):
        a, b = load_dataset(tgz, split), load_dataset(d, split)
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.labels, b.labels)
        assert a.classes == b.classes == CIFAR10_CLASSES
        assert a.source == str(tgz)


def test_cifar_python_missing_batch_named(tmp_path):
    d, _ = make_cifar_dir(tmp_path)
    (d / "test_batch").unlink()
    with pytest.raises(NinEdgeError, match="test_batch") as e:
        load_dataset(d, "test")
    one_line_error(e)


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_with_forbidden_global_is_refused(tmp_path):
    d, _ = make_cifar_dir(tmp_path)
    marker = tmp_path / "pwned"
    (d / "test_batch").write_bytes(pickle.dumps({b"data": _Evil(marker), b"labels": [0]}, protocol=2))
    with pytest.raises(NinEdgeError, match=r"test_batch.*forbidden global (posix|os|nt)\.system") as e:
        load_dataset(d, "test")
    one_line_error(e)
    assert not marker.exists(), "the restricted unpickler ran os.system"


def test_pickle_garbage_batch_named(tmp_path):
    d, _ = make_cifar_dir(tmp_path)
    (d / "data_batch_3").write_bytes(b"\x80\x02not a pickle at all")
    with pytest.raises(NinEdgeError, match="data_batch_3"):
        load_dataset(d, "train")


def test_pickle_labels_count_mismatch(tmp_path):
    d, _ = make_cifar_dir(tmp_path)
    obj = {b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2]}
    (d / "test_batch").write_bytes(_cifar_pickle(obj))
    with pytest.raises(NinEdgeError, match="4 images but 3 labels"):
        load_dataset(d, "test")


# --------------------------------------------------------------------------- image-folder trees and archives
def test_image_folder_tree_png_exact(tmp_path):
    written = make_tree(tmp_path / "tree")
    for split in ("train", "test"):
        ds = load_dataset(tmp_path / "tree", split)
        images, labels, classes = tree_expected(written, split)
        assert ds.classes == classes == ("cat", "dog", "frog")  # alphabetical
        np.testing.assert_array_equal(ds.images, images)  # PNG is lossless: exact pixels, RGB order
        np.testing.assert_array_equal(ds.labels, labels)
        assert ds.ids[0] == f"{split}/cat/000.png"


def test_image_folder_tree_jpeg(tmp_path):
    written = make_tree(tmp_path / "tree", ext=".jpg", per_class=2)
    ds = load_dataset(tmp_path / "tree", "train")
    images, labels, _ = tree_expected(written, "train")
    assert ds.images.shape == images.shape and ds.images.dtype == np.uint8
    np.testing.assert_array_equal(ds.labels, labels)
    # JPEG is lossy; noise images lose a lot, but channel order must be right: a swapped R/B would differ more
    flat = np.zeros((32, 32, 3), np.uint8)
    flat[:] = (200, 40, 10)
    write_png(tmp_path / "one" / "train" / "red" / "a.jpg", flat)
    red = load_dataset(tmp_path / "one", "train").images[0].astype(int)
    assert np.abs(red - flat).max() <= 8, red[0, 0]


@pytest.mark.parametrize("mode,suffix", [("w:gz", ".tar.gz"), ("w", ".tar")])
@pytest.mark.parametrize("top", ["cifar10", None], ids=["with-top-folder", "no-top-folder"])
def test_image_folder_archive_equals_folder(tmp_path, top, mode, suffix):
    written = make_tree(tmp_path / "tree")
    arc = make_tar(tmp_path / "tree", tmp_path / f"imgs{suffix}", top, mode)
    for split in ("train", "test"):
        ds = load_dataset(arc, split)
        images, labels, classes = tree_expected(written, split)
        np.testing.assert_array_equal(ds.images, images)
        np.testing.assert_array_equal(ds.labels, labels)
        assert ds.classes == classes
        assert ds.ids == load_dataset(tmp_path / "tree", split).ids


def test_grayscale_and_rgba_are_converted(tmp_path):
    """Grayscale is replicated to 3 equal channels; RGBA drops alpha (no compositing), for PNG and JPEG."""
    gray = RNG.integers(0, 256, (32, 32), dtype=np.uint8)
    rgba = RNG.integers(0, 256, (32, 32, 4), dtype=np.uint8)
    rgba[..., 3] = 0  # fully transparent: compositing would change the colour, dropping alpha must not
    root = tmp_path / "tree"
    write_png(root / "train" / "a_gray" / "g.png", gray)
    write_png(root / "train" / "b_rgba" / "r.png", rgba)
    (root / "train" / "c_grayjpg").mkdir()
    assert cv2.imwrite(str(root / "train" / "c_grayjpg" / "g.jpg"), np.full((32, 32), 77, np.uint8))
    # sanity: the files really are 1- and 4-channel on disk
    assert cv2.imread(str(root / "train" / "a_gray" / "g.png"), cv2.IMREAD_UNCHANGED).ndim == 2
    assert cv2.imread(str(root / "train" / "b_rgba" / "r.png"), cv2.IMREAD_UNCHANGED).shape[2] == 4
    ds = load_dataset(root, "train")
    assert ds.images.shape == (3, 32, 32, 3)
    g, r, gj = ds.images
    for c in range(3):
        np.testing.assert_array_equal(g[..., c], gray)
    np.testing.assert_array_equal(r, rgba[..., :3])
    assert np.abs(gj.astype(int) - 77).max() <= 2 and (gj[..., 0] == gj[..., 1]).all()


def test_mixed_sizes_are_fitted_to_a_common_size(tmp_path):
    root = tmp_path / "tree"
    write_png(root / "train" / "a" / "small.png", RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    write_png(root / "train" / "b" / "big.png", RNG.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    ds = load_dataset(root, "train")
    assert ds.images.shape == (2, 32, 32, 3)


# --------------------------------------------------------------------------- cache
def _cache_files(d: Path) -> list[Path]:
    return sorted(p for p in d.glob("*.npz"))


def test_cache_second_load_comes_from_cache(tmp_path, monkeypatch):
    make_tree(tmp_path / "tree")
    arc = make_tar(tmp_path / "tree", tmp_path / "imgs.tar.gz", "top")
    cache = tmp_path / "cache"
    first = load_dataset(arc, "train", cache_dir=cache)
    files = _cache_files(cache)
    assert len(files) == 1 and "train" in files[0].name

    def no_reading(*a, **k):
        raise AssertionError("archive was read again although a valid cache exists")

    monkeypatch.setattr(D, "_read_tar", no_reading)
    second = load_dataset(arc, "train", cache_dir=cache)
    np.testing.assert_array_equal(second.images, first.images)
    np.testing.assert_array_equal(second.labels, first.labels)
    assert second.classes == first.classes and second.ids == first.ids and second.source == str(arc)


def test_cache_keyed_by_content(tmp_path):
    """Same path, different bytes → a different cache entry (the key is the archive's sha256)."""
    make_tree(tmp_path / "a", classes=("x", "y"))
    make_tree(tmp_path / "b", classes=("p", "q", "r"))
    arc, cache = tmp_path / "imgs.tar.gz", tmp_path / "cache"
    make_tar(tmp_path / "a", arc, None)
    assert load_dataset(arc, "test", cache_dir=cache).classes == ("x", "y")
    make_tar(tmp_path / "b", arc, None)
    assert load_dataset(arc, "test", cache_dir=cache).classes == ("p", "q", "r")
    assert len(_cache_files(cache)) == 2


@pytest.mark.parametrize("damage", ["flip-bytes", "truncate", "inconsistent"])
def test_corrupt_cache_is_rebuilt_not_trusted(tmp_path, monkeypatch, damage):
    make_tree(tmp_path / "tree")
    arc = make_tar(tmp_path / "tree", tmp_path / "imgs.tar.gz", None)
    cache = tmp_path / "cache"
    good = load_dataset(arc, "train", cache_dir=cache)
    (cf,) = _cache_files(cache)
    b = bytearray(cf.read_bytes())
    if damage == "flip-bytes":  # inside the images array: only the zip CRC can tell
        for i in range(len(b) // 3, len(b) // 3 + 64):
            b[i] ^= 0x5A
        cf.write_bytes(bytes(b))
    elif damage == "truncate":
        cf.write_bytes(bytes(b[: len(b) // 2]))
    else:  # a well-formed npz whose arrays disagree (labels outside the class list)
        np.savez(cf.with_suffix(""), images=good.images, labels=good.labels + 100,
                 classes=np.asarray(good.classes), ids=np.asarray(good.ids))
    reads = []
    real = D._read_tar
    monkeypatch.setattr(D, "_read_tar", lambda *a, **k: reads.append(1) or real(*a, **k))
    again = load_dataset(arc, "train", cache_dir=cache)
    assert reads == [1], "a damaged cache file was trusted"
    np.testing.assert_array_equal(again.images, good.images)
    np.testing.assert_array_equal(again.labels, good.labels)
    # ... and the cache was rewritten: the next load reads no archive
    monkeypatch.setattr(D, "_read_tar", lambda *a, **k: pytest.fail("cache not rebuilt"))
    np.testing.assert_array_equal(load_dataset(arc, "train", cache_dir=cache).images, good.images)


def test_unwritable_cache_is_not_an_error(tmp_path):
    make_tree(tmp_path / "tree")
    arc = make_tar(tmp_path / "tree", tmp_path / "imgs.tar.gz", None)
    blocker = tmp_path / "cache-is-a-file"
    blocker.write_text("x")  # mkdir under a file fails with an OSError
    ds = load_dataset(arc, "train", cache_dir=blocker / "sub")
    assert len(ds) == 9


def test_use_cache_false_writes_nothing(tmp_path):
    make_tree(tmp_path / "tree")
    arc = make_tar(tmp_path / "tree", tmp_path / "imgs.tar.gz", None)
    load_dataset(arc, "train", cache_dir=tmp_path / "cache", use_cache=False)
    assert not (tmp_path / "cache").exists()


# --------------------------------------------------------------------------- bundled subsets
BUNDLED = ("eval", "val", "calib")


@pytest.fixture(scope="module")
def bundled():
    return {n: load_dataset(f"bundled:{n}") for n in BUNDLED}


def test_bundled_subsets_are_stratified(bundled):
    for name, ds in bundled.items():
        assert ds.images.shape == (1000, 32, 32, 3) and ds.images.dtype == np.uint8, name
        assert ds.classes == CIFAR10_CLASSES, name
        assert np.bincount(ds.labels, minlength=10).tolist() == [100] * 10, name
        assert len(set(ds.ids)) == 1000, name
        # the id names the class folder; the label must agree with it
        assert all(ds.classes[lb] == i.split("/")[1] for i, lb in zip(ds.ids, ds.labels)), name
        assert ds.images.std() > 20, f"{name}: images look blank"


def test_bundled_subsets_are_disjoint_and_from_the_right_split(bundled):
    ids = {n: set(ds.ids) for n, ds in bundled.items()}
    assert not ids["eval"] & ids["val"]
    assert not ids["eval"] & ids["calib"]
    assert not ids["val"] & ids["calib"]
    assert all(i.startswith("test/") for i in ids["eval"])
    assert all(i.startswith("train/") for i in ids["val"] | ids["calib"])


def test_bundled_manifest_sha256_matches_stored_bytes():
    manifest = json.loads((D.SUBSETS_DIR / "manifest.json").read_text())
    total = 0
    for name in BUNDLED:
        p = D.SUBSETS_DIR / f"{name}.npz"
        total += p.stat().st_size
        with np.load(p, allow_pickle=False) as z:
            blob, offsets, names = z["blob"], z["offsets"], [str(n) for n in z["names"]]
        entry = manifest["subsets"][name]
        assert entry["count"] == len(names) == 1000
        assert set(entry["files"]) == set(names)
        for i, n in enumerate(names):
            got = hashlib.sha256(blob[offsets[i]:offsets[i + 1]].tobytes()).hexdigest()
            assert got == entry["files"][n], f"bundled:{name}:{n} bytes differ from the manifest"
    assert total <= 3 * 1024 * 1024, f"bundled subsets take {total} bytes (issue 2: ≤ 3 MB)"


def test_bundled_unknown_name_lists_choices():
    with pytest.raises(NinEdgeError, match=r"bundled:nope.*bundled:calib.*bundled:eval.*bundled:val") as e:
        load_dataset("bundled:nope")
    one_line_error(e)


# --------------------------------------------------------------------------- download (local file:// URL only)
def _served_tarball(tmp_path) -> tuple[str, str, bytes]:
    d, _ = make_cifar_dir(tmp_path / "server-src")
    (tmp_path / "server").mkdir()
    tgz = make_tar(d, tmp_path / "server" / "cifar-10-python.tar.gz", "cifar-10-batches-py")
    body = tgz.read_bytes()
    return tgz.as_uri(), hashlib.md5(body).hexdigest(), body


def test_download_verifies_md5(tmp_path):
    url, md5, body = _served_tarball(tmp_path)
    dest = tmp_path / "dl"
    out = download_cifar10(dest, url=url, md5=md5)
    assert out == dest / "cifar-10-python.tar.gz" and out.read_bytes() == body
    assert sorted(p.name for p in dest.iterdir()) == ["cifar-10-python.tar.gz"]  # no .part left
    assert len(load_dataset(out, "test")) == 10
    # a verified file is not fetched again (the URL is now dead)
    assert download_cifar10(dest, url=(tmp_path / "gone.tar.gz").as_uri(), md5=md5) == out


def test_download_bad_md5_leaves_nothing(tmp_path):
    url, md5, _ = _served_tarball(tmp_path)
    dest = tmp_path / "dl"
    with pytest.raises(NinEdgeError, match="checksum mismatch") as e:
        download_cifar10(dest, url=url, md5="0" * 32)
    one_line_error(e)
    assert list(dest.iterdir()) == [], "a partial or unverified file was left behind"


@pytest.mark.parametrize("url", ["file:///definitely/not/here.tar.gz", "not a url"])
def test_download_failure_is_named(tmp_path, url):
    with pytest.raises(NinEdgeError, match="download failed"):
        download_cifar10(tmp_path / "dl", url=url, md5="0" * 32)
    assert list((tmp_path / "dl").iterdir()) == []


# --------------------------------------------------------------------------- bad inputs
def test_missing_path_named(tmp_path):
    p = tmp_path / "nowhere" / "data.tar.gz"
    with pytest.raises(NinEdgeError, match=f"{p}.*no such file") as e:
        load_dataset(p, "train")
    one_line_error(e)


def test_unknown_split():
    with pytest.raises(NinEdgeError, match="split 'val'"):
        load_dataset("/", "val")


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_truncated_archive_named(tmp_path, cut):
    make_tree(tmp_path / "tree", per_class=6)
    arc = make_tar(tmp_path / "tree", tmp_path / "imgs.tar.gz", "top")
    body = arc.read_bytes()
    arc.write_bytes(body[: int(len(body) * cut)])
    with pytest.raises(NinEdgeError, match=f"{arc}.*truncated or corrupt") as e:
        load_dataset(arc, "train")
    one_line_error(e)


def test_corrupt_archive_named(tmp_path):
    arc = tmp_path / "garbage.tar.gz"
    arc.write_bytes(b"\x1f\x8b\x08\x00" + bytes(RNG.integers(0, 256, 4000, dtype=np.uint8)))
    with pytest.raises(NinEdgeError, match=f"{arc}.*truncated or corrupt"):
        load_dataset(arc, "train")


def test_not_an_archive_named(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("hello")
    with pytest.raises(NinEdgeError, match=f"{f}.*not a directory or a .tar"):
        load_dataset(f, "train")


def test_archive_without_images(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "readme.txt").write_text("nothing here")
    arc = make_tar(tmp_path / "src", tmp_path / "empty.tar.gz", "top")
    with pytest.raises(NinEdgeError, match="no images"):
        load_dataset(arc, "train")


@pytest.mark.parametrize("packed", [False, True], ids=["folder", "tar.gz"])
def test_undecodable_image_named(tmp_path, packed):
    make_tree(tmp_path / "tree", per_class=2)
    (tmp_path / "tree" / "train" / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    src = make_tar(tmp_path / "tree", tmp_path / "imgs.tar.gz", None) if packed else tmp_path / "tree"
    with pytest.raises(NinEdgeError, match=r"train/dog/broken\.png: cannot decode image") as e:
        load_dataset(src, "train")
    one_line_error(e)


@pytest.mark.parametrize("packed", [False, True], ids=["folder", "tar.gz"])
def test_empty_class_folder_named(tmp_path, packed):
    make_tree(tmp_path / "tree", per_class=2)
    (tmp_path / "tree" / "train" / "zebra").mkdir()
    src = make_tar(tmp_path / "tree", tmp_path / "imgs.tar.gz", "top") if packed else tmp_path / "tree"
    with pytest.raises(NinEdgeError, match=r"zebra.*no images") as e:
        load_dataset(src, "train")
    one_line_error(e)


@pytest.mark.parametrize("packed", [False, True], ids=["folder", "tar.gz"])
def test_split_folder_missing_named(tmp_path, packed):
    make_tree(tmp_path / "tree", splits=("train",), per_class=1)
    src = make_tar(tmp_path / "tree", tmp_path / "imgs.tar.gz", "top") if packed else tmp_path / "tree"
    with pytest.raises(NinEdgeError, match=r"split folder 'test' not found \(found: train\)") as e:
        load_dataset(src, "test")
    one_line_error(e)


def test_split_without_class_folders(tmp_path):
    (tmp_path / "tree" / "train").mkdir(parents=True)
    with pytest.raises(NinEdgeError, match="no class folders"):
        load_dataset(tmp_path / "tree", "train")


def test_check_classes(tmp_path):
    make_tree(tmp_path / "tree", classes=("cat", "dog"), per_class=1)
    ds = load_dataset(tmp_path / "tree", "test")
    check_classes(ds, ("cat", "dog"))  # equal: no error
    with pytest.raises(NinEdgeError, match=r"classes \['cat', 'dog'\] differ from the model's \['airplane',") as e:
        check_classes(ds, CIFAR10_CLASSES)
    one_line_error(e)
    with pytest.raises(NinEdgeError, match="differ"):  # same names, other order: labels would be wrong
        check_classes(ds, ("dog", "cat"))


@pytest.mark.parametrize("bad", ["../evil/train/cat/x.png", "/abs/train/cat/x.png", "top/../../train/cat/x.png"])
def test_unsafe_member_names_refused(tmp_path, bad):
    png = cv2.imencode(".png", np.zeros((32, 32, 3), np.uint8))[1].tobytes()
    arc = tmp_path / "evil.tar.gz"
    with tarfile.open(arc, "w:gz") as tf:
        for name in ("ok/train/cat/a.png", bad):
            ti = tarfile.TarInfo(name)
            ti.size = len(png)
            tf.addfile(ti, io.BytesIO(png))
    with tarfile.open(arc) as tf:
        assert bad in tf.getnames()  # the archive really carries the unsafe name
    with pytest.raises(NinEdgeError, match="unsafe member name") as e:
        load_dataset(arc, "train")
    one_line_error(e)
    assert not (tmp_path.parent / "evil").exists() and not Path("/abs").exists()


def test_links_in_archives_are_not_followed(tmp_path):
    """A symlink member pointing outside is skipped (never read), the real images still load."""
    png = cv2.imencode(".png", np.zeros((32, 32, 3), np.uint8))[1].tobytes()
    arc = tmp_path / "links.tar"
    with tarfile.open(arc, "w") as tf:
        ti = tarfile.TarInfo("train/cat/a.png")
        ti.size = len(png)
        tf.addfile(ti, io.BytesIO(png))
        link = tarfile.TarInfo("train/cat/b.png")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(link)
    ds = load_dataset(arc, "train")
    assert ds.ids == ("train/cat/a.png",)


def test_folder_with_one_enclosing_folder(tmp_path):
    """An extracted archive (e.g. cifar10/train/...) loads from its parent, like the archive itself does."""
    written = make_tree(tmp_path / "extracted" / "cifar10", per_class=1)
    ds = load_dataset(tmp_path / "extracted", "test")
    np.testing.assert_array_equal(ds.images, tree_expected(written, "test")[0])


@pytest.mark.parametrize("packed", [False, True], ids=["folder", "tar.gz"])
def test_macos_litter_and_dotfiles_are_skipped(tmp_path, packed):
    written = make_tree(tmp_path / "tree", per_class=2)
    junk = b"\x00\x05\x16\x07 AppleDouble resource fork, not an image"
    (tmp_path / "tree" / "train" / "cat" / "._000.png").write_bytes(junk)
    (tmp_path / "tree" / "train" / ".hidden").mkdir()
    (tmp_path / "tree" / "train" / ".hidden" / "x.png").write_bytes(junk)
    (tmp_path / "tree" / "__MACOSX" / "train" / "cat").mkdir(parents=True)
    (tmp_path / "tree" / "__MACOSX" / "train" / "cat" / "._001.png").write_bytes(junk)
    src = make_tar(tmp_path / "tree", tmp_path / "imgs.tar.gz", None) if packed else tmp_path / "tree"
    ds = load_dataset(src, "train")
    np.testing.assert_array_equal(ds.images, tree_expected(written, "train")[0])
    assert ds.classes == ("cat", "dog", "frog")
