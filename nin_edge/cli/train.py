from __future__ import annotations

from enum import Enum

import typer

from . import app
from ._common import guard


class TrainDevice(str, Enum):
    cpu = "cpu"
    cuda = "cuda"


class TrainPrecision(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"


def _command_line(opts: dict) -> str:
    """The command that started the run, every option spelled out (recorded in checkpoints and the model card).

    Rebuilt from the parsed options rather than copied from sys.argv, so defaults the user relied on are
    visible and the line reproduces the run even if a later nin-edge changes a default.
    """
    import os
    import shlex

    parts: list[str] = []
    for name, value in opts.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            if value or name in ("eval_test", "progress"):
                parts.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, (list, tuple)):  # a repeatable option: once per value
            for v in value:
                parts += [flag, str(v)]
        elif value is not None and not callable(value):
            parts += [flag, str(value.value if isinstance(value, Enum) else value)]
    world = int(os.environ.get("WORLD_SIZE", 1))
    head = (f"torchrun --nproc-per-node {os.environ.get('LOCAL_WORLD_SIZE', world)} -m nin_edge train"
            if world > 1 else "nin-edge train")
    return head + " " + shlex.join(parts)


@app.command("train")
def train_cmd(
    arch: str = typer.Option("nin-cifar", help="zoo model name (see `nin-edge models`)"),
    data: str = typer.Option(..., help="CIFAR-10 python tarball/folder, image-folder tree or .tar(.gz) of one"),
    epochs: int = typer.Option(30, min=1),
    out: str = typer.Option("runs/train", help="run directory (last.pt, best.pt, metrics.jsonl, curves.png)"),
    batch_size: int = typer.Option(256, min=1, help="global batch (split evenly across torchrun ranks)"),
    lr: float = typer.Option(0.2, help="peak learning rate at batch 256 (scaled linearly with batch size)"),
    weight_decay: float = typer.Option(5e-4, min=0.0),
    label_smoothing: float = typer.Option(0.1, min=0.0, max=1.0),
    warmup_frac: float = typer.Option(0.15, min=0.0, max=1.0, help="share of steps spent warming up the lr"),
    cutout: int = typer.Option(0, min=0, help="cutout square side in pixels (0: off); more regularisation for long runs"),
    cutmix: float = typer.Option(0.0, min=0.0, max=1.0, help="share of images given a box pasted from another "
                                 "training image, labels mixed by area (0: off)"),
    init_from: str = typer.Option(None, help="warm start from this checkpoint's weights (fresh optimiser and lr "
                                  "schedule); a narrower zoo member of the same layout (nin-cifar for "
                                  "nin-cifar-wide) is widened first, keeping its function"),
    teacher: list[str] = typer.Option(None, help="distil from this checkpoint (repeat for an ensemble: the mean of "
                                      "their softened probabilities on each augmented batch is the target)"),
    kd_alpha: float = typer.Option(None, help="weight of the distillation loss, the labels keep 1 - it "
                                   "[default with --teacher: 0.9]"),
    kd_temperature: float = typer.Option(None, help="distillation temperature [default with --teacher: 4]"),
    kd_flip: bool = typer.Option(False, "--kd-flip", help="the teachers also see each batch mirrored and the "
                                 "target averages both views (a test-time-augmented teacher)"),
    ema: float = typer.Option(None, help="keep an exponential moving average of the weights with this per-step "
                              "decay (e.g. 0.998) and evaluate and save it instead of the raw weights"),
    val_size: int = typer.Option(5000, min=0, help="train images held out to choose best.pt (0: none)"),
    hold_out: str = typer.Option(None, help="leave this source's images (matched by pixels) out of training, "
                                 "e.g. bundled:val — the held-out set INT8 choices are measured on — in a "
                                 "--val-size 0 refit"),
    seed: int = typer.Option(0, help="seeds the initialisation, data order and augmentation (and the validation "
                             "split unless --split-seed)"),
    split_seed: int = typer.Option(None, help="seed of the validation split (default: --seed); keep it to train "
                                   "another seed against the same held-out images, e.g. with teachers of that split"),
    max_minutes: float = typer.Option(None, min=0.0, help="stop after the epoch that passes this wall time (resume later)"),
    device: TrainDevice = typer.Option(TrainDevice.cpu, help="cpu, or cuda (nccl under torchrun)"),
    precision: TrainPrecision = typer.Option(TrainPrecision.auto, help="fp32, bf16 autocast, or auto: bf16 where "
                                             "the hardware has it (CUDA, AVX512_BF16/AMX CPUs), else fp32"),
    threads: int = typer.Option(None, min=1, help="torch CPU threads (default: torch's choice)"),
    eval_test: bool = typer.Option(True, help="evaluate the test split each epoch (reported, never used to choose)"),
    progress: bool = typer.Option(True, help="progress bar (rank 0)"),
    resume: bool = typer.Option(False, help="continue from OUT/last.pt, bit-for-bit"),
    force: bool = typer.Option(False, help="replace a run already in OUT"),
    download: bool = typer.Option(False, help="fetch the official CIFAR-10 tarball into --data's folder first"),
) -> None:
    """Train a NIN (channels_last, bf16 autocast where the CPU/GPU has bf16; DDP under torchrun)."""
    opts = dict(locals())  # the parsed options, before anything else is bound here
    from pathlib import Path

    from ..train import TrainConfig, train

    with guard():
        if resume and force:
            from ..errors import NinEdgeError

            raise NinEdgeError("--resume and --force: choose one (continue the run in OUT, or replace it)")
        if download:
            from ..data import download_cifar10

            p = Path(data)
            data = str(download_cifar10(p if p.suffix == "" else p.parent))
        r = train(TrainConfig(arch=arch, data=data, out=out, epochs=epochs, batch_size=batch_size, lr=lr,
                              weight_decay=weight_decay, label_smoothing=label_smoothing, warmup_frac=warmup_frac,
                              cutout=cutout, cutmix=cutmix, init_from=init_from, teachers=tuple(teacher or ()),
                              kd_alpha=kd_alpha, kd_temperature=kd_temperature, kd_flip=kd_flip, ema=ema,
                              val_size=val_size, hold_out=hold_out, seed=seed, split_seed=split_seed, max_minutes=max_minutes,
                              device=device.value,
                              precision=precision.value, threads=threads, eval_test=eval_test, progress=progress,
                              resume=resume, force=force, command=_command_line(opts)))
        if r.is_main and r.epochs_done:
            best = f"best val {r.best_val:.2f}%" if r.best_val is not None else "no validation split"
            test = f" (test at that epoch {r.test_at_best:.2f}%)" if r.test_at_best is not None else ""
            more = "; stopped at --max-minutes, continue with --resume" if r.stopped_early else ""
            first = r.resumed_from + 1
            ran = (f"{r.epochs_done} epochs" if not r.resumed_from else
                   (f"epoch {first}" if first == r.epochs_done else f"epochs {first}–{r.epochs_done}")
                   + f" (resumed after {r.resumed_from})")
            typer.echo(f"done: {ran} in {r.minutes:.1f} min; {best}{test}; "
                       f"checkpoints in {r.out}{more}")
