"""targets/*.toml: parsing, rejection of bad specs, applicability, and PASS/FAIL per criterion."""
from __future__ import annotations

import platform
from pathlib import Path

import pytest

from nin_edge.bench import Accuracy, BenchRow, LatencyStats, gate
from nin_edge.errors import NinEdgeError, SpecFailed
from nin_edge.specs import TARGETS_DIR, _cpu_flags, _dt_model, check, list_target_specs, load_target_spec

SHIPPED = ["cpu-openvino-int8", "cpu-onnxruntime-int8", "cpu-onnxruntime-fp32", "nvidia-gpu-tensorrt-int8",
           "nvidia-gpu-tensorrt-fp16", "jetson-orin-nano-tensorrt-int8", "jetson-orin-nano-dla-int8",
           "raspberry-pi-5-onnxruntime-int8",
           # AVX2-only x86 (no AVX-512, no VNNI): added when a dev machine of that kind ran the suite
           "cpu-avx2-onnxruntime-int8", "cpu-avx2-openvino-int8", "cpu-avx2-onnxruntime-fp32"]

GOOD = """
name = "t"
backend = "onnxruntime"
precision = "int8"
threads = 2
[accuracy]
min_top1 = 80.0
max_top1_drop = 1
[latency]
batch = 1
p50_ms = 1.0
p99_ms = 2.0
[throughput]
batch = 8
min_images_per_s = 100
"""


def _write(tmp_path: Path, text: str, name: str = "spec.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_every_shipped_spec_loads_and_is_justified():
    assert sorted(list_target_specs()) == sorted(SHIPPED)
    assert (Path("targets").resolve() == TARGETS_DIR.resolve()) or not Path("targets").exists()
    for name in SHIPPED:
        s = load_target_spec(name)
        assert s.name == name and s.source.endswith(f"{name}.toml")
        assert s.batches, name  # every shipped target has a latency budget or throughput floor
        text = (TARGETS_DIR / f"{name}.toml").read_text()
        # numbers justified: every table carries comment lines
        for section in ("[accuracy]", "[latency]", "[throughput]"):
            after = text.split(section, 1)[1].lstrip("\n")
            assert after.startswith("#"), f"{name}: {section} has no justification comment"


def test_spec_for_other_hardware_is_not_applicable_here():
    here = platform.machine()
    for name in ("jetson-orin-nano-tensorrt-int8", "jetson-orin-nano-dla-int8", "raspberry-pi-5-onnxruntime-int8"):
        s = load_target_spec(name)
        why = s.applicable()
        if here != "aarch64":
            assert why and "aarch64" in why, (name, why)
            v = check(None, s)
            assert v.status == "N/A" and not v.failed and v.criteria[0].status == "N/A"


def test_loads_path_and_round_trip(tmp_path):
    s = load_target_spec(_write(tmp_path, GOOD))
    assert s.accuracy.max_top1_drop == 1.0 and isinstance(s.accuracy.max_top1_drop, float)
    assert s.batches == (1, 8) and s.threads == 2 and s.device == "cpu"
    with pytest.raises(Exception):
        s.threads = 4  # frozen


@pytest.mark.parametrize("text,needle", [
    ("foo = 1\n" + GOOD, "unknown key 'foo'"),
    (GOOD.replace("[latency]", "[latency]\nwarp = 2"), "unknown key 'latency.warp'"),
    (GOOD.replace('threads = 2', 'threads = "two"'), "key 'threads' = 'two' has the wrong type"),
    (GOOD.replace("p50_ms = 1.0", 'p50_ms = "fast"'), "key 'latency.p50_ms'"),
    (GOOD.replace("p99_ms = 2.0", "p99_ms = 0.5"), "latency.p99_ms = 0.5 is below latency.p50_ms"),
    (GOOD.replace("min_top1 = 80.0", "min_top1 = 140"), "accuracy.min_top1 = 140.0: must be ≤ 100"),
    (GOOD.replace("batch = 1", "batch = 0"), "latency.batch = 0"),
    (GOOD.replace("min_images_per_s = 100", "min_images_per_s = -5"), "throughput.min_images_per_s = -5.0"),
    (GOOD.replace('backend = "onnxruntime"', 'backend = "tflite"'), "backend = 'tflite': unknown"),
    (GOOD.replace('precision = "int8"', 'precision = "int4"'), "precision = 'int4': unknown"),
    (GOOD.replace('backend = "onnxruntime"', 'backend = "torch"'), "backend 'torch' has fp32, fp16, bf16"),
    ('requires = ["quantum"]\n' + GOOD, "unknown capability 'quantum'"),
    ('machine = "mips"\n' + GOOD, "machine = 'mips'"),
    (GOOD.replace('name = "t"\n', ""), "missing required key 'name'"),
    ('name = "t"\nbackend = "onnxruntime"\nprecision = "int8"\n', "no criterion set"),
    ("name = ", "not valid TOML"),
])
def test_rejects_bad_specs_naming_file_and_key(tmp_path, text, needle):
    p = _write(tmp_path, text)
    with pytest.raises(NinEdgeError) as e:
        load_target_spec(p)
    assert str(p) in str(e.value) and needle in str(e.value), str(e.value)


def test_unknown_shipped_name_lists_choices():
    with pytest.raises(NinEdgeError, match="unknown targets spec 'cpu-tflite'.*cpu-onnxruntime-int8"):
        load_target_spec("cpu-tflite")
    with pytest.raises(NinEdgeError, match="spec file not found"):
        load_target_spec("nowhere/x.toml")


def _lat(batch, median, p99):
    return LatencyStats(batch=batch, iters=10, warmup=1, median_ms=median, p90_ms=median, p99_ms=p99, mean_ms=median,
                        std_ms=0.0, cv=0.0, min_ms=median, images_per_s=batch * 1000 / median,
                        round_medians_ms=(median,), noisy=False, samples_ms=(median,))


def _row(top1=85.0, drop=0.2, agree=99.0, lat=((1, 0.5, 1.5), (8, 40.0, 50.0))):
    return BenchRow(label="onnxruntime int8 cpu t2", runner="onnxruntime", precision="int8", device="cpu", status="ok",
                    threads=2, accuracy=Accuracy(images=100, top1=top1, top5=99.0, agreement=agree, top1_drop=drop,
                                                 max_abs_logit_diff=0.1),
                    latency=tuple(_lat(*x) for x in lat))


def test_check_pass_and_fail_per_criterion(tmp_path):
    s = load_target_spec(_write(tmp_path, GOOD))
    v = check(_row(), s)
    assert v.status == "PASS" and [c.status for c in v.criteria] == ["PASS"] * 5
    assert [c.name for c in v.criteria] == ["accuracy.min_top1", "accuracy.max_top1_drop", "latency.p50_ms@b1",
                                            "latency.p99_ms@b1", "throughput.min_images_per_s@b8"]
    # each criterion fails on its own
    v = check(_row(top1=79.9, drop=1.01, lat=((1, 1.01, 2.5), (8, 81.0, 90.0))), s)
    assert v.status == "FAIL" and [c.status for c in v.criteria] == ["FAIL"] * 5
    v = check(_row(lat=((1, 0.5, 1.5),)), s)  # batch 8 never timed
    assert v.failed and v.criteria[-1].measured == "not measured"
    failed_row = BenchRow(label="x", runner="onnxruntime", precision="int8", device="cpu", status="unavailable",
                          reason="model.int8.onnx missing")
    v = check(failed_row, s)
    assert v.failed and "model.int8.onnx missing" in v.criteria[0].detail
    with pytest.raises(SpecFailed) as e:
        gate([check(_row(), s), v])
    assert e.value.exit_code == 1 and "1 of 2 spec(s) failed" in str(e.value)
    gate([check(_row(), s)])  # all PASS: no exception


def test_check_arch_mismatch_is_not_applicable(tmp_path):
    s = load_target_spec(_write(tmp_path, 'arch = "nin-seed"\n' + GOOD))
    v = check(_row(), s, bundle_arch="nin-cifar")
    assert v.status == "N/A" and "nin-seed" in v.criteria[0].detail


def test_machine_and_capability_gates(tmp_path):
    other = "aarch64" if platform.machine() != "aarch64" else "x86_64"
    s = load_target_spec(_write(tmp_path, f'machine = "{other}"\n' + GOOD))
    assert other in s.applicable()
    s = load_target_spec(_write(tmp_path, 'requires = ["raspberry-pi-5"]\n' + GOOD))
    if "Raspberry Pi 5" not in _dt_model():
        assert "a Raspberry Pi 5 (raspberry-pi-5), not found here" in s.applicable()
    s = load_target_spec(_write(tmp_path, 'requires = ["avx512_vnni"]\n' + GOOD))
    assert (s.applicable() is None) == ("avx512_vnni" in _cpu_flags())
    for cap in ("avx2", "avx512f"):
        s = load_target_spec(_write(tmp_path, f'requires = ["{cap}"]\n' + GOOD))
        assert (s.applicable() is None) == (cap in _cpu_flags()), cap
    s = load_target_spec(_write(tmp_path, 'requires = ["avx2-only"]\n' + GOOD))
    assert (s.applicable() is None) == ("avx2" in _cpu_flags() and "avx512f" not in _cpu_flags())
