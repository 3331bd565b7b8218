import typer

from . import app
from ._common import guard


@app.command("train")
def train_cmd(
    arch: str = typer.Option("nin-cifar", help="zoo model name (see `nin-edge models`)"),
    data: str = typer.Option(..., help="CIFAR-10 python tarball/folder, image-folder tree or .tar(.gz) of one"),
    epochs: int = typer.Option(30, min=1),
    out: str = typer.Option("runs/train", help="run directory (last.pt, best.pt, metrics.jsonl, curves.png)"),
    batch_size: int = typer.Option(256, min=1),
    lr: float = typer.Option(0.2, help="peak learning rate at batch 256 (scaled linearly with batch size)"),
    weight_decay: float = typer.Option(5e-4),
    label_smoothing: float = typer.Option(0.1),
    val_size: int = typer.Option(5000, help="train images held out to choose best.pt (0: none)"),
    seed: int = typer.Option(0),
    max_minutes: float = typer.Option(None, help="stop after the epoch that passes this wall time (resume later)"),
    device: str = typer.Option("cpu", help="cpu or cuda"),
    precision: str = typer.Option("bf16", help="fp32 or bf16 (autocast)"),
    threads: int = typer.Option(None, help="torch CPU threads (default: torch's choice)"),
    resume: bool = typer.Option(False, help="continue from OUT/last.pt, bit-for-bit"),
    force: bool = typer.Option(False, help="replace a finished run in OUT"),
    download: bool = typer.Option(False, help="fetch the official CIFAR-10 tarball into --data's folder first"),
) -> None:
    """Train a NIN (bf16 autocast + channels_last on CPU; DDP under torchrun)."""
    from pathlib import Path

    from ..train import TrainConfig, train

    with guard():
        if download:
            from ..data import download_cifar10

            p = Path(data)
            data = str(download_cifar10(p if p.suffix == "" else p.parent))
        r = train(TrainConfig(arch=arch, data=data, out=out, epochs=epochs, batch_size=batch_size, lr=lr,
                              weight_decay=weight_decay, label_smoothing=label_smoothing, val_size=val_size,
                              seed=seed, max_minutes=max_minutes, device=device, precision=precision,
                              threads=threads, resume=resume, force=force))
        if r.epochs_done:
            typer.echo(f"done: {r.epochs_done} epochs in {r.minutes:.1f} min; best val {r.best_val}% "
                       f"(test at that epoch {r.test_at_best}%); checkpoints in {r.out}")
