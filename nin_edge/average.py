"""Average the weights of several runs of one recipe (`nin-edge average`): a uniform "model soup".

Why: runs that fine-tune one initialisation with different seeds end in one basin of the loss, and the mean of
their weights there is usually at least as good as each of them (Wortsman et al., "Model soups", 2022) while
costing nothing at inference: the deployed graph, size and latency stay those of one model. Unlike an ensemble or
test-time flips, the product ships one network.

What is averaged: every floating-point tensor of the state_dicts, uniformly. Averaged weights do not have averaged
BatchNorm statistics, so those are re-estimated afterwards on the runs' own training images exactly as
`nin-edge update-bn` does (the validation split and any --hold-out images stay out).
The ingredients must share what makes the result comparable and its held-out images held out: arch, classes,
preprocessing, training data (sha256), validation split and hold-out. The command measures, in fp32 on that
validation split, each ingredient as given and the average, so the choice between them is made on validation.
Measured on three seeds of the shipped recipe (benchmarks/RESULTS.md (z)): the average of 2 and of 3 runs scored
validation 89.78 / 89.76 % against runs at 89.58, 89.80, 90.06 % — no loss barrier, but no gain either: it
lands near the runs' mean. It pays where runs are diverse but connected; the command measures which, on validation.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import NinEdgeError


@dataclass(frozen=True)
class AverageResult:
    out: Path
    ingredients: tuple[dict, ...]  # what the checkpoint records per ingredient (path, sha256, seed, val_top1, ...)
    val_top1: float | None  # the average's fp32 validation top-1 (None: the runs had no validation split)
    val_images: int
    bn_images: int  # images the BatchNorm statistics were re-estimated on (0: the arch has no BatchNorm)
    seconds: float
    record: dict  # what the checkpoint records as "average"


# what every ingredient must share, with the words an error uses for it
def _identity(ck: dict) -> dict:
    from .data import split_seed_of

    run = ck.get("run") or {}
    return {"arch": ck.get("arch"), "classes": list(ck.get("classes") or []), "preprocessing": ck.get("preprocess"),
            "training data (sha256)": ck.get("data_sha256"), "--val-size": int(run.get("val_size", 0)),
            "validation split seed": split_seed_of(run),
            "--hold-out images": (run.get("hold_out") or {}).get("images_sha256")}


def mean_state_dict(state_dicts: list[dict]) -> dict:
    """Uniform mean of every floating-point tensor (accumulated in float64); other tensors (BatchNorm's
    num_batches_tracked) are taken from the first."""
    import torch

    out = {}
    for k, v in state_dicts[0].items():
        if v.is_floating_point():
            acc = torch.zeros_like(v, dtype=torch.float64)
            for sd in state_dicts:
                acc += sd[k].to(torch.float64)
            out[k] = (acc / len(state_dicts)).to(v.dtype)
        else:
            out[k] = v.clone()
    return out


def average_checkpoints(weights: list[str | os.PathLike], data: str, out: str | os.PathLike, batch: int = 500,
                        seed: int = 0, force: bool = False, progress: bool = True,
                        command: str | None = None) -> AverageResult:
    """Write OUT: the uniform average of the WEIGHTS checkpoints, BatchNorm statistics re-estimated on the runs'
    training images (DATA, checked by sha256), with each ingredient's and the average's fp32 validation top-1."""
    import torch

    from .bnupdate import batchnorm_layers, reestimate_with_progress, run_split
    from .checkpoint import atomic_torch_save, load_checkpoint
    from .data import sha256_file, split_seed_of
    from .models import create_model
    from .train import evaluate

    t0 = time.time()
    paths, opath = [Path(w) for w in weights], Path(out)
    if len(paths) < 2:
        raise NinEdgeError(f"average needs at least 2 checkpoints, got {len(paths)}")
    if batch < 1:
        raise NinEdgeError(f"--batch {batch}: must be a positive integer")
    if opath.exists() and not force:
        raise NinEdgeError(f"{opath}: already exists (use --force to replace it)")
    cks, shas = [], []
    for p in paths:
        if not p.is_file():
            raise NinEdgeError(f"{p}: no such checkpoint")
        ck = load_checkpoint(p)
        if ck.get("format") == "state_dict" or not ck.get("run"):
            raise NinEdgeError(f"{p}: a plain state_dict has no training record; average needs nin-edge checkpoints "
                               "(it checks the runs trained on the same data and held out the same images)")
        sha = sha256_file(p)
        if sha in shas:
            raise NinEdgeError(f"{p}: the same weights as {paths[shas.index(sha)]} (given twice)")
        cks.append(ck)
        shas.append(sha)
    first = _identity(cks[0])
    for p, ck in zip(paths[1:], cks[1:]):
        for key, value in _identity(ck).items():
            if value != first[key]:
                raise NinEdgeError(f"{p}: {key} {value!r} differs from {paths[0]}'s {first[key]!r}; only runs of one "
                                   "arch on the same data and split can be averaged")

    train_ds, val_ds, data_sha = run_split(cks[0], data, paths[0])
    cpu = torch.device("cpu")

    def model_of(state_dict, where):  # the checkpoints are already read and checked alike: no second load from disk
        m = create_model(cks[0]["arch"], num_classes=len(cks[0]["classes"]))
        try:
            m.load_state_dict(state_dict, strict=True)
        except RuntimeError as e:
            raise NinEdgeError(f"{where}: weights do not fit arch '{cks[0]['arch']}' "
                               f"({str(e).splitlines()[-1].strip()[:160]})") from None
        return m.eval()

    ingredients = []
    for p, ck, sha in zip(paths, cks, shas):
        history = ck.get("history") or []
        m = model_of(ck["state_dict"], p)  # also checks the weights fit before they are averaged
        val = evaluate(m, val_ds, cpu)[0] if val_ds is not None else None
        ingredients.append({"path": str(p), "sha256": sha, "seed": ck.get("seed"), "epoch": ck.get("epoch"),
                            "epochs": len(history), "val_top1": val, "run_val_top1": ck.get("val_top1"),
                            "elapsed_s": (history[-1].get("elapsed_s") if history else None),
                            "command": ck.get("command")})

    model = model_of(mean_state_dict([ck["state_dict"] for ck in cks]), opath)
    bn_images = 0
    if batchnorm_layers(model):
        bn_images = reestimate_with_progress(model, torch.from_numpy(train_ds.images), batch, seed, progress)
    val = evaluate(model, val_ds, cpu)[0] if val_ds is not None else None

    run = cks[0]["run"]
    record = {"method": "uniform", "ingredients": ingredients, "val_top1": val, "val_precision": "fp32",
              "val_images": len(val_ds) if val_ds is not None else 0,
              "bn_update": ({"data": str(data), "data_sha256": data_sha, "images": bn_images,
                             "batch": min(batch, len(train_ds)), "seed": seed, "val_size": int(run.get("val_size", 0)),
                             "split_seed": split_seed_of(run), "hold_out": (run.get("hold_out") or {}).get("source")}
                            if bn_images else None),
              "seconds": round(time.time() - t0, 1), "command": command}
    # the first ingredient's record (run options, history, command, machine) describes how each run was trained;
    # the figures measured during it were of its own weights, so they do not stay as the average's
    new = {k: v for k, v in cks[0].items() if k not in ("state_dict", "optimizer", "train_state_dict", "bn_update")}
    new.update(state_dict={k: v.detach().clone() for k, v in model.state_dict().items()}, val_top1=val,
               test_top1=None, average=record)
    opath.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(new, opath)
    return AverageResult(opath, tuple(ingredients), val, record["val_images"], bn_images, record["seconds"], record)
