"""Re-estimate a trained checkpoint's BatchNorm statistics on the run's own training images (`nin-edge update-bn`).

Why: a run's BatchNorm running statistics are a moving average over training batches (augmented; with
--cutmix half of them mixed; with --ema, an average of statistics collected under earlier weights), while the
deployed model sees whole images through its final weights. One forward pass over the training images as they
are, with the BatchNorm layers in train mode and a cumulative average (what `torch.optim.swa_utils.update_bn`
does after SWA), gives the statistics of exactly what is deployed. No weight changes, no labels used.

The images are the run's own training images: the archive it trained on (checked by its sha256), less its
validation split and its --hold-out images, so what was held out stays held out.
Measured on the fifth shipped nin-cifar (benchmarks/RESULTS.md (p)): `bundled:val` 88.5 → 88.6 %, test 89.82 → 89.64 %
(both inside the noise; it was adopted by a rule fixed before measuring, on the held-out images).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import NinEdgeError


@dataclass(frozen=True)
class BnUpdateResult:
    out: Path
    images: int  # images the statistics were estimated on (whole batches only)
    layers: int  # BatchNorm layers re-estimated
    seconds: float
    record: dict  # what the checkpoint records as "bn_update"


def batchnorm_layers(model) -> list:
    import torch.nn as nn

    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def reestimate_batchnorm(model, images_u8, batch: int = 500, seed: int = 0, on_batch=None) -> int:
    """Replace `model`'s BatchNorm running statistics by their average over `images_u8` (uint8 NHWC tensor),
    fed through THE preprocessing in batches of `batch` in a seeded order; every other layer stays in eval
    mode (no dropout). A ragged last batch is left out (a cumulative average weighs every batch alike).
    → the number of images used."""
    import torch

    from .preprocess import preprocess_tensor

    bns = batchnorm_layers(model)
    n = len(images_u8)
    batch = min(batch, n)
    if batch < 2:  # one image per channel gives no batch variance
        raise NinEdgeError(f"re-estimating BatchNorm statistics needs at least 2 images, got {n}")
    momenta = [b.momentum for b in bns]
    model.eval()
    for b in bns:
        b.reset_running_stats()
        b.momentum = None  # None: a cumulative average over the batches seen since the reset
        b.train()
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    steps = n // batch
    try:
        with torch.no_grad():
            for i in range(steps):
                xb = images_u8[order[i * batch:(i + 1) * batch]]
                model(preprocess_tensor(xb).contiguous(memory_format=torch.channels_last))
                if on_batch is not None:
                    on_batch(i + 1, steps)
    finally:
        for b, m in zip(bns, momenta):
            b.momentum = m
        model.eval()
    return steps * batch


def reestimate_with_progress(model, images_u8, batch: int, seed: int, progress: bool) -> int:
    """`reestimate_batchnorm` with a transient rich progress bar (batches, ETA) when `progress`."""
    if not progress:
        return reestimate_batchnorm(model, images_u8, batch, seed)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("[bold]BatchNorm statistics"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("batches  ETA"), TimeRemainingColumn(), transient=True) as bar:
        task = bar.add_task("bn", total=None)
        return reestimate_batchnorm(model, images_u8, batch, seed, lambda i, n: bar.update(task, completed=i, total=n))


def training_images(ck: dict, data: str, where: Path):
    """The images the checkpoint's run trained on: `data` must be its training data (same sha256); its
    validation split and --hold-out images are removed as the run removed them. → (Dataset, data sha256)."""
    train_ds, _, sha = run_split(ck, data, where)
    return train_ds, sha


def run_split(ck: dict, data: str, where: Path):
    """`training_images`, plus the run's validation split (None without one). → (train, val, data sha256)."""
    from .data import check_classes, load_dataset, split_seed_of
    from .models import model_info
    from .train import _fit_to, data_fingerprint, hold_out_images, split_train_val

    run = ck.get("run") or {}
    if str(data).startswith("bundled:"):
        raise NinEdgeError(f"--data {data}: bundled subsets are evaluation/calibration sets; give the archive "
                           f"{where.name} was trained on")
    full = _fit_to(load_dataset(data, "train"), model_info(ck["arch"]).input_size)
    check_classes(full, ck["classes"], "checkpoint")
    sha = data_fingerprint(data, full)
    if sha != ck.get("data_sha256"):
        raise NinEdgeError(f"--data {data}: not the data {where.name} was trained on (sha256 {sha[:12]}…, the run's "
                           f"{str(ck.get('data_sha256'))[:12]}…); the statistics are re-estimated on the run's own "
                           "training images")
    train_ds, val_ds = split_train_val(full, int(run.get("val_size", 0)), split_seed_of(run))
    hold = run.get("hold_out")
    if hold:
        train_ds, rec = hold_out_images(train_ds, hold["source"], model_info(ck["arch"]).input_size)
        if rec["images_sha256"] != hold["images_sha256"]:
            raise NinEdgeError(f"{hold['source']}: its images are not the ones {where.name}'s run held out "
                               "(different pixels); re-estimating on them would use held-out images")
    return train_ds, val_ds, sha


def update_bn(weights: str | os.PathLike, data: str, out: str | os.PathLike, batch: int = 500, seed: int = 0,
              force: bool = False, progress: bool = True, command: str | None = None) -> BnUpdateResult:
    """Write OUT: WEIGHTS' checkpoint with BatchNorm statistics re-estimated on its run's training images."""
    import torch

    from .checkpoint import atomic_torch_save, load_checkpoint, load_model
    from .data import sha256_file

    t0 = time.time()
    wpath, opath = Path(weights), Path(out)
    if batch < 1:
        raise NinEdgeError(f"--batch {batch}: must be a positive integer")
    if not wpath.is_file():
        raise NinEdgeError(f"{wpath}: no such checkpoint")
    if opath.exists() and not force:
        raise NinEdgeError(f"{opath}: already exists (use --force to replace it)")
    ck = load_checkpoint(wpath)
    if ck.get("format") == "state_dict" or not ck.get("run"):
        raise NinEdgeError(f"{wpath}: a plain state_dict has no training record; update-bn needs a nin-edge "
                           "checkpoint (it re-estimates on the images that run trained on)")
    model, _ = load_model(wpath)
    layers = len(batchnorm_layers(model))
    if not layers:
        raise NinEdgeError(f"{wpath}: arch '{ck['arch']}' has no BatchNorm layers, so there is nothing to re-estimate")
    ds, data_sha = training_images(ck, data, wpath)

    used = reestimate_with_progress(model, torch.from_numpy(ds.images), batch, seed, progress)
    hold = (ck["run"].get("hold_out") or {}).get("source")
    trained = (ck.get("bn_update") or {}).get("from") or ck  # updated again: the training figures stay the run's
    record = {"data": str(data), "data_sha256": data_sha, "images": used, "batch": min(batch, len(ds)),
              "seed": seed, "val_size": int(ck["run"].get("val_size", 0)), "hold_out": hold,
              "from": {"path": str(wpath), "sha256": sha256_file(wpath), "val_top1": trained.get("val_top1"),
                       "test_top1": trained.get("test_top1")},
              "seconds": round(time.time() - t0, 1), "command": command}
    # the run's record (history, command, machine) stays; the accuracies it measured were of the old statistics
    new = {k: v for k, v in ck.items() if k not in ("state_dict", "optimizer", "train_state_dict")}
    new.update(state_dict=model.state_dict(), val_top1=None, test_top1=None, bn_update=record)
    opath.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(new, opath)
    return BnUpdateResult(opath, used, layers, record["seconds"], record)

