import typer

from . import app
from ._common import guard


@app.command("average")
def average_cmd(
    weights: list[str] = typer.Argument(..., help="nin-edge checkpoints of runs of one arch on the same data and "
                                                  "validation split (e.g. last.pt of several seeds)"),
    data: str = typer.Option(..., help="the data the runs trained on (checked by sha256)"),
    out: str = typer.Option(..., help="checkpoint to write"),
    batch: int = typer.Option(500, min=1, help="images per forward pass re-estimating BatchNorm statistics"),
    seed: int = typer.Option(0, help="seed of the order the images are fed in"),
    threads: int = typer.Option(None, min=1, help="torch CPU threads (default: torch's choice)"),
    progress: bool = typer.Option(True, help="progress bar"),
    force: bool = typer.Option(False, help="replace OUT if it exists"),
) -> None:
    """Average the weights of runs of one recipe (a uniform model soup: one network, no inference cost),
    re-estimate BatchNorm on their training images, report validation top-1 of each run and of the average."""
    import shlex

    from ..average import average_checkpoints

    with guard():
        if threads:
            import torch

            torch.set_num_threads(threads)
        command = shlex.join(["nin-edge", "average", *weights, "--data", data, "--out", out, "--batch", str(batch),
                              "--seed", str(seed)])
        r = average_checkpoints(weights, data, out, batch, seed, force, progress, command)
        pct = lambda v: "—" if v is None else f"{v:.2f}%"  # noqa: E731
        if r.val_images:
            for i in r.ingredients:
                typer.echo(f"  {i['path']}: validation top-1 {pct(i['val_top1'])} (fp32, {r.val_images:,} images)")
            best = max(i["val_top1"] for i in r.ingredients)
            typer.echo(f"  average of {len(r.ingredients)}: validation top-1 {pct(r.val_top1)} "
                       f"({r.val_top1 - best:+.2f} vs the best run)")
        else:
            typer.echo("  no validation split in these runs (--val-size 0): nothing measured")
        bn = f"; BatchNorm statistics re-estimated on {r.bn_images:,} training images" if r.bn_images else ""
        typer.echo(f"wrote {r.out}: uniform average of {len(r.ingredients)} checkpoints{bn} in {r.seconds:.0f} s")
