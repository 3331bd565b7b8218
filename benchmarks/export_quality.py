"""INT8 quality and the choices behind `nin-edge export --int8`, measured side by side.

    .venv/bin/python benchmarks/export_quality.py /path/to/cifar10-jpeg.tar.gz [--weights W] [--parts forms,study,test]

Parts:
  forms — the ONNX Runtime CPU Q/DQ form: U8S8/S8S8 × per-tensor/per-channel weights (and the TensorRT form),
          batch-1 latency in ONNX Runtime (interleaved A B C… rounds, medians) + top-1 on held-out train images.
  study — calibration method (minmax/entropy/percentile) × size (100/500/1000 images from bundled:calib):
          top-1 of both ORT INT8 forms (and OpenVINO INT8 per size) on held-out TRAIN images — the training
          run's 5,000-image validation split, never trained on and disjoint from bundled:calib. The test split
          is never used to choose.
  test  — the defaults as shipped: `export_bundle` then fp32 vs ORT INT8 (both forms) vs OpenVINO INT8 top-1 on
          all 10,000 CIFAR-10 test images (the quality figure; not used to choose anything).
Prints Markdown tables; --json writes every number.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nin_edge.calibration import build_calibration_set  # noqa: E402
from nin_edge.checkpoint import load_model  # noqa: E402
from nin_edge.data import load_dataset  # noqa: E402
from nin_edge.export import ExportOptions, export_bundle, export_onnx, ort_logits  # noqa: E402
from nin_edge.models import fold_batchnorm  # noqa: E402
from nin_edge.preprocess import Preprocess, preprocess  # noqa: E402
from nin_edge.quantize import FORMS, QdqForm, calibrate_onnx, quantize_onnx  # noqa: E402
from nin_edge.train import split_train_val  # noqa: E402

CANDIDATES = {
    "U8S8 per-tensor": QdqForm("u8s8-pt", "QUInt8", "QInt8", per_channel=False, activation_symmetric=False),
    "U8S8 per-channel": QdqForm("u8s8-pc", "QUInt8", "QInt8", per_channel=True, activation_symmetric=False),
    "S8S8 per-tensor": QdqForm("s8s8-pt", "QInt8", "QInt8", per_channel=False, activation_symmetric=False),
    "S8S8 per-channel": QdqForm("s8s8-pc", "QInt8", "QInt8", per_channel=True, activation_symmetric=False),
    "TensorRT form (S8S8 sym, per-channel)": FORMS["tensorrt"],
}


def top1(logits, labels) -> float:
    return 100.0 * float((logits.argmax(1) == labels).mean())


def agreement(logits, ref_logits) -> float:
    return 100.0 * float((logits.argmax(1) == ref_logits.argmax(1)).mean())


def heldout_val(archive: str):
    """The training run's held-out validation split (train.split_train_val(train, 5000, seed=0))."""
    train = load_dataset(archive, "train")
    _, val = split_train_val(train, 5000, seed=0)
    calib_ids = set(load_dataset("bundled:calib").ids)
    assert not calib_ids & set(val.ids), "bundled:calib overlaps the validation split"
    return val


def latency_rounds(paths: dict[str, Path], x1: np.ndarray, threads: int, rounds: int = 7, iters: int = 300):
    import onnxruntime as ort

    sessions = {}
    for k, p in paths.items():
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.log_severity_level = 3
        s = ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"])
        for _ in range(50):
            s.run(None, {"input": x1})
        sessions[k] = s
    per: dict[str, list[float]] = {k: [] for k in paths}
    for _ in range(rounds):  # interleaved: A B C … A B C …, so background load hits every form alike
        for k, s in sessions.items():
            ts = []
            for _ in range(iters):
                t = time.perf_counter()
                s.run(None, {"input": x1})
                ts.append(time.perf_counter() - t)
            per[k].append(statistics.median(ts) * 1e3)
    return {k: statistics.median(v) for k, v in per.items()}


def part_forms(fp32: Path, val, xv, work: Path, threads: int) -> dict:
    cs = build_calibration_set("default", Preprocess())
    ranges = calibrate_onnx(fp32, cs, "entropy", work)
    paths = {"fp32": fp32}
    for name, form in CANDIDATES.items():
        paths[name] = work / f"{form.name}.onnx"
        quantize_onnx(fp32, paths[name], form, ranges, "entropy")
    lat = latency_rounds(paths, xv[:1], threads)
    ref = ort_logits(fp32, xv).argmax(1)
    rows = {}
    for name, p in paths.items():
        lg = ort_logits(p, xv)
        rows[name] = {"latency_ms_b1": lat[name], "top1_val": top1(lg, val.labels),
                      "agree_fp32": 100.0 * float((lg.argmax(1) == ref).mean())}
    print(f"\n### ONNX Runtime Q/DQ forms — batch 1, {threads} thread(s), entropy calibration on bundled:calib\n")
    print(f"| form | ms/img (median of 7 interleaved rounds) | vs fp32 | top-1 held-out val ({len(val)}) | same top-1 as fp32 |")
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['latency_ms_b1']:.3f} | {rows['fp32']['latency_ms_b1'] / r['latency_ms_b1']:.2f}× "
              f"| {r['top1_val']:.2f}% | {r['agree_fp32']:.2f}% |")
    return rows


def part_study(fp32: Path, onnx_for_ov: Path, val, xv, work: Path, sizes, methods, with_ov: bool) -> dict:
    out = {}
    ref = ort_logits(fp32, xv)
    base = top1(ref, val.labels)
    print(f"\n### Calibration method × size — top-1 on {len(val)} held-out train images (fp32: {base:.2f}%)\n")
    print("top-1 % (in brackets: % of images with the same top-1 as fp32 — less noisy than top-1 itself)\n")
    print("| method | images | ORT CPU form | TensorRT form | calibrate s |" + (" OpenVINO INT8 (NNCF) |" if with_ov else ""))
    print("|---|---|---|---|---|" + ("---|" if with_ov else ""))
    ov_done = {}
    for method in methods:
        for size in sizes:
            spec = work / f"c{size}.toml"
            spec.write_text(f'source = "bundled:calib"\nsize = {size}\nsampling = "stratified"\nseed = 0\n')
            cs = build_calibration_set(str(spec), Preprocess())
            t = time.perf_counter()
            ranges = calibrate_onnx(fp32, cs, method, work / f"{method}-{size}")
            tcal = time.perf_counter() - t
            r = {"calibrate_s": tcal}
            for key, form in (("ort-cpu", FORMS["ort-cpu"]), ("tensorrt", FORMS["tensorrt"])):
                p = work / f"{method}-{size}-{key}.onnx"
                quantize_onnx(fp32, p, form, ranges, method)
                lg = ort_logits(p, xv)
                r[key] = top1(lg, val.labels)
                r[key + "_agree"] = agreement(lg, ref)
            ov_cell = ""
            ov_key = ("minmax" if method == "minmax" else "default", size)
            if with_ov:
                if ov_key not in ov_done:
                    from nin_edge.build.openvino import convert_onnx, infer_ir, save_ir
                    from nin_edge.quantize import quantize_openvino

                    q, _ = quantize_openvino(convert_onnx(onnx_for_ov), cs, method)
                    xml = work / f"ov-{ov_key[0]}-{size}.xml"
                    save_ir(q, xml, compress_to_fp16=False)
                    lg = infer_ir(xml, xv)
                    ov_done[ov_key] = (top1(lg, val.labels), agreement(lg, ref))
                r["openvino"], r["openvino_agree"] = ov_done[ov_key]
                ov_cell = f" {r['openvino']:.2f} ({r['openvino_agree']:.2f}) |"
            out[f"{method}/{size}"] = r
            print(f"| {method} | {size} | {r['ort-cpu']:.2f} ({r['ort-cpu_agree']:.2f}) "
                  f"| {r['tensorrt']:.2f} ({r['tensorrt_agree']:.2f}) | {tcal:.1f} |{ov_cell}", flush=True)
    out["fp32"] = base
    return out


def part_test(archive: str, weights: str | None, work: Path) -> dict:
    from nin_edge.build.openvino import infer_ir

    test = load_dataset(archive, "test")
    xt = preprocess(test.images)
    r = export_bundle(ExportOptions(weights=weights, out=str(work / "bundle"), int8=True, progress=False))
    root = r.bundle.root
    rows = {}
    ref = None
    for rel in ("model.onnx", "model.int8.onnx", "model.int8.trt.onnx", "openvino/model.xml",
                "openvino/model.int8.xml"):
        lg = ort_logits(root / rel, xt) if rel.endswith(".onnx") else infer_ir(root / rel, xt)
        if ref is None:
            ref = lg
        rows[rel] = {"top1": top1(lg, test.labels), "agree_fp32": 100.0 * float((lg.argmax(1) == ref.argmax(1)).mean())}
    f = rows["model.onnx"]["top1"]
    print(f"\n### Defaults as shipped (method {r.bundle.meta['calibration']['method']}, "
          f"{r.bundle.meta['calibration']['count']} calibration images) — all {len(test)} CIFAR-10 test images\n")
    print("| artifact | top-1 | drop vs fp32 (points) | same top-1 as fp32 |")
    print("|---|---|---|---|")
    for rel, v in rows.items():
        print(f"| {rel} | {v['top1']:.2f}% | {f - v['top1']:+.2f} | {v['agree_fp32']:.2f}% |")
    print(f"\nexport --int8 took {r.seconds:.1f} s (stages: "
          + ", ".join(f"{k} {v:.1f}" for k, v in r.stages.items()) + ")")
    return {"rows": rows, "export_seconds": r.seconds, "stages": r.stages}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("archive", help="CIFAR-10 archive (JPEG image-folder tar.gz or the python tarball)")
    ap.add_argument("--weights", default=None, help="checkpoint (default: the shipped weights)")
    ap.add_argument("--parts", default="forms,study,test")
    ap.add_argument("--sizes", default="100,500,1000")
    ap.add_argument("--methods", default="minmax,entropy,percentile")
    ap.add_argument("--no-openvino-study", action="store_true")
    ap.add_argument("--threads", type=int, default=1, help="ORT threads for the latency part")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    parts = set(a.parts.split(","))
    results: dict = {"weights": a.weights or "shipped"}
    model, meta = load_model(a.weights)
    results["weights_meta"] = {k: meta.get(k) for k in ("epoch", "val_top1", "test_top1", "note")}
    val = meta.get("val_top1")
    print(f"weights: {meta['weights']} (epoch {meta.get('epoch')}, "
          + (f"validation top-1 {val:.2f}%)" if val is not None else "no validation split)"))
    with tempfile.TemporaryDirectory(prefix="export-quality-") as d:
        work = Path(d)
        fp32 = work / "model.onnx"
        export_onnx(fold_batchnorm(model), fp32, 32, 17)
        if parts & {"forms", "study"}:
            val = heldout_val(a.archive)
            xv = preprocess(val.images)
        if "forms" in parts:
            results["forms"] = part_forms(fp32, val, xv, work, a.threads)
        if "study" in parts:
            results["study"] = part_study(fp32, fp32, val, xv, work, [int(s) for s in a.sizes.split(",")],
                                          a.methods.split(","), not a.no_openvino_study)
        if "test" in parts:
            results["test"] = part_test(a.archive, a.weights, work)
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
