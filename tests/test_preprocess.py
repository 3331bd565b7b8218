"""THE preprocessing: known values, the resize/centre-crop policy, input forms, torch == numpy, serialisation."""
from __future__ import annotations

import json

import numpy as np
import pytest

from nin_edge.errors import NinEdgeError
from nin_edge.preprocess import DEFAULT, Preprocess, fit, preprocess, preprocess_tensor

RNG = np.random.default_rng(1)


def reference(batch_u8_nhwc: np.ndarray, spec: Preprocess = DEFAULT) -> np.ndarray:
    """The documented formula in float64: x/255, then (x - mean)/std per channel, NHWC → NCHW."""
    x = batch_u8_nhwc.astype(np.float64) / 255.0
    x = (x - np.asarray(spec.mean)) / np.asarray(spec.std)
    return x.transpose(0, 3, 1, 2)


def test_known_values_for_constant_images():
    # hand-computed from CIFAR-10 mean (0.4914, 0.4822, 0.4465) and std (0.2470, 0.2435, 0.2616)
    cases = {0: (-1.989474, -1.980287, -1.706804), 255: (2.059109, 2.126489, 2.115826),
             128: (0.042756, 0.081153, 0.212006)}
    for value, want in cases.items():
        x = preprocess(np.full((32, 32, 3), value, np.uint8))
        assert x.shape == (1, 3, 32, 32) and x.dtype == np.float32
        for c in range(3):
            np.testing.assert_allclose(x[0, c], want[c], atol=1e-5, err_msg=f"value {value}, channel {c}")


def test_channel_order_is_rgb_nchw():
    img = np.zeros((32, 32, 3), np.uint8)
    img[..., 0] = 255  # red only
    x = preprocess(img)[0]
    np.testing.assert_allclose(x[0], 2.059109, atol=1e-5)  # channel 0 is R, at max
    np.testing.assert_allclose(x[1], -1.980287, atol=1e-5)
    np.testing.assert_allclose(x[2], -1.706804, atol=1e-5)


def test_random_batch_matches_formula_and_is_contiguous():
    batch = RNG.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    x = preprocess(batch)
    assert x.flags["C_CONTIGUOUS"] and x.dtype == np.float32 and x.shape == (5, 3, 32, 32)
    np.testing.assert_allclose(x, reference(batch), atol=1e-5)


def test_list_and_array_inputs_agree():
    imgs = [RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(4)]
    a = preprocess(np.stack(imgs))
    b = preprocess(imgs)
    c = np.concatenate([preprocess(im) for im in imgs])  # one HWC image → batch of one
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)


def test_gray_and_rgba_inputs():
    gray = RNG.integers(0, 256, (32, 32), dtype=np.uint8)
    rgba = RNG.integers(0, 256, (32, 32, 4), dtype=np.uint8)
    x = preprocess([gray, rgba])
    np.testing.assert_allclose(x[0], reference(np.repeat(gray[None, :, :, None], 3, axis=3))[0], atol=1e-5)
    np.testing.assert_allclose(x[1], reference(rgba[None, :, :, :3])[0], atol=1e-5)


# --------------------------------------------------------------------------- resize / centre-crop policy
def test_32x32_passes_untouched():
    img = RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert fit(img, 32) is img


def test_wide_image_is_centre_cropped_without_resize():
    # shorter side already 32: no resampling, the middle 32 columns of 48 are kept (8 cut on each side)
    img = RNG.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    np.testing.assert_array_equal(fit(img, 32), img[:, 8:40])
    np.testing.assert_allclose(preprocess(img), reference(img[None, :, 8:40]), atol=1e-5)


@pytest.mark.parametrize("tall", [False, True])
def test_shrink_shorter_side_then_centre_crop(tall):
    # 40×80: shorter side 40 → 32 (×0.8, area interpolation) gives 32×64; the centre 32 columns are the
    # original's middle half (columns 20..60), so green survives and red/blue (outer quarters) are cut.
    img = np.zeros((40, 80, 3), np.uint8)
    img[:, :20] = (255, 0, 0)
    img[:, 20:60] = (0, 255, 0)
    img[:, 60:] = (0, 0, 255)
    if tall:
        img = img.transpose(1, 0, 2).copy()  # 80×40: rows cropped instead
    out = fit(img, 32)
    assert out.shape == (32, 32, 3)
    assert (out == (0, 255, 0)).all(), np.unique(out.reshape(-1, 3), axis=0)


def test_shrink_uses_area_averaging():
    # a 64×64 image of constant 2×2 blocks shrinks to exactly the block values (area = mean of each block)
    small = RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    big = small.repeat(2, axis=0).repeat(2, axis=1)
    np.testing.assert_array_equal(fit(big, 32), small)
    # and averages within a block: a checkerboard of 0/200 becomes flat 100
    checker = (np.indices((64, 64)).sum(0) % 2 * 200).astype(np.uint8)[..., None].repeat(3, axis=2)
    assert (fit(checker, 32) == 100).all()


def test_enlarge_small_image():
    img = np.full((16, 24, 3), (10, 120, 250), np.uint8)
    out = fit(img, 32)  # 16 → 32 (×2, linear), 48 wide → centre 32
    assert out.shape == (32, 32, 3) and (out == (10, 120, 250)).all()


def test_other_input_size_spec():
    spec = Preprocess(size=16)
    img = RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    x = preprocess(img, spec)
    assert x.shape == (1, 3, 16, 16)
    np.testing.assert_allclose(x, reference(fit(img, 16)[None]), atol=1e-5)


def test_mixed_sizes_in_a_list():
    x = preprocess([np.zeros((32, 32, 3), np.uint8), np.zeros((64, 50, 3), np.uint8)])
    assert x.shape == (2, 3, 32, 32)
    np.testing.assert_array_equal(x[0], x[1])


def test_non_uint8_is_refused():
    with pytest.raises(ValueError, match="uint8"):
        preprocess(np.zeros((32, 32, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        preprocess(np.zeros((32, 32, 2), np.uint8))


# --------------------------------------------------------------------------- torch path
def test_preprocess_tensor_equals_numpy():
    torch = pytest.importorskip("torch")
    batch = RNG.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    batch[0] = 0
    batch[1] = 255
    t = preprocess_tensor(torch.from_numpy(batch))
    assert t.dtype == torch.float32 and tuple(t.shape) == (8, 3, 32, 32)
    np.testing.assert_allclose(t.numpy(), preprocess(batch), rtol=0, atol=1e-6)


def test_preprocess_tensor_custom_spec():
    torch = pytest.importorskip("torch")
    spec = Preprocess(mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0))
    batch = RNG.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_allclose(preprocess_tensor(torch.from_numpy(batch), spec).numpy(), preprocess(batch, spec),
                               rtol=0, atol=1e-6)
    np.testing.assert_allclose(preprocess(batch, spec), reference(batch, spec), atol=1e-5)


# --------------------------------------------------------------------------- serialisation
@pytest.mark.parametrize("spec", [DEFAULT, Preprocess(size=28, mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.25))])
def test_to_dict_from_dict_round_trip(spec):
    d = spec.to_dict()
    assert d["size"] == spec.size and d["mean"] == list(spec.mean) and d["layout"] == "NCHW"
    assert Preprocess.from_dict(d) == spec
    assert Preprocess.from_dict(json.loads(json.dumps(d))) == spec  # as stored in bundle.json


def test_from_dict_refuses_what_preprocess_does_not_do():
    d = DEFAULT.to_dict()
    with pytest.raises(NinEdgeError, match="layout 'NHWC' is not supported"):
        Preprocess.from_dict({**d, "layout": "NHWC"})
    with pytest.raises(NinEdgeError, match="resize"):
        Preprocess.from_dict({**d, "resize": "stretch"})
    with pytest.raises(NinEdgeError, match="size"):
        Preprocess.from_dict({k: v for k, v in d.items() if k != "size"})
    with pytest.raises(NinEdgeError, match="std"):
        Preprocess.from_dict({**d, "std": [0.2, 0.0, 0.2]})
    with pytest.raises(ValueError, match="color"):
        Preprocess(color="BGR")
