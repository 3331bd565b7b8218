"""Accuracy-aware INT8 on a NIN that needs it: `nin-edge export --max-drop` vs NNCF's quantize_with_accuracy_control.

The case: a *sensitised* copy of the shipped weights (nin_edge.diagnose.sensitised_copy). One BatchNorm
channel before a ReLU is multiplied by --factor and the next conv's weights for that channel divided by it:
the network computes the same function (checked below, max |Δlogit|), but the activation between the two
convs now has one channel --factor× larger, so a per-tensor activation scale sized for it leaves the other
channels a few int8 levels, and the next conv's weights for the big channel shrink towards zero. An
outlier channel is the textbook way plain post-training INT8 loses accuracy.

Steps, all on the same model, calibration set and data:
  1. plain `export --int8` (ORT CPU form, TensorRT form, NNCF IR)              → top-1 drop of each artifact
  2. `nin-edge diagnose` on it                                                  → the ranking (top 3 shown)
  3. `export --int8 --max-drop D`                                               → kept-float layers, top-1, time
  4. nncf.quantize_with_accuracy_control on the fp32 IR (same NNCF settings, same calibration set,
     validation = the same held-out images, max_drop = D points absolute)       → reverted layers, top-1, time
  5. latency at batch 1 (and --batches), interleaved A B A B…, medians: fp32 vs plain INT8 vs mixed INT8
     (ONNX Runtime), and fp32 vs plain INT8 vs ours vs NNCF-AC (OpenVINO)

Top-1 is reported on the choice set (--data, default bundled:val: what both searches see) and on a second
held-out set the searches never saw (--eval-data, default bundled:eval).

    .venv/bin/python benchmarks/accuracy_control.py [--weights W] [--max-drop 0.3] [--json out.json]
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    return round(100.0 * float((logits.argmax(1) == labels).mean()), 2)


def ov_compile(model_or_xml):
    import openvino as ov

    core = ov.Core()
    m = core.read_model(str(model_or_xml)) if isinstance(model_or_xml, (str, Path)) else model_or_xml
    # as the OpenVINO runner: f32 inference precision (no silent bf16 on AVX-512 BF16), one latency stream
    return core.compile_model(m, "CPU", {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1,
                                         "INFERENCE_PRECISION_HINT": "f32"})


def ov_logits(compiled, x: np.ndarray, batch: int = 250) -> np.ndarray:
    req = compiled.create_infer_request()
    return np.concatenate([np.asarray(req.infer({0: x[i:i + batch]})[compiled.output(0)]).copy()
                           for i in range(0, len(x), batch)])


def run_export(weights: Path, out: Path, calib: str, max_drop: float | None) -> tuple[float, dict]:
    from nin_edge.bundle import Bundle
    from nin_edge.export import ExportOptions, export_bundle

    t = time.perf_counter()
    export_bundle(ExportOptions(weights=str(weights), out=str(out), int8=True, calib=calib,
                                formats=("onnx", "openvino"), progress=False, force=True, max_drop=max_drop))
    return time.perf_counter() - t, Bundle.load(out).meta


def nncf_accuracy_control(fp32_xml: Path, cs, method: str, xv: np.ndarray, yv: np.ndarray, max_drop_points: float):
    """nncf.quantize_with_accuracy_control with the same quantization settings nin-edge's quantize_openvino
    uses (performance preset, the calibration set's batches, min-max ranges for --method minmax)."""
    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    adv = AdvancedQuantizationParameters()
    if method == "minmax":
        adv = AdvancedQuantizationParameters(activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX)
    # one image per validation item, so NNCF can rank layers per sample
    items = [(xv[i:i + 1], int(yv[i])) for i in range(len(xv))]
    val = nncf.Dataset(items, lambda item: item[0])

    def validate(compiled, data) -> float:
        out = compiled.output(0)
        hits = [int(np.asarray(compiled(x)[out]).argmax() == y) for x, y in data]
        return float(np.mean(hits))

    model = ov.Core().read_model(str(fp32_xml))
    t = time.perf_counter()
    q = nncf.quantize_with_accuracy_control(
        model, cs.nncf_dataset(), val, validate, max_drop=max_drop_points / 100.0,
        drop_type=nncf.DropType.ABSOLUTE, preset=nncf.QuantizationPreset.PERFORMANCE,
        subset_size=cs.num_batches, advanced_quantization_parameters=adv)
    return q, time.perf_counter() - t


def latency(models: dict, batch: int, x: np.ndarray, rounds: int, iters: int) -> dict[str, dict]:
    """Median ms per call, interleaved: each round runs every model `iters` times in turn."""
    xb = np.ascontiguousarray(x[:batch])
    run = {}
    for k, (kind, obj) in models.items():
        if kind == "ort":
            name = obj.get_inputs()[0].name
            run[k] = (lambda s=obj, n=name: s.run(None, {n: xb}))
        else:
            req = obj.create_infer_request()
            run[k] = (lambda r=req: r.infer({0: xb}))
    for f in run.values():
        for _ in range(10):
            f()
    times = {k: [] for k in run}
    per_round = {k: [] for k in run}
    for _ in range(rounds):
        for k, f in run.items():
            ts = []
            for _ in range(iters):
                t = time.perf_counter_ns()
                f()
                ts.append((time.perf_counter_ns() - t) / 1e6)
            times[k] += ts
            per_round[k].append(statistics.median(ts))
    return {k: {"median_ms": round(statistics.median(v), 4),
                "round_spread": round((max(per_round[k]) - min(per_round[k])) / statistics.median(per_round[k]), 3)}
            for k, v in times.items()}


def measure_latency(work: Path, batches: list[int], x: np.ndarray, rounds: int, iters: int) -> dict:
    """ONNX Runtime models interleaved with each other, then OpenVINO models with each other: ORT's worker
    threads spin after each run and starve OpenVINO's if the two are interleaved (measured: OV rows spread
    80-180% that way), and the ratios that matter are within one backend."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3

    def ort_s(p):
        return ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"])

    groups = [
        {"ORT fp32": ("ort", ort_s(work / "plain/model.onnx")),
         "ORT INT8 plain": ("ort", ort_s(work / "plain/model.int8.onnx")),
         "ORT INT8 --max-drop": ("ort", ort_s(work / "maxdrop/model.int8.onnx"))},
        {"OV fp32": ("ov", ov_compile(work / "plain/openvino/model.xml")),
         "OV INT8 plain": ("ov", ov_compile(work / "plain/openvino/model.int8.xml")),
         "OV INT8 --max-drop": ("ov", ov_compile(work / "maxdrop/openvino/model.int8.xml")),
         "OV INT8 NNCF-AC": ("ov", ov_compile(work / "nncf_ac.xml"))},
    ]
    out = {}
    for b in batches:
        print(f"latency batch {b} …", flush=True)
        out[b] = {}
        for g in groups:
            out[b].update(latency(g, b, x, rounds, max(5, iters // max(1, b // 8))))
    return out


def print_latency(lat: dict) -> None:
    for b, rows in lat.items():
        print(f"\nlatency, batch {b} (median ms, interleaved within each backend; spread of per-round medians):")
        for k, v in rows.items():
            print(f"  {k:<22}{v['median_ms']:>9.3f}  ({v['round_spread']:.0%})")
        for base, new in (("ORT INT8 plain", "ORT INT8 --max-drop"), ("OV INT8 plain", "OV INT8 --max-drop"),
                          ("OV INT8 plain", "OV INT8 NNCF-AC"), ("OV INT8 NNCF-AC", "OV INT8 --max-drop")):
            print(f"  {new} / {base}: {rows[new]['median_ms'] / rows[base]['median_ms']:.2f}×")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=None, help="checkpoint to sensitise (default: the shipped weights)")
    ap.add_argument("--pair", type=int, default=3, help="which conv→ReLU→conv pair to sensitise")
    ap.add_argument("--factor", type=float, default=50.0)
    ap.add_argument("--calib", default="default")
    ap.add_argument("--max-drop", type=float, default=0.3)
    ap.add_argument("--data", default="bundled:val", help="held-out choice set (both searches)")
    ap.add_argument("--eval-data", default="bundled:eval", help="second held-out set, never seen by the searches")
    ap.add_argument("--batches", default="1,64")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--json", default=None)
    ap.add_argument("--work", default=None, help="keep the bundles here (default: a temporary directory)")
    ap.add_argument("--latency-only", action="store_true",
                    help="only re-measure latency of the models an earlier run left in --work")
    a = ap.parse_args()
    if a.latency_only:
        from nin_edge.data import load_dataset
        from nin_edge.preprocess import Preprocess, preprocess

        if not a.work or not (Path(a.work) / "nncf_ac.xml").exists():
            ap.error("--latency-only needs --work with the models of an earlier full run")
        x = preprocess(load_dataset(a.eval_data).images, Preprocess())
        lat = measure_latency(Path(a.work), [int(v) for v in a.batches.split(",")], x, a.rounds, a.iters)
        print_latency(lat)
        if a.json:
            Path(a.json).write_text(json.dumps({"latency": lat}, indent=2) + "\n")
        return

    import torch

    from nin_edge.calibration import build_calibration_set
    from nin_edge.checkpoint import load_model, make_checkpoint
    from nin_edge.data import load_dataset
    from nin_edge.diagnose import DiagnoseOptions, diagnose, ir_float_layers
    from nin_edge.export import ort_logits
    from nin_edge.preprocess import preprocess

    work = Path(a.work or tempfile.mkdtemp(prefix="nin-edge-ac-"))
    work.mkdir(parents=True, exist_ok=True)
    model, meta = load_model(a.weights)
    from nin_edge.diagnose import sensitised_copy

    sens = sensitised_copy(model, a.pair, factor=a.factor)
    with torch.no_grad():
        xr = torch.randn(64, 3, 32, 32)
        same = float((model(xr) - sens(xr)).abs().max())
    wpath = work / "sensitised.pt"
    note = f"sensitised pair {a.pair} x{a.factor}"
    torch.save(make_checkpoint(sens, meta["arch"], meta["classes"], note=note), wpath)
    print(f"weights: {meta['weights']} (val_top1 recorded: {meta.get('val_top1')}); sensitised pair {a.pair} "
          f"×{a.factor}: max |Δlogit| vs original on random input = {same:.2e}")

    res: dict = {"weights": str(meta["weights"]), "pair": a.pair, "factor": a.factor, "max_drop": a.max_drop,
                 "data": a.data, "eval_data": a.eval_data, "max_abs_logit_change_from_sensitising": same}

    t_plain, m_plain = run_export(wpath, work / "plain", a.calib, None)
    t_md, m_md = run_export(wpath, work / "maxdrop", a.calib, a.max_drop)
    res["export_seconds"] = {"plain": round(t_plain, 1), "max_drop": round(t_md, 1),
                             "accuracy_stage": m_md["export"]["stages"].get("accuracy")}
    ac = m_md["accuracy_control"]
    res["ours"] = {"keep_float": ac["keep_float"], "search_seconds": ac["seconds"], "trials": len(ac["trials"])}
    method = m_plain["calibration"]["method"]

    from nin_edge.preprocess import Preprocess

    pp = Preprocess.from_dict(m_plain["preprocess"])
    sets = {}
    for name in (a.data, a.eval_data):
        ds = load_dataset(name)
        sets[name] = (preprocess(ds.images, pp), ds.labels)

    print("diagnose on the plain bundle …", flush=True)
    d = diagnose(DiagnoseOptions(bundle=str(work / "plain"), data=a.data))
    res["diagnose"] = {"seconds": d.seconds, "top3": [{"node": s.node, "delta_top1": s.delta_top1,
                                                       "sqnr_db": s.sqnr_db, "local_sqnr_db": s.local_sqnr_db,
                                                       "best_method": s.best_method} for s in d.layers[:3]],
                       "notes": list(d.notes)}

    print("nncf.quantize_with_accuracy_control …", flush=True)
    cs = build_calibration_set(a.calib, pp)
    xv, yv = sets[a.data]
    q_ac, t_ac = nncf_accuracy_control(work / "plain/openvino/model.xml", cs, method, xv, yv, a.max_drop)
    import openvino as ov

    ov.save_model(q_ac, str(work / "nncf_ac.xml"), compress_to_fp16=False)
    fl = ir_float_layers(ov.Core().read_model(str(work / "nncf_ac.xml")))
    nncf_float = sorted(n.removesuffix("/WithoutBiases") for n, f in fl.items() if f)
    res["nncf_accuracy_control"] = {"seconds": round(t_ac, 1), "keep_float": nncf_float}

    # ---- top-1 of everything, on both sets
    models_acc = {
        "fp32 (model.onnx)": ("ort", work / "plain/model.onnx"),
        "ORT INT8 plain": ("ort", work / "plain/model.int8.onnx"),
        "ORT INT8 --max-drop": ("ort", work / "maxdrop/model.int8.onnx"),
        "TRT-form INT8 plain": ("ort", work / "plain/model.int8.trt.onnx"),
        "TRT-form INT8 --max-drop": ("ort", work / "maxdrop/model.int8.trt.onnx"),
        "OpenVINO INT8 plain": ("ov", work / "plain/openvino/model.int8.xml"),
        "OpenVINO INT8 --max-drop": ("ov", work / "maxdrop/openvino/model.int8.xml"),
        "OpenVINO INT8 NNCF-AC": ("ov", work / "nncf_ac.xml"),
    }
    acc = {}
    for label, (kind, path) in models_acc.items():
        acc[label] = {}
        for sname, (x, y) in sets.items():
            lg = ort_logits(path, x) if kind == "ort" else ov_logits(ov_compile(path), x)
            acc[label][sname] = top1(lg, y)
    res["top1"] = acc

    res["latency"] = measure_latency(work, [int(v) for v in a.batches.split(",")], sets[a.eval_data][0],
                                     a.rounds, a.iters)

    # ---- print
    fp = acc["fp32 (model.onnx)"]
    print(f"\nsensitised {meta['arch']} (pair {a.pair} ×{a.factor}), calibration {a.calib} ({method}), "
          f"--max-drop {a.max_drop}")
    print(f"{'model':<28}{a.data:>14}{'drop':>7}{a.eval_data:>15}{'drop':>7}")
    for label, r in acc.items():
        print(f"{label:<28}{r[a.data]:>13.2f}%{fp[a.data] - r[a.data]:>7.2f}{r[a.eval_data]:>14.2f}%"
              f"{fp[a.eval_data] - r[a.eval_data]:>7.2f}")
    print(f"\nkept in float — ours: {ac['keep_float']}  ({ac['seconds']:.1f} s search, {len(ac['trials'])} trials; "
          f"export {t_plain:.1f} s plain vs {t_md:.1f} s with --max-drop)")
    print(f"kept in float — NNCF-AC: {nncf_float}  ({t_ac:.1f} s)")
    print("diagnose top 3: " + ", ".join(f"{s['node']} (Δ {s['delta_top1']:+.2f})" for s in res["diagnose"]["top3"])
          + f"  [{d.seconds:.1f} s]")
    print_latency(res["latency"])
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
