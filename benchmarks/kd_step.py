"""Distillation step speed: nin-edge's teachers (BatchNorm folded, bf16 weights) against plain autocast teachers.

    python benchmarks/kd_step.py [--teacher A.pt --teacher B.pt] [--flip] [--arch nin-cifar] [--batch 256]
           [--rounds 9] [--precision auto|fp32|bf16]

plain = what a hand-written distillation does, and what `nin-edge train --teacher` did before: each frozen teacher
        checkpoint in eval mode, called under the same autocast as the student (weights cast on every call,
        BatchNorm as its own pass).
ours  = nin_edge.train.Teacher: the same checkpoints with BatchNorm folded into the convs and, under bf16, the
        weights stored in bf16 once.
Both see the same batch (channels_last, as `train` makes it); the student's step (nin_edge.train.train_step) is
the same code in both. Interleaved: plain targets, ours targets, plain step, ours step, for --rounds rounds
(median of 5 calls each after a warm-up); reported: medians, and the median of the per-round ratios. Also
printed: the largest difference between the two targets (probabilities), against what bf16 autocast itself moves
them from fp32.
Default teachers: the shipped weights twice (speed depends on the architecture, not the values).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nin_edge.checkpoint import load_model  # noqa: E402
from nin_edge.models import create_model  # noqa: E402
from nin_edge.train import Teacher, resolve_precision, train_step  # noqa: E402


def plain_targets(models, x, amp, t, flip):
    with torch.no_grad(), torch.autocast("cpu", dtype=amp, enabled=amp is not None):
        views = (x, x.flip(3)) if flip else (x,)
        logits = [m(v).float() for m in models for v in views]
    return torch.stack([F.softmax(z / t, 1) for z in logits]).mean(0)


def median_call(fn, calls: int = 5) -> float:
    fn()
    ts = []
    for _ in range(calls):
        a = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - a)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--teacher", action="append", default=[], help="teacher checkpoint (repeat); default: shipped ×2")
    ap.add_argument("--flip", action="store_true", help="teachers also see the mirrored batch (--kd-flip)")
    ap.add_argument("--arch", default="nin-cifar", help="student arch")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    args = ap.parse_args()

    prec, why = resolve_precision(args.precision, torch.device("cpu"))
    amp = torch.bfloat16 if prec == "bf16" else None
    teachers = [load_model(p or None)[0] for p in (args.teacher or [None, None])]
    teachers = [m.to(memory_format=torch.channels_last).eval().requires_grad_(False) for m in teachers]
    ours = Teacher(teachers, 0.9, 4.0, flip=args.flip)
    torch.manual_seed(0)
    student = create_model(args.arch).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(student.parameters(), lr=1e-3, momentum=0.9, nesterov=True)
    x = torch.randn(args.batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.batch,))

    class Plain(Teacher):  # the same loss, the old way of running the teachers
        def targets(self, xb, amp_):
            return plain_targets(self.models, xb, amp_, self.temperature, self.flip)

    plain = Plain(teachers, 0.9, 4.0, flip=args.flip)
    with torch.no_grad():
        fp32_ref = plain_targets(teachers, x, None, 4.0, args.flip)
    d_ours = float((ours.targets(x, amp) - plain.targets(x, amp)).abs().max())
    d_amp = float((plain.targets(x, amp) - fp32_ref).abs().max())
    print(f"precision {prec} ({why}); {len(teachers)} teachers, flip {args.flip}, batch {args.batch}, "
          f"{torch.get_num_threads()} threads")
    print(f"targets: ours vs plain max |Δp| {d_ours:.2e} (plain bf16-autocast vs fp32: {d_amp:.2e})")

    fns = {"plain targets": lambda: plain.targets(x, amp), "ours targets": lambda: ours.targets(x, amp),
           "plain step": lambda: train_step(student, opt, x, y, amp, 0.1, teacher=plain),
           "ours step": lambda: train_step(student, opt, x, y, amp, 0.1, teacher=ours)}
    res: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(args.rounds):
        for k, fn in fns.items():
            res[k].append(median_call(fn))
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{k} {v[-1] * 1e3:.0f} ms" for k, v in res.items()),
              flush=True)
    for part in ("targets", "step"):
        p, o = res[f"plain {part}"], res[f"ours {part}"]
        ratios = [a / b for a, b in zip(p, o)]
        print(f"{part}: plain {statistics.median(p) * 1e3:.1f} ms ({args.batch / statistics.median(p):.0f} img/s), "
              f"ours {statistics.median(o) * 1e3:.1f} ms ({args.batch / statistics.median(o):.0f} img/s) — "
              f"ours {statistics.median(ratios):.2f}× faster (rounds {min(ratios):.2f}–{max(ratios):.2f})")


if __name__ == "__main__":
    main()
