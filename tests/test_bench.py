"""bench.py (the timing loop, accuracy, target all/auto), report.py (JSON schema, Markdown, plots), and the CLI."""
from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from nin_edge.bench import SCHEMA, BenchOptions, _stats, accuracy_of, check_specs, run_bench, time_call
from nin_edge.cli import app
from nin_edge.errors import NinEdgeError
from nin_edge.report import LATENCY_KEYS, ROW_KEYS, TOP_LEVEL_KEYS, to_json_dict, write_json, write_report

FAST = dict(iters=10, warmup=2, rounds=2, max_images=64)


# --------------------------------------------------------------------------- the loop and the statistics
def test_stats_figures():
    ns = [[1_000_000, 2_000_000, 3_000_000], [4_000_000, 5_000_000]]  # ms 1..5 in two rounds
    s = _stats(8, ns, warmup=3)
    assert s.iters == 5 and s.warmup == 3 and s.batch == 8
    assert s.median_ms == pytest.approx(3.0) and s.mean_ms == pytest.approx(3.0)
    assert s.std_ms == pytest.approx(np.std([1, 2, 3, 4, 5]))
    assert s.cv == pytest.approx(s.std_ms / 3.0)
    assert s.p90_ms == pytest.approx(np.percentile([1, 2, 3, 4, 5], 90))
    assert s.images_per_s == pytest.approx(8 * 1000 / 3.0)
    assert s.round_medians_ms == (2.0, 4.5) and s.noisy  # 4.5 vs 2.0: far more than 10% apart
    assert not _stats(1, [[1_000_000], [1_050_000]], 0).noisy


def test_time_call_discards_warmup_and_counts_iters():
    calls = []
    s = time_call(lambda: calls.append(1), batch=1, warmup=7, iters=20, rounds=4)
    assert len(calls) == 27 and s.iters == 20 and len(s.round_medians_ms) == 4 and len(s.samples_ms) == 20
    calls.clear()
    s = time_call(lambda: calls.append(1), batch=1, warmup=0, seconds=0.05, rounds=2)
    assert s.iters == len(calls) and s.iters >= 6  # time-bounded, at least 3 per round


def test_accuracy_of():
    labels = np.array([0, 1, 2, 3])
    logits = np.eye(4, 10, dtype=np.float32)
    logits[3] = 0
    logits[3, 5], logits[3, 3] = 2.0, 1.0  # top-1 wrong, top-5 right
    ref = np.eye(4, 10, dtype=np.float32)
    a = accuracy_of(logits, labels, ref, ref_top1=100.0)
    assert (a.top1, a.top5, a.agreement, a.top1_drop) == (75.0, 100.0, 75.0, 25.0)
    assert a.max_abs_logit_diff == pytest.approx(2.0)


@pytest.mark.parametrize("kw,needle", [
    (dict(batches=(0,)), "positive integer"),
    (dict(batches=(1, -2)), "positive integer"),
    (dict(targets=("tflite",)), "unknown target 'tflite'"),
    (dict(precision="int4"), "unknown precision 'int4'"),
    (dict(threads=0), "--threads 0"),
    (dict(seconds=0), "--seconds"),
    (dict(timed="everything"), "--timed"),
    (dict(targets=("all",), artifact="model.int8.trt.onnx"), "--artifact needs exactly one"),
])
def test_options_rejected(kw, needle):
    with pytest.raises(NinEdgeError, match=needle):
        BenchOptions(**kw).validate()


# --------------------------------------------------------------------------- run_bench on the default bundle
@pytest.fixture(scope="module")
def report_ort(default_bundle):
    return run_bench(BenchOptions(bundle=str(default_bundle.root), targets=("onnxruntime",), precision="int8",
                                  batches=(1, 4), threads=2, **FAST))


def test_run_bench_row(report_ort, default_bundle):
    r = report_ort
    assert r.schema == SCHEMA and r.reference is not None and r.reference.artifact == "model.onnx"
    assert r.data == {"source": "bundled:eval", "split": "test", "images": 64}
    assert r.bundle["arch"] == default_bundle.arch and len(r.bundle["sha256"]) == 64
    (row,) = r.rows
    assert row.status == "ok" and row.artifact == "model.int8.onnx" and row.threads == 2
    assert row.executed["provider"] == "CPUExecutionProvider"
    assert row.artifact_bytes == default_bundle.artifacts["model.int8.onnx"]["bytes"]
    assert [s.batch for s in row.latency] == [1, 4] and all(s.iters == 10 for s in row.latency)
    assert all(0 < s.median_ms <= s.p99_ms for s in row.latency)
    assert row.accuracy.images == 64 and 0 <= row.accuracy.top1 <= 100 and row.accuracy.agreement >= 80
    assert row.accuracy.top1_drop == pytest.approx(r.reference.top1 - row.accuracy.top1)
    assert row.peak_rss_mb > 0
    assert r.settings["timed"] == "inference" and r.settings["affinity"]


def test_json_schema(report_ort, tmp_path):
    d = to_json_dict(report_ort)
    assert tuple(d) == TOP_LEVEL_KEYS and d["schema"] == "nin-edge-bench/1"
    assert tuple(d["rows"][0]) == ROW_KEYS and tuple(d["rows"][0]["latency"][0]) == LATENCY_KEYS
    for key in ("versions", "cpu", "gpus"):
        assert key in d["environment"]
    assert set(d["rows"][0]["accuracy"]) == {"images", "top1", "top5", "agreement", "top1_drop", "max_abs_logit_diff"}
    p = write_json(report_ort, tmp_path / "b.json")
    back = json.loads(p.read_text())
    assert back["rows"][0]["latency"][0]["median_ms"] == d["rows"][0]["latency"][0]["median_ms"]
    with pytest.raises(NinEdgeError, match="already exists"):
        write_json(report_ort, p)
    assert "samples_ms" not in to_json_dict(report_ort, samples=False)["rows"][0]["latency"][0]


def test_markdown_and_plots(report_ort, tmp_path):
    out = write_report(report_ort, tmp_path / "rep")
    md = (out / "report.md").read_text()
    assert "onnxruntime int8 cpu" in md and "latency_distribution.png" in md and "accuracy_vs_latency.png" in md
    for f in ("latency_distribution.png", "accuracy_vs_latency.png"):
        assert (out / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "bench.json").read_text())["schema"] == SCHEMA
    with pytest.raises(NinEdgeError, match="already exists"):
        write_report(report_ort, out)


@pytest.mark.slow
def test_target_all_lists_every_backend(default_bundle):
    r = run_bench(BenchOptions(bundle=str(default_bundle.root), targets=("all",), iters=4, warmup=1, rounds=1,
                               max_images=32))
    runners = {row.runner for row in r.rows}
    assert runners == {"torch", "onnxruntime", "openvino", "tensorrt"} - (set() if _have_ov() else {"openvino"})
    ok = [row for row in r.rows if row.status == "ok"]
    assert {(row.runner, row.precision) for row in ok} >= {("torch", "fp32"), ("onnxruntime", "fp32"),
                                                           ("onnxruntime", "int8")}
    assert any(row.artifact == "model.int8.trt.onnx" for row in ok)
    for row in r.rows:
        assert row.status == "ok" or row.reason  # a row that did not run says why
        assert row.status != "ok" or (row.threads and row.latency and row.accuracy)


def _have_ov() -> bool:
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


def test_target_auto_says_why(default_bundle):
    r = run_bench(BenchOptions(bundle=str(default_bundle.root), targets=("auto",), batches=(1,), accuracy=False,
                               iters=5, warmup=1, rounds=1, max_images=8))
    (choice,) = r.auto
    assert choice.chosen in choice.candidates and "fastest at batch 1" in choice.why
    timed = {k: v for k, v in choice.candidates.items() if isinstance(v, float)}
    assert min(timed, key=timed.get) == choice.chosen
    assert [row.runner for row in r.rows] == [choice.chosen] and r.rows[0].accuracy is None


def test_data_with_other_classes_rejected(default_bundle, tmp_path):
    import cv2

    for cls in ("cat", "dog"):
        d = tmp_path / "data" / "test" / cls
        d.mkdir(parents=True)
        cv2.imwrite(str(d / "a.png"), np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(NinEdgeError, match="classes.*differ"):
        run_bench(BenchOptions(bundle=str(default_bundle.root), data=str(tmp_path / "data"), **FAST))


def test_spec_configs_are_benchmarked_and_checked(default_bundle, tmp_path):
    from nin_edge.specs import load_target_spec

    p = tmp_path / "s.toml"
    p.write_text('name = "s"\nbackend = "onnxruntime"\nprecision = "fp32"\nthreads = 1\n'
                 '[latency]\nbatch = 2\np50_ms = 10000.0\n')
    spec = load_target_spec(p)
    r = run_bench(BenchOptions(bundle=str(default_bundle.root), targets=(), specs=(spec,), **FAST))
    (row,) = r.rows
    assert (row.runner, row.precision, row.threads, [s.batch for s in row.latency]) == ("onnxruntime", "fp32", 1, [2])
    (v,) = check_specs(r, [spec])
    assert v.status == "PASS" and v.row == row.label


# --------------------------------------------------------------------------- CLI
cli = CliRunner()


def _run(*args):
    return cli.invoke(app, ["bench", *args])


def _flat(text: str) -> str:
    """Output without rich's box characters and line wrapping."""
    return " ".join(text.replace("│", " ").split())


def test_cli_runs_and_writes(default_bundle, tmp_path):
    js = tmp_path / "out.json"
    res = _run("--bundle", str(default_bundle.root), "-t", "onnxruntime", "--batch", "1,2", "--iters", "4",
               "--warmup", "1", "--max-images", "16", "-q", "--json", str(js))
    assert res.exit_code == 0, res.output
    assert "onnxruntime int8 cpu" in res.output and "img/s" in res.output
    d = json.loads(js.read_text())
    assert [s["batch"] for s in d["rows"][0]["latency"]] == [1, 2]
    res = _run("--bundle", str(default_bundle.root), "-t", "onnxruntime", "--iters", "2", "--max-images", "8", "-q",
               "--json", str(js))
    assert res.exit_code == 2 and "already exists (use --force" in res.output


def test_cli_states_openvino_call_path(default_bundle):
    if not _have_ov():
        pytest.skip("openvino is not installed here (pip install 'nin-edge[cpu]')")
    res = _run("--bundle", str(default_bundle.root), "-t", "openvino", "--precision", "int8", "--iters", "3",
               "--warmup", "1", "--max-images", "8", "-q")
    assert res.exit_code == 0, res.output
    assert re.search(r"openvino int8 cpu: executed int8 .*called through the OpenVINO (C API|Python binding)",
                     _flat(res.output)), res.output


@pytest.mark.parametrize("args,needle", [
    (["-t", "tflite"], "'tflite' is not one of 'torch', 'onnxruntime', 'openvino', 'tensorrt', 'all', 'auto'"),
    (["--precision", "int4"], "'int4' is not one of 'fp32', 'fp16', 'bf16', 'int8'"),
    (["--batch", "0"], "--batch '0': every value must be a positive integer"),
    (["--batch", "1,x"], "expected comma-separated integers"),
    (["--iters", "3", "--seconds", "1"], "give --iters or --seconds, not both"),
    (["--spec", "cpu-tflite"], "unknown targets spec 'cpu-tflite'"),
])
def test_cli_bad_input_exit_2(default_bundle, args, needle):
    res = _run("--bundle", str(default_bundle.root), *args)
    assert res.exit_code == 2, res.output
    assert needle in _flat(res.output), res.output
    assert "Traceback" not in res.output


def test_cli_missing_bundle_and_artifact(default_bundle, tmp_path):
    res = _run("--bundle", str(tmp_path / "nope"), "-t", "onnxruntime")
    assert res.exit_code == 2 and "bundle directory not found" in res.output and "nin-edge export" in res.output
    b = tmp_path / "b"
    shutil.copytree(default_bundle.root, b)
    (b / "model.int8.onnx").unlink()
    res = _run("--bundle", str(b), "-t", "onnxruntime", "--precision", "int8", "--iters", "2", "--max-images", "8")
    assert res.exit_code == 2, res.output
    out = _flat(res.output)
    assert "model.int8.onnx" in out and "nin-edge export --int8" in out and "Traceback" not in out


def _spec(tmp_path, name, body):
    p = tmp_path / f"{name}.toml"
    p.write_text(f'name = "{name}"\nbackend = "onnxruntime"\nprecision = "int8"\n{body}')
    return str(p)


def test_cli_spec_gates_exit_codes(default_bundle, tmp_path):
    common = ["--bundle", str(default_bundle.root), "--iters", "4", "--warmup", "1", "--max-images", "16", "-q"]
    impossible = _spec(tmp_path, "impossible", "[latency]\nbatch = 1\np50_ms = 0.000001\n")
    res = _run(*common, "--spec", impossible)
    assert res.exit_code == 1, res.output
    assert "FAIL" in res.output and "latency.p50_ms@b1" in res.output and "1 of 1 spec(s) failed" in res.output
    easy = _spec(tmp_path, "easy", "[latency]\nbatch = 1\np50_ms = 100000.0\n[accuracy]\nmin_top1 = 0.0\n")
    res = _run(*common, "--spec", easy)
    assert res.exit_code == 0, res.output
    assert "PASS" in res.output and "FAIL" not in res.output
    elsewhere = _spec(tmp_path, "elsewhere", 'machine = "aarch64"\n[latency]\nbatch = 1\np50_ms = 1.0\n'
                      if __import__("platform").machine() != "aarch64" else 'machine = "x86_64"\n[latency]\np50_ms = 1.0\n')
    res = _run(*common, "--spec", elsewhere, "--spec", easy)
    assert res.exit_code == 0, res.output
    assert "N/A" in res.output and "PASS" in res.output
    # only specs for other hardware: nothing runs, exit 0, and no claim that the bundle lacks a reference model
    res = _run(*common, "--spec", elsewhere)
    assert res.exit_code == 0, res.output
    assert "N/A" in res.output and "no fp32 reference" not in res.output
