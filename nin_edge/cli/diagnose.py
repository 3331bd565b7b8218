from pathlib import Path

import typer

from . import app
from ._common import guard


def _write_atomic(path: Path, write, force: bool) -> None:
    """Write via a temporary sibling and rename; an existing file is replaced only with --force."""
    from ..errors import NinEdgeError

    if path.exists() and not force:
        raise NinEdgeError(f"{path}: already exists (use --force to replace it)")
    if not path.parent.is_dir():
        raise NinEdgeError(f"{path.parent}: no such directory")
    from ..atomic import atomic_write

    atomic_write(path, write)


@app.command("diagnose")
def diagnose_cmd(
    bundle: str = typer.Option("bundle", help="bundle directory (needs model.int8.onnx: nin-edge export --int8)"),
    data: str = typer.Option("bundled:val", help="held-out images for the top-1 of each layer-in-float model "
                             "(refused if it shares images with the bundle's calibration set)"),
    split: str = typer.Option("test", help="split of --data for CIFAR/image-folder sources"),
    calib_images: int = typer.Option(300, help="calibration images for the SQNRs and the method comparison"),
    methods: str = typer.Option("minmax,entropy,percentile", help="calibration methods to compare per layer"),
    json_out: Path = typer.Option(None, "--json", help="also write the full result as JSON"),
    plot: Path = typer.Option(None, help="also write a PNG bar chart"),
    force: bool = typer.Option(False, "--force", help="replace existing --json/--plot files"),
    threads: int = typer.Option(None, help="ONNX Runtime threads (default: the library's)"),
) -> None:
    """Per-layer INT8 sensitivity of a bundle: SQNR of each quantized layer vs fp32, the top-1 gained when only
    that layer is left in float, and the calibration method that suits each layer best."""
    with guard():
        import json

        from rich.console import Console
        from rich.table import Table

        from ..diagnose import DiagnoseOptions, diagnose, plot_diagnosis
        from ..errors import NinEdgeError

        for p in (json_out, plot):  # fail before minutes of work
            if p is not None and p.exists() and not force:
                raise NinEdgeError(f"{p}: already exists (use --force to replace it)")
        err = Console(stderr=True)
        d = diagnose(DiagnoseOptions(bundle=bundle, data=data, split=split, calib_images=calib_images,
                                     methods=tuple(m.strip() for m in methods.split(",") if m.strip()),
                                     threads=threads), progress=lambda m: err.print(f"[dim]{m}[/dim]"))
        t = Table(title=f"INT8 sensitivity of {d.bundle}/{d.artifact} ({d.form} form, {d.method} ranges) — "
                        f"top-1 on {d.images} images of {d.data}: fp32 {d.fp32_top1:.2f}%, INT8 {d.int8_top1:.2f}%")
        for col, just in (("#", "right"), ("layer", "left"), ("op", "left"), ("SQNR dB", "right"),
                          ("local SQNR dB", "right"), ("top-1 if float", "right"), ("Δ top-1", "right"),
                          ("best method (local dB)", "left")):
            t.add_column(col, justify=just)
        for i, s in enumerate(d.layers, 1):
            best = (f"{s.best_method} ({s.method_local_sqnr_db[s.best_method]:.1f})" if s.best_method else "-")
            t.add_row(str(i), s.node, s.op_type, f"{s.sqnr_db:.1f}",
                      "-" if s.local_sqnr_db is None else f"{s.local_sqnr_db:.1f}", f"{s.top1_float:.2f}",
                      f"{s.delta_top1:+.2f}", best)
        import sys

        Console(width=None if sys.stdout.isatty() else 160).print(t)
        typer.echo(f"SQNR on {d.calib_images} calibration images; Δ top-1 = top-1 with only that layer in float "
                   f"minus INT8 top-1 (points). {d.seconds:.1f} s")
        for n in d.notes:
            typer.echo(f"note: {n}")
        if json_out is not None:
            _write_atomic(json_out, lambda p: p.write_text(json.dumps(d.to_dict(), indent=2) + "\n"), force)
            typer.echo(f"json: {json_out}")
        if plot is not None:
            _write_atomic(plot, lambda p: plot_diagnosis(d, p), force)
            typer.echo(f"plot: {plot}")
