"""`nin-edge average`: a uniform weight average of runs of one recipe (CPU, seconds)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nin_edge.average import average_checkpoints, mean_state_dict
from nin_edge.bnupdate import reestimate_batchnorm, training_images
from nin_edge.checkpoint import load_checkpoint, load_model
from nin_edge.errors import NinEdgeError
from nin_edge.train import train

from test_train import cfg, make_image_folder


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    """Two nin-bn runs on the same 120 tiny images and the same 6-image validation split, seeds 1 and 2."""
    root = tmp_path_factory.mktemp("avg")
    data = make_image_folder(root / "data")
    runs = []
    for s in (1, 2):
        out = root / f"seed{s}"
        train(cfg(data, out, arch="nin-bn", epochs=1, seed=s, split_seed=0))
        runs.append(out / "last.pt")
    return data, runs


def test_the_average_is_the_mean_of_the_weights_with_statistics_of_its_own(seeds, tmp_path):
    from nin_edge.data import load_dataset
    from nin_edge.train import evaluate, split_train_val

    data, (a, b) = seeds
    out = tmp_path / "soup.pt"
    r = average_checkpoints([a, b], str(data), out, batch=1000, progress=False, command="nin-edge average A B")
    ca, cb, soup = load_checkpoint(a), load_checkpoint(b), load_checkpoint(out)
    stats = ("running_mean", "running_var", "num_batches_tracked")
    for k, v in soup["state_dict"].items():
        if not k.endswith(stats):  # every weight is the mean of the two runs'
            torch.testing.assert_close(v, (ca["state_dict"][k] + cb["state_dict"][k]) / 2, rtol=1e-6, atol=1e-7)
    # the statistics are those of the averaged weights on the runs' training images (114 = 120 less 6), not the mean
    # of the runs' statistics
    model, _ = load_model(out)
    train_ds, _ = training_images(ca, str(data), a)
    assert r.bn_images == len(train_ds) == 114
    ref = {k: v.clone() for k, v in model.state_dict().items()}
    reestimate_batchnorm(model, torch.from_numpy(train_ds.images), 1000)
    for k in ref:
        if k.endswith(("running_mean", "running_var")):
            torch.testing.assert_close(model.state_dict()[k], ref[k], rtol=1e-4, atol=1e-5)
    mean_of_stats = (ca["state_dict"]["features.1.running_var"] + cb["state_dict"]["features.1.running_var"]) / 2
    assert not torch.allclose(soup["state_dict"]["features.1.running_var"], mean_of_stats, rtol=1e-3)
    # validation: the same 6 held-out images for the runs and the average, in fp32
    _, val = split_train_val(load_dataset(data, "train"), 6, 0)
    assert r.val_images == 6
    for path, ing in zip((a, b), r.ingredients):
        assert ing["val_top1"] == pytest.approx(evaluate(load_model(path)[0], val, torch.device("cpu"))[0])
        assert ing["path"] == str(path) and ing["epochs"] == 1
    assert {i["seed"] for i in r.ingredients} == {1, 2}
    assert r.val_top1 == pytest.approx(evaluate(model, val, torch.device("cpu"))[0])
    # the record: what was averaged and measured; no training-time figure is claimed for the average
    rec = soup["average"]
    assert rec["method"] == "uniform" and len(rec["ingredients"]) == 2 and rec["command"] == "nin-edge average A B"
    assert rec["bn_update"]["images"] == 114 and rec["bn_update"]["val_size"] == 6
    assert soup["val_top1"] == r.val_top1 and soup["test_top1"] is None and "optimizer" not in soup
    assert soup["run"] == ca["run"] and soup["arch"] == "nin-bn"


def test_mean_state_dict_keeps_dtypes_and_integer_buffers():
    a = {"w": torch.tensor([1.0, 2.0]), "h": torch.tensor([1.0], dtype=torch.float16), "n": torch.tensor(3)}
    b = {"w": torch.tensor([3.0, 6.0]), "h": torch.tensor([2.0], dtype=torch.float16), "n": torch.tensor(7)}
    m = mean_state_dict([a, b])
    assert torch.equal(m["w"], torch.tensor([2.0, 4.0])) and m["h"].dtype == torch.float16
    assert float(m["h"]) == 1.5 and int(m["n"]) == 3


def test_bad_inputs_are_refused_in_one_line(seeds, tmp_path):
    from typer.testing import CliRunner

    from nin_edge.cli import app

    data, (a, b) = seeds
    out = tmp_path / "soup.pt"
    r = CliRunner().invoke(app, ["average", str(a), str(b), "--data", str(data), "--out", str(out), "--no-progress",
                                 "--threads", "1"])
    assert r.exit_code == 0, r.output
    assert f"wrote {out}: uniform average of 2 checkpoints; BatchNorm statistics re-estimated on 114" in r.output
    assert "average of 2: validation top-1" in r.output and "vs the best run)" in r.output
    assert load_checkpoint(out)["average"]["command"].startswith(f"nin-edge average {a} {b} --data")
    before = out.read_bytes()

    # a run with another validation split, another arch, plain weights, the same file twice, other data
    other_split = tmp_path / "split1"
    train(cfg(data, other_split, arch="nin-bn", epochs=1, seed=1))
    other_arch = tmp_path / "seedarch"
    train(cfg(data, other_arch, epochs=1, seed=0))
    plain = tmp_path / "plain.pt"
    torch.save(load_checkpoint(a)["state_dict"], plain)
    new = str(tmp_path / "new.pt")
    cases = [
        ([str(a), str(b)], out, "already exists (use --force"),
        ([str(a)], new, "average needs at least 2 checkpoints, got 1"),
        ([str(a), str(tmp_path / "nope.pt")], new, "nope.pt: no such checkpoint"),
        ([str(a), str(other_split / "last.pt")], new, "validation split seed 1 differs from"),
        ([str(a), str(other_arch / "last.pt")], new, "arch 'nin-seed' differs from"),
        ([str(a), str(plain)], new, "plain.pt: a plain state_dict has no training record"),
        ([str(a), str(a)], new, "(given twice)"),
    ]
    for ws, o, msg in cases:
        r = CliRunner().invoke(app, ["average", *ws, "--data", str(data), "--out", str(o), "--no-progress"])
        assert r.exit_code == 2 and msg in r.output and "Traceback" not in r.output, (ws, r.output)
        assert len(r.output.strip().splitlines()) == 1
    r = CliRunner().invoke(app, ["average", str(a), str(b), "--data", str(make_image_folder(tmp_path / "o", seed=3)),
                                 "--out", new, "--no-progress"])
    assert r.exit_code == 2 and "not the data last.pt was trained on" in r.output
    assert out.read_bytes() == before and not (tmp_path / "new.pt").exists()
    # --force replaces (another BatchNorm order: other statistics)
    r = CliRunner().invoke(app, ["average", str(a), str(b), "--data", str(data), "--out", str(out), "--batch", "50",
                                 "--force", "--no-progress"])
    assert r.exit_code == 0 and out.read_bytes() != before
    assert np.isfinite(load_checkpoint(out)["average"]["val_top1"])


def test_model_card_and_bundle_say_the_weights_are_an_average(seeds, tmp_path):
    from nin_edge.export import _weights_info
    from nin_edge.modelcard import write_model_card

    data, (a, b) = seeds
    soup = a.parent / "soup.pt"  # beside the first run's last.pt: the card reads that run's history
    r = average_checkpoints([a, b], str(data), soup, batch=1000, progress=False, force=True,
                            command="nin-edge average A B --data D --out S")
    md = write_model_card(a.parent, weights="soup.pt", out=tmp_path / "card.md").markdown
    assert "uniform average of 2 runs' weights (seeds 1, 2; see Weight average)" in md
    assert f"validation top-1 {r.val_top1:.2f}% (fp32, measured after averaging" in md
    assert "## Weight average" in md and "nin-edge average A B --data D --out S" in md
    for i in r.ingredients:
        assert f"| `{i['path']}` | `{i['sha256'][:16]}…` | {i['seed']} | 1 |" in md
    assert f"| **the average** |" in md and "re-estimated after averaging on 114 of the runs' training images" in md
    assert "Test top-1 during training" not in md  # no training-time figure belongs to the average
    w = _weights_info(load_model(soup)[1])
    assert w["average"]["val_top1"] == r.val_top1 and len(w["average"]["ingredients"]) == 2
    assert w["training"]["split_seed"] == 0 and w["test_top1"] is None
