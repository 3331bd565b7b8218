"""Training, readable top to bottom (in the spirit of nanoGPT / airbench).

data (uint8, whole split in memory) → batch-level augmentation on tensors (crop with reflect padding, flip)
→ THE normalisation (preprocess_tensor) → NIN in channels_last, bf16 autocast where native → SGD+Nesterov, one-cycle
→ each epoch: validation (held out of train: it chooses best.pt) and test (reported, never used to choose)
→ atomic last.pt / best.pt, metrics.jsonl, curves.png.
Options: cutout, CutMix, warm start (--init-from), distillation from trained checkpoints (--teacher), an
exponential moving average of the weights (--ema: what is evaluated and saved).

Measured on the 2-core AVX-512 BF16 dev machine (bare step, batch 256, nin-seed): fp32 522 img/s, channels_last
704, bf16 autocast 1,126, both 1,329 — so both are on by default for CPU training. On an AVX2-only CPU bf16 is
emulated (nin-cifar: 10 img/s bf16 vs 78 fp32), so `--precision auto` (the default) uses bf16 only where the
hardware has it (resolve_precision).

Distributed: under `torchrun`, each rank trains on its slice of every global batch with DDP (gloo on CPU,
nccl on CUDA). Every random draw (permutation, crop offsets, flips) is made for the *global* batch from
generators seeded by (seed, epoch) and then sliced per rank, so N ranks see exactly the samples and
augmentations one process would; DDP averages the per-rank mean gradients, which equals the global-batch
mean. What still differs from one process: float summation order and, for BatchNorm models, per-rank batch
statistics (running statistics are rank 0's: DDP broadcasts rank 0's buffers at each forward). Rank 0
alone evaluates and writes; decisions that must agree (refusing an out dir, resuming, stopping at
--max-minutes, a non-finite loss) are taken once and shared with every rank.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import atomic_torch_save, load_checkpoint, load_model, make_checkpoint, run_history
from .data import Dataset, load_dataset, sha256_file, split_seed_of
from .errors import NinEdgeError
from .models import create_model, fold_batchnorm, model_info
from .preprocess import fit, preprocess_tensor
from .widen import widen_into

PRECISIONS = ("fp32", "bf16")
PRECISION_CHOICES = ("auto", *PRECISIONS)
# Distillation defaults: the usual CIFAR setting of Hinton-style KD (e.g. the RepDistiller baselines: T = 4,
# 0.9 on the teacher, 0.1 on the labels); not tuned here.
KD_ALPHA, KD_TEMPERATURE = 0.9, 4.0
DEVICES = ("cpu", "cuda")
RUN_FILES = ("last.pt", "best.pt", "metrics.jsonl", "curves.png", "MODEL_CARD.md")


@dataclass(frozen=True)
class TrainConfig:
    arch: str = "nin-cifar"
    data: str = "cifar-10-python.tar.gz"
    out: str = "runs/train"
    epochs: int = 30
    batch_size: int = 256  # global batch; each of N ranks takes batch_size / N of it
    lr: float = 0.2  # peak of the one-cycle schedule, for batch_size 256 (scaled linearly)
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    val_size: int = 5000  # held out of train; chooses best.pt. 0 = no validation (best = last)
    seed: int = 0
    split_seed: int | None = None  # seed of the validation split; None: --seed. Another --seed on the same split
    # is a second sample of a recipe whose teachers/init (trained on that split) it may still use
    max_minutes: float | None = None
    device: str = "cpu"
    precision: str = "auto"  # auto: bf16 where it is native (CUDA, AVX512_BF16/AMX CPUs), else fp32
    warmup_frac: float = 0.15
    cutout: int = 0  # side of a zeroed square per image (DeVries & Taylor 2017); 0 = off
    cutmix: float = 0.0  # share of images that get a box pasted from another image (Yun et al. 2019); 0 = off
    init_from: str | None = None  # warm start: weights from this checkpoint, fresh optimiser and schedule
    hold_out: str | None = None  # images of this source (matched by pixels) stay out of training, e.g. bundled:val
    teachers: tuple[str, ...] = ()  # knowledge distillation from the mean of these checkpoints (Hinton et al. 2015)
    kd_alpha: float | None = None  # weight of the distillation term (the labels keep 1 - alpha); None: KD_ALPHA
    kd_temperature: float | None = None  # softening temperature; None: KD_TEMPERATURE
    kd_flip: bool = False  # the teachers' target also averages their output on the mirrored batch
    ema: float | None = None  # per-step decay of a weight average that is evaluated and saved; None = off
    threads: int | None = None
    resume: bool = False
    force: bool = False
    eval_test: bool = True
    progress: bool = True
    command: str | None = None  # the command line that started the run (recorded in checkpoints)

    # options that define a run: --resume refuses a change in any of them
    RUN_DEFINING = ("arch", "data_sha256", "epochs", "batch_size", "lr", "weight_decay", "label_smoothing",
                    "val_size", "seed", "precision", "warmup_frac", "cutout", "cutmix", "init_sha256", "kd",
                    "hold_out", "ema", "split_seed")
    # run-defining options added later, with the value a checkpoint that lacks them was trained with
    RUN_DEFAULTS = {"cutout": 0, "cutmix": 0.0, "init_sha256": None, "kd": None, "hold_out": None, "ema": None,
                    "split_seed": None}

    @property
    def val_split_seed(self) -> int:
        """The seed that picks the validation split (as data.split_seed_of does for a checkpoint's record)."""
        return self.seed if self.split_seed is None else self.split_seed


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
    model: nn.Module | None = field(default=None, repr=False)  # the trained module (last epoch's weights;
    # with --ema their average, as saved)
    is_main: bool = True  # rank 0 (the rank that evaluated and wrote); other ranks' history is not filled in
    resumed_from: int = 0  # epochs already done when this invocation started (--resume); `minutes` covers the rest


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
        raise NinEdgeError(f"--device {device}: choose {' or '.join(DEVICES)}")
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device == "cuda" else "gloo")
    return rank, world, dev


def _rank0_decides(fn: Callable[[], Any], rank: int, world: int) -> Any:
    """Run `fn` on rank 0 only and hand its result (or its NinEdgeError) to every rank.

    Checks of the out dir, the resume checkpoint and the clock must agree across ranks: a rank that goes on
    while another stops waits forever in the next collective.
    """
    if world == 1:
        return fn()
    box: list = [None]
    if rank == 0:
        try:
            box = [("ok", fn())]
        except NinEdgeError as e:
            box = [("error", str(e))]
        except BaseException as e:  # let the other ranks stop too, then fail here with the real traceback
            torch.distributed.broadcast_object_list([("error", f"rank 0 failed: {type(e).__name__}: {e}")], src=0)
            raise
    torch.distributed.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if kind == "error":
        raise NinEdgeError(value)
    return value


def _any_rank(flag: bool, world: int, dev: torch.device) -> bool:
    if world == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=dev)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return bool(t.item() > 0)


# --------------------------------------------------------------------------- augmentation (whole batches)
@dataclass(frozen=True)
class AugDraw:
    """Random crop offsets (0..2*pad) and flips for a batch; sliced per rank like the sample indices."""

    dy: torch.Tensor
    dx: torch.Tensor
    flip: torch.Tensor

    def __getitem__(self, sl) -> "AugDraw":
        return AugDraw(self.dy[sl], self.dx[sl], self.flip[sl])


def draw_augment(n: int, gen: torch.Generator, pad: int = 4) -> AugDraw:
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    flip = torch.rand(n, generator=gen) < 0.5
    return AugDraw(dy, dx, flip)


def _reflect(i: torch.Tensor, size: int) -> torch.Tensor:
    """Index into a reflect-padded axis (no edge repeat, like F.pad(mode='reflect')) → index into the original."""
    i = i.abs()
    return torch.where(i >= size, 2 * (size - 1) - i, i)


def apply_augment(x: torch.Tensor, d: AugDraw, pad: int = 4) -> torch.Tensor:
    """uint8 NHWC batch → crops of the reflect-padded images, flipped where drawn — one uint8 gather.

    The padding is folded into the gather indices, so no padded (or float) copy of the batch is made.
    """
    n, h, w, _ = x.shape
    rows = _reflect(d.dy[:, None] + torch.arange(h) - pad, h)
    cols = d.dx[:, None] + torch.arange(w)
    cols = _reflect(torch.where(d.flip[:, None], cols.flip(1), cols) - pad, w)
    return x[torch.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def augment(x: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """uint8 NHWC batch → randomly cropped (reflect padding) and horizontally flipped."""
    return apply_augment(x, draw_augment(len(x), gen, pad), pad)


def draw_cutout(n: int, gen: torch.Generator, h: int, w: int) -> torch.Tensor:
    """Cutout centres (n, 2): uniform over the image, so a square may hang over the edge (as in the paper)."""
    return torch.stack([torch.randint(0, h, (n,), generator=gen), torch.randint(0, w, (n,), generator=gen)], 1)


def apply_cutout(x: torch.Tensor, centres: torch.Tensor, size: int) -> torch.Tensor:
    """Zero a size×size square around each centre of a normalised NCHW batch: zero is the dataset mean after
    THE preprocessing, so the patch carries no signal. One broadcast mask for the whole batch."""
    h, w = x.shape[-2:]
    lo = size // 2
    r = torch.arange(h)[None, :] - (centres[:, :1] - lo)  # (n, h): row offset inside the square
    c = torch.arange(w)[None, :] - (centres[:, 1:] - lo)
    inside = ((r >= 0) & (r < size))[:, :, None] & ((c >= 0) & (c < size))[:, None, :]
    return x.masked_fill(inside[:, None], 0.0)


@dataclass(frozen=True)
class MixDraw:
    """CutMix draws for a batch: which images get a box, the partner image (any training image, with its own
    crop/flip) and the box [y0, y1) × [x0, x1). Sliced per rank like the sample indices."""

    use: torch.Tensor
    partner: torch.Tensor
    partner_aug: AugDraw
    box: torch.Tensor  # (n, 4): y0, y1, x0, x1

    def __getitem__(self, sl) -> "MixDraw":
        return MixDraw(self.use[sl], self.partner[sl], self.partner_aug[sl], self.box[sl])


def draw_cutmix(n: int, gen: torch.Generator, n_train: int, h: int, w: int, prob: float) -> MixDraw:
    """Per image: with probability `prob`, a box of area share 1 − λ, λ ~ Beta(1, 1) = U(0, 1) as in the paper,
    centred uniformly and clipped at the edges (so the pasted share is measured from the box, not from λ).
    The partner is drawn from the whole training set, not from the batch: a rank's slice then needs no
    other rank's images, and DDP mixes exactly what one process would."""
    use = torch.rand(n, generator=gen) < prob
    partner = torch.randint(0, n_train, (n,), generator=gen)
    partner_aug = draw_augment(n, gen)
    side = torch.sqrt(1.0 - torch.rand(n, generator=gen))  # box side as a share of the image side
    cy, cx = torch.randint(0, h, (n,), generator=gen), torch.randint(0, w, (n,), generator=gen)
    hh, hw = (side * h).long() // 2, (side * w).long() // 2
    box = torch.stack([(cy - hh).clamp(0, h), (cy + hh).clamp(0, h), (cx - hw).clamp(0, w), (cx + hw).clamp(0, w)], 1)
    return MixDraw(use, partner, partner_aug, box)


def cutmix_mask(m: MixDraw, h: int, w: int) -> torch.Tensor:
    """(n, h, w) bool: the pixels that come from the partner (all False where `use` is False)."""
    r, c = torch.arange(h)[None, :], torch.arange(w)[None, :]
    rows = (r >= m.box[:, :1]) & (r < m.box[:, 1:2])
    cols = (c >= m.box[:, 2:3]) & (c < m.box[:, 3:4])
    return rows[:, :, None] & cols[:, None, :] & m.use[:, None, None]


# --------------------------------------------------------------------------- distillation
class Teacher:
    """Knowledge distillation (Hinton et al. 2015) from one or more trained checkpoints (any zoo arch).

    The teachers see the very batch the student sees — same crops, flips, cutout squares and CutMix boxes —
    so the target is right for the image as augmented (the "consistent teaching" of Beyer et al. 2022); the
    target is the mean of the teachers' temperature-softened probabilities (ensembles of two or three of our
    runs reached 90.08–90.12% on validation against 89.34% for the best one alone; benchmarks/RESULTS.md (g)).
    Frozen, eval mode: their BatchNorm statistics do not move.
    `flip`: each teacher also sees the batch mirrored left-right and the target averages both views — a
    test-time-augmented teacher (the shipped weights: 88.5 → 89.0% on bundled:val) for one more teacher
    forward pass per step. A 5-epoch fine-tune from it did not beat its teacher on bundled:val (88.3%;
    benchmarks/RESULTS.md (o)): the student did not take up the mirror gain.
    """

    def __init__(self, models: list[nn.Module], alpha: float, temperature: float, flip: bool = False):
        self.models, self.alpha, self.temperature, self.flip = models, alpha, temperature, flip
        for m in models:
            m.eval().requires_grad_(False)
        self._inference: dict[torch.dtype | None, list[nn.Module]] = {}

    def _for(self, amp: torch.dtype | None) -> list[nn.Module]:
        """The teachers as they run: BatchNorm folded into the convs and, under bf16 autocast, the weights
        stored in bf16 once rather than cast on every call. Frozen teachers make that exact up to rounding
        (fp32 targets within 1e-5 of the unfolded ones; in bf16 they move by what autocast itself moves them,
        ~1e-3). Measured on the idle AVX-512 BF16 dev machine, batch 256, the two nin-cifar teachers of
        benchmarks/RESULTS.md (x) with flip, interleaved: targets 1.09× faster, the whole step 1.08×
        (benchmarks/kd_step.py)."""
        if amp not in self._inference:
            self._inference[amp] = [fold_batchnorm(m).to(dtype=amp or torch.float32,
                                                          memory_format=torch.channels_last)
                                    for m in self.models]
        return self._inference[amp]

    @torch.no_grad()
    def targets(self, xb: torch.Tensor, amp: torch.dtype | None) -> torch.Tensor:
        x = xb if amp is None else xb.to(amp)
        views = (x, x.flip(3)) if self.flip else (x,)
        logits = [m(v).float() for m in self._for(amp) for v in views]
        return torch.stack([F.softmax(z / self.temperature, 1) for z in logits]).mean(0)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """KL(targets ‖ student) at the temperature, × T² so its gradient keeps the scale of a plain CE."""
        t = self.temperature
        return F.kl_div(F.log_softmax(logits.float() / t, 1), targets, reduction="batchmean") * (t * t)


def make_batch(x_all: torch.Tensor, y_all: torch.Tensor, idx: torch.Tensor, draw: AugDraw,
               dev: torch.device, cutout: tuple[torch.Tensor, int] | None = None, mix: MixDraw | None = None,
               ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
    """Indices into the uint8 train set → augmented, normalised float32 NCHW (channels_last), labels, and for
    CutMix (partner labels, share of each image that is its own) — None without CutMix."""
    xb = preprocess_tensor(apply_augment(x_all[idx], draw))
    yb, mixed = y_all[idx], None
    if mix is not None:  # paste before cutout: a cutout square may then hide part of either image
        xp = preprocess_tensor(apply_augment(x_all[mix.partner], mix.partner_aug))
        mask = cutmix_mask(mix, *xb.shape[-2:])
        xb = torch.where(mask[:, None], xp, xb)
        own = 1.0 - mask.flatten(1).float().mean(1)
        mixed = (y_all[mix.partner].to(dev, non_blocking=True), own.to(dev, non_blocking=True))
    if cutout is not None:
        xb = apply_cutout(xb, *cutout)
    xb = xb.to(dev, non_blocking=True)
    return xb.contiguous(memory_format=torch.channels_last), yb.to(dev, non_blocking=True), mixed


def train_step(model: nn.Module, opt: torch.optim.Optimizer, xb: torch.Tensor, yb: torch.Tensor,
               amp: torch.dtype | None, label_smoothing: float,
               loss_ok: Callable[[torch.Tensor], bool] = lambda loss: bool(torch.isfinite(loss)),
               mixed: tuple[torch.Tensor, torch.Tensor] | None = None, teacher: Teacher | None = None,
               ) -> torch.Tensor:
    """One SGD step; returns the (detached) loss. A non-finite loss stops before it can touch the weights.
    `mixed` = (partner labels, own share): each image's loss is split between its two labels by pixel share.
    `teacher`: the loss is alpha × distillation + (1 − alpha) × that label loss."""
    soft = teacher.targets(xb, amp) if teacher is not None else None
    with torch.autocast(xb.device.type, dtype=amp, enabled=amp is not None):
        logits = model(xb)
        if mixed is None:
            loss = F.cross_entropy(logits, yb, label_smoothing=label_smoothing)
        else:
            y2, own = mixed
            ce = lambda y: F.cross_entropy(logits, y, reduction="none", label_smoothing=label_smoothing)  # noqa: E731
            loss = (own * ce(yb) + (1.0 - own) * ce(y2)).mean()
        if soft is not None:
            loss = teacher.alpha * teacher.loss(logits, soft) + (1.0 - teacher.alpha) * loss
    if not loss_ok(loss.detach()):
        raise FloatingPointError(float(loss.detach()))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


class WeightAverage:
    """--ema: an exponential moving average of the weights, updated after every optimiser step
    (Polyak averaging; timm's ModelEmaV2 does the same): avg ← decay·avg + (1 − decay)·w for parameters and
    BatchNorm running statistics alike, so the average carries statistics that match its own weights closely
    enough to be evaluated as is. The average is what the run evaluates and saves as `state_dict`; last.pt also
    keeps the raw weights (`train_state_dict`) so --resume continues the very same optimisation.
    With decay d the average spans ~1/(1 − d) steps (0.998: ~500 steps, 2.6 epochs of CIFAR-10 at batch 256).
    """

    def __init__(self, model: nn.Module, decay: float):
        import copy

        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        avg = self.model.state_dict()
        for k, w in model.state_dict().items():
            if w.is_floating_point():
                avg[k].lerp_(w, 1.0 - self.decay)
            else:  # BatchNorm's num_batches_tracked: a count, not a quantity to average
                avg[k].copy_(w)


# --------------------------------------------------------------------------- data
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


def _fit_to(ds: Dataset, size: int) -> Dataset:
    """Images not at the model's input size go through THE resize policy once, before training."""
    if ds.images.shape[1:3] == (size, size):
        return ds
    images = np.stack([fit(im, size) for im in ds.images])
    return Dataset(images, ds.labels, ds.classes, ds.source, ds.ids)


def data_fingerprint(source: str, ds: Dataset) -> str:
    """sha256 of an archive file; for folders and bundled subsets, of the decoded pixels, labels and classes."""
    p = Path(source).expanduser()
    if p.is_file():
        return sha256_file(p)
    import hashlib

    h = hashlib.sha256()
    h.update(np.ascontiguousarray(ds.images).tobytes())
    h.update(np.ascontiguousarray(ds.labels).tobytes())
    h.update("\n".join(ds.classes).encode())
    return "content:" + h.hexdigest()


def hold_out_images(train_ds: Dataset, source: str, size: int) -> tuple[Dataset, dict]:
    """--hold-out: drop from `train_ds` every image whose pixels (at the model's input size) equal one of
    `source`'s — a bundled subset, or the train split of another source. Why: the package's `bundled:val`
    images are the held-out set `export --max-drop` and `diagnose` measure INT8 choices on; a refit on every
    train image (--val-size 0) must not train on them. → (the rest, what the run records)."""
    from .calibration import pixel_sha256

    held = _fit_to(load_dataset(source, "train"), size)
    hashes = {pixel_sha256(im) for im in held.images}
    drop = np.array([pixel_sha256(im) in hashes for im in train_ds.images], bool)
    if not drop.any():
        raise NinEdgeError(f"--hold-out {source}: none of its {len(held)} images is among the images this run "
                           "trains on, so holding it out changes nothing (already in the validation split, or "
                           "another data set?)")
    digest = hashlib.sha256("".join(sorted(hashes)).encode()).hexdigest()
    return train_ds.subset(np.flatnonzero(~drop)), {"source": source, "images_sha256": digest,
                                                    "removed": int(drop.sum())}


# --------------------------------------------------------------------------- evaluation, schedule, plots
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
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def _write_metrics(history: list[dict], path: Path) -> None:
    """metrics.jsonl rewritten from the checkpoint's history (atomically), so it always matches last.pt."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(h) + "\n" for h in history))
    os.replace(tmp, path)


def _machine(dev: torch.device, world: int) -> dict:
    from .envinfo import cpu_info

    cpu = cpu_info()
    m = {"cpu": cpu["model"], "cpu_threads": int(cpu["threads"] or 0), "torch_threads": torch.get_num_threads(),
         "avx512_bf16": bool(cpu["isa"].get("avx512_bf16")), "device": dev.type, "world_size": world,
         "torch": str(torch.__version__)}
    if dev.type == "cuda":
        m["gpu"] = torch.cuda.get_device_name(dev)
    return m


# --------------------------------------------------------------------------- the out dir and --resume
def resolve_precision(asked: str, dev: torch.device, resume_from: Path | None = None,
                      cpu_isa: dict | None = None) -> tuple[str, str]:
    """`--precision auto` → (fp32|bf16, why). bf16 autocast only where the hardware computes in bf16: measured
    on a 2-core AVX-512 BF16 EPYC, a nin-seed step ran 1,126 img/s bf16 vs 522 fp32; on a 2-core AVX2-only EPYC a
    nin-cifar step ran 10 img/s bf16 (emulated) vs 78 fp32. A resumed run keeps the precision it started with."""
    if asked != "auto":
        return asked, "as asked"
    if resume_from is not None and resume_from.exists():
        was = (load_checkpoint(resume_from).get("run") or {}).get("precision")
        if was in PRECISIONS:
            return was, f"auto: the precision {resume_from} was trained with"
    if dev.type == "cuda":
        ok = torch.cuda.is_bf16_supported()
        return ("bf16", "auto: this GPU computes in bf16") if ok else ("fp32", "auto: this GPU has no bf16")
    if cpu_isa is None:
        from .envinfo import cpu_info

        cpu_isa = cpu_info()["isa"]
    if cpu_isa.get("avx512_bf16") or cpu_isa.get("amx_tile"):
        return "bf16", "auto: this CPU has AVX512_BF16/AMX"
    return "fp32", "auto: this CPU has no bf16 instructions (bf16 autocast would be emulated, ~8x slower)"


def _prepare_out(cfg: TrainConfig, out: Path, run_def: dict, classes: tuple[str, ...]) -> dict | None:
    """(rank 0) Refuse to clobber a run; with --resume, return the checkpoint to continue from."""
    last_pt = out / "last.pt"
    if out.exists() and not out.is_dir():
        raise NinEdgeError(f"{out}: --out exists and is not a directory")
    if cfg.resume:
        if not last_pt.exists():
            raise NinEdgeError(f"{last_pt}: --resume given but there is no checkpoint to resume from")
        ck = load_checkpoint(last_pt)
        if "optimizer" not in ck or "epoch" not in ck:
            raise NinEdgeError(f"{last_pt}: not a resumable training checkpoint (no optimizer state/epoch)")
        if ck.get("arch") != cfg.arch:
            raise NinEdgeError(f"{last_pt}: checkpoint is for arch '{ck.get('arch')}', not --arch '{cfg.arch}'")
        if tuple(ck.get("classes", ())) != tuple(classes):
            raise NinEdgeError(f"{last_pt}: checkpoint classes {ck.get('classes')} differ from {cfg.data}'s {list(classes)}")
        ck_run = ck.get("run", {})
        was = {k: ck_run.get(k, TrainConfig.RUN_DEFAULTS.get(k)) for k in run_def}
        changed = [f"{k} ({was[k]!r} → {v!r})" for k, v in run_def.items() if was[k] != v]
        if changed:
            raise NinEdgeError(f"{last_pt}: --resume with changed run options: {', '.join(changed)}")
        if int(ck["epoch"]) >= cfg.epochs:
            raise NinEdgeError(f"{last_pt}: run already finished all {cfg.epochs} epochs")
        return ck
    present = _refuse_existing_run(cfg, out)
    for n in present:  # --force
        (out / n).unlink()
    out.mkdir(parents=True, exist_ok=True)
    return None


def _refuse_existing_run(cfg: TrainConfig, out: Path) -> list[str]:
    if out.exists() and not out.is_dir():
        raise NinEdgeError(f"{out}: --out exists and is not a directory")
    present = [n for n in RUN_FILES if (out / n).exists()]
    if present and not cfg.force and not cfg.resume:
        raise NinEdgeError(f"{out}: already holds a run ({', '.join(present)}); continue it with --resume "
                           f"or replace it with --force")
    return present


def _check_split(what: str, ck: dict, cfg: TrainConfig, data_sha: str) -> None:
    """A checkpoint trained on this same data with another split (other --seed or --val-size) has seen images
    this run validates on: warm-starting from it, or distilling from it, would leak them into the choice.
    A run without validation (--val-size 0: the final refit on every train image of a recipe chosen on
    validation) chooses nothing, so any split may feed it."""
    if cfg.val_size <= 0:
        return
    run = ck.get("run") or {}
    theirs, ours = split_seed_of(run), cfg.val_split_seed
    if ck.get("data_sha256") == data_sha and (run.get("val_size"), theirs) != (cfg.val_size, ours):
        raise NinEdgeError(f"{what}: it was trained on this data with --val-size {run.get('val_size')} "
                           f"--split-seed {theirs}, so it has seen images of this run's validation split "
                           f"(--val-size {cfg.val_size} --split-seed {ours}); use the same split (--split-seed "
                           f"keeps it while --seed changes)")


def _load_teachers(cfg: TrainConfig, classes: tuple[str, ...], data_sha: str, dev: torch.device,
                   ) -> tuple[Teacher, dict]:
    """--teacher files → the frozen Teacher on `dev`, and what the run records of it (sha256s, alpha, T)."""
    models, shas = [], []
    for t in cfg.teachers:
        path = Path(t)
        if not path.is_file():
            raise NinEdgeError(f"--teacher {path}: no such checkpoint file")
        model, meta = load_model(path)  # any zoo arch; a wrong or corrupt file fails naming the path
        if tuple(meta["classes"]) != tuple(classes):
            raise NinEdgeError(f"--teacher {path}: checkpoint classes {meta['classes']} differ from "
                               f"{cfg.data}'s {list(classes)}")
        _check_split(f"--teacher {path}", meta, cfg, data_sha)
        size, t_size = model_info(cfg.arch).input_size, model_info(meta["arch"]).input_size
        if t_size != size:  # it must see the student's own batch
            raise NinEdgeError(f"--teacher {path}: arch '{meta['arch']}' takes {t_size}×{t_size} images, "
                               f"the student '{cfg.arch}' {size}×{size}")
        models.append(model.to(dev).to(memory_format=torch.channels_last))
        shas.append(sha256_file(path))
    alpha = KD_ALPHA if cfg.kd_alpha is None else cfg.kd_alpha
    temperature = KD_TEMPERATURE if cfg.kd_temperature is None else cfg.kd_temperature
    kd = {"teachers_sha256": shas, "alpha": alpha, "temperature": temperature}
    if cfg.kd_flip:  # only when set: the kd record of runs from before --kd-flip stays the same
        kd["flip"] = True
    return Teacher(models, alpha, temperature, cfg.kd_flip), kd


def _init_weights(cfg: TrainConfig, model: nn.Module, classes: tuple[str, ...], data_sha: str) -> dict:
    """--init-from: load a checkpoint's weights (warm start; optimiser and schedule start fresh).

    The held-out validation split must stay held out: a checkpoint trained on this same data with another
    split (other --seed or --val-size) has seen images this run validates on, so it is refused.
    """
    path = Path(cfg.init_from)
    if not path.is_file():
        raise NinEdgeError(f"--init-from {path}: no such checkpoint file")
    ck = load_checkpoint(path)
    if ck.get("classes") is not None and tuple(ck["classes"]) != tuple(classes):
        raise NinEdgeError(f"--init-from {path}: checkpoint classes {ck['classes']} differ from {cfg.data}'s {list(classes)}")
    _check_split(f"--init-from {path}", ck, cfg, data_sha)
    widened_from = None
    if ck.get("arch") not in (None, cfg.arch):
        # Another zoo arch: start from a function-preserving widening of it (Net2WiderNet, see widen.py);
        # widen_into refuses, naming both archs, anything that is not a wider copy of the same layout.
        try:
            src = create_model(ck["arch"], num_classes=len(classes))
            src.load_state_dict(ck["state_dict"], strict=True)
        except NinEdgeError as e:  # an arch this version's zoo does not have
            raise NinEdgeError(f"--init-from {path}: {e}") from None
        except (KeyError, RuntimeError) as e:
            raise NinEdgeError(f"--init-from {path}: weights do not fit the arch '{ck.get('arch')}' it names "
                               f"({str(e).splitlines()[0][:160]})") from None
        widen_into(src, model, torch.Generator().manual_seed(cfg.seed), f"--init-from {path} ({ck['arch']})",
                   cfg.arch)
        widened_from = ck["arch"]
    else:
        try:
            model.load_state_dict(ck["state_dict"], strict=True)
        except RuntimeError as e:
            raise NinEdgeError(f"--init-from {path}: weights do not fit arch '{cfg.arch}' "
                               f"({str(e).splitlines()[0][:160]})") from None
    prior = run_history(path, ck)
    meta = {"path": str(path), "sha256": sha256_file(path), "epoch": ck.get("epoch"),
            "val_top1": ck.get("val_top1"), "test_top1": ck.get("test_top1"), "command": ck.get("command"),
            "elapsed_s": ck.get("elapsed_s"), "epochs_total": len(prior) or ck.get("epoch"),
            "init_from": ck.get("init_from")}
    if widened_from:  # only when set: the init record of same-arch warm starts stays as it was
        meta["widened_from"] = widened_from
    return meta


# --------------------------------------------------------------------------- the loop
def train(cfg: TrainConfig) -> TrainResult:
    if cfg.epochs < 1 or cfg.batch_size < 1 or not cfg.lr > 0:
        raise NinEdgeError("--epochs, --batch-size and --lr must be positive")
    if cfg.precision not in PRECISION_CHOICES:
        raise NinEdgeError(f"--precision {cfg.precision}: choose {', '.join(PRECISION_CHOICES)}")
    if cfg.max_minutes is not None and cfg.max_minutes < 0:
        raise NinEdgeError(f"--max-minutes {cfg.max_minutes}: must not be negative")
    if not cfg.teachers and (cfg.kd_alpha is not None or cfg.kd_temperature is not None or cfg.kd_flip):
        raise NinEdgeError("--kd-alpha, --kd-temperature and --kd-flip set how to distil from a --teacher; "
                           "none was given")
    if cfg.kd_alpha is not None and not 0.0 <= cfg.kd_alpha <= 1.0:
        raise NinEdgeError(f"--kd-alpha {cfg.kd_alpha}: must be between 0 and 1")
    if cfg.kd_temperature is not None and not cfg.kd_temperature > 0:
        raise NinEdgeError(f"--kd-temperature {cfg.kd_temperature}: must be positive")
    if cfg.ema is not None and not 0.0 < cfg.ema < 1.0:
        raise NinEdgeError(f"--ema {cfg.ema}: the decay must be between 0 and 1 (e.g. 0.998), exclusive")
    model_info(cfg.arch)  # unknown arch → listed choices
    if cfg.split_seed == cfg.seed:  # the same split as without it: record (and resume) it the same way
        cfg = replace(cfg, split_seed=None)
    rank, world, dev = _init_dist(cfg.device)
    try:
        return _train(cfg, rank, world, dev)
    finally:
        if world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _train(cfg: TrainConfig, rank: int, world: int, dev: torch.device) -> TrainResult:
    is_main = rank == 0
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.batch_size % world:
        raise NinEdgeError(f"--batch-size {cfg.batch_size}: must be divisible by the {world} ranks")
    t_start = time.time()
    out = Path(cfg.out)
    _rank0_decides(lambda: _refuse_existing_run(cfg, out), rank, world)  # fail fast, before loading data
    precision, precision_why = resolve_precision(cfg.precision, dev, out / "last.pt" if cfg.resume else None)
    cfg = replace(cfg, precision=precision)

    # ---- data: whole train split as uint8 in memory (150 MB for CIFAR-10); a held-out validation split
    if str(cfg.data).startswith("bundled:"):
        raise NinEdgeError(f"--data {cfg.data}: bundled subsets are evaluation/calibration sets (one split), "
                           f"not a training source")
    size = model_info(cfg.arch).input_size
    full = _fit_to(load_dataset(cfg.data, "train"), size)
    classes = full.classes
    if len(classes) < 2:
        raise NinEdgeError(f"{cfg.data}: training needs at least 2 classes, found {list(classes)}")
    data_sha = data_fingerprint(cfg.data, full)
    train_ds, val_ds = split_train_val(full, cfg.val_size, cfg.val_split_seed)
    # after the split, so the validation split (and every check of it against other runs) stays the same
    train_ds, hold_def = hold_out_images(train_ds, cfg.hold_out, size) if cfg.hold_out else (train_ds, None)
    test_ds = _fit_to(load_dataset(cfg.data, "test"), size) if cfg.eval_test else None
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
    init_meta = _init_weights(cfg, model, classes, data_sha) if cfg.init_from else None
    teacher, kd_def = _load_teachers(cfg, classes, data_sha, dev) if cfg.teachers else (None, None)
    model = model.to(dev).to(memory_format=torch.channels_last)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    peak_lr = cfg.lr * cfg.batch_size / 256
    opt = torch.optim.SGD([{"params": decay, "weight_decay": cfg.weight_decay},
                           {"params": no_decay, "weight_decay": 0.0}], lr=peak_lr, momentum=0.9, nesterov=True)
    steps_per_epoch = len(train_ds) // cfg.batch_size  # drop the ragged last batch: equal steps on every rank
    if steps_per_epoch < 1:
        raise NinEdgeError(f"--batch-size {cfg.batch_size}: larger than the {len(train_ds)} training images")
    total_steps = steps_per_epoch * cfg.epochs

    run_def = {"arch": cfg.arch, "data_sha256": data_sha,
               "init_sha256": init_meta["sha256"] if init_meta else None, "kd": kd_def, "hold_out": hold_def,
               **{k: getattr(cfg, k) for k in TrainConfig.RUN_DEFINING
                  if k not in ("arch", "data_sha256", "init_sha256", "kd", "hold_out")}}

    # ---- out dir: refuse to clobber a run; --resume continues from last.pt (decided on rank 0, shared)
    last_pt, best_pt = out / "last.pt", out / "best.pt"
    ck = _rank0_decides(lambda: _prepare_out(cfg, out, run_def, classes), rank, world)
    start_epoch, history, best_val, wall_before = 0, [], -1.0, 0.0
    if ck is not None:
        model.load_state_dict(ck.get("train_state_dict", ck["state_dict"]))
        opt.load_state_dict(ck["optimizer"])
        start_epoch, history = int(ck["epoch"]), list(ck.get("history", []))
        best_val = max([h["val_top1"] for h in history if h.get("val_top1") is not None] or [-1.0])
        wall_before = float(history[-1].get("elapsed_s", sum(h.get("epoch_seconds", 0.0) for h in history))) \
            if history else 0.0
    # the average starts at the starting weights (after --init-from, or as resumed)
    average = WeightAverage(model, cfg.ema) if cfg.ema is not None else None
    if average is not None and ck is not None:
        average.model.load_state_dict(ck["state_dict"])
    saved = average.model if average is not None else model  # what is evaluated and saved
    del ck

    ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[dev] if dev.type == "cuda" else None) \
        if world > 1 else model
    amp = torch.bfloat16 if cfg.precision == "bf16" else None
    x_all = torch.from_numpy(train_ds.images)
    y_all = torch.from_numpy(train_ds.labels)
    machine = _machine(dev, world) if is_main else {}
    config = {k: v for k, v in asdict(cfg).items() if k not in ("resume", "force", "progress", "command")}
    stopped_early = False

    def loss_ok(loss: torch.Tensor) -> bool:  # every rank stops at the same step if any rank's loss is bad
        return not _any_rank(not bool(torch.isfinite(loss)), world, dev)

    def stop_nonfinite(what: str) -> NinEdgeError:
        kept = f"last good checkpoint kept: {last_pt} (epoch {start_epoch_done})" if start_epoch_done \
            else "no checkpoint was written (it failed in the first epoch)"
        return NinEdgeError(f"{what}; training stopped (try a lower --lr); {kept}")

    if is_main:  # only now: a bad option or input is still a one-line error with nothing before it
        print(f"precision: {precision} ({precision_why})", flush=True)
        if init_meta and init_meta.get("widened_from") and start_epoch == 0:
            print(f"init: {init_meta['path']} ({init_meta['widened_from']}) widened into {cfg.arch}, same "
                  f"function (Net2WiderNet)", flush=True)
    progress = None
    if is_main and cfg.progress:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        progress = Progress(TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(),
                            TextColumn("loss {task.fields[loss]:.3f}  {task.fields[ips]:.0f} img/s"),
                            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), transient=False)
        progress.start()
        task = progress.add_task("train", total=total_steps, completed=start_epoch * steps_per_epoch,
                                 epoch=start_epoch + 1, loss=float("nan"), ips=0.0)
    start_epoch_done = start_epoch
    try:
        for epoch in range(start_epoch, cfg.epochs):
            # generators derived from (seed, epoch) only: resume reproduces the same next epoch, and every rank
            # draws the same global permutation and augmentations, then takes its slice
            gen = torch.Generator().manual_seed(cfg.seed * 100003 + epoch)
            perm = torch.randperm(len(train_ds), generator=gen)[: steps_per_epoch * cfg.batch_size]
            aug_gen = torch.Generator().manual_seed(cfg.seed * 100003 + epoch * 7919 + 1)
            cut_gen = torch.Generator().manual_seed(cfg.seed * 100003 + epoch * 7919 + 3)  # own streams: cutout
            mix_gen = torch.Generator().manual_seed(cfg.seed * 100003 + epoch * 7919 + 4)  # and CutMix leave
            # the crop/flip draws of a run without them unchanged
            torch.manual_seed(cfg.seed * 100003 + epoch * 7919 + 2 + rank)  # dropout (nin-paper) masks
            ddp.train()
            t_ep, loss_sum, seen = time.time(), torch.zeros((), device=dev), 0
            for step in range(steps_per_epoch):
                global_step = epoch * steps_per_epoch + step
                for g in opt.param_groups:
                    g["lr"] = _lr_at(global_step, total_steps, peak_lr, cfg.warmup_frac)
                mine = slice(rank, None, world)
                idx = perm[step * cfg.batch_size:(step + 1) * cfg.batch_size][mine]
                draw = draw_augment(cfg.batch_size, aug_gen)[mine]
                cut = (draw_cutout(cfg.batch_size, cut_gen, *x_all.shape[1:3])[mine], cfg.cutout) if cfg.cutout else None
                mix = draw_cutmix(cfg.batch_size, mix_gen, len(x_all), *x_all.shape[1:3], cfg.cutmix)[mine] \
                    if cfg.cutmix else None
                xb, yb, mixed = make_batch(x_all, y_all, idx, draw, dev, cut, mix)
                try:
                    loss = train_step(ddp, opt, xb, yb, amp, cfg.label_smoothing, loss_ok, mixed, teacher)
                except FloatingPointError as e:
                    raise stop_nonfinite(f"non-finite loss ({e}) at epoch {epoch + 1} step {step + 1}") from None
                if average is not None:
                    average.update(model)
                loss_sum += loss * len(idx)
                seen += len(idx)
                if progress is not None and (step % 10 == 0 or step == steps_per_epoch - 1):
                    progress.update(task, completed=global_step + 1, epoch=epoch + 1,
                                    loss=float(loss), ips=seen * world / (time.time() - t_ep))
            train_loss = float(loss_sum) / max(1, seen)
            if world > 1:  # all ranks agree on the reported loss
                t = torch.tensor([train_loss], device=dev)
                torch.distributed.all_reduce(t)
                train_loss = float(t) / world
            ep_time = time.time() - t_ep
            if not all(bool(torch.isfinite(p).all()) for m in {model, saved} for p in m.parameters()):
                raise stop_nonfinite(f"weights became non-finite in epoch {epoch + 1}")

            if is_main:
                t_ev = time.time()
                val_top1 = evaluate(saved, val_ds, dev, autocast_dtype=amp)[0] if val_ds is not None else None
                test_top1 = evaluate(saved, test_ds, dev, autocast_dtype=amp)[0] if test_ds is not None else None
                rec = {"epoch": epoch + 1, "train_loss": round(train_loss, 5), "val_top1": val_top1,
                       "test_top1": test_top1, "lr": opt.param_groups[0]["lr"], "epoch_seconds": round(ep_time, 2),
                       "images_per_s": round(steps_per_epoch * cfg.batch_size / ep_time, 1), "world_size": world,
                       "eval_seconds": round(time.time() - t_ev, 2),
                       "elapsed_s": round(wall_before + time.time() - t_start, 1)}
                history.append(rec)
                score = val_top1 if val_top1 is not None else float(epoch)
                meta = dict(epoch=epoch + 1, val_top1=val_top1, test_top1=test_top1, seed=cfg.seed,
                            data_sha256=data_sha, run=run_def, history=history, config=config,
                            command=cfg.command, machine=machine, elapsed_s=rec["elapsed_s"],
                            init_from=init_meta)
                # best.pt before last.pt: a kill between the two is repaired by resuming (same epoch again)
                if score > best_val:
                    best_val = score
                    atomic_torch_save(make_checkpoint(saved, cfg.arch, classes, **meta), best_pt)
                ck = make_checkpoint(saved, cfg.arch, classes, **meta)
                ck["optimizer"] = opt.state_dict()
                if average is not None:
                    ck["train_state_dict"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
                atomic_torch_save(ck, last_pt)
                _write_metrics(history, out / "metrics.jsonl")
                _plot_curves(history, out / "curves.png")
                line = (f"epoch {epoch + 1}/{cfg.epochs}  loss {train_loss:.4f}  "
                        + (f"val {val_top1:.2f}%  " if val_top1 is not None else "")
                        + (f"test {test_top1:.2f}%  " if test_top1 is not None else "")
                        + f"{rec['images_per_s']:.0f} img/s")
                if progress is not None:
                    progress.console.print(line)
                else:
                    print(line, flush=True)
            start_epoch_done = epoch + 1
            if cfg.max_minutes is not None and epoch + 1 < cfg.epochs:
                # rank 0's clock decides (it also evaluated): ranks stopping at different epochs would hang
                if _rank0_decides(lambda: (time.time() - t_start) / 60 >= cfg.max_minutes, rank, world):
                    stopped_early = True
                    break
        if world > 1:
            torch.distributed.barrier()  # nobody exits before rank 0 has written its last files
    finally:
        if progress is not None:
            progress.stop()

    best = max(history, key=lambda h: h["val_top1"] if h.get("val_top1") is not None else h["epoch"]) if history else {}
    return TrainResult(out, len(history), best.get("val_top1"), best.get("test_top1"),
                       history[-1].get("test_top1") if history else None, (time.time() - t_start) / 60,
                       stopped_early, history, saved, is_main, start_epoch)
