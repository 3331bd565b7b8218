"""Deployment target specs: `targets/*.toml` → frozen `TargetSpec`; `check(row, spec)` → PASS/FAIL per criterion.

A target names what to run (backend, precision, device, threads, batch) and what it must achieve: an
accuracy floor (absolute top-1 and the largest drop vs the fp32 reference), a latency budget (p50/p99 at a
batch) and a throughput floor (images/s at a batch). Criteria that are left out are not judged.

A spec written for other hardware (a Jetson, a Raspberry Pi, an NVIDIA GPU) is never judged on the wrong
machine: `machine` (platform.machine(), e.g. "aarch64") and `requires` (capabilities probed on this host,
see CAPABILITIES) make `applicable()` say why it does not apply, and the verdict is "N/A" — not a PASS
that could turn a CI gate green by accident, and not a FAIL of the target either.

    spec = load_target_spec("targets/cpu-onnxruntime-int8.toml")   # or the shipped name
    verdict = check(row, spec)        # row: a bench.BenchRow measured with spec's settings
"""
from __future__ import annotations

import os
import platform
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .errors import BackendUnavailable, NinEdgeError
from .runners.base import PRECISIONS, get_runner_class, list_runners
from .tomlspec import SPECS_DIR, load_toml_spec, resolve_spec_path

TARGETS_DIR = SPECS_DIR / "targets"
MACHINES = ("x86_64", "aarch64", "arm64", "AMD64")


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _dt_model() -> str:
    try:
        return Path("/proc/device-tree/model").read_text(errors="replace").strip("\x00\n ")
    except OSError:
        return ""


def _nvidia_gpu() -> bool:
    return shutil.which("nvidia-smi") is not None or Path("/dev/nvidiactl").exists() or _jetson_orin()


def _jetson_orin() -> bool:
    return "Orin" in _dt_model() and ("NVIDIA" in _dt_model() or Path("/etc/nv_tegra_release").exists())


def _dla() -> bool:
    # NVDLA engines appear as /dev/nvhost-*-nvdla* (JetPack 5/6); Orin Nano modules have none
    return any("nvdla" in n for n in (os.listdir("/dev") if os.path.isdir("/dev") else []))


# capability name → (probe, what it means); specs list the names in `requires`
CAPABILITIES: dict[str, tuple[Callable[[], bool], str]] = {
    "avx2": (lambda: "avx2" in _cpu_flags(), "an x86 CPU with AVX2"),
    "avx512f": (lambda: "avx512f" in _cpu_flags(), "an x86 CPU with AVX-512"),
    # the cpu-avx2-* specs' class: judged only there, not on the AVX-512 machines the cpu-* specs describe
    "avx2-only": (lambda: "avx2" in _cpu_flags() and "avx512f" not in _cpu_flags(),
                  "an x86 CPU with AVX2 and no AVX-512"),
    "avx512_vnni": (lambda: "avx512_vnni" in _cpu_flags(), "an x86 CPU with AVX-512 VNNI (int8 dot products)"),
    "avx512_bf16": (lambda: "avx512_bf16" in _cpu_flags(), "an x86 CPU with AVX-512 BF16"),
    "neon-dotprod": (lambda: "asimddp" in _cpu_flags(), "an Arm CPU with the dot-product extension (Cortex-A76+)"),
    "nvidia-gpu": (_nvidia_gpu, "an NVIDIA GPU with its driver"),
    "jetson-orin": (_jetson_orin, "an NVIDIA Jetson Orin module"),
    "jetson-orin-nano": (lambda: _jetson_orin() and "Nano" in _dt_model(), "an NVIDIA Jetson Orin Nano"),
    "nvidia-dla": (_dla, "an NVIDIA DLA core (Jetson Orin NX/AGX)"),
    "raspberry-pi-5": (lambda: "Raspberry Pi 5" in _dt_model(), "a Raspberry Pi 5"),
}


def _check_range(where: str, value, lo=None, hi=None, lo_open=False) -> None:
    if value is None:
        return
    if lo is not None and (value <= lo if lo_open else value < lo):
        raise ValueError(f"{where} = {value}: must be {'>' if lo_open else '≥'} {lo}")
    if hi is not None and value > hi:
        raise ValueError(f"{where} = {value}: must be ≤ {hi}")


@dataclass(frozen=True)
class AccuracySpec:
    min_top1: float | None = None        # % top-1 on the evaluation data
    max_top1_drop: float | None = None   # percentage points below the fp32 reference on the same images
    min_agreement: float | None = None   # % of top-1 predictions equal to the fp32 reference's

    def __post_init__(self):
        _check_range("accuracy.min_top1", self.min_top1, 0, 100)
        _check_range("accuracy.max_top1_drop", self.max_top1_drop, 0, 100)
        _check_range("accuracy.min_agreement", self.min_agreement, 0, 100)


@dataclass(frozen=True)
class LatencySpec:
    batch: int = 1
    p50_ms: float | None = None
    p99_ms: float | None = None

    def __post_init__(self):
        _check_range("latency.batch", self.batch, 1)
        _check_range("latency.p50_ms", self.p50_ms, 0, lo_open=True)
        _check_range("latency.p99_ms", self.p99_ms, 0, lo_open=True)
        if self.p50_ms is not None and self.p99_ms is not None and self.p99_ms < self.p50_ms:
            raise ValueError(f"latency.p99_ms = {self.p99_ms} is below latency.p50_ms = {self.p50_ms}: impossible")


@dataclass(frozen=True)
class ThroughputSpec:
    batch: int = 64
    min_images_per_s: float | None = None

    def __post_init__(self):
        _check_range("throughput.batch", self.batch, 1)
        _check_range("throughput.min_images_per_s", self.min_images_per_s, 0, lo_open=True)


@dataclass(frozen=True)
class TargetSpec:
    name: str
    backend: str
    precision: str
    description: str = ""
    device: str = "cpu"
    threads: int | None = None
    artifact: str | None = None          # a bundle-relative artifact other than the default for backend/precision
    arch: str | None = None              # the model the budgets were set for (a bundle of another arch: N/A)
    machine: str | None = None           # platform.machine() the budget was set for
    requires: tuple[str, ...] = ()       # names in CAPABILITIES
    accuracy: AccuracySpec = field(default_factory=AccuracySpec)
    latency: LatencySpec = field(default_factory=LatencySpec)
    throughput: ThroughputSpec = field(default_factory=ThroughputSpec)
    source: str = ""                     # the file it was read from (set by the loader)

    def __post_init__(self):
        if self.backend not in list_runners():
            raise ValueError(f"backend = {self.backend!r}: unknown (choose: {', '.join(list_runners())})")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision = {self.precision!r}: unknown (choose: {', '.join(PRECISIONS)})")
        _check_range("threads", self.threads, 1)
        if self.machine is not None and self.machine not in MACHINES:
            raise ValueError(f"machine = {self.machine!r}: unknown (choose: {', '.join(MACHINES)})")
        for r in self.requires:
            if r not in CAPABILITIES:
                raise ValueError(f"requires: unknown capability {r!r} (choose: {', '.join(CAPABILITIES)})")
        if not (self.accuracy.min_top1 is not None or self.accuracy.max_top1_drop is not None
                or self.accuracy.min_agreement is not None or self.latency.p50_ms is not None
                or self.latency.p99_ms is not None or self.throughput.min_images_per_s is not None):
            raise ValueError("no criterion set: give at least one of accuracy.*, latency.p50_ms/p99_ms, "
                             "throughput.min_images_per_s")

    @property
    def batches(self) -> tuple[int, ...]:
        """Batch sizes the bench must time for this spec."""
        out = []
        if self.latency.p50_ms is not None or self.latency.p99_ms is not None:
            out.append(self.latency.batch)
        if self.throughput.min_images_per_s is not None and self.throughput.batch not in out:
            out.append(self.throughput.batch)
        return tuple(out)

    def applicable(self) -> str | None:
        """None if this machine can run the target as specified, else why not (the verdict is then N/A)."""
        here = platform.machine()
        if self.machine and {self.machine, here} != {"aarch64", "arm64"} and self.machine != here:
            return f"spec is for {self.machine} machines, this one is {here}"
        for r in self.requires:
            probe, what = CAPABILITIES[r]
            if not probe():
                return f"spec requires {what} ({r}), not found here"
        return None


def load_target_spec(name_or_path: str | os.PathLike) -> TargetSpec:
    """A targets/*.toml path or a shipped target name (e.g. 'cpu-onnxruntime-int8')."""
    p = resolve_spec_path(str(name_or_path), "targets")
    spec = load_toml_spec(TargetSpec, p)
    if spec.source:
        raise NinEdgeError(f"{p}: unknown key 'source' (set by the loader)")
    try:  # precision/device per backend, where the backend is installed (a Jetson spec still loads on x86)
        cls = get_runner_class(spec.backend)
    except BackendUnavailable:
        cls = None
    if cls is not None and spec.precision not in cls.precisions:
        raise NinEdgeError(f"{p}: precision = {spec.precision!r}: backend '{spec.backend}' has "
                           f"{', '.join(cls.precisions)}")
    if cls is not None and spec.device not in cls.devices:
        raise NinEdgeError(f"{p}: device = {spec.device!r}: backend '{spec.backend}' has {', '.join(cls.devices)}")
    return _replace(spec, source=str(p))


def _replace(spec: TargetSpec, **kw) -> TargetSpec:
    import dataclasses

    return dataclasses.replace(spec, **kw)


def list_target_specs() -> list[str]:
    return sorted(p.stem for p in TARGETS_DIR.glob("*.toml"))


@dataclass(frozen=True)
class Criterion:
    name: str            # e.g. "accuracy.min_top1"
    required: str        # e.g. "≥ 88.0 %"
    measured: str        # e.g. "90.3 %"
    status: str          # PASS | FAIL | N/A
    detail: str = ""


@dataclass(frozen=True)
class Verdict:
    spec: str            # spec name
    source: str          # spec file
    status: str          # PASS (every criterion passed) | FAIL (any failed) | N/A (not applicable here)
    criteria: tuple[Criterion, ...]
    row: str | None = None  # label of the bench row judged

    @property
    def failed(self) -> bool:
        return self.status == "FAIL"


def _cmp(name: str, measured, limit, higher_is_better: bool, unit: str, fmt: str = "{:.3f}") -> Criterion:
    if measured is None:
        return Criterion(name, f"{'≥' if higher_is_better else '≤'} {fmt.format(limit)} {unit}", "not measured",
                         "FAIL", "the bench did not produce this figure")
    ok = measured >= limit if higher_is_better else measured <= limit
    return Criterion(name, f"{'≥' if higher_is_better else '≤'} {fmt.format(limit)} {unit}",
                     f"{fmt.format(measured)} {unit}", "PASS" if ok else "FAIL")


def check(row, spec: TargetSpec, bundle_arch: str | None = None) -> Verdict:
    """Judge one bench row (bench.BenchRow, or None when no row ran) against a spec."""
    why = spec.applicable()
    if why is None and spec.arch and bundle_arch and bundle_arch != spec.arch:
        why = f"spec's budgets are for model {spec.arch}, the bundle holds {bundle_arch}"
    if why is not None:
        return Verdict(spec.name, spec.source, "N/A", (Criterion("applicable", "this machine", "no", "N/A", why),))
    if row is None or row.status != "ok":
        reason = "no bench row for it" if row is None else row.reason
        return Verdict(spec.name, spec.source, "FAIL",
                       (Criterion("runs", f"{spec.backend} {spec.precision} on {spec.device}", "did not run", "FAIL", reason),),
                       row.label if row is not None else None)
    out: list[Criterion] = []
    acc, a = spec.accuracy, row.accuracy
    if acc.min_top1 is not None:
        out.append(_cmp("accuracy.min_top1", a.top1 if a else None, acc.min_top1, True, "%", "{:.2f}"))
    if acc.max_top1_drop is not None:
        out.append(_cmp("accuracy.max_top1_drop", a.top1_drop if a else None, acc.max_top1_drop, False, "points", "{:.2f}"))
    if acc.min_agreement is not None:
        out.append(_cmp("accuracy.min_agreement", a.agreement if a else None, acc.min_agreement, True, "%", "{:.2f}"))
    lat = {s.batch: s for s in row.latency}
    if spec.latency.p50_ms is not None:
        s = lat.get(spec.latency.batch)
        out.append(_cmp(f"latency.p50_ms@b{spec.latency.batch}", s.median_ms if s else None, spec.latency.p50_ms, False, "ms"))
    if spec.latency.p99_ms is not None:
        s = lat.get(spec.latency.batch)
        out.append(_cmp(f"latency.p99_ms@b{spec.latency.batch}", s.p99_ms if s else None, spec.latency.p99_ms, False, "ms"))
    if spec.throughput.min_images_per_s is not None:
        s = lat.get(spec.throughput.batch)
        out.append(_cmp(f"throughput.min_images_per_s@b{spec.throughput.batch}", s.images_per_s if s else None,
                        spec.throughput.min_images_per_s, True, "img/s", "{:.0f}"))
    status = "FAIL" if any(c.status == "FAIL" for c in out) else "PASS"
    return Verdict(spec.name, spec.source, status, tuple(out), row.label)
