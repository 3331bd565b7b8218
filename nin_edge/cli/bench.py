from __future__ import annotations

from enum import Enum
from typing import List, Optional

import typer

from . import app
from ._common import guard, parse_csv_ints


class Target(str, Enum):
    torch = "torch"
    onnxruntime = "onnxruntime"
    openvino = "openvino"
    tensorrt = "tensorrt"
    all = "all"
    auto = "auto"


class Precision(str, Enum):
    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"
    int8 = "int8"


class Device(str, Enum):
    cpu = "cpu"
    cuda = "cuda"
    gpu = "gpu"
    npu = "npu"
    dla = "dla"


class Timed(str, Enum):
    inference = "inference"
    end_to_end = "end-to-end"


@app.command("bench")
def bench_cmd(
    target: Optional[List[Target]] = typer.Option(
        None, "--target", "-t", help="backend to run; 'all' = every target available here side by side, 'auto' = "
        "the fastest backend for the batch size (repeatable; default: all, or only the --spec targets)"),
    precision: Optional[Precision] = typer.Option(
        None, help="default: int8 for onnxruntime/openvino/tensorrt, fp32 for torch; with 'all': every precision"),
    device: Optional[Device] = typer.Option(None, help="default: cpu (tensorrt: cuda)"),
    bundle: str = typer.Option("bundle", help="bundle directory made by `nin-edge export`"),
    data: str = typer.Option("bundled:eval", help="evaluation data: bundled:eval, a CIFAR-10 tarball/folder, an image tree"),
    split: str = typer.Option("test", help="split of --data"),
    batch: str = typer.Option("1", help="batch sizes to time, comma-separated (e.g. 1,8,64)"),
    threads: Optional[int] = typer.Option(None, help="intra-op threads (default: every core of this process's affinity)"),
    warmup: int = typer.Option(10, help="calls discarded before timing"),
    iters: Optional[int] = typer.Option(None, help="timed calls per batch size (instead of --seconds)"),
    seconds: Optional[float] = typer.Option(None, help="timed seconds per batch size (default 1.0)"),
    timed: Timed = typer.Option(Timed.inference, help="inference only, or end-to-end with preprocessing"),
    max_images: Optional[int] = typer.Option(None, help="evaluate accuracy on the first N images only"),
    accuracy: bool = typer.Option(True, "--accuracy/--no-accuracy", help="measure top-1/top-5 and fp32 agreement"),
    artifact: Optional[str] = typer.Option(None, help="run this bundle file instead of the default for the "
                                           "target/precision (e.g. model.int8.trt.onnx)"),
    spec: Optional[List[str]] = typer.Option(None, "--spec", help="targets/X.toml or a shipped target name: print "
                                             "PASS/FAIL per criterion, exit 1 on any FAIL (repeatable)"),
    json_out: Optional[str] = typer.Option(None, "--json", help="write results as JSON (schema nin-edge-bench/1)"),
    report: Optional[str] = typer.Option(None, help="write report.md + PNG plots + bench.json into this directory"),
    force: bool = typer.Option(False, help="replace an existing --json file / --report directory"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress lines"),
) -> None:
    """Accuracy and latency of every target with one runner and one clock; gate on targets/*.toml specs."""
    from ..bench import BenchOptions, check_specs, gate, run_bench
    from ..errors import NinEdgeError
    from ..report import print_report, write_json, write_report
    from ..specs import load_target_spec

    with guard():
        if iters is not None and seconds is not None:
            raise NinEdgeError("give --iters or --seconds, not both")
        specs = tuple(load_target_spec(s) for s in (spec or []))
        targets = tuple(t.value for t in target) if target else (() if specs else ("all",))
        opts = BenchOptions(
            bundle=bundle, targets=targets, precision=precision.value if precision else None,
            device=device.value if device else None, data=data, split=split,
            batches=tuple(parse_csv_ints(batch, "--batch")), threads=threads, warmup=warmup, iters=iters,
            seconds=seconds if seconds is not None else 1.0, timed=timed.value, accuracy=accuracy,
            max_images=max_images, artifact=artifact, specs=specs,
            progress=None if quiet else (lambda m: typer.echo(f"· {m}", err=True)))
        rep = run_bench(opts)
        verdicts = check_specs(rep, specs)
        print_report(rep, verdicts)
        if json_out:
            typer.echo(f"wrote {write_json(rep, json_out, verdicts, force=force)}")
        if report:
            typer.echo(f"wrote {write_report(rep, report, verdicts, force=force)}/report.md")
        gate(verdicts)
