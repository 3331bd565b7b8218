import typer

from . import app
from ._common import guard


@app.command("update-bn")
def update_bn_cmd(
    weights: str = typer.Option(..., help="nin-edge checkpoint (best.pt/last.pt of a run) whose statistics to re-estimate"),
    data: str = typer.Option(..., help="the data the run trained on (checked by sha256)"),
    out: str = typer.Option(..., help="checkpoint to write (the same records, new BatchNorm statistics)"),
    batch: int = typer.Option(500, min=1, help="images per forward pass (a ragged last batch is left out)"),
    seed: int = typer.Option(0, help="seed of the order the images are fed in"),
    threads: int = typer.Option(None, min=1, help="torch CPU threads (default: torch's choice)"),
    progress: bool = typer.Option(True, help="progress bar"),
    force: bool = typer.Option(False, help="replace OUT if it exists"),
) -> None:
    """Re-estimate a trained model's BatchNorm statistics on its run's training images, as they are
    (no augmentation, held-out images left out): statistics of the final weights on deployed-like inputs."""
    import shlex

    from ..bnupdate import update_bn

    with guard():
        if threads:
            import torch

            torch.set_num_threads(threads)
        command = shlex.join(["nin-edge", "update-bn", "--weights", weights, "--data", data, "--out", out,
                              "--batch", str(batch), "--seed", str(seed)])
        r = update_bn(weights, data, out, batch, seed, force, progress, command)
        hold = f", less the {r.record['hold_out']} hold-out" if r.record["hold_out"] else ""
        typer.echo(f"wrote {r.out}: statistics of {r.layers} BatchNorm layers re-estimated on {r.images:,} training "
                   f"images of {data}{hold} in {r.seconds:.0f} s")
