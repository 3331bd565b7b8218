"""What `nin-edge export --tta flip` buys and costs, measured side by side in one run.

    .venv/bin/python benchmarks/tta_cost.py [--data /path/to/cifar10-jpeg.tar.gz] [--weights W] [--rounds 9]

Exports two INT8 bundles of the same weights, one plain and one with flip TTA in every artifact, then
  accuracy — top-1 of every artifact of both bundles on the weights' validation split (the 5,000 training images
             their run held out; needs --data = the archive they trained on) and on all 10,000 test images;
  latency  — each INT8 runner (ONNX Runtime, OpenVINO) of both bundles at batch 1 and 64, interleaved
             (plain, flip, plain, flip … for `--rounds` rounds, each a `time_call` of ~0.4 s), reported as the
             median per-round ratio flip ÷ plain: the machine drifts ±20–40 % between rounds, a ratio taken
             within one round does not.
Prints Markdown tables; --json writes every number.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nin_edge.bench import _batch_of, predict_logits, time_call  # noqa: E402
from nin_edge.bundle import Bundle  # noqa: E402
from nin_edge.export import ExportOptions, export_bundle  # noqa: E402
from nin_edge.preprocess import preprocess  # noqa: E402
from nin_edge.runners.base import available_runners, create_runner  # noqa: E402

ARTIFACTS = [("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "fp32"), ("openvino", "int8")]


def _top1(bundle: Bundle, runner: str, precision: str, x: np.ndarray, labels: np.ndarray) -> float:
    with create_runner(runner, bundle, precision) as r:
        return round(100.0 * float((predict_logits(r, x, 250).argmax(1) == labels).mean()), 2)


def accuracy(bundles: dict[str, Bundle], data: str, weights: str | None, backends: list[str]) -> dict:
    from nin_edge.bnupdate import run_split
    from nin_edge.checkpoint import load_checkpoint, shipped_weights
    from nin_edge.data import load_dataset

    where = Path(weights) if weights else shipped_weights()
    _, val, _ = run_split(load_checkpoint(where), data, where)
    test = load_dataset(data, "test")
    sets = {"test": test} if val is None else {"validation": val, "test": test}
    out: dict = {}
    for split, ds in sets.items():
        x = preprocess(ds.images)
        for b, p in ARTIFACTS:
            if b not in backends:
                continue
            for name, bundle in bundles.items():
                t0 = time.perf_counter()
                out.setdefault(split, {}).setdefault(f"{b} {p}", {})[name] = _top1(bundle, b, p, x, ds.labels)
                print(f"  {split:10} {b} {p} {name}: {out[split][f'{b} {p}'][name]:.2f}% "
                      f"({len(ds)} images, {time.perf_counter() - t0:.0f} s)", flush=True)
    return out


def latency(bundles: dict[str, Bundle], backends: list[str], batches: list[int], rounds: int) -> dict:
    from nin_edge.data import load_dataset

    x_all = preprocess(load_dataset("bundled:eval").images)
    out: dict = {}
    for b in backends:
        runners = {n: create_runner(b, bundle, "int8") for n, bundle in bundles.items()}
        try:
            for batch in batches:
                x = _batch_of(x_all, batch)
                per: dict[str, list[float]] = {n: [] for n in runners}
                for _ in range(rounds):
                    for n, r in runners.items():  # plain, flip, plain, flip …
                        r.prepare(batch)
                        st = time_call(lambda r=r: r.infer(x), batch, warmup=5, seconds=0.4, rounds=1)
                        per[n].append(st.median_ms)
                ratios = [f / p for p, f in zip(per["plain"], per["flip"])]
                out[f"{b} int8 batch {batch}"] = {
                    "plain_median_ms": statistics.median(per["plain"]), "flip_median_ms": statistics.median(per["flip"]),
                    "ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
                    "rounds": rounds}
                row = out[f"{b} int8 batch {batch}"]
                print(f"  {b} int8 batch {batch}: plain {row['plain_median_ms']:.4f} ms, flip "
                      f"{row['flip_median_ms']:.4f} ms, flip/plain {row['ratio_median']:.2f}× "
                      f"({row['ratio_min']:.2f}–{row['ratio_max']:.2f})", flush=True)
        finally:
            for r in runners.values():
                r.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="the CIFAR-10 archive the weights trained on (accuracy); omit for latency only")
    ap.add_argument("--weights", help="checkpoint (default: the shipped weights)")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--batches", default="1,64")
    ap.add_argument("--json", help="write every number here")
    a = ap.parse_args()
    avail = available_runners()
    backends = [b for b in ("onnxruntime", "openvino") if avail.get(b) is None]
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    with tempfile.TemporaryDirectory(prefix="tta-cost-") as tmp:
        bundles = {}
        for name, tta in (("plain", "none"), ("flip", "flip")):
            t0 = time.perf_counter()
            export_bundle(ExportOptions(weights=a.weights, out=f"{tmp}/{name}", int8=True, progress=False, tta=tta,
                                        formats=("onnx", "openvino") if "openvino" in backends else ("onnx",)))
            bundles[name] = Bundle.load(f"{tmp}/{name}")
            print(f"exported {name} bundle in {time.perf_counter() - t0:.1f} s", flush=True)
        res = {"load_average_before": load, "backends": backends,
               "latency": latency(bundles, backends, [int(b) for b in a.batches.split(",")], a.rounds)}
        if a.data:
            res["accuracy"] = accuracy(bundles, a.data, a.weights, backends)
    res["load_average_after"] = os.getloadavg() if hasattr(os, "getloadavg") else None

    print("\n| INT8 runner, batch | plain median ms | flip median ms | flip ÷ plain (median of rounds, range) |")
    print("|---|---|---|---|")
    for k, r in res["latency"].items():
        print(f"| {k} | {r['plain_median_ms']:.4f} | {r['flip_median_ms']:.4f} | **{r['ratio_median']:.2f}×** "
              f"({r['ratio_min']:.2f}–{r['ratio_max']:.2f}) |")
    for split, rows in res.get("accuracy", {}).items():
        print(f"\n| top-1 on {split} | plain | flip | Δ |")
        print("|---|---|---|---|")
        for k, v in rows.items():
            print(f"| {k} | {v['plain']:.2f} % | {v['flip']:.2f} % | {v['flip'] - v['plain']:+.2f} |")
    print(f"\nload average before {res['load_average_before']}, after {res['load_average_after']}")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
