from enum import Enum

import typer

from . import app
from ._common import guard


class OrtCpuChoice(str, Enum):
    any = "any"
    vnni = "vnni"


class TtaChoice(str, Enum):
    none = "none"
    flip = "flip"


class MethodChoice(str, Enum):
    minmax = "minmax"
    entropy = "entropy"
    percentile = "percentile"


@app.command("export")
def export_cmd(
    weights: str = typer.Option(None, help="checkpoint (.pt); default: the shipped nin-cifar weights"),
    int8: bool = typer.Option(False, "--int8", help="also write INT8 models (ORT Q/DQ, TensorRT Q/DQ, OpenVINO IR)"),
    calib: str = typer.Option("default", help="calibration spec (shipped name or .toml) or a folder of images; "
                              "images whose pixels are also in --eval-data are refused"),
    method: MethodChoice = typer.Option(MethodChoice.minmax, help="activation range calibration method "
                                        "(minmax: the default chosen on held-out data, see benchmarks/RESULTS.md)"),
    formats: str = typer.Option("onnx,openvino", help="comma-separated: onnx, openvino, tensorrt "
                                "(model.onnx is always written: everything else is built from it)"),
    opset: int = typer.Option(17, help="ONNX opset (13-20)"),
    out: str = typer.Option("bundle", help="bundle directory to write"),
    force: bool = typer.Option(False, "--force", help="replace an existing bundle at --out"),
    eval_data: str = typer.Option("bundled:eval", help="images for the parity check and per-artifact top-1"),
    max_drop: float = typer.Option(None, help="accuracy-aware INT8: max top-1 drop in points vs fp32 on "
                                   "--max-drop-data; the most sensitive layers are kept in float until it holds"),
    max_drop_data: str = typer.Option("bundled:val", help="held-out images --max-drop is measured on "
                                      "(refused if they overlap the calibration images)"),
    ort_cpu: OrtCpuChoice = typer.Option(OrtCpuChoice.any, help="CPUs model.int8.onnx is for: any (7-bit "
                                         "weights, exact on every x86 and ARM CPU) or vnni (8-bit weights; x86 CPUs "
                                         "without VNNI saturate int16 sums and lose accuracy)"),
    tta: TtaChoice = typer.Option(TtaChoice.none, help="test-time augmentation inside every artifact: flip = "
                                  "softmax averaged over the image and its mirror, ~2x the latency (shipped "
                                  "weights: +0.36 top-1 on the test set, -0.08 on their validation split; "
                                  "benchmarks/RESULTS.md)"),
    quiet: bool = typer.Option(False, "--quiet", help="no per-stage progress"),
) -> None:
    """Export weights to a verified deployment bundle: ONNX (+INT8 Q/DQ), OpenVINO IR, TensorRT script."""
    with guard():
        from ..export import ExportOptions, export_bundle

        r = export_bundle(ExportOptions(
            weights=weights, out=out, int8=int8, calib=calib, method=method.value,
            formats=tuple(f for f in formats.split(",") if f.strip()), opset=opset, force=force,
            progress=not quiet, eval_data=eval_data, max_drop=max_drop, max_drop_data=max_drop_data,
            ort_cpu=ort_cpu.value, tta=tta.value))
        ev = r.bundle.meta["evaluation"]
        if r.bundle.tta != "none":
            typer.echo(f"test-time augmentation: {r.bundle.tta} (inside every artifact; "
                       f"{r.bundle.forward_passes} forward passes per image)")
        typer.echo(f"bundle written: {r.bundle.root} in {r.seconds:.1f} s "
                   f"(top-1 on {ev['images']} images of {ev['data']}; agreement = same top-1 as fp32 ONNX)")
        for rel, info in r.bundle.artifacts.items():
            t1 = info.get("top1_at_export")
            ag = info.get("top1_agreement_with_fp32")
            typer.echo(f"  {rel:<26} {info['precision']:<5} {info['bytes'] / 1e6:6.2f} MB"
                       + (f"  top-1 {t1:5.1f}%" if t1 is not None else "")
                       + (f"  agreement {ag:5.1f}%" if ag is not None else ""))
        ac = r.bundle.meta.get("accuracy_control")
        if ac:  # issue 9: what --max-drop chose
            kept = ", ".join(ac["keep_float"]) or "none"
            typer.echo(f"--max-drop {ac['max_drop']:g} on {ac['images']} images of {ac['data']}: fp32 "
                       f"{ac['fp32_top1']:.2f}%, final drop {ac['final_drop']:.2f} points; kept in float: {kept}")
            lat = ac.get("latency_ms_batch1") or {}
            if lat:
                typer.echo("  quick batch-1 latency (ORT CPU form, ms): "
                           + ", ".join(f"{k} {v:.3f}" for k, v in lat.items()))
