"""The main job end to end on the bundled data (CPU backends): summary, exit codes, cache reuse."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nin_edge.cli import app
from nin_edge.errors import NinEdgeError
from nin_edge.pipeline import PipelineOptions, run_pipeline

pytestmark = pytest.mark.slow

PASSING = """
name = "test-pass"
backend = "onnxruntime"
precision = "int8"
threads = 1
[accuracy]
min_agreement = 50.0
"""
FAILING = """
name = "test-fail"
backend = "onnxruntime"
precision = "int8"
threads = 1
[accuracy]
min_top1 = 99.9
"""
FAST = dict(batches=(1,), seconds=0.05, max_images=200, progress=False)


@pytest.fixture(scope="module")
def specs(tmp_path_factory):
    d = tmp_path_factory.mktemp("specs")
    (d / "pass.toml").write_text(PASSING)
    (d / "fail.toml").write_text(FAILING)
    return d / "pass.toml", d / "fail.toml"


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, specs):
    out = tmp_path_factory.mktemp("pipe") / "out"
    res = run_pipeline(PipelineOptions(out=str(out), specs=(str(specs[0]),), **FAST))
    return out, res


def test_end_to_end_summary(first_run):
    out, res = first_run
    assert res.passed and not res.bundle_reused
    summary = json.loads((out / "summary.json").read_text())
    assert summary["schema"] == "nin-edge-pipeline/1" and summary["passed"] is True
    assert [v["spec"] for v in summary["verdicts"]] == ["test-pass"]
    assert summary["verdicts"][0]["status"] == "PASS"
    assert set(summary["stage_seconds"]) == {"weights", "bundle", "bench", "verdict"}
    # every artifact of the bundle was benchmarked, including the TensorRT-form Q/DQ model on the CPU
    labels = {r["label"] for r in summary["bench"]["rows"] if r["status"] == "ok"}
    assert any("model.int8.trt.onnx" in lab for lab in labels)
    assert any(lab.startswith("onnxruntime fp32") for lab in labels)
    assert (out / "report" / "report.md").exists()
    assert summary["tensorrt"].startswith(("skipped", "available"))


def test_rerun_reuses_bundle_without_requantizing(first_run, specs):
    out, _ = first_run
    bj = out / "bundle" / "bundle.json"
    before = bj.stat().st_mtime_ns
    res = run_pipeline(PipelineOptions(out=str(out), specs=(str(specs[0]),), **FAST))
    assert res.bundle_reused and bj.stat().st_mtime_ns == before


def test_tampered_artifact_is_not_reused(first_run, specs):
    out, _ = first_run
    art = out / "bundle" / "model.int8.onnx"
    art.write_bytes(art.read_bytes() + b"\0")
    res = run_pipeline(PipelineOptions(out=str(out), specs=(str(specs[0]),), **FAST))
    assert not res.bundle_reused
    # ...and the rebuilt bundle is reused next time
    assert run_pipeline(PipelineOptions(out=str(out), specs=(str(specs[0]),), **FAST)).bundle_reused


def test_fresh_forces_rebuild(first_run, specs):
    out, _ = first_run
    res = run_pipeline(PipelineOptions(out=str(out), specs=(str(specs[0]),), fresh=True, **FAST))
    assert not res.bundle_reused


def test_cli_exit_codes(first_run, specs):
    out, _ = first_run
    common = ["pipeline", "--out", str(out), "--batch", "1", "--seconds", "0.05", "--quiet"]
    ok = CliRunner().invoke(app, common + ["--spec", str(specs[0])])
    assert ok.exit_code == 0, ok.output
    assert "1 PASS, 0 FAIL" in ok.output
    bad = CliRunner().invoke(app, common + ["--spec", str(specs[0]), "--spec", str(specs[1])])
    assert bad.exit_code == 1, bad.output
    assert "1 PASS, 1 FAIL" in bad.output
    assert "Traceback" not in bad.output


def test_bad_input_names_the_stage(tmp_path):
    with pytest.raises(NinEdgeError, match=r"^stage 'weights': .*nope\.pt"):
        run_pipeline(PipelineOptions(out=str(tmp_path / "o"), weights=str(tmp_path / "nope.pt"), **FAST))
    r = CliRunner().invoke(app, ["pipeline", "--out", str(tmp_path / "o"), "--spec", "no-such-spec", "--quiet"])
    assert r.exit_code == 2
    assert "stage 'bench'" in r.output and "no-such-spec" in r.output
    assert not (tmp_path / "o" / "summary.json").exists()


def test_interrupted_export_keeps_previous_outputs(first_run, specs, monkeypatch):
    """Ctrl-C during the bundle stage leaves the previous complete bundle and summary untouched."""
    out, _ = first_run
    summary_before = (out / "summary.json").read_bytes()
    bundle_before = (out / "bundle" / "bundle.json").read_bytes()
    import nin_edge.export as export

    real = export.export_onnx

    def boom(*a, **k):
        real(*a, **k)
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "export_onnx", boom)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(PipelineOptions(out=str(out), specs=(str(specs[0]),), fresh=True, **FAST))
    assert (out / "summary.json").read_bytes() == summary_before
    assert (out / "bundle" / "bundle.json").read_bytes() == bundle_before
    assert not [p for p in os.listdir(out) if p.startswith(".bundle.tmp")]
