"""Calibration specs (parsing, rejection), calibration sets (sampling, streaming, adapters, folders, overlap)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nin_edge.calibration import (CalibrationSpec, Sampling, build_calibration_set, load_calibration_spec,
                                  pixel_sha256)
from nin_edge.data import load_dataset
from nin_edge.errors import NinEdgeError
from nin_edge.preprocess import Preprocess, preprocess

PP = Preprocess()


def _spec(tmp_path: Path, text: str) -> str:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return str(p)


@pytest.fixture(scope="module")
def eval_ds():
    return load_dataset("bundled:eval")


def _write_png(path: Path, img: np.ndarray) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img[:, :, ::-1])


# --------------------------------------------------------------------------- specs
def test_shipped_default_spec():
    spec, where = load_calibration_spec("default")
    assert spec == CalibrationSpec(source="bundled:calib", split="train", size=1000,
                                   sampling=Sampling.stratified, seed=0, batch=50, description=spec.description)
    assert where.endswith("calibration/default.toml")


def test_spec_from_path(tmp_path):
    spec, _ = load_calibration_spec(_spec(tmp_path, 'source = "bundled:calib"\nsize = 30\nsampling = "random"\nseed = 3\n'))
    assert (spec.size, spec.sampling, spec.seed) == (30, Sampling.random, 3)


@pytest.mark.parametrize("text, msg", [
    ('size = 10\nimages = 5\n', "unknown key 'images'"),
    ('size = 0\n', "size"),
    ('size = -3\n', "size"),
    ('size = "ten"\n', "wrong type"),
    ('sampling = "kmeans"\n', "sampling"),
    ('split = "validation"\n', "split"),
    ('batch = 0\n', "batch"),
    ('size = [\n', "not valid TOML"),
])
def test_spec_rejections(tmp_path, text, msg):
    with pytest.raises(NinEdgeError, match=msg):
        load_calibration_spec(_spec(tmp_path, text))


def test_unknown_shipped_name():
    with pytest.raises(NinEdgeError, match="unknown calibration spec 'nope'.*default"):
        load_calibration_spec("nope")


def test_size_larger_than_source(tmp_path):
    with pytest.raises(NinEdgeError, match="size 1001 is more than the 1000 images"):
        build_calibration_set(_spec(tmp_path, 'source = "bundled:calib"\nsize = 1001\n'), PP)


# --------------------------------------------------------------------------- sets
def test_stratified_sampling_is_balanced_and_seeded(tmp_path):
    calib = load_dataset("bundled:calib")
    by_id = dict(zip(calib.ids, calib.labels))
    a = build_calibration_set(_spec(tmp_path, 'size = 105\nseed = 1\n'), PP)
    b = build_calibration_set(_spec(tmp_path, 'size = 105\nseed = 1\n'), PP)
    c = build_calibration_set(_spec(tmp_path, 'size = 105\nseed = 2\n'), PP)
    counts = np.bincount([by_id[i] for i in a.ids], minlength=10)
    assert counts.sum() == 105 and counts.min() == 10 and counts.max() == 11
    assert a.ids == b.ids and a.ids != c.ids
    assert len(set(a.ids)) == 105


def test_random_sampling(tmp_path):
    a = build_calibration_set(_spec(tmp_path, 'size = 40\nsampling = "random"\nseed = 5\n'), PP)
    assert len(a) == 40 and len(set(a.ids)) == 40


def test_set_is_reiterable_streaming_and_preprocessed(tmp_path):
    cs = build_calibration_set(_spec(tmp_path, 'size = 120\nbatch = 50\n'), PP)
    first = list(cs)
    second = list(cs)
    assert [x.shape for x in first] == [(50, 3, 32, 32), (50, 3, 32, 32), (20, 3, 32, 32)]
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert all(x.dtype == np.float32 for x in first)
    np.testing.assert_array_equal(np.concatenate(first), preprocess(cs.images, PP))
    # a window of batches (what the chunked calibration uses)
    assert [x.shape[0] for x in cs.batches(1, 3)] == [50, 20]
    # hashes are of the pixels fed to the model
    assert cs.hashes[0] == pixel_sha256(cs.images[0])


def test_ort_reader_adapter(tmp_path):
    cs = build_calibration_set(_spec(tmp_path, 'size = 120\nbatch = 50\n'), PP)
    r = cs.ort_reader("input")
    got = []
    while (item := r.get_next()) is not None:
        got.append(item["input"])
    assert len(got) == 3 and len(r) == 3
    r.rewind()
    np.testing.assert_array_equal(r.get_next()["input"], got[0])
    part = cs.ort_reader("input", 1, 2)
    np.testing.assert_array_equal(part.get_next()["input"], got[1])
    assert part.get_next() is None


def test_nncf_adapter(tmp_path):
    pytest.importorskip("nncf", reason="nncf not installed (the 'cpu' extra)")
    cs = build_calibration_set(_spec(tmp_path, 'size = 120\nbatch = 50\n'), PP)
    ds = cs.nncf_dataset()
    assert ds.get_length() == 3 and ds.get_batch_size() == 50
    items = list(ds.get_inference_data())
    assert len(items) == 3 and items[0].shape == (50, 3, 32, 32)


def test_manifest_records_every_image(tmp_path):
    cs = build_calibration_set("default", PP)
    m = cs.manifest("entropy")
    assert m["count"] == 1000 and m["method"] == "entropy" and m["seed"] == 0 and m["sampling"] == "stratified"
    assert len(m["images"]) == 1000 and m["images"][0] == {"id": cs.ids[0], "sha256": cs.hashes[0]}


# --------------------------------------------------------------------------- folders of user images
def test_folder_of_unlabelled_images(tmp_path, eval_ds):
    calib = load_dataset("bundled:calib")
    for i in range(7):
        _write_png(tmp_path / "imgs" / f"{i:02d}.png", calib.images[i])
    # a larger, non-square photo in a subfolder is fitted to the model size (shorter side + centre crop)
    big = np.repeat(np.repeat(calib.images[7], 3, axis=0), 4, axis=1)
    _write_png(tmp_path / "imgs" / "sub" / "big.png", big)
    (tmp_path / "imgs" / "notes.txt").write_text("not an image, ignored")
    cs = build_calibration_set(str(tmp_path / "imgs"), PP, exclude=eval_ds)
    assert len(cs) == 8 and cs.images.shape == (8, 32, 32, 3)
    assert cs.ids[0] == "00.png" and "sub/big.png" in cs.ids
    np.testing.assert_array_equal(cs.images[0], calib.images[0])  # PNG is lossless
    assert dict(cs.provenance)["source"] == str(tmp_path / "imgs")


def test_folder_with_unreadable_image_names_it(tmp_path):
    d = tmp_path / "imgs"
    _write_png(d / "a.png", np.zeros((32, 32, 3), np.uint8))
    (d / "b.jpg").write_bytes(b"this is not a jpeg")
    with pytest.raises(NinEdgeError, match=r"b\.jpg: cannot decode"):
        build_calibration_set(str(d), PP)


def test_folder_without_images(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    with pytest.raises(NinEdgeError, match="no images"):
        build_calibration_set(str(d), PP)
    (d / "readme.md").write_text("x")
    with pytest.raises(NinEdgeError, match="no images.*readme.md"):
        build_calibration_set(str(d), PP)


def test_overlap_with_evaluation_set_is_refused(tmp_path, eval_ds):
    d = tmp_path / "imgs"
    _write_png(d / "mine.png", load_dataset("bundled:calib").images[0])
    _write_png(d / "renamed_eval_image.png", eval_ds.images[123])  # same pixels, other name and format
    with pytest.raises(NinEdgeError, match="1 calibration image.*also in the evaluation set.*renamed_eval_image.png"):
        build_calibration_set(str(d), PP, exclude=eval_ds)


def test_default_calibration_is_disjoint_from_eval(eval_ds):
    cs = build_calibration_set("default", PP, exclude=eval_ds)  # raises if any overlap
    assert len(cs) == 1000
    assert not set(cs.hashes) & {pixel_sha256(im) for im in eval_ds.images}
