"""Training images/s: nin-edge's loop versus a plain PyTorch loop, same arch, measured side by side.

    python benchmarks/train_throughput.py --data /path/to/cifar10-jpeg.tar.gz [--arch nin-seed] [--batch 256]
           [--rounds 5] [--seconds 10] [--plain-workers 0,2] [--accuracy-epochs 0]

ours  = the code path of `nin-edge train`: the uint8 train split in memory, batch-level augmentation
        (nin_edge.train.draw_augment/make_batch: one gather for crop+flip), THE normalisation on the batch,
        channels_last, bf16 autocast where `nin-edge train --precision auto` uses it (CPUs with AVX512_BF16/AMX;
        fp32 elsewhere; --precision overrides), SGD step (nin_edge.train.train_step).
plain = what a hand-written loop does: a torch Dataset whose __getitem__ pads/crops/flips/normalises one
        image in numpy (per-sample Python), a DataLoader (shuffle, drop_last) with N workers, fp32, NCHW.
Both: the same architecture and initialisation, SGD+Nesterov, label smoothing 0.1, the same batch size.

Throughput: after a warm-up, timed segments of about --seconds each alternate ours, plain(w0), plain(w2), ...
for --rounds rounds; medians are reported, and the ratio is against the *fastest* plain variant. The
DataLoader iterators persist across segments, so worker prefetch made while the other loop is timed is a
head start for the plain loop (the comparison errs in its favour).

--accuracy-epochs E additionally trains both loops for E epochs each (one after the other, the same one-cycle
schedule over E epochs) and prints test top-1 after every epoch (fp32 evaluation of both): equal accuracy per
epoch is what makes the images/s ratio a time-to-accuracy ratio.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nin_edge.data import load_dataset  # noqa: E402
from nin_edge.models import create_model  # noqa: E402
from nin_edge.preprocess import CIFAR10_MEAN, CIFAR10_STD, preprocess  # noqa: E402
from nin_edge.train import _lr_at, draw_augment, make_batch, train_step  # noqa: E402


# --------------------------------------------------------------------------- the plain loop's pieces
class PlainCifar(torch.utils.data.Dataset):
    """Per-sample transforms in numpy, as a hand loop (or torchvision's RandomCrop(32, 4)+Flip+Normalize) does."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, train: bool = True, pad: int = 4):
        self.images, self.labels, self.train, self.pad = images, labels, train, pad
        self.mean = np.asarray(CIFAR10_MEAN, np.float32)
        self.std = np.asarray(CIFAR10_STD, np.float32)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        img = self.images[i]
        if self.train:
            p = self.pad
            padded = np.pad(img, ((p, p), (p, p), (0, 0)), mode="constant")
            y, x = np.random.randint(0, 2 * p + 1, size=2)
            img = padded[y:y + img.shape[0], x:x + img.shape[1]]
            if np.random.rand() < 0.5:
                img = img[:, ::-1]
        x = (img.astype(np.float32) / 255.0 - self.mean) / self.std
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))), int(self.labels[i])


def _worker_seed(worker_id: int) -> None:  # numpy's global RNG differs per worker (not forked copies)
    np.random.seed((torch.initial_seed() + worker_id) % 2**32)


def make_model(arch: str, classes: int, seed: int, channels_last: bool) -> nn.Module:
    """The same initialisation as nin_edge.train (He for convs, zero biases)."""
    torch.manual_seed(seed)
    m = create_model(arch, classes)
    for mod in m.modules():
        if isinstance(mod, nn.Conv2d):
            nn.init.kaiming_normal_(mod.weight, nonlinearity="relu")
            if mod.bias is not None:
                nn.init.zeros_(mod.bias)
    return m.to(memory_format=torch.channels_last) if channels_last else m


def make_opt(model: nn.Module, lr: float, wd: float) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    return torch.optim.SGD([{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}],
                           lr=lr, momentum=0.9, nesterov=True)


# --------------------------------------------------------------------------- the two step sources
@dataclass
class Ours:
    name: str
    model: nn.Module
    opt: torch.optim.Optimizer
    x_all: torch.Tensor
    y_all: torch.Tensor
    batch: int
    amp: torch.dtype | None
    seed: int = 0

    def __post_init__(self):
        self.epoch, self.pos = 0, 0
        self._new_epoch()

    def _new_epoch(self):
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        self.perm = torch.randperm(len(self.y_all), generator=g)
        self.aug_gen = torch.Generator().manual_seed(self.seed * 100003 + self.epoch * 7919 + 1)
        self.pos = 0

    def steps_per_epoch(self) -> int:
        return len(self.y_all) // self.batch

    def step(self) -> float:
        if self.pos + self.batch > len(self.perm):
            self.epoch += 1
            self._new_epoch()
        idx = self.perm[self.pos:self.pos + self.batch]
        self.pos += self.batch
        xb, yb, _ = make_batch(self.x_all, self.y_all, idx, draw_augment(self.batch, self.aug_gen), torch.device("cpu"))
        self.model.train()
        return float(train_step(self.model, self.opt, xb, yb, self.amp, 0.1))


@dataclass
class Plain:
    name: str
    model: nn.Module
    opt: torch.optim.Optimizer
    ds: PlainCifar
    batch: int
    workers: int
    seed: int = 0

    def __post_init__(self):
        g = torch.Generator().manual_seed(self.seed)
        self.loader = torch.utils.data.DataLoader(self.ds, batch_size=self.batch, shuffle=True, drop_last=True,
                                                  num_workers=self.workers, persistent_workers=self.workers > 0,
                                                  worker_init_fn=_worker_seed, generator=g)
        self.it = iter(self.loader)

    def steps_per_epoch(self) -> int:
        return len(self.loader)

    def step(self) -> float:
        try:
            xb, yb = next(self.it)
        except StopIteration:
            self.it = iter(self.loader)
            xb, yb = next(self.it)
        self.model.train()
        loss = F.cross_entropy(self.model(xb), yb, label_smoothing=0.1)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return float(loss.detach())


def timed_segment(src, seconds: float, min_steps: int = 3) -> float:
    t0, n = time.perf_counter(), 0
    while n < min_steps or time.perf_counter() - t0 < seconds:
        src.step()
        n += 1
    return n * src.batch / (time.perf_counter() - t0)


# --------------------------------------------------------------------------- accuracy per epoch
@torch.no_grad()
def test_top1(model: nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(labels), 1000):
        correct += int((model(torch.from_numpy(preprocess(images[i:i + 1000]))).argmax(1).numpy()
                        == labels[i:i + 1000]).sum())
    return 100.0 * correct / len(labels)


def accuracy_run(src, epochs: int, peak: float, test) -> list[dict]:
    total, rows, t0 = src.steps_per_epoch() * epochs, [], time.time()
    for e in range(epochs):
        for s in range(src.steps_per_epoch()):
            for g in src.opt.param_groups:
                g["lr"] = _lr_at(e * src.steps_per_epoch() + s, total, peak, 0.15)
            loss = src.step()
            if not math.isfinite(loss):
                raise SystemExit(f"{src.name}: non-finite loss at epoch {e + 1}")
        rows.append({"epoch": e + 1, "test_top1": round(test_top1(src.model, *test), 2),
                     "train_minutes": round((time.time() - t0) / 60, 2)})
        print(f"  {src.name:10s} epoch {e + 1}: test top-1 {rows[-1]['test_top1']:.2f}%  "
              f"({rows[-1]['train_minutes']:.1f} min incl. evaluation)", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", help="CIFAR-10 source (train split used); default: random uint8 images (throughput only)")
    ap.add_argument("--arch", default="nin-seed")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=10.0, help="length of one timed segment")
    ap.add_argument("--plain-workers", default="0,2", help="DataLoader worker counts to measure (comma-separated)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--accuracy-epochs", type=int, default=0)
    ap.add_argument("--lr", type=float, default=0.1,
                    help="peak lr for the accuracy comparison, at batch 256 and scaled linearly (as nin-edge train)")
    ap.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                    help="our loop's precision (auto: as `nin-edge train` picks it on this machine)")
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    from nin_edge.train import resolve_precision

    precision, why = resolve_precision(a.precision, torch.device("cpu"))
    amp = torch.bfloat16 if precision == "bf16" else None

    if a.data:
        tr = load_dataset(a.data, "train")
        images, labels, classes = tr.images, tr.labels, len(tr.classes)
    else:
        if a.accuracy_epochs:
            raise SystemExit("--accuracy-epochs needs --data")
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (50000, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, 50000).astype(np.int64)
        classes = 10
    workers = [int(w) for w in a.plain_workers.split(",") if w.strip()]

    def build():
        m_ours = make_model(a.arch, classes, 0, channels_last=True)
        ours = Ours("ours", m_ours, make_opt(m_ours, 0.01, 5e-4), torch.from_numpy(images), torch.from_numpy(labels),
                    a.batch, amp)
        plains = []
        for w in workers:
            m = make_model(a.arch, classes, 0, channels_last=False)
            plains.append(Plain(f"plain-w{w}", m, make_opt(m, 0.01, 5e-4), PlainCifar(images, labels), a.batch, w))
        return [ours, *plains]

    from nin_edge.envinfo import cpu_info

    cpu = cpu_info()
    print(f"# {a.arch}, batch {a.batch}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{cpu['model']} ({cpu['threads']} hw threads), data: {a.data or 'random uint8'}; "
          f"load average {os.getloadavg()[0]:.2f}; ours in {precision} ({why})", flush=True)
    srcs = build()
    for s in srcs:  # warm-up: oneDNN primitive creation, worker start-up, first prefetch
        for _ in range(3):
            s.step()
    ips: dict[str, list[float]] = {s.name: [] for s in srcs}
    for r in range(a.rounds):
        for s in srcs:
            ips[s.name].append(timed_segment(s, a.seconds))
        print(f"round {r + 1}: " + "  ".join(f"{n} {v[-1]:.0f}" for n, v in ips.items()) + " img/s", flush=True)
    med = {n: statistics.median(v) for n, v in ips.items()}
    best_plain = max((n for n in med if n != "ours"), key=med.get)
    print("\nmedian images/s: " + ", ".join(f"{n} {v:.0f}" for n, v in med.items()))
    for n in med:
        if n != "ours":
            print(f"ratio ours / {n}: {med['ours'] / med[n]:.2f}x")
    print(f"RATIO ours / fastest plain ({best_plain}): {med['ours'] / med[best_plain]:.2f}x  (goal >= 2.0x)")
    result = {"arch": a.arch, "batch": a.batch, "rounds": a.rounds, "seconds": a.seconds, "images_per_s": ips,
              "median": med, "fastest_plain": best_plain, "ratio": med["ours"] / med[best_plain],
              "load_average_end": os.getloadavg()[0], "precision_ours": precision}

    if a.accuracy_epochs:
        del srcs
        te = load_dataset(a.data, "test")
        test = (te.images, te.labels)
        peak = a.lr * a.batch / 256
        print(f"\naccuracy per epoch, {a.accuracy_epochs} epochs each, one-cycle peak lr {peak:g}, batch {a.batch}:")
        m_ours = make_model(a.arch, classes, 0, channels_last=True)
        ours = Ours("ours", m_ours, make_opt(m_ours, a.lr, 5e-4), torch.from_numpy(images), torch.from_numpy(labels),
                    a.batch, amp)
        result["accuracy_ours"] = accuracy_run(ours, a.accuracy_epochs, peak, test)
        del ours, m_ours
        m = make_model(a.arch, classes, 0, channels_last=False)
        plain = Plain(best_plain, m, make_opt(m, a.lr, 5e-4), PlainCifar(images, labels), a.batch,
                      int(best_plain.split("-w")[1]))
        result["accuracy_plain"] = accuracy_run(plain, a.accuracy_epochs, peak, test)
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
