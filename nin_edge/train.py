"""Training, readable top to bottom (in the spirit of nanoGPT / airbench).

data (uint8, whole split in memory) → batch-level augmentation on tensors (crop with reflect padding, flip)
→ THE normalisation (preprocess_tensor) → NIN in channels_last with bf16 autocast → SGD+Nesterov, one-cycle
→ each epoch: validation (held out of train: it chooses best.pt) and test (reported, never used to choose)
→ atomic last.pt / best.pt, metrics.jsonl, curves.png.

Measured on the 2-core dev machine (bare step, batch 256, nin-seed): fp32 522 img/s, channels_last 704,
bf16 autocast 1,126, both 1,329 — so both are on by default for CPU training.
Distributed: under `torchrun`, each rank trains on its shard with DDP (gloo on CPU, nccl on CUDA); rank 0 writes.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import atomic_torch_save, load_checkpoint, make_checkpoint
from .data import Dataset, load_dataset, sha256_file
from .errors import NinEdgeError
from .models import create_model, model_info
from .preprocess import preprocess_tensor


@dataclass(frozen=True)
class TrainConfig:
    arch: str = "nin-cifar"
    data: str = "cifar-10-python.tar.gz"
    out: str = "runs/train"
    epochs: int = 30
    batch_size: int = 256
    lr: float = 0.2  # peak of the one-cycle schedule, for batch_size 256 (scaled linearly)
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    val_size: int = 5000  # held out of train; chooses best.pt. 0 = no validation (best = last)
    seed: int = 0
    max_minutes: float | None = None
    device: str = "cpu"
    precision: str = "bf16"
    warmup_frac: float = 0.15
    threads: int | None = None
    resume: bool = False
    force: bool = False
    eval_test: bool = True
    progress: bool = True

    # options that define a run: --resume refuses a change in any of them
    RUN_DEFINING = ("arch", "data_sha256", "epochs", "batch_size", "lr", "weight_decay", "label_smoothing",
                    "val_size", "seed", "precision", "warmup_frac")


@dataclass
class TrainResult:
    out: Path
    epochs_done: int
    best_val: float | None
    test_at_best: float | None
    last_test: float | None
    minutes: float
    stopped_early: bool = False
    history: list = field(default_factory=list)


# --------------------------------------------------------------------------- distributed helpers
def _dist_env() -> tuple[int, int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def _init_dist(device: str) -> tuple[int, int, torch.device]:
    rank, world, local = _dist_env()
    if device == "cuda":
        if not torch.cuda.is_available():
            raise NinEdgeError("--device cuda: no CUDA device is available here (torch sees none)")
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    elif device == "cpu":
        dev = torch.device("cpu")
    else:
        raise NinEdgeError(f"--device {device}: choose cpu or cuda")
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device == "cuda" else "gloo")
    return rank, world, dev


# --------------------------------------------------------------------------- augmentation (whole batches)
def augment(x: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """uint8 NHWC batch → randomly cropped (reflect padding) and horizontally flipped, in one gather."""
    n, h, w, _ = x.shape
    xp = F.pad(x.permute(0, 3, 1, 2).float(), (pad, pad, pad, pad), mode="reflect").to(torch.uint8)
    xp = xp.permute(0, 2, 3, 1)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    flip = torch.rand(n, generator=gen) < 0.5
    rows = dy[:, None] + torch.arange(h)
    cols = dx[:, None] + torch.arange(w)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    return xp[torch.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def split_train_val(ds: Dataset, val_size: int, seed: int) -> tuple[Dataset, Dataset | None]:
    """Stratified hold-out of `val_size` train images (fixed by seed) for choosing checkpoints."""
    if val_size <= 0:
        return ds, None
    if val_size >= len(ds):
        raise NinEdgeError(f"--val-size {val_size}: must be smaller than the {len(ds)} training images")
    rng = np.random.default_rng(seed + 12345)
    per_class = val_size // len(ds.classes)
    val_idx = []
    for c in range(len(ds.classes)):
        idx = np.flatnonzero(ds.labels == c)
        val_idx.extend(rng.choice(idx, size=min(per_class, len(idx)), replace=False))
    val_mask = np.zeros(len(ds), bool)
    val_mask[val_idx] = True
    return ds.subset(np.flatnonzero(~val_mask)), ds.subset(np.flatnonzero(val_mask))


@torch.no_grad()
def evaluate(model: nn.Module, ds: Dataset, device: torch.device, batch: int = 500,
             autocast_dtype: torch.dtype | None = None) -> tuple[float, np.ndarray]:
    """top-1 (%) and the predictions, through THE preprocessing."""
    model.eval()
    preds = []
    for i in range(0, len(ds), batch):
        xb = preprocess_tensor(torch.from_numpy(ds.images[i:i + batch])).to(device).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            preds.append(model(xb).argmax(1).cpu())
    p = torch.cat(preds).numpy()
    return float((p == ds.labels).mean() * 100.0), p


def _lr_at(step: int, total: int, peak: float, warmup_frac: float) -> float:
    """One-cycle: linear warm-up to `peak`, then cosine down to 0."""
    warm = max(1, int(total * warmup_frac))
    if step < warm:
        return peak * (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    return peak * 0.5 * (1 + math.cos(math.pi * t))


def _plot_curves(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(ep, [h["train_loss"] for h in history], label="train loss")
    a.set_xlabel("epoch"), a.set_ylabel("loss"), a.legend()
    for key, lab in (("val_top1", "validation (held out of train)"), ("test_top1", "test")):
        if any(h.get(key) is not None for h in history):
            b.plot(ep, [h.get(key) for h in history], label=lab)
    b.set_xlabel("epoch"), b.set_ylabel("top-1 %"), b.legend(), b.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- the loop
def train(cfg: TrainConfig) -> TrainResult:
    if cfg.epochs < 1 or cfg.batch_size < 1 or cfg.lr <= 0:
        raise NinEdgeError("--epochs, --batch-size and --lr must be positive")
    if cfg.precision not in ("fp32", "bf16"):
        raise NinEdgeError(f"--precision {cfg.precision}: choose fp32 or bf16")
    model_info(cfg.arch)  # unknown arch → listed choices
    rank, world, dev = _init_dist(cfg.device)
    is_main = rank == 0
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)

    # ---- data: whole train split as uint8 in memory (150 MB for CIFAR-10); a held-out validation split
    data_path = Path(cfg.data)
    full = load_dataset(cfg.data, "train")
    data_sha = sha256_file(data_path) if data_path.is_file() else f"dir:{data_path.resolve()}"
    train_ds, val_ds = split_train_val(full, cfg.val_size, cfg.seed)
    test_ds = load_dataset(cfg.data, "test") if cfg.eval_test else None
    classes = full.classes
    if test_ds is not None and test_ds.classes != classes:
        raise NinEdgeError(f"{cfg.data}: test classes {list(test_ds.classes)} differ from train classes {list(classes)}")

    # ---- model, optimiser (no weight decay on BN and biases)
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.arch, num_classes=len(classes))
    for m in model.modules():  # He init: PyTorch's default left the BN-free nin-seed at chance in our runs
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    model = model.to(dev).to(memory_format=torch.channels_last)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    per_rank_batch = max(1, cfg.batch_size // world)
    peak_lr = cfg.lr * cfg.batch_size / 256
    opt = torch.optim.SGD([{"params": decay, "weight_decay": cfg.weight_decay},
                           {"params": no_decay, "weight_decay": 0.0}], lr=peak_lr, momentum=0.9, nesterov=True)
    steps_per_epoch = len(train_ds) // cfg.batch_size  # drop the ragged last batch: equal steps on every rank
    if steps_per_epoch < 1:
        raise NinEdgeError(f"--batch-size {cfg.batch_size}: larger than the {len(train_ds)} training images")
    total_steps = steps_per_epoch * cfg.epochs

    run_def = {"arch": cfg.arch, "data_sha256": data_sha, **{k: getattr(cfg, k) for k in TrainConfig.RUN_DEFINING if k not in ("arch", "data_sha256")}}

    # ---- out dir: refuse to clobber a finished run; --resume continues from last.pt
    start_epoch, history, best_val = 0, [], -1.0
    last_pt, best_pt, metrics = out / "last.pt", out / "best.pt", out / "metrics.jsonl"
    if cfg.resume:
        if not last_pt.exists():
            raise NinEdgeError(f"{last_pt}: --resume given but there is no checkpoint to resume from")
        ck = load_checkpoint(last_pt)
        if ck.get("arch") != cfg.arch:
            raise NinEdgeError(f"{last_pt}: checkpoint is for arch '{ck.get('arch')}', not '{cfg.arch}'")
        changed = [k for k, v in run_def.items() if ck.get("run", {}).get(k) != v]
        if changed:
            raise NinEdgeError(f"{last_pt}: --resume with changed run options: {', '.join(changed)}")
        model.load_state_dict(ck["state_dict"])
        opt.load_state_dict(ck["optimizer"])
        start_epoch, history = int(ck["epoch"]), list(ck.get("history", []))
        best_val = max([h["val_top1"] for h in history if h.get("val_top1") is not None] or [-1.0])
        if start_epoch >= cfg.epochs:
            raise NinEdgeError(f"{last_pt}: run already finished all {cfg.epochs} epochs")
    elif out.exists() and any(out.iterdir()) and is_main:
        if not cfg.force:
            raise NinEdgeError(f"{out}: output directory already holds a run (use --resume or --force)")
        for p in (last_pt, best_pt, metrics, out / "curves.png"):
            p.unlink(missing_ok=True)
    if is_main:
        out.mkdir(parents=True, exist_ok=True)

    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    amp = torch.bfloat16 if cfg.precision == "bf16" else None
    x_all = torch.from_numpy(train_ds.images)
    y_all = torch.from_numpy(train_ds.labels)
    t_start = time.time()
    stopped_early = False

    progress = None
    if is_main and cfg.progress:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        progress = Progress(TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(),
                            TextColumn("loss {task.fields[loss]:.3f}  {task.fields[ips]:.0f} img/s"),
                            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), transient=False)
        progress.start()
        task = progress.add_task("train", total=total_steps, completed=start_epoch * steps_per_epoch,
                                 epoch=start_epoch + 1, loss=float("nan"), ips=0.0)
    try:
        for epoch in range(start_epoch, cfg.epochs):
            # one generator per epoch, derived from the seed: resume reproduces the same next epoch
            gen = torch.Generator().manual_seed(cfg.seed * 100003 + epoch)
            perm = torch.randperm(len(train_ds), generator=gen)[: steps_per_epoch * cfg.batch_size]
            aug_gen = torch.Generator().manual_seed(cfg.seed * 100003 + epoch * 7919 + rank + 1)
            ddp.train()
            t_ep, loss_sum, seen = time.time(), torch.zeros((), device=dev), 0
            for step in range(steps_per_epoch):
                global_step = epoch * steps_per_epoch + step
                for g in opt.param_groups:
                    g["lr"] = _lr_at(global_step, total_steps, peak_lr, cfg.warmup_frac)
                idx = perm[step * cfg.batch_size:(step + 1) * cfg.batch_size][rank::world][:per_rank_batch]
                xb = preprocess_tensor(augment(x_all[idx], aug_gen)).to(dev, non_blocking=True)
                xb = xb.contiguous(memory_format=torch.channels_last)
                yb = y_all[idx].to(dev, non_blocking=True)
                with torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
                    loss = F.cross_entropy(ddp(xb), yb, label_smoothing=cfg.label_smoothing)
                if not torch.isfinite(loss):
                    raise NinEdgeError(f"non-finite loss at epoch {epoch + 1} step {step + 1} "
                                       f"(try a lower --lr); last good checkpoint kept at {last_pt}")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss_sum += loss.detach() * len(idx)
                seen += len(idx)
                if progress is not None and (step % 10 == 0 or step == steps_per_epoch - 1):
                    progress.update(task, completed=global_step + 1, epoch=epoch + 1,
                                    loss=float(loss.detach()), ips=seen * world / (time.time() - t_ep))
            train_loss = float(loss_sum) / max(1, seen)
            if world > 1:  # all ranks agree on the reported loss
                t = torch.tensor([train_loss], device=dev)
                torch.distributed.all_reduce(t)
                train_loss = float(t) / world
            ep_time = time.time() - t_ep

            if is_main:
                val_top1 = evaluate(model, val_ds, dev, autocast_dtype=amp)[0] if val_ds is not None else None
                test_top1 = evaluate(model, test_ds, dev, autocast_dtype=amp)[0] if test_ds is not None else None
                rec = {"epoch": epoch + 1, "train_loss": round(train_loss, 5), "val_top1": val_top1,
                       "test_top1": test_top1, "lr": opt.param_groups[0]["lr"], "epoch_seconds": round(ep_time, 2),
                       "images_per_s": round(steps_per_epoch * cfg.batch_size / ep_time, 1), "world_size": world}
                history.append(rec)
                score = val_top1 if val_top1 is not None else float(epoch)
                meta = dict(epoch=epoch + 1, val_top1=val_top1, test_top1=test_top1, seed=cfg.seed,
                            data_sha256=data_sha, run=run_def, history=history)
                if score > best_val:
                    best_val = score
                    atomic_torch_save(make_checkpoint(model, cfg.arch, classes, **meta), best_pt)
                ck = make_checkpoint(model, cfg.arch, classes, **meta)
                ck["optimizer"] = opt.state_dict()
                atomic_torch_save(ck, last_pt)
                with open(metrics, "a") as f:
                    f.write(json.dumps(rec) + "\n")
                _plot_curves(history, out / "curves.png")
                if progress is not None:
                    progress.console.print(
                        f"epoch {epoch + 1}/{cfg.epochs}  loss {train_loss:.4f}  "
                        + (f"val {val_top1:.2f}%  " if val_top1 is not None else "")
                        + (f"test {test_top1:.2f}%  " if test_top1 is not None else "")
                        + f"{rec['images_per_s']:.0f} img/s")
            if cfg.max_minutes is not None and (time.time() - t_start) / 60 >= cfg.max_minutes:
                stopped_early = epoch + 1 < cfg.epochs
                break
    finally:
        if progress is not None:
            progress.stop()
        if world > 1 and torch.distributed.is_initialized():
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()

    best = max(history, key=lambda h: h["val_top1"] if h.get("val_top1") is not None else h["epoch"]) if history else {}
    return TrainResult(out, len(history), best.get("val_top1"), best.get("test_top1"),
                       history[-1].get("test_top1") if history else None, (time.time() - t_start) / 60,
                       stopped_early, history)
