from __future__ import annotations

from typing import List, Optional

import typer

from . import app
from ._common import guard, parse_csv_ints
from .export import TtaChoice


@app.command("pipeline")
def pipeline_cmd(
    weights: Optional[str] = typer.Option(None, help="checkpoint or state_dict (default: the shipped nin-cifar weights)"),
    train: bool = typer.Option(False, "--train", help="train first (see --arch/--train-data/--epochs) and deploy its best.pt"),
    arch: str = typer.Option("nin-cifar", help="with --train: zoo model name"),
    train_data: Optional[str] = typer.Option(None, help="with --train: training data (CIFAR-10 tarball/folder, image tree)"),
    epochs: int = typer.Option(30, help="with --train: epochs"),
    device: str = typer.Option("cpu", help="with --train: cpu or cuda"),
    spec: Optional[List[str]] = typer.Option(None, "--spec", help="targets/X.toml or a shipped target name (repeatable; "
                                             "default: every shipped spec this machine can judge)"),
    calib: str = typer.Option("default", help="calibration spec name/path, or a folder of your images"),
    tta: TtaChoice = typer.Option(TtaChoice.none, help="as export --tta: flip = every artifact averages each "
                                  "image with its mirror (~2x the latency)"),
    data: str = typer.Option("bundled:eval", help="evaluation data for the bench"),
    out: str = typer.Option("nin-edge-out", help="output directory (bundle/, report/, summary.json)"),
    fresh: bool = typer.Option(False, "--fresh", help="rebuild the bundle even if its inputs are unchanged"),
    batch: str = typer.Option("1,64", help="batch sizes to time, comma-separated"),
    seconds: float = typer.Option(0.5, help="timed seconds per batch size and row"),
    threads: Optional[int] = typer.Option(None, help="intra-op threads (default: every core of this process)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="only the final table"),
) -> None:
    """Weights → ONNX → INT8 (calibration set) → OpenVINO IR → TensorRT where possible → bench → PASS/FAIL."""
    from ..errors import NinEdgeError, SpecFailed
    from ..pipeline import PipelineOptions, run_pipeline
    from ..report import print_report

    with guard():
        cfg = None
        if train:
            if not train_data:
                raise NinEdgeError("--train needs --train-data (the training images)")
            from ..train import TrainConfig

            cfg = TrainConfig(arch=arch, data=train_data, epochs=epochs, device=device, out="")
        elif train_data:
            raise NinEdgeError("--train-data is only used with --train")
        res = run_pipeline(PipelineOptions(weights=weights, train=cfg, specs=tuple(spec or ()), calib=calib, data=data,
                                           tta=tta.value, out=out, fresh=fresh, batches=tuple(parse_csv_ints(batch, "--batch")),
                                           seconds=seconds, threads=threads, progress=not quiet))
        print_report(res.report, res.verdicts)
        stages = "  ".join(f"{k} {v:.1f}s" for k, v in res.stage_seconds.items())
        typer.echo(f"\nbundle: {res.bundle} ({'reused' if res.bundle_reused else 'built'})   TensorRT: "
                   f"{'engine built' if res.tensorrt == 'available' else res.tensorrt}")
        typer.echo(f"report: {res.out / 'report' / 'report.md'}   summary: {res.out / 'summary.json'}   [{stages}]")
        n_pass = sum(v.status == "PASS" for v in res.verdicts)
        n_fail = sum(v.failed for v in res.verdicts)
        typer.echo(f"verdict: {n_pass} PASS, {n_fail} FAIL of {len(res.verdicts)} spec(s)")
        if not res.passed:
            raise SpecFailed(f"{n_fail} spec(s) failed; see {res.out / 'report' / 'report.md'}")
