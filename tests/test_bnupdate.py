"""`nin-edge update-bn`: BatchNorm statistics re-estimated on a run's own training images (CPU, seconds)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from nin_edge.bnupdate import update_bn
from nin_edge.checkpoint import load_checkpoint, load_model
from nin_edge.errors import NinEdgeError
from nin_edge.preprocess import preprocess
from nin_edge.train import train

from test_train import CLASSES, cfg, make_image_folder


@pytest.fixture(scope="module")
def bn_run(tmp_path_factory):
    """A nin-bn run on 120 tiny train images, 6 held out for validation and 15 more by --hold-out."""
    root = tmp_path_factory.mktemp("bnrun")
    data = make_image_folder(root / "data")
    hold = root / "hold"
    for c in CLASSES:
        (hold / "train" / c).mkdir(parents=True)
        for i in range(5):
            shutil.copy(data / "train" / c / f"{i:03d}.png", hold / "train" / c / f"h{i}.png")
    out = root / "run"
    train(cfg(data, out, arch="nin-bn", epochs=1, hold_out=str(hold), cutmix=0.5))
    return data, hold, out


def _conv1_stats(weights_path, images_u8):
    """Mean and unbiased variance per channel of the first conv's output: what the first BatchNorm normalises."""
    model, _ = load_model(weights_path)
    with torch.no_grad():
        y = model.features[0](torch.from_numpy(preprocess(images_u8)))
    return y.mean((0, 2, 3)), y.transpose(0, 1).flatten(1).var(1, unbiased=True)


def test_statistics_are_those_of_the_run_s_training_images_and_weights_stay(bn_run, tmp_path):
    from nin_edge.data import load_dataset
    from nin_edge.train import hold_out_images, split_train_val

    data, hold, run = bn_run
    out = tmp_path / "bn.pt"
    r = update_bn(run / "best.pt", str(data), out, batch=1000, progress=False)
    # the run's training images: 120 less its 6 validation images less the 15 held out
    kept, _ = split_train_val(load_dataset(data, "train"), 6, 0)
    kept, _ = hold_out_images(kept, str(hold), 32)
    assert r.images == len(kept) == 99 and r.layers == 9
    mean, var = _conv1_stats(out, kept.images)  # the weights are unchanged, so the old file's conv is the same
    new = load_checkpoint(out)["state_dict"]
    torch.testing.assert_close(new["features.1.running_mean"], mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(new["features.1.running_var"], var, rtol=1e-4, atol=1e-5)
    # not the statistics of every train image (the held-out ones are left out), nor the run's own
    all_mean, _ = _conv1_stats(out, load_dataset(data, "train").images)
    assert not torch.allclose(new["features.1.running_mean"], all_mean, rtol=1e-4, atol=1e-5)
    old = load_checkpoint(run / "best.pt")
    assert not torch.allclose(new["features.1.running_mean"], old["state_dict"]["features.1.running_mean"])
    for k, v in old["state_dict"].items():
        if not k.endswith(("running_mean", "running_var", "num_batches_tracked")):
            assert torch.equal(v, new[k]), k
    # the record: where it came from, on what; the run's accuracies were of the old statistics
    ck = load_checkpoint(out)
    rec = ck["bn_update"]
    assert rec["images"] == 99 and rec["hold_out"] == str(hold) and rec["val_size"] == 6
    assert rec["from"]["test_top1"] == old["test_top1"] and ck["test_top1"] is None and ck["val_top1"] is None
    assert ck["history"] == old["history"] and ck["run"] == old["run"]
    # equal-size batches: the average of the batch means is the mean over the images, whatever the order
    r3 = update_bn(run / "best.pt", str(data), tmp_path / "b33.pt", batch=33, seed=5, progress=False)
    assert r3.images == 99
    torch.testing.assert_close(load_checkpoint(tmp_path / "b33.pt")["state_dict"]["features.1.running_mean"], mean,
                               rtol=1e-4, atol=1e-5)
    # updating an updated checkpoint recomputes from scratch and keeps the run's training-time figures
    again = update_bn(out, str(data), tmp_path / "again.pt", batch=1000, progress=False)
    torch.testing.assert_close(load_checkpoint(tmp_path / "again.pt")["state_dict"]["features.1.running_mean"], mean,
                               rtol=1e-4, atol=1e-5)
    assert again.record["from"]["test_top1"] == old["test_top1"] and again.record["from"]["path"] == str(out)
    # a ragged last batch is left out: 99 // 40 = 2 batches
    assert update_bn(run / "best.pt", str(data), tmp_path / "b40.pt", batch=40, progress=False).images == 80


def test_bad_inputs_are_refused_in_one_line(bn_run, tmp_path):
    from typer.testing import CliRunner

    from nin_edge.cli import app

    data, hold, run = bn_run
    out = tmp_path / "bn.pt"
    r = CliRunner().invoke(app, ["update-bn", "--weights", str(run / "best.pt"), "--data", str(data),
                                 "--out", str(out), "--no-progress", "--threads", "1"])
    assert r.exit_code == 0 and f"wrote {out}: statistics of 9 BatchNorm layers re-estimated on 99" in r.output
    assert load_checkpoint(out)["bn_update"]["command"].startswith(f"nin-edge update-bn --weights {run / 'best.pt'}")
    before = out.read_bytes()
    cases = [
        ([], f"{out}: already exists (use --force"),  # nothing overwritten without --force
        (["--weights", str(tmp_path / "nope.pt")], "nope.pt: no such checkpoint"),
        (["--data", str(make_image_folder(tmp_path / "other", seed=3))], "not the data best.pt was trained on"),
        (["--data", "bundled:val"], "bundled subsets are evaluation/calibration sets"),
    ]
    for change, msg in cases:  # the first case writes to OUT, which exists; the others to a new path
        args = {"--weights": str(run / "best.pt"), "--data": str(data), "--out": str(out if not change else
                                                                                     tmp_path / "new.pt")}
        args.update(dict(zip(change[::2], change[1::2])))
        r = CliRunner().invoke(app, ["update-bn", *[x for kv in args.items() for x in kv], "--no-progress"])
        assert r.exit_code == 2 and msg in r.output and "Traceback" not in r.output, (change, r.output)
        assert len(r.output.strip().splitlines()) == 1
    assert out.read_bytes() == before and not (tmp_path / "new.pt").exists()
    # a plain state_dict has no record of what the run trained on
    sd = tmp_path / "plain.pt"
    torch.save(load_checkpoint(run / "best.pt")["state_dict"], sd)
    with pytest.raises(NinEdgeError, match="plain state_dict has no training record"):
        update_bn(sd, str(data), tmp_path / "x.pt", progress=False)
    # an arch without BatchNorm has nothing to re-estimate
    seed_run = tmp_path / "seed"
    train(cfg(data, seed_run, epochs=1))
    with pytest.raises(NinEdgeError, match="arch 'nin-seed' has no BatchNorm layers"):
        update_bn(seed_run / "best.pt", str(data), tmp_path / "y.pt", progress=False)
    assert not (tmp_path / "x.pt").exists() and not (tmp_path / "y.pt").exists()
    # --force replaces
    r = CliRunner().invoke(app, ["update-bn", "--weights", str(run / "best.pt"), "--data", str(data), "--out", str(out),
                                 "--batch", "33", "--force", "--no-progress"])
    assert r.exit_code == 0 and out.read_bytes() != before


def test_model_card_says_the_statistics_were_re_estimated(bn_run, tmp_path):
    from nin_edge.modelcard import write_model_card

    data, hold, run = bn_run
    bn = run / "bn.pt"
    update_bn(run / "best.pt", str(data), bn, batch=33, command="nin-edge update-bn --weights X", force=True,
              progress=False)
    old = load_checkpoint(run / "best.pt")
    md = write_model_card(run, weights="bn.pt", out=tmp_path / "card.md").markdown
    assert "## BatchNorm statistics re-estimated" in md and "nin-edge update-bn --weights X" in md
    assert f"average over 99 of the run's training images as they are" in md
    assert f"(no augmentation, no mixing; the 6-image validation split and the `{hold}` hold-out left out)" in md
    # the run's test figure is shown, and said to be of the statistics before
    test = f"{old['test_top1']:.2f}%" if old["test_top1"] is not None else "—"
    assert f"| Test top-1 during training | {test} at epoch 1 (in the training precision, fp32, before the " \
           "BatchNorm statistics were re-estimated) |" in md
    # the card's own evaluation is of the new statistics
    res = write_model_card(run, evaluate=str(data), weights="bn.pt", out=tmp_path / "card2.md", threads=1)
    model, _ = load_model(bn)
    from nin_edge.data import load_dataset

    ds = load_dataset(data, "test")
    with torch.no_grad():
        pred = model(torch.from_numpy(preprocess(ds.images))).argmax(1).numpy()
    assert res.evaluation.top1 == pytest.approx(float((pred == ds.labels).mean() * 100))
    assert np.isfinite(res.evaluation.top1)
    # a bundle exported from these weights records where their statistics came from (its weights record)
    from nin_edge.export import _weights_info

    w = _weights_info(load_model(bn)[1])
    assert w["bn_update"]["images"] == 99 and w["bn_update"]["from"]["test_top1"] == old["test_top1"]
    assert w["test_top1"] is None  # the run's figure was of the statistics before
