"""Training loop, resume, bad inputs, outputs and the model card — on tiny image-folder data sets (CPU, seconds).

Every run uses one torch thread: the dev machine has 2 cores and tests must not fight a training run for them.
"""
from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nin_edge.checkpoint import load_checkpoint
from nin_edge.errors import NinEdgeError
from nin_edge.train import TrainConfig, _fit_to, apply_augment, augment, draw_augment, evaluate, train

CLASSES = ("ant", "bee", "cat")


def make_image_folder(root: Path, classes=CLASSES, n_train: int = 40, n_test: int = 10, size: int = 32,
                      seed: int = 0) -> Path:
    """ROOT/{train,test}/<class>/*.png: each class a colour cast + noise + a class-specific stripe direction."""
    import cv2

    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for k, c in enumerate(classes):
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            base = np.full(3, 90.0)
            base[k % 3] += 90
            for i in range(n):
                img = base[None, None] + rng.normal(0, 45, (size, size, 3))
                if k % 2:
                    img[::4] += 40
                else:
                    img[:, ::4] += 40
                cv2.imwrite(str(d / f"{i:03d}.png"), np.clip(img, 0, 255).astype(np.uint8)[:, :, ::-1])
    return root


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("tiny") / "data")


def cfg(data, out, **kw) -> TrainConfig:
    base = dict(arch="nin-seed", data=str(data), out=str(out), epochs=1, batch_size=16, lr=0.05, val_size=6,
                precision="fp32", threads=1, progress=False)
    base.update(kw)
    return TrainConfig(**base)


# --------------------------------------------------------------------------- augmentation
def _augment_reference(x, gen, pad=4):
    """The first implementation (float reflect-pad, then gather): the gather-only version must equal it."""
    n, h, w, _ = x.shape
    xp = F.pad(x.permute(0, 3, 1, 2).float(), (pad, pad, pad, pad), mode="reflect").to(torch.uint8).permute(0, 2, 3, 1)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    flip = torch.rand(n, generator=gen) < 0.5
    rows = dy[:, None] + torch.arange(h)
    cols = dx[:, None] + torch.arange(w)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    return xp[torch.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def test_augment_equals_padded_reference_and_slices_per_rank():
    x = torch.randint(0, 256, (64, 32, 32, 3), dtype=torch.uint8)
    got = augment(x, torch.Generator().manual_seed(5))
    ref = _augment_reference(x, torch.Generator().manual_seed(5))
    assert torch.equal(got, ref)
    assert got.dtype == torch.uint8 and got.shape == x.shape
    # a rank's slice of the global draw augments exactly like one process does for those samples
    draw = draw_augment(64, torch.Generator().manual_seed(9))
    full = apply_augment(x, draw)
    assert torch.equal(apply_augment(x[1::2], draw[1::2]), full[1::2])
    # offsets and flips really vary (not a no-op)
    assert len(set(draw.dy.tolist())) > 3 and 0 < int(draw.flip.sum()) < 64


def test_fit_to_brings_other_sizes_to_the_model_input(tmp_path):
    from nin_edge.data import Dataset
    from nin_edge.preprocess import fit

    imgs = np.random.default_rng(0).integers(0, 255, (3, 40, 48, 3), dtype=np.uint8)
    ds = Dataset(imgs, np.arange(3), ("a", "b", "c"), "x")
    out = _fit_to(ds, 32)
    assert out.images.shape == (3, 32, 32, 3)
    assert np.array_equal(out.images[1], fit(imgs[1], 32))


# --------------------------------------------------------------------------- the loop and its outputs
def test_a_few_steps_lower_the_loss_and_outputs_are_complete(tiny, tmp_path):
    out = tmp_path / "run"
    r = train(cfg(tiny, out, epochs=3))
    losses = [h["train_loss"] for h in r.history]
    assert r.epochs_done == 3 and not r.stopped_early
    assert losses[0] < math.log(3) * 1.5  # sane start (3 classes, label smoothing)
    assert losses[-1] < 0.75 * losses[0], losses

    # trained model: lower cross-entropy on the training images than the same architecture at its init
    from nin_edge.data import load_dataset
    from nin_edge.models import create_model
    from nin_edge.preprocess import preprocess

    ds = load_dataset(tiny, "train")
    x, y = torch.from_numpy(preprocess(ds.images)), torch.from_numpy(ds.labels)
    torch.manual_seed(0)
    init = create_model("nin-seed", 3).eval()
    with torch.no_grad():
        assert F.cross_entropy(r.model.eval()(x), y) < F.cross_entropy(init(x), y)

    # metrics.jsonl: one JSON line per epoch, matching the history
    lines = (out / "metrics.jsonl").read_text().splitlines()
    recs = [json.loads(ln) for ln in lines]
    assert [h["epoch"] for h in recs] == [1, 2, 3]
    assert [h["train_loss"] for h in recs] == losses
    assert {"val_top1", "test_top1", "lr", "epoch_seconds", "images_per_s", "elapsed_s"} <= set(recs[0])
    # curves.png is a real PNG
    import cv2

    png = (out / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR).shape[0] > 100
    assert not list(out.glob(".*tmp*"))  # no temp files left behind

    # checkpoints: metadata, weights_only loading, best.pt's recorded val accuracy reproduces
    for name in ("best.pt", "last.pt"):
        ck = torch.load(out / name, map_location="cpu", weights_only=True)
        for key in ("arch", "classes", "preprocess", "epoch", "val_top1", "test_top1", "seed", "data_sha256",
                    "code_version", "run", "history", "config", "machine", "elapsed_s"):
            assert key in ck, (name, key)
        assert ck["arch"] == "nin-seed" and ck["classes"] == list(CLASSES) and ck["seed"] == 0
        assert ck["data_sha256"].startswith("content:") and len(ck["data_sha256"]) == 8 + 64
        assert ck["preprocess"]["size"] == 32
        assert ("optimizer" in ck) == (name == "last.pt")
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 3

    from nin_edge.checkpoint import load_model
    from nin_edge.train import split_train_val

    model, meta = load_model(out / "best.pt")
    _, val = split_train_val(ds, 6, 0)
    top1, _ = evaluate(model, val, torch.device("cpu"))
    assert top1 == pytest.approx(meta["val_top1"])


def test_resume_equals_uninterrupted_bit_for_bit(tiny, tmp_path):
    # nin-bn: BatchNorm running statistics must come back too
    a = tmp_path / "a"
    b = tmp_path / "b"
    train(cfg(tiny, a, arch="nin-bn", epochs=2))
    r1 = train(cfg(tiny, b, arch="nin-bn", epochs=2, max_minutes=0))  # stops after the first epoch
    assert r1.stopped_early and r1.epochs_done == 1 and r1.resumed_from == 0
    assert torch.load(b / "last.pt", weights_only=True)["epoch"] == 1
    r2 = train(cfg(tiny, b, arch="nin-bn", epochs=2, resume=True))
    assert r2.epochs_done == 2 and not r2.stopped_early and r2.resumed_from == 1
    ca = torch.load(a / "last.pt", weights_only=True)
    cb = torch.load(b / "last.pt", weights_only=True)
    assert ca["state_dict"].keys() == cb["state_dict"].keys()
    for k in ca["state_dict"]:
        assert torch.equal(ca["state_dict"][k], cb["state_dict"][k]), k
    for sa, sb in zip(ca["optimizer"]["state"].values(), cb["optimizer"]["state"].values()):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    assert [h["train_loss"] for h in ca["history"]] == [h["train_loss"] for h in cb["history"]]
    assert len((b / "metrics.jsonl").read_text().splitlines()) == 2


def test_resume_refuses_changed_options_other_arch_other_data_and_finished_runs(tiny, tmp_path):
    out = tmp_path / "run"
    train(cfg(tiny, out, epochs=2, max_minutes=0))
    with pytest.raises(NinEdgeError, match=r"changed run options: lr \(0\.05 → 0\.1\)"):
        train(cfg(tiny, out, epochs=2, lr=0.1, resume=True))
    with pytest.raises(NinEdgeError, match="changed run options: epochs"):
        train(cfg(tiny, out, epochs=3, resume=True))
    with pytest.raises(NinEdgeError, match=r"last\.pt: checkpoint is for arch 'nin-seed', not --arch 'nin-bn'"):
        train(cfg(tiny, out, arch="nin-bn", epochs=2, resume=True))
    # same folder name, one image changed: the content fingerprint catches it
    other = tmp_path / "other"
    shutil.copytree(tiny, other)
    victim = next((other / "train" / "ant").glob("*.png"))
    import cv2

    img = cv2.imread(str(victim))
    img[0, 0] = 255 - img[0, 0]
    cv2.imwrite(str(victim), img)
    with pytest.raises(NinEdgeError, match="changed run options: data_sha256"):
        train(cfg(other, out, epochs=2, resume=True))
    with pytest.raises(NinEdgeError, match="no checkpoint to resume from"):
        train(cfg(tiny, tmp_path / "empty", epochs=2, resume=True))
    train(cfg(tiny, out, epochs=2, resume=True))
    with pytest.raises(NinEdgeError, match="already finished all 2 epochs"):
        train(cfg(tiny, out, epochs=2, resume=True))


def test_out_dir_holding_a_run_is_refused_unless_force(tiny, tmp_path):
    out = tmp_path / "run"
    train(cfg(tiny, out))
    before = (out / "last.pt").read_bytes()
    with pytest.raises(NinEdgeError, match=r"already holds a run \(last\.pt, best\.pt, metrics\.jsonl, curves\.png\).*--resume.*--force"):
        train(cfg(tiny, out, seed=1))
    assert (out / "last.pt").read_bytes() == before  # untouched
    r = train(cfg(tiny, out, seed=1, force=True))
    assert r.epochs_done == 1
    assert torch.load(out / "last.pt", weights_only=True)["seed"] == 1
    # a folder with unrelated files only is fine (nothing of ours to clobber)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    train(cfg(tiny, other))
    assert (other / "notes.txt").read_text() == "keep me"


def test_non_finite_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tiny, tmp_path):
    out = tmp_path / "run"
    # one step per epoch (114 train images, batch 64) and no warm-up: epoch 1's step has a finite loss and
    # blows the weights up; epoch 2's first loss is non-finite
    with pytest.raises(NinEdgeError, match=r"non-finite loss \(nan\) at epoch 2 step 1; training stopped \(try a lower --lr\); "
                                           r"last good checkpoint kept: .*last\.pt \(epoch 1\)"):
        train(cfg(tiny, out, epochs=2, batch_size=64, lr=1e30, warmup_frac=0.0))
    ck = torch.load(out / "last.pt", weights_only=True)
    assert ck["epoch"] == 1
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    # failing in the very first epoch says that nothing was written
    with pytest.raises(NinEdgeError, match="no checkpoint was written"):
        train(cfg(tiny, tmp_path / "run2", epochs=2, batch_size=16, lr=1e30, warmup_frac=0.0))
    assert not (tmp_path / "run2" / "last.pt").exists()


def test_bad_data_sources(tiny, tmp_path):
    with pytest.raises(NinEdgeError, match="no such file or directory"):
        train(cfg(tmp_path / "missing", tmp_path / "o1"))
    # test split with other classes than train
    bad = tmp_path / "bad"
    shutil.copytree(tiny, bad)
    shutil.rmtree(bad / "test" / "cat")
    with pytest.raises(NinEdgeError, match=r"test classes \['ant', 'bee'\] differ from train classes \['ant', 'bee', 'cat'\]"):
        train(cfg(bad, tmp_path / "o2"))
    # a single class cannot train a classifier
    one = make_image_folder(tmp_path / "one", classes=("solo",), n_train=20, n_test=4)
    with pytest.raises(NinEdgeError, match=r"at least 2 classes, found \['solo'\]"):
        train(cfg(one, tmp_path / "o3"))
    with pytest.raises(NinEdgeError, match="--val-size 500: must be smaller"):
        train(cfg(tiny, tmp_path / "o4", val_size=500))
    with pytest.raises(NinEdgeError, match="--batch-size 1000: larger than"):
        train(cfg(tiny, tmp_path / "o5", batch_size=1000))
    with pytest.raises(NinEdgeError, match="unknown model 'nin-nope'"):
        train(cfg(tiny, tmp_path / "o6", arch="nin-nope"))
    with pytest.raises(NinEdgeError, match="bundled subsets are evaluation/calibration sets"):
        train(cfg("bundled:eval", tmp_path / "o7"))
    (tmp_path / "o8").write_text("a file")
    with pytest.raises(NinEdgeError, match="o8: --out exists and is not a directory"):
        train(cfg(tiny, tmp_path / "o8"))
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 8))


# --------------------------------------------------------------------------- CLI
def _invoke(args):
    from typer.testing import CliRunner

    from nin_edge.cli import app

    return CliRunner().invoke(app, args)


def test_cli_train_runs_and_bad_inputs_exit_2(tiny, tmp_path):
    out = tmp_path / "run"
    common = ["train", "--arch", "nin-seed", "--data", str(tiny), "--epochs", "1", "--batch-size", "16",
              "--val-size", "6", "--precision", "fp32", "--threads", "1", "--lr", "0.05", "--no-progress"]
    r = _invoke(common + ["--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "done: 1 epochs" in r.output
    ck = torch.load(out / "best.pt", weights_only=True)
    assert ck["command"] == (f"nin-edge train --arch nin-seed --data {tiny} --epochs 1 --out {out} --batch-size 16 "
                             "--lr 0.05 --weight-decay 0.0005 --label-smoothing 0.1 --warmup-frac 0.15 --cutout 0 --cutmix 0.0 --val-size 6 "
                             "--seed 0 --device cpu --precision fp32 --threads 1 --eval-test --no-progress")

    r = _invoke(common + ["--out", str(out)])
    assert r.exit_code == 2 and "already holds a run" in r.output and "Traceback" not in r.output
    # a resumed run says which epochs this invocation trained (its minutes cover only those)
    part = tmp_path / "part"
    two = list(common)
    two[two.index("--epochs") + 1] = "2"
    r = _invoke(two + ["--out", str(part), "--max-minutes", "0"])
    assert r.exit_code == 0 and "done: 1 epochs" in r.output and "continue with --resume" in r.output
    r = _invoke(two + ["--out", str(part), "--resume"])
    assert r.exit_code == 0 and "done: epoch 2 (resumed after 1) in" in r.output, r.output
    r = _invoke(common + ["--out", str(out), "--resume", "--force"])
    assert r.exit_code == 2 and "choose one" in r.output
    r = _invoke(["train", "--data", str(tmp_path / "nope.tar.gz"), "--out", str(tmp_path / "x"), "--threads", "1"])
    assert r.exit_code == 2 and "nope.tar.gz: no such file or directory" in r.output
    r = _invoke(common + ["--out", str(tmp_path / "y"), "--arch", "nin-bn", "--resume"])
    assert r.exit_code == 2 and "no checkpoint to resume from" in r.output
    r = _invoke(common + ["--out", str(tmp_path / "z"), "--precision", "int4"])
    assert r.exit_code == 2 and "int4" in r.output
    # --resume of a checkpoint for another arch
    r = _invoke(common[:2] + ["nin-bn"] + common[3:] + ["--out", str(out), "--resume"])
    assert r.exit_code == 2 and "checkpoint is for arch 'nin-seed', not --arch 'nin-bn'" in r.output


# --------------------------------------------------------------------------- model card
def test_model_card_command_drops_resume_and_force():
    # a checkpoint records the command of the run's latest start; `--resume` on a fresh out dir is refused,
    # so the card's reproducing command must not carry it (nor --force), and says it dropped them
    from nin_edge.modelcard import _run_command

    base = "nin-edge train --arch nin-cifar --data 'my data.tar.gz' --epochs 40 --out runs/x --val-size 0"
    assert _run_command({"command": base}, None) == (base, "as recorded")
    cmd, how = _run_command({"command": base + " --no-progress --resume"}, None)
    assert cmd == base + " --no-progress" and "without the `--resume`" in how
    assert _run_command({"command": base + " --force"}, None)[0] == base
    # no recorded command: the equivalent one built from the stored options
    cmd, how = _run_command({"run": {"arch": "nin-seed", "epochs": 2}, "config": {}}, "d.tar.gz")
    assert cmd.startswith("nin-edge train --arch nin-seed --data d.tar.gz --epochs 2") and "equivalent" in how


def test_model_card_reports_full_test_split_and_per_class_accuracy(tiny, tmp_path):
    from nin_edge.checkpoint import load_model
    from nin_edge.data import load_dataset
    from nin_edge.modelcard import build_app, write_model_card
    from nin_edge.preprocess import preprocess

    out = tmp_path / "run"
    train(cfg(tiny, out, epochs=2, lr=0.02))
    res = write_model_card(out, evaluate=str(tiny), threads=1)
    md = (out / "MODEL_CARD.md").read_text()
    # independent measurement: the card's numbers are those of best.pt on every test image
    model, meta = load_model(out / "best.pt")
    ds = load_dataset(tiny, "test")
    with torch.no_grad():
        pred = model(torch.from_numpy(preprocess(ds.images))).argmax(1).numpy()
    top1 = float((pred == ds.labels).mean() * 100)
    assert res.evaluation.images == 30 and res.evaluation.top1 == pytest.approx(top1)
    assert f"**{top1:.2f}%** on 30 images" in md
    for k, c in enumerate(CLASSES):
        n, correct = int((ds.labels == k).sum()), int((pred[ds.labels == k] == k).sum())
        assert f"| {c} | {n:,} | {correct:,} | {100 * correct / n:.2f}% |" in md
    assert "![training loss and top-1 per epoch](curves.png)" in md
    # started from Python (no command line): the card builds the equivalent command from the stored options
    assert "not recorded (the run was started from Python" in md
    assert f"nin-edge train --arch nin-seed --data {tiny} --epochs 2 --batch-size 16 --lr 0.02" in md
    assert "| Epochs | 2 of 2 planned |" in md
    assert "torch threads 1), device cpu, 1 process(es)" in md  # the machine the run recorded
    assert f"epoch {meta['epoch']}" in md

    assert "chosen on the validation split held out of train" in md

    # the last epoch as the card's weights, when an earlier epoch had the best validation (a rule that ships the
    # end of the schedule): the card must not claim validation chose them
    ck = load_checkpoint(out / "last.pt")
    ck["history"][0]["val_top1"] = max(h["val_top1"] for h in ck["history"]) + 1.0  # epoch 1 the best
    torch.save(ck, out / "last.pt")  # the run record the card reads the history from
    torch.save({k: v for k, v in ck.items() if k not in ("optimizer", "train_state_dict")}, out / "final.pt")
    md_end = write_model_card(out, weights="final.pt", out=str(tmp_path / "end.md")).markdown
    assert "epoch 2, the end of the schedule" in md_end and "not chosen by validation (the best validation epoch was 1" in md_end
    assert "chosen on the validation split" not in md_end and "the card's weights are the last epoch" in md_end

    # refuses to overwrite; CLI errors exit 2 with one line
    from typer.testing import CliRunner

    r = CliRunner().invoke(build_app(), [str(out)])
    assert r.exit_code == 2 and "MODEL_CARD.md: already exists" in r.output
    r = CliRunner().invoke(build_app(), [str(tmp_path / "nope")])
    assert r.exit_code == 2 and "not a run directory" in r.output
    r = CliRunner().invoke(build_app(), [str(out), "--force", "--out", str(tmp_path / "card.md")])
    assert r.exit_code == 0, r.output
    assert "](run/curves.png)" in (tmp_path / "card.md").read_text()
    # evaluating on a data set with other classes is refused
    r = CliRunner().invoke(build_app(), [str(out), "--force", "--evaluate", "bundled:eval"])
    assert r.exit_code == 2 and "differ from the checkpoint's" in r.output


# --------------------------------------------------------------------------- cutout and --init-from
def test_cutout_zeroes_one_square_per_image_clipped_at_the_edges():
    from nin_edge.train import apply_cutout, draw_cutout

    x = torch.randn(4, 3, 8, 8) + 5.0  # no exact zeros before the cutout
    centres = torch.tensor([[0, 0], [4, 4], [7, 3], [3, 7]])
    for size in (3, 4):
        y = apply_cutout(x, centres, size)
        for i, (cy, cx) in enumerate(centres.tolist()):
            ref = x[i].clone()
            lo = size // 2
            ref[:, max(0, cy - lo):cy - lo + size, max(0, cx - lo):cx - lo + size] = 0.0
            assert torch.equal(y[i], ref), (size, i)
    # the centred square is whole; a corner one is clipped (4×4 around (0,0) keeps 2×2 inside)
    assert int((apply_cutout(x, centres, 4)[1, 0] == 0).sum()) == 16
    assert int((apply_cutout(x, centres, 4)[0, 0] == 0).sum()) == 4
    c = draw_cutout(1000, torch.Generator().manual_seed(0), 8, 8)
    assert c.shape == (1000, 2) and int(c.min()) == 0 and int(c.max()) == 7


@pytest.mark.parametrize("option, value, off", [("cutout", 8, 0), ("cutmix", 0.5, 0.0)])
def test_extra_augmentation_trains_and_is_part_of_the_run_definition(tiny, tmp_path, option, value, off):
    from nin_edge.modelcard import write_model_card

    out = tmp_path / "aug"
    r = train(cfg(tiny, out, epochs=2, **{option: value}))
    assert r.epochs_done == 2 and all(math.isfinite(h["train_loss"]) for h in r.history)
    ck = torch.load(out / "last.pt", weights_only=True)
    assert ck["run"][option] == value
    assert f"| `--{option}` | {value} |" in write_model_card(out).markdown  # the card names the recipe
    with pytest.raises(NinEdgeError, match=rf"{option} \({value} → {off}\)"):
        train(cfg(tiny, out, epochs=3, resume=True))
    # each draws from its own stream: the run without it is unchanged, the run with it trains on other images
    r0 = train(cfg(tiny, tmp_path / "plain", epochs=1))
    r1 = train(cfg(tiny, tmp_path / "aug1", epochs=1, **{option: value}))
    assert r0.history[0]["train_loss"] != r1.history[0]["train_loss"]


def test_init_from_warm_starts_and_keeps_the_validation_split_held_out(tiny, tmp_path):
    from nin_edge.data import sha256_file
    from nin_edge.modelcard import write_model_card

    a = tmp_path / "a"
    train(cfg(tiny, a, epochs=2))
    a_sd = torch.load(a / "best.pt", weights_only=True)["state_dict"]
    # an lr of ~0 keeps the warm-started weights where they started; a fresh init is far from them
    b = tmp_path / "b"
    rb = train(cfg(tiny, b, epochs=1, lr=1e-12, init_from=str(a / "best.pt")))
    fresh = train(cfg(tiny, tmp_path / "fresh", epochs=1, lr=1e-12))
    w = "features.0.weight" if "features.0.weight" in a_sd else next(k for k in a_sd if k.endswith("weight"))
    assert torch.allclose(rb.model.state_dict()[w].float(), a_sd[w].float(), atol=1e-6)
    assert not torch.allclose(fresh.model.state_dict()[w].float(), a_sd[w].float(), atol=1e-3)
    ck = torch.load(b / "last.pt", weights_only=True)
    assert ck["init_from"]["sha256"] == sha256_file(a / "best.pt") and ck["run"]["init_sha256"] == ck["init_from"]["sha256"]
    assert ck["init_from"]["epochs_total"] == 2

    # the model card tells both runs apart and adds their wall times
    md = write_model_card(b).markdown
    assert "## Warm start" in md and str(a / "best.pt") in md and "| Wall time, all 2 runs |" in md
    assert "| Epochs | 1 of 1 planned, after 2 of the run it started from (3 in all; see Warm start) |" in md
    # a warm start of a warm start: the card follows the chain back and counts every run
    c3 = tmp_path / "c3"
    train(cfg(tiny, c3, epochs=1, lr=1e-12, init_from=str(b / "best.pt")))
    md3 = write_model_card(c3).markdown
    assert "| Epochs | 1 of 1 planned, after 3 of the 2 runs it started from (4 in all; see Warm start) |" in md3
    assert "### … which started from (level 2)" in md3 and str(a / "best.pt") in md3 and "| Wall time, all 3 runs |" in md3
    assert f"nin-edge train --arch nin-seed --data {tiny} --epochs 2" in md  # the first run's command

    # another split of the same data would validate on images the checkpoint trained on
    with pytest.raises(NinEdgeError, match="validation split"):
        train(cfg(tiny, tmp_path / "c", seed=1, init_from=str(a / "best.pt")))
    with pytest.raises(NinEdgeError, match="validation split"):
        train(cfg(tiny, tmp_path / "c", val_size=9, init_from=str(a / "best.pt")))
    # another --seed keeps the split with --split-seed: a second sample of the recipe on the same held-out images
    from nin_edge.bnupdate import training_images

    again = tmp_path / "seed1"
    r1 = train(cfg(tiny, again, seed=1, split_seed=0, lr=0.05, init_from=str(a / "best.pt"),
                   teachers=(str(a / "best.pt"),)))
    same = train(cfg(tiny, tmp_path / "seed0", seed=0, split_seed=0, lr=0.05, init_from=str(a / "best.pt"),
                     teachers=(str(a / "best.pt"),)))
    ck1, ck0 = load_checkpoint(again / "last.pt"), load_checkpoint(tmp_path / "seed0" / "last.pt")
    assert ck1["run"]["split_seed"] == 0 and ck0["run"]["split_seed"] is None  # = --seed: recorded as without it
    seen1, _ = training_images(ck1, str(tiny), again / "last.pt")
    seen0, _ = training_images(load_checkpoint(a / "best.pt"), str(tiny), a / "best.pt")
    assert seen1.ids == seen0.ids and len(seen1) == len(seen0)  # the same images trained on, the same held out
    assert r1.history[0]["train_loss"] != same.history[0]["train_loss"]  # but another order and augmentation
    with pytest.raises(NinEdgeError, match="--split-seed 0, so it has seen .*--split-seed 1"):
        train(cfg(tiny, tmp_path / "c", seed=0, split_seed=1, init_from=str(again / "last.pt")))
    # ... but a final refit on every train image (--val-size 0) chooses nothing, so it may start from it
    refit = train(cfg(tiny, tmp_path / "refit", val_size=0, init_from=str(a / "best.pt"),
                      teachers=(str(a / "best.pt"),)))
    assert refit.best_val is None and load_checkpoint(tmp_path / "refit" / "best.pt")["run"]["val_size"] == 0
    md_refit = write_model_card(tmp_path / "refit").markdown  # the card must not claim a held-out choice
    assert "the last epoch of a run without validation (`--val-size 0`" in md_refit and "chooses nothing" in md_refit
    assert "a teacher trained with a held-out split labels images it never trained" in md_refit and "stayed held out" not in md_refit
    assert "stayed held out in every run" in md and "chosen on the validation split held out" in md
    with pytest.raises(NinEdgeError, match="cannot widen .*nin-seed.* into 'nin-bn'"):  # another layout
        train(cfg(tiny, tmp_path / "c", arch="nin-bn", init_from=str(a / "best.pt")))
    with pytest.raises(NinEdgeError, match="no such checkpoint"):
        train(cfg(tiny, tmp_path / "c", init_from=str(tmp_path / "missing.pt")))
    # resuming the warm-started run with another starting checkpoint is a different run
    with pytest.raises(NinEdgeError, match="init_sha256"):
        train(cfg(tiny, b, epochs=2, lr=1e-12, resume=True, init_from=str(tmp_path / "fresh" / "best.pt")))


def test_cutout_draws_are_sliced_per_rank_like_crops_and_flips():
    # DDP ranks take rows rank::world of the global draws; their batches must be exactly the global batch's rows.
    # (End-to-end DDP with cutout is not compared to one process at 1e-4: with cutout, whole zero patches sit
    # exactly at the first conv's bias, so ReLU kinks amplify float summation order — 1 vs 2 threads in ONE
    # process already differ by 5.7e-4 relative after 7 steps, against 1.3e-6 without cutout, measured.)
    from nin_edge.train import draw_cutout, make_batch

    x_all = torch.randint(0, 255, (64, 32, 32, 3), dtype=torch.uint8)
    y_all = torch.arange(64) % 3
    idx = torch.randperm(64, generator=torch.Generator().manual_seed(0))[:16]
    d = draw_augment(16, torch.Generator().manual_seed(1))
    c = draw_cutout(16, torch.Generator().manual_seed(2), 32, 32)
    full, yf, _ = make_batch(x_all, y_all, idx, d, torch.device("cpu"), (c, 8))
    assert int((full == 0).sum()) > 0
    for world in (2, 4):
        for rank in range(world):
            mine = slice(rank, None, world)
            xb, yb, _ = make_batch(x_all, y_all, idx[mine], d[mine], torch.device("cpu"), (c[mine], 8))
            assert torch.equal(xb, full[mine]) and torch.equal(yb, yf[mine])


# --------------------------------------------------------------------------- CutMix
def test_cutmix_pastes_one_box_from_the_partner_and_weights_labels_by_area():
    from nin_edge.preprocess import preprocess_tensor
    from nin_edge.train import apply_augment, cutmix_mask, draw_cutmix, make_batch

    m = draw_cutmix(4000, torch.Generator().manual_seed(0), 50, 32, 32, 0.5)
    share = cutmix_mask(m, 32, 32).flatten(1).float().mean(1)
    assert abs(float(m.use.float().mean()) - 0.5) < 0.03  # the requested share of images is mixed
    assert float(share[~m.use].max()) == 0.0  # the others are untouched
    assert 0.0 <= float(share.min()) and float(share.max()) <= 1.0
    assert int(m.partner.min()) == 0 and int(m.partner.max()) == 49
    assert bool(((m.box[:, 0] <= m.box[:, 1]) & (m.box[:, 2] <= m.box[:, 3])).all())
    assert int(m.box.min()) >= 0 and int(m.box.max()) <= 32

    # the batch: inside the box the partner's (own crop/flip) pixels, outside the image's own; labels by area
    x_all = torch.randint(0, 255, (50, 32, 32, 3), dtype=torch.uint8)
    y_all = torch.arange(50) % 7
    idx = torch.arange(16)
    d = draw_augment(16, torch.Generator().manual_seed(1))
    sub = m[:16]
    xb, yb, (y2, own) = make_batch(x_all, y_all, idx, d, torch.device("cpu"), None, sub)
    mask = cutmix_mask(sub, 32, 32)[:, None].expand(-1, 3, -1, -1)
    mine = preprocess_tensor(apply_augment(x_all[idx], d))
    theirs = preprocess_tensor(apply_augment(x_all[sub.partner], sub.partner_aug))
    assert torch.equal(xb[mask], theirs[mask]) and torch.equal(xb[~mask], mine[~mask])
    assert torch.equal(yb, y_all[idx]) and torch.equal(y2, y_all[sub.partner])
    assert torch.allclose(own, 1.0 - mask[:, 0].flatten(1).float().mean(1))
    assert bool((own[~sub.use] == 1.0).all()) and bool((own[sub.use] < 1.0).any())


def test_cutmix_loss_splits_each_image_between_its_two_labels():
    from nin_edge.train import train_step

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    x = torch.randn(6, 3, 2, 2)
    y, y2 = torch.tensor([0, 1, 2, 0, 1, 2]), torch.tensor([1, 1, 0, 2, 0, 0])
    own = torch.tensor([1.0, 0.25, 0.5, 1.0, 0.0, 0.9])
    logits = model(x).detach()
    want = (own * F.cross_entropy(logits, y, reduction="none", label_smoothing=0.1)
            + (1 - own) * F.cross_entropy(logits, y2, reduction="none", label_smoothing=0.1)).mean()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    got = train_step(model, opt, x, y, None, 0.1, mixed=(y2, own))
    assert torch.allclose(got, want) and not torch.allclose(got, F.cross_entropy(logits, y, label_smoothing=0.1))
    # every image wholly its own: the plain loss
    same = train_step(model, opt, x, y, None, 0.1, mixed=(y2, torch.ones(6)))
    assert torch.allclose(same, F.cross_entropy(logits, y, label_smoothing=0.1))


def test_cutmix_draws_are_sliced_per_rank_like_crops_and_flips():
    from nin_edge.train import draw_cutmix, make_batch

    x_all = torch.randint(0, 255, (64, 32, 32, 3), dtype=torch.uint8)
    y_all = torch.arange(64) % 3
    idx = torch.randperm(64, generator=torch.Generator().manual_seed(0))[:16]
    d = draw_augment(16, torch.Generator().manual_seed(1))
    m = draw_cutmix(16, torch.Generator().manual_seed(2), 64, 32, 32, 1.0)
    full, yf, (y2f, ownf) = make_batch(x_all, y_all, idx, d, torch.device("cpu"), None, m)
    for world in (2, 4):
        for rank in range(world):
            mine = slice(rank, None, world)
            xb, yb, (y2, own) = make_batch(x_all, y_all, idx[mine], d[mine], torch.device("cpu"), None, m[mine])
            assert torch.equal(xb, full[mine]) and torch.equal(yb, yf[mine])
            assert torch.equal(y2, y2f[mine]) and torch.equal(own, ownf[mine])


# --------------------------------------------------------------------------- distillation
def test_distillation_loss_is_alpha_kl_at_temperature_plus_the_label_loss():
    from nin_edge.train import Teacher, train_step

    torch.manual_seed(0)
    student = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    teachers = [torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3)) for _ in range(2)]
    x, y = torch.randn(6, 3, 2, 2), torch.tensor([0, 1, 2, 0, 1, 2])
    alpha, t = 0.7, 3.0
    s = student(x).detach()
    with torch.no_grad():
        p = torch.stack([F.softmax(m(x) / t, 1) for m in teachers]).mean(0)  # the ensemble's softened target
    kl = (p * (p.log() - F.log_softmax(s / t, 1))).sum(1).mean() * t * t
    want = alpha * kl + (1 - alpha) * F.cross_entropy(s, y, label_smoothing=0.1)
    opt = torch.optim.SGD(student.parameters(), lr=0.0)
    got = train_step(student, opt, x, y, None, 0.1, teacher=Teacher(teachers, alpha, t))
    assert torch.allclose(got, want, atol=1e-6) and not torch.allclose(got, F.cross_entropy(s, y, label_smoothing=0.1))
    # a student that already matches its teacher has nothing to learn from it: only the label share is left
    clone = Teacher([copy.deepcopy(student)], 0.5, t)
    assert torch.allclose(train_step(student, opt, x, y, None, 0.1, teacher=clone),
                          0.5 * F.cross_entropy(s, y, label_smoothing=0.1), atol=1e-6)
    assert all(not q.requires_grad for m in teachers for q in m.parameters())  # frozen


def test_flip_teacher_averages_each_teacher_over_the_batch_and_its_mirror():
    from nin_edge.train import Teacher

    torch.manual_seed(0)
    teachers = [torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3)) for _ in range(2)]
    x, t = torch.randn(6, 3, 2, 2), 2.0
    with torch.no_grad():
        want = torch.stack([F.softmax(m(v) / t, 1) for m in teachers for v in (x, x.flip(3))]).mean(0)
    flip = Teacher(teachers, 0.9, t, flip=True)
    assert torch.allclose(flip.targets(x, None), want, atol=1e-6)
    # the target no longer depends on which way the image faces; the plain teacher's does
    assert torch.allclose(flip.targets(x.flip(3), None), flip.targets(x, None), atol=1e-6)
    plain = Teacher(teachers, 0.9, t)
    assert not torch.allclose(plain.targets(x.flip(3), None), plain.targets(x, None), atol=1e-3)


def test_teacher_runs_folded_and_in_bf16_with_the_targets_of_the_plain_teachers():
    """The teachers run with BatchNorm folded (and bf16 weights under bf16): the targets must stay those of
    the checkpoints as trained — fp32 to rounding, bf16 to what autocast itself gives."""
    from nin_edge.checkpoint import load_model
    from nin_edge.train import Teacher

    torch.manual_seed(0)
    shipped, _ = load_model()  # real BatchNorm statistics
    other = copy.deepcopy(shipped)
    for m in other.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.add_(0.1)
    x = torch.randn(16, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    t = 4.0
    teacher = Teacher([shipped, other], 0.9, t, flip=True)
    with torch.no_grad():
        views = (x, x.flip(3))
        want = torch.stack([F.softmax(m(v) / t, 1) for m in (shipped, other) for v in views]).mean(0)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = [m(v).float() for m in (shipped, other) for v in views]
        want_bf16 = torch.stack([F.softmax(z / t, 1) for z in logits]).mean(0)
    assert torch.allclose(teacher.targets(x, None), want, atol=1e-5)
    got_bf16 = teacher.targets(x, torch.bfloat16)
    assert got_bf16.dtype == torch.float32 and torch.allclose(got_bf16.sum(1), torch.ones(16), atol=1e-5)
    autocast_err = float((want_bf16 - want).abs().max())  # what bf16 costs the old way
    assert 0 < float((got_bf16 - want).abs().max()) <= 2 * autocast_err + 1e-3
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in shipped.modules())  # the checkpoints' models untouched


def test_distillation_trains_is_recorded_and_refuses_bad_teachers(tiny, tmp_path):
    from nin_edge.data import sha256_file
    from nin_edge.modelcard import write_model_card

    a = tmp_path / "teacher"
    train(cfg(tiny, a, epochs=2))
    t = str(a / "best.pt")
    out = tmp_path / "kd"
    r = train(cfg(tiny, out, epochs=2, teachers=(t, t), kd_alpha=1.0, cutmix=0.5))
    assert r.epochs_done == 2 and all(math.isfinite(h["train_loss"]) for h in r.history)
    # pure distillation from the teacher: its loss is not the label loss of the same run without a teacher
    plain = train(cfg(tiny, tmp_path / "plain", epochs=1, cutmix=0.5))
    assert plain.history[0]["train_loss"] != r.history[0]["train_loss"]
    ck = torch.load(out / "last.pt", weights_only=True)
    assert ck["run"]["kd"] == {"teachers_sha256": [sha256_file(a / "best.pt")] * 2, "alpha": 1.0, "temperature": 4.0}
    md = write_model_card(out).markdown
    assert f"| `--teacher` | {t}, {t} |" in md and "| `--kd-alpha` | 1.0 |" in md
    # the card's distillation section carries each teacher's own record (epoch, validation top-1, command)
    tck = torch.load(t, weights_only=True)
    assert "## Distillation" in md and "the labels keep 0" in md
    assert md.count(f"| `{t}` | `{sha256_file(a / 'best.pt')[:16]}…` | `nin-seed` | {tck['epoch']} | {tck['val_top1']:.2f}% |") == 2
    with pytest.raises(NinEdgeError, match=r"kd \(.*alpha.: 1\.0.* → .*alpha.: 0\.5"):
        train(cfg(tiny, out, epochs=3, resume=True, teachers=(t, t), kd_alpha=0.5, cutmix=0.5))
    with pytest.raises(NinEdgeError, match=r"kd \(.* → None\)"):
        train(cfg(tiny, out, epochs=3, resume=True, cutmix=0.5))
    with pytest.raises(NinEdgeError, match=r"kd \(.* → .*flip.: True"):  # --kd-flip changes the targets
        train(cfg(tiny, out, epochs=3, resume=True, teachers=(t, t), kd_alpha=1.0, kd_flip=True, cutmix=0.5))
    assert "--kd-flip" not in md and "mirror" not in md
    flip = tmp_path / "kd-flip"
    train(cfg(tiny, flip, epochs=1, teachers=(t,), kd_flip=True))
    assert torch.load(flip / "last.pt", weights_only=True)["run"]["kd"]["flip"] is True
    md_flip = write_model_card(flip).markdown
    assert "| `--kd-flip` | True |" in md_flip and "on its mirror image, averaged" in md_flip
    assert f"--teacher {t} --kd-flip --val-size" in md_flip  # the rebuilt command names the switch, bare

    bad = tmp_path / "bad"
    with pytest.raises(NinEdgeError, match="no such checkpoint"):
        train(cfg(tiny, bad, teachers=(str(tmp_path / "missing.pt"),)))
    with pytest.raises(NinEdgeError, match="validation split"):  # it trained on this run's validation images
        train(cfg(tiny, bad, seed=1, teachers=(t,)))
    with pytest.raises(NinEdgeError, match="none was given"):
        train(cfg(tiny, bad, kd_temperature=2.0))
    with pytest.raises(NinEdgeError, match="none was given"):
        train(cfg(tiny, bad, kd_flip=True))
    with pytest.raises(NinEdgeError, match="--kd-alpha 1.5"):
        train(cfg(tiny, bad, teachers=(t,), kd_alpha=1.5))
    from nin_edge.checkpoint import make_checkpoint
    from nin_edge.models import create_model

    big = tmp_path / "imagenet-teacher.pt"  # a zoo NIN for 224×224 images cannot see a 32×32 batch
    torch.save(make_checkpoint(create_model("nin-imagenet", num_classes=3), "nin-imagenet", CLASSES), big)
    with pytest.raises(NinEdgeError, match="takes 224×224 images"):
        train(cfg(tiny, bad, teachers=(str(big),)))
    other = make_image_folder(tmp_path / "other", classes=("x", "y", "z"), n_train=12, n_test=3)
    with pytest.raises(NinEdgeError, match="classes"):
        train(cfg(other, bad, teachers=(t,)))
    assert not bad.exists() or not any(bad.iterdir())  # nothing written by a refused run


def test_hold_out_keeps_a_source_s_images_out_of_a_refit(tiny, tmp_path):
    # the refit on every train image (--val-size 0) of the shipped weights must not train on bundled:val, the
    # held-out set INT8 choices are measured on: --hold-out drops that source's images, matched by pixels
    from nin_edge.modelcard import write_model_card

    hold = tmp_path / "hold"
    for c in CLASSES:
        (hold / "train" / c).mkdir(parents=True)
        for i in range(5):  # renamed copies: the match is on pixels, not file names
            shutil.copy(tiny / "train" / c / f"{i:03d}.png", hold / "train" / c / f"held{i}.png")
    out = tmp_path / "refit"
    r = train(cfg(tiny, out, val_size=0, hold_out=str(hold)))
    ck = load_checkpoint(out / "best.pt")
    assert r.best_val is None and ck["run"]["hold_out"]["removed"] == 15
    assert ck["run"]["hold_out"]["source"] == str(hold)
    # what the run trains on: the 120 train images less exactly the 15 held out
    from nin_edge.data import load_dataset
    from nin_edge.train import hold_out_images

    full = load_dataset(tiny, "train")
    kept, rec = hold_out_images(full, str(hold), 32)
    held_ids = {f"train/{c}/{i:03d}.png" for c in CLASSES for i in range(5)}
    assert len(kept) == 105 and rec == ck["run"]["hold_out"]
    assert not held_ids & {i.replace("\\", "/")[-len("train/ant/000.png"):] for i in kept.ids}
    assert len({i[-len("train/ant/000.png"):] for i in full.ids} & held_ids) == 15  # the ids are comparable
    md = write_model_card(out).markdown
    assert f"every train image but the 15 of `--hold-out {hold}`" in md and f"| `--hold-out` | {hold} |" in md
    # the hold-out is part of the run: resuming without it is another run
    with pytest.raises(NinEdgeError, match="hold_out"):
        train(cfg(tiny, out, epochs=2, val_size=0, resume=True))
    # a source sharing no image with the training data is a mistake, not a no-op
    other = make_image_folder(tmp_path / "other", seed=7)
    with pytest.raises(NinEdgeError, match="--hold-out .*none of its 120 images is among the images this run trains on"):
        train(cfg(tiny, tmp_path / "x", val_size=0, hold_out=str(other)))


# --------------------------------------------------------------------------- --precision auto
def test_precision_auto_uses_bf16_only_where_the_hardware_has_it(tiny, tmp_path):
    from nin_edge.train import resolve_precision

    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu, cpu_isa={"avx512_bf16": True})[0] == "bf16"
    assert resolve_precision("auto", cpu, cpu_isa={"amx_tile": True})[0] == "bf16"
    p, why = resolve_precision("auto", cpu, cpu_isa={"avx2": True, "avx512_bf16": False})
    assert p == "fp32" and "no bf16" in why
    # an explicit choice is never changed, whatever the CPU
    assert resolve_precision("bf16", cpu, cpu_isa={"avx2": True}) == ("bf16", "as asked")
    assert resolve_precision("fp32", cpu, cpu_isa={"avx512_bf16": True}) == ("fp32", "as asked")
    # a resumed auto run keeps what it was trained with, even where auto would now pick the other
    out = tmp_path / "run"
    train(cfg(tiny, out, precision="bf16"))
    p, why = resolve_precision("auto", cpu, out / "last.pt", cpu_isa={"avx2": True})
    assert p == "bf16" and "last.pt" in why
    with pytest.raises(NinEdgeError, match="--precision int4: choose auto, fp32, bf16"):
        train(cfg(tiny, tmp_path / "bad", precision="int4"))


def test_weight_average_is_polyak_over_parameters_and_bn_statistics():
    from nin_edge.train import WeightAverage

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    avg = WeightAverage(net, 0.9)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        net[0].weight.add_(1.0)
    net.train()(torch.randn(2, 3, 8, 8))  # moves the running statistics and num_batches_tracked
    avg.update(net)
    got, now = avg.model.state_dict(), net.state_dict()
    for k, v in got.items():
        if v.is_floating_point():
            torch.testing.assert_close(v, 0.9 * before[k] + 0.1 * now[k], rtol=1e-6, atol=1e-6)
        else:
            assert torch.equal(v, now[k]), k
    assert not any(p.requires_grad for p in avg.model.parameters())


def test_ema_saves_the_average_leaves_training_unchanged_and_resumes_bit_for_bit(tiny, tmp_path):
    from nin_edge.checkpoint import load_model
    from nin_edge.modelcard import write_model_card

    plain, a, b = tmp_path / "plain", tmp_path / "a", tmp_path / "b"
    train(cfg(tiny, plain, arch="nin-bn", epochs=2))
    r = train(cfg(tiny, a, arch="nin-bn", epochs=2, ema=0.9))
    ca, cp = torch.load(a / "last.pt", weights_only=True), torch.load(plain / "last.pt", weights_only=True)
    assert ca["run"]["ema"] == 0.9 and cp["run"]["ema"] is None
    # the average only watches: the optimisation is the plain run's, bit for bit
    for k, v in cp["state_dict"].items():
        assert torch.equal(ca["train_state_dict"][k], v), k
    # what is saved (and loaded by every command) is the average, not the raw weights
    w = "features.0.weight" if "features.0.weight" in ca["state_dict"] else next(iter(ca["state_dict"]))
    assert not torch.equal(ca["state_dict"][w], ca["train_state_dict"][w])
    model, _ = load_model(a / "last.pt")
    assert torch.equal(model.state_dict()[w], ca["state_dict"][w])
    assert torch.equal(r.model.state_dict()[w].cpu(), ca["state_dict"][w])
    assert "| `--ema` | 0.9 |" in write_model_card(a).markdown
    # resume: both the raw weights and the average continue exactly
    r1 = train(cfg(tiny, b, arch="nin-bn", epochs=2, ema=0.9, max_minutes=0))
    assert r1.stopped_early and r1.epochs_done == 1
    with pytest.raises(NinEdgeError, match=r"changed run options: ema \(0\.9 → None\)"):
        train(cfg(tiny, b, arch="nin-bn", epochs=2, resume=True))
    train(cfg(tiny, b, arch="nin-bn", epochs=2, ema=0.9, resume=True))
    cb = torch.load(b / "last.pt", weights_only=True)
    for key in ("state_dict", "train_state_dict"):
        for k, v in ca[key].items():
            assert torch.equal(cb[key][k], v), (key, k)
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(NinEdgeError, match=rf"--ema {bad}: the decay must be between 0 and 1"):
            train(cfg(tiny, tmp_path / "bad", ema=bad))
