"""The one benchmark: accuracy and latency of any runner, measured the same way; results as dataclasses.

    report = run_bench(BenchOptions(bundle="bundle", targets=("all",), batches=(1, 64)))
    verdicts = check_specs(report, [load_target_spec("cpu-onnxruntime-int8")])

What is timed (stated in every report, `TIMED`):
  * ``inference`` (default): `runner.infer(x)` + `runner.synchronize()` on a float32 NCHW batch of real
    evaluation images already preprocessed in memory — the runner's validation and the backend call;
  * ``end-to-end``: `preprocess(uint8 NHWC batch)` + infer + synchronize + argmax.
The loop: `warmup` calls discarded, then `rounds` rounds of `iters/rounds` calls (or `seconds/rounds` of wall
time each), every call timed with `time.perf_counter_ns`, the garbage collector paused while timing. Figures:
median, p90, p99, mean, std, coefficient of variation (std/mean) in ms, images/s = batch / median. A row is
flagged `noisy` when its per-round medians differ by more than 10% (this machine drifts ±20–40% between
rounds when other work runs). Threads: the runner's (every core of the process's affinity mask unless
`threads` is given); the affinity mask is recorded. Memory: peak resident set size of the process while the
row ran (Linux: the peak is reset before each row through /proc/self/clear_refs), and how much it rose
above the resident size before the runner was created.

Accuracy: top-1/top-5 on the evaluation data (default: the bundled 1,000-image subset) and agreement of
top-1 predictions with the fp32 reference (ONNX Runtime on model.onnx, or torch on model.pt if the bundle
has no ONNX), plus the top-1 drop against it in points.
"""
from __future__ import annotations

import dataclasses
import gc
import hashlib
import math
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

import numpy as np

from .bundle import Bundle
from .errors import BackendUnavailable, NinEdgeError
from .runners.base import PRECISIONS, Runner, create_runner, default_threads, get_runner_class, list_runners

SCHEMA = "nin-edge-bench/1"
TIMED = {
    "inference": "runner.infer(x) + runner.synchronize() on a preprocessed float32 NCHW batch already in memory "
                 "(input validation included; preprocessing, data loading and argmax excluded)",
    "end-to-end": "preprocess(uint8 NHWC batch) + runner.infer + runner.synchronize + argmax",
}
SPECIAL_TARGETS = ("all", "auto")
NOISY_SPREAD = 0.10  # per-round medians more than 10% apart → the row is flagged noisy


# --------------------------------------------------------------------------- options and results
@dataclass(frozen=True)
class BenchOptions:
    bundle: str = "bundle"
    targets: tuple[str, ...] = ("onnxruntime",)  # runner names, or "all" / "auto"
    precision: str | None = None   # None: each runner's default (int8 for onnxruntime/openvino/tensorrt)
    device: str | None = None      # None: cpu (tensorrt: cuda)
    data: str = "bundled:eval"
    split: str = "test"
    batches: tuple[int, ...] = (1,)
    threads: int | None = None
    warmup: int = 10
    iters: int | None = None       # total timed calls per batch size; None → `seconds`
    seconds: float = 1.0           # timed wall time per batch size when iters is None
    rounds: int = 5
    timed: str = "inference"
    accuracy: bool = True
    max_images: int | None = None  # evaluate on the first N images only
    eval_batch: int = 64
    artifact: str | None = None    # bundle-relative artifact override for a single target
    specs: tuple = ()              # TargetSpec objects: their configurations are benchmarked too
    progress: Callable[[str], None] | None = field(default=None, compare=False, repr=False)

    def validate(self) -> None:
        for t in self.targets:
            if t not in (*list_runners(), *SPECIAL_TARGETS):
                raise NinEdgeError(f"unknown target '{t}' (choose: {', '.join((*list_runners(), *SPECIAL_TARGETS))})")
        if not self.targets and not self.specs:
            raise NinEdgeError("nothing to benchmark: give a target or a spec")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise NinEdgeError(f"unknown precision '{self.precision}' (choose: {', '.join(PRECISIONS)})")
        if not self.batches or any(not isinstance(b, int) or b < 1 for b in self.batches):
            raise NinEdgeError(f"--batch {','.join(map(str, self.batches))}: every batch size must be a positive integer")
        if self.threads is not None and self.threads < 1:
            raise NinEdgeError(f"--threads {self.threads}: must be at least 1")
        if self.warmup < 0:
            raise NinEdgeError(f"--warmup {self.warmup}: must be ≥ 0")
        if self.iters is not None and self.iters < 1:
            raise NinEdgeError(f"--iters {self.iters}: must be ≥ 1")
        if self.iters is None and not self.seconds > 0:
            raise NinEdgeError(f"--seconds {self.seconds}: must be > 0")
        if self.rounds < 1:
            raise NinEdgeError(f"rounds {self.rounds}: must be ≥ 1")
        if self.timed not in TIMED:
            raise NinEdgeError(f"--timed {self.timed}: choose one of {', '.join(TIMED)}")
        if self.max_images is not None and self.max_images < 1:
            raise NinEdgeError(f"--max-images {self.max_images}: must be ≥ 1")
        if self.eval_batch < 1:
            raise NinEdgeError(f"eval batch {self.eval_batch}: must be ≥ 1")
        if self.artifact and (len(self.targets) != 1 or self.targets[0] in SPECIAL_TARGETS):
            raise NinEdgeError("--artifact needs exactly one named --target (not all/auto)")


@dataclass(frozen=True)
class LatencyStats:
    batch: int
    iters: int
    warmup: int
    median_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    cv: float                      # std / mean
    min_ms: float
    images_per_s: float            # batch / median
    round_medians_ms: tuple[float, ...]
    noisy: bool                    # round medians more than NOISY_SPREAD apart
    samples_ms: tuple[float, ...] = field(repr=False)


@dataclass(frozen=True)
class Accuracy:
    images: int
    top1: float                    # %
    top5: float                    # %
    agreement: float | None        # % of top-1 equal to the fp32 reference
    top1_drop: float | None        # reference top-1 − top-1, points
    max_abs_logit_diff: float | None


@dataclass(frozen=True)
class BenchRow:
    label: str
    runner: str
    precision: str
    device: str
    status: str                    # ok | unavailable | failed
    reason: str = ""
    threads: int | None = None     # threads the runner used
    artifact: str | None = None
    artifact_override: bool = False  # the artifact was named explicitly (--artifact / a spec), not the default
    artifact_bytes: int | None = None
    executed: dict = field(default_factory=dict)   # runner.describe(): what actually ran
    accuracy: Accuracy | None = None
    latency: tuple[LatencyStats, ...] = ()
    load_s: float | None = None
    peak_rss_mb: float | None = None
    rss_added_mb: float | None = None


@dataclass(frozen=True)
class AutoChoice:
    batch: int
    precision: str
    chosen: str
    why: str
    candidates: dict               # label → median ms, or the reason it could not run


@dataclass(frozen=True)
class Reference:
    runner: str
    precision: str
    artifact: str
    top1: float
    top5: float


@dataclass(frozen=True)
class BenchReport:
    schema: str
    created: str
    environment: dict
    bundle: dict
    data: dict
    settings: dict
    reference: Reference | None
    rows: tuple[BenchRow, ...]
    auto: tuple[AutoChoice, ...] = ()
    notes: tuple[str, ...] = ()

    def row_for(self, runner: str, precision: str, device: str, threads: int | None = None,
                artifact: str | None = None) -> BenchRow | None:
        for r in self.rows:
            if (r.runner, r.precision, r.device) == (runner, precision, device) \
                    and (r.artifact == artifact if artifact else not r.artifact_override) \
                    and (threads is None or r.threads == threads):
                return r
        return None


@dataclass(frozen=True)
class _Plan:
    runner: str
    precision: str
    device: str
    threads: int | None
    artifact: str | None
    batches: tuple[int, ...]

    @property
    def key(self):
        return (self.runner, self.precision, self.device, self.threads, self.artifact)

    @property
    def label(self) -> str:
        s = f"{self.runner} {self.precision} {self.device}"
        if self.threads is not None:
            s += f" t{self.threads}"
        if self.artifact:
            s += f" [{self.artifact}]"
        return s


# --------------------------------------------------------------------------- memory
def _status_kb(key: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux ≥ 4.0)
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float | None:
    kb = _status_kb("VmHWM")
    if kb is None:
        import resource

        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # whole-process peak (not reset per row)
    return kb / 1024.0


# --------------------------------------------------------------------------- timing (the one loop)
def _stats(batch: int, samples_ns: list[list[int]], warmup: int) -> LatencyStats:
    allv = np.concatenate([np.asarray(r, np.float64) for r in samples_ns]) / 1e6
    rmed = tuple(float(np.median(np.asarray(r, np.float64) / 1e6)) for r in samples_ns)
    med, mean, std = float(np.median(allv)), float(allv.mean()), float(allv.std())
    spread = (max(rmed) / min(rmed) - 1.0) if len(rmed) > 1 and min(rmed) > 0 else 0.0
    return LatencyStats(batch=batch, iters=int(allv.size), warmup=warmup, median_ms=med,
                        p90_ms=float(np.percentile(allv, 90)), p99_ms=float(np.percentile(allv, 99)),
                        mean_ms=mean, std_ms=std, cv=std / mean if mean > 0 else 0.0, min_ms=float(allv.min()),
                        images_per_s=batch * 1000.0 / med if med > 0 else 0.0, round_medians_ms=rmed,
                        noisy=spread > NOISY_SPREAD, samples_ms=tuple(round(float(v), 5) for v in allv))


def time_call(call: Callable[[], object], batch: int, warmup: int = 10, iters: int | None = None,
              seconds: float = 1.0, rounds: int = 5) -> LatencyStats:
    """THE timing loop: warm-up discarded, `rounds` rounds, every call timed, GC paused while timing."""
    for _ in range(warmup):
        call()
    per_round = math.ceil(iters / rounds) if iters else None
    budget_ns = int(seconds / rounds * 1e9)
    clock = time.perf_counter_ns
    samples: list[list[int]] = []
    gc_was = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for _ in range(rounds):
            rs: list[int] = []
            end = clock() + budget_ns
            while True:
                t0 = clock()
                call()
                t1 = clock()
                rs.append(t1 - t0)
                if per_round is not None:
                    if len(rs) >= per_round:
                        break
                elif t1 >= end and len(rs) >= 3:
                    break
            samples.append(rs)
    finally:
        if gc_was:
            gc.enable()
    return _stats(batch, samples, warmup)


def _batch_of(arr: np.ndarray, b: int) -> np.ndarray:
    idx = np.arange(b) % len(arr)
    return np.ascontiguousarray(arr[idx])


def time_runner(runner: Runner, batch: int, x_all: np.ndarray, u8_all: np.ndarray | None, opts: BenchOptions
                ) -> LatencyStats:
    runner.prepare(batch)
    if opts.timed == "end-to-end":
        from .preprocess import preprocess

        u8 = _batch_of(u8_all, batch)
        spec = runner.bundle.preprocess

        def call():
            out = runner.infer(preprocess(u8, spec))
            runner.synchronize()
            return out.argmax(1)
    else:
        x = _batch_of(x_all, batch)

        def call():
            out = runner.infer(x)
            runner.synchronize()
            return out

    return time_call(call, batch, opts.warmup, opts.iters, opts.seconds, opts.rounds)


# --------------------------------------------------------------------------- accuracy
def predict_logits(runner: Runner, x: np.ndarray, batch: int = 64) -> np.ndarray:
    """Logits for every image, at one compiled batch size (the last batch is padded, padding dropped)."""
    batch = min(batch, len(x))
    out = []
    for i in range(0, len(x), batch):
        chunk = x[i:i + batch]
        n = len(chunk)
        if n < batch:
            chunk = np.concatenate([chunk, np.zeros((batch - n, *chunk.shape[1:]), chunk.dtype)])
        out.append(runner.infer(np.ascontiguousarray(chunk))[:n])
    return np.concatenate(out)


def _topk(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    top5 = np.argsort(-logits, axis=1)[:, :5]
    return (float((top5[:, 0] == labels).mean() * 100), float((top5 == labels[:, None]).any(1).mean() * 100))


def accuracy_of(logits: np.ndarray, labels: np.ndarray, ref_logits: np.ndarray | None, ref_top1: float | None
                ) -> Accuracy:
    t1, t5 = _topk(logits, labels)
    agree = drop = diff = None
    if ref_logits is not None:
        agree = float((logits.argmax(1) == ref_logits.argmax(1)).mean() * 100)
        drop = float(ref_top1 - t1) if ref_top1 is not None else None
        diff = float(np.abs(logits - ref_logits).max())
    return Accuracy(images=int(len(labels)), top1=t1, top5=t5, agreement=agree, top1_drop=drop, max_abs_logit_diff=diff)


# --------------------------------------------------------------------------- planning
def _default_device(runner: str) -> str:
    try:
        cls = get_runner_class(runner)
    except BackendUnavailable:
        return "cuda" if runner == "tensorrt" else "cpu"
    return "cpu" if "cpu" in cls.devices else cls.devices[0]


def _default_precision(runner: str) -> str:
    try:
        return get_runner_class(runner).default_precision
    except BackendUnavailable:
        return "int8"


def _plans_all(bundle: Bundle, opts: BenchOptions) -> tuple[list[_Plan], list[BenchRow]]:
    """Every (runner, precision, device) this machine could run, and a row saying why for what it cannot."""
    plans, rows = [], []
    for name in list_runners():
        try:
            cls = get_runner_class(name)
        except BackendUnavailable as e:
            rows.append(BenchRow(label=f"{name}", runner=name, precision=opts.precision or "-", device="-",
                                 status="unavailable", reason=str(e)))
            continue
        devices = (opts.device,) if opts.device else cls.present_devices()
        if not devices:
            rows.append(BenchRow(label=name, runner=name, precision=opts.precision or "-", device=",".join(cls.devices),
                                 status="unavailable", reason=f"no {'/'.join(cls.devices)} device on this machine"))
            continue
        for dev in devices:
            for p in cls.precisions:
                if opts.precision and p != opts.precision:
                    continue
                plans.append(_Plan(name, p, dev, opts.threads, None, opts.batches))
    # the TensorRT-form Q/DQ model, evaluated on the CPU too (its scales are the ones TensorRT will use)
    trt_qdq = "model.int8.trt.onnx"
    if (bundle.root / trt_qdq).exists() and opts.precision in (None, "int8") and opts.device in (None, "cpu"):
        plans.append(_Plan("onnxruntime", "int8", "cpu", opts.threads, trt_qdq, opts.batches))
    return plans, rows


def _merge(plans: list[_Plan]) -> list[_Plan]:
    out: dict = {}
    for p in plans:
        if p.key in out:
            q = out[p.key]
            out[p.key] = dataclasses.replace(q, batches=tuple(dict.fromkeys(q.batches + p.batches)))
        else:
            out[p.key] = p
    return list(out.values())


# --------------------------------------------------------------------------- running
def _artifact_bytes(bundle: Bundle, rel: str | None) -> int | None:
    if not rel:
        return None
    info = bundle.artifacts.get(rel)
    if info and "bytes" in info:
        return int(info["bytes"])
    p = bundle.root / rel
    files = [p] + ([p.with_suffix(".bin")] if p.suffix == ".xml" else [])
    return sum(f.stat().st_size for f in files if f.exists()) or None


def _run_row(plan: _Plan, bundle: Bundle, x: np.ndarray, labels: np.ndarray, u8: np.ndarray,
             ref: tuple[np.ndarray, float] | None, opts: BenchOptions, strict: bool, say) -> BenchRow:
    base = dict(label=plan.label, runner=plan.runner, precision=plan.precision, device=plan.device)
    reset_ok = _reset_peak_rss()
    rss0 = (_status_kb("VmRSS") or 0) / 1024.0
    runner = None
    try:
        t0 = time.perf_counter()
        runner = create_runner(plan.runner, bundle, precision=plan.precision, device=plan.device,
                               threads=plan.threads, artifact=plan.artifact)
        runner.prepare(plan.batches[0])
        load_s = time.perf_counter() - t0
    except NinEdgeError as e:  # includes BackendUnavailable and missing artifacts
        if runner is not None:
            runner.close()
        if strict:
            raise
        return BenchRow(**base, status="unavailable", reason=str(e))
    try:
        acc = None
        if opts.accuracy:
            say(f"{plan.label}: accuracy on {len(x)} images")
            logits = predict_logits(runner, x, opts.eval_batch)
            acc = accuracy_of(logits, labels, ref[0] if ref else None, ref[1] if ref else None)
        lat = []
        for b in plan.batches:
            say(f"{plan.label}: timing batch {b}")
            lat.append(time_runner(runner, b, x, u8, opts))
        d = runner.describe()
    except NinEdgeError as e:
        if strict:
            raise
        return BenchRow(**base, status="failed", reason=str(e))
    except Exception as e:  # noqa: BLE001 - one broken backend must not hide the other rows of `--target all`
        if strict:
            raise
        return BenchRow(**base, status="failed", reason=f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")
    finally:
        runner.close()
    peak = _peak_rss_mb()
    return BenchRow(**base, status="ok", threads=d.get("threads_used", plan.threads), artifact=d.get("artifact"),
                    artifact_override=plan.artifact is not None,
                    artifact_bytes=_artifact_bytes(bundle, d.get("artifact")), executed=d, accuracy=acc,
                    latency=tuple(lat), load_s=load_s, peak_rss_mb=peak,
                    rss_added_mb=(peak - rss0) if (peak is not None and reset_ok) else None)


def _reference(bundle: Bundle, x: np.ndarray, labels: np.ndarray, opts: BenchOptions, say
               ) -> tuple[Reference, np.ndarray] | None:
    """fp32 logits of the bundle's reference artifact: ONNX Runtime on model.onnx, else torch on model.pt."""
    for name, rel in (("onnxruntime", "model.onnx"), ("torch", "model.pt")):
        if not (bundle.root / rel).exists():
            continue
        try:
            with create_runner(name, bundle, precision="fp32", device="cpu", threads=opts.threads) as r:
                say(f"fp32 reference ({name}, {rel}) on {len(x)} images")
                logits = predict_logits(r, x, opts.eval_batch)
        except BackendUnavailable:
            continue
        t1, t5 = _topk(logits, labels)
        return Reference(name, "fp32", rel, t1, t5), logits
    return None


def _auto(bundle: Bundle, x: np.ndarray, opts: BenchOptions, say) -> tuple[list[_Plan], list[AutoChoice]]:
    """Fastest backend per batch size at the requested precision, measured here, interleaved A B A B."""
    precision = opts.precision or "int8"
    device = opts.device or "cpu"
    runners: dict[str, Runner] = {}
    unavailable: dict[str, str] = {}
    for name in list_runners():
        try:
            cls = get_runner_class(name)
            if precision not in cls.precisions or device not in cls.devices:
                unavailable[name] = f"has no {precision} on {device}"
                continue
            runners[name] = create_runner(name, bundle, precision=precision, device=device, threads=opts.threads)
        except NinEdgeError as e:
            unavailable[name] = str(e)
    if not runners:
        raise NinEdgeError(f"--target auto: no backend can run {precision} on {device} here "
                           f"({'; '.join(f'{k}: {v}' for k, v in unavailable.items())})")
    plans, choices = [], []
    rounds = 5
    try:
        for b in opts.batches:
            xb = _batch_of(x, b)
            meds: dict[str, list[float]] = {n: [] for n in runners}
            for n, r in runners.items():
                r.prepare(b)
                for _ in range(max(3, opts.warmup)):
                    r.infer(xb)
            say(f"auto: timing {', '.join(runners)} at batch {b}")
            for _ in range(rounds):  # interleaved, so drift hits every candidate alike
                for n, r in runners.items():
                    st = time_call(lambda r=r: (r.infer(xb), r.synchronize()), b, warmup=1, seconds=0.15, rounds=1)
                    meds[n].append(st.median_ms)
            score = {n: float(np.median(v)) for n, v in meds.items()}
            best = min(score, key=score.get)
            others = [f"{n} {score[n]:.3f} ms" for n in sorted(score, key=score.get) if n != best]
            why = (f"{best} {precision} was fastest at batch {b}: {score[best]:.3f} ms median"
                   + (f" vs {', '.join(others)}" if others else " (the only backend available)")
                   + f" ({rounds} interleaved rounds on this machine)")
            cands = {**{n: round(s, 4) for n, s in score.items()}, **unavailable}
            choices.append(AutoChoice(b, precision, best, why, cands))
            plans.append(_Plan(best, precision, device, opts.threads, None, (b,)))
    finally:
        for r in runners.values():
            r.close()
    return plans, choices


def _bundle_sha(bundle: Bundle) -> str:
    return hashlib.sha256((bundle.root / "bundle.json").read_bytes()).hexdigest()


def run_bench(opts: BenchOptions) -> BenchReport:
    """Benchmark every requested target (and every spec's configuration) on one bundle and data set."""
    from .data import check_classes, load_dataset
    from .envinfo import environment
    from .preprocess import preprocess

    opts.validate()
    say = opts.progress or (lambda msg: None)
    bundle = Bundle.load(opts.bundle)
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None

    ds = load_dataset(opts.data, opts.split)
    check_classes(ds, tuple(bundle.classes), what=f"bundle {bundle.root}")
    if opts.max_images is not None:
        ds = ds.subset(np.arange(min(opts.max_images, len(ds))))
    x = preprocess(ds.images, bundle.preprocess)
    labels = np.asarray(ds.labels)

    plans: list[_Plan] = []
    rows_unavail: list[BenchRow] = []
    auto: list[AutoChoice] = []
    strict = True
    for t in opts.targets:
        if t == "all":
            p, r = _plans_all(bundle, opts)
            plans += p
            rows_unavail += r
            strict = False
        elif t == "auto":
            p, auto = _auto(bundle, x, opts, say)
            plans += p
        else:
            plans.append(_Plan(t, opts.precision or _default_precision(t), opts.device or _default_device(t),
                               opts.threads, opts.artifact, opts.batches))
    spec_keys = set()
    for s in opts.specs:
        if s.applicable() is None and (not s.arch or s.arch == bundle.arch):
            # a spec asking for exactly the threads a default row uses is that row, not a second one
            thr = None if opts.threads is None and s.threads == default_threads() else s.threads
            sp = _Plan(s.backend, s.precision, s.device, thr, s.artifact, s.batches or opts.batches)
            plans.append(sp)
            spec_keys.add(sp.key)
    if opts.specs:
        strict = False  # a spec whose target cannot run becomes a FAIL with the reason, not an abort
    plans = _merge(plans)

    ref = None
    if opts.accuracy and plans:
        ref = _reference(bundle, x, labels, opts, say)
    rows: list[BenchRow] = []
    for p in plans:
        rows.append(_run_row(p, bundle, x, labels, ds.images, (ref[1], ref[0].top1) if ref else None, opts,
                             strict and p.key not in spec_keys, say))
    rows += rows_unavail

    load_after = os.getloadavg() if hasattr(os, "getloadavg") else None
    cores = default_threads()
    notes = []
    if load_before and max(load_before[0], load_after[0]) > 0.5:
        notes.append(f"other work was running: 1-min load average {load_before[0]:.2f} before, {load_after[0]:.2f} "
                     f"after, on {cores} usable cores — timings include that contention")
    notes += [f"{r.label}: {r.executed['warning']}" for r in rows if r.executed.get("warning")]
    noisy = [f"{r.label} b{s.batch}" for r in rows for s in r.latency if s.noisy]
    if noisy:
        notes.append(f"noisy (round medians >{NOISY_SPREAD:.0%} apart; see CV): {', '.join(noisy)}")
    if ref is None and opts.accuracy and plans:  # with no row to run, no reference was needed
        notes.append("no fp32 reference (bundle has neither model.onnx nor model.pt): agreement not measured")

    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    settings = {
        "timed": opts.timed, "timed_description": TIMED[opts.timed], "warmup": opts.warmup, "iters": opts.iters,
        "seconds": None if opts.iters else opts.seconds, "rounds": opts.rounds, "batches": list(opts.batches),
        "threads_requested": opts.threads, "affinity": affinity, "gc_paused_while_timing": True,
        "clock": "time.perf_counter_ns per call", "eval_batch": opts.eval_batch,
        "load_average": {"before": list(load_before) if load_before else None,
                         "after": list(load_after) if load_after else None},
    }
    return BenchReport(
        schema=SCHEMA, created=datetime.now(timezone.utc).isoformat(timespec="seconds"), environment=environment(),
        bundle={"path": str(bundle.root), "sha256": _bundle_sha(bundle), "arch": bundle.arch,
                "classes": bundle.classes, "input_size": bundle.input_size, "tta": bundle.tta,
                "forward_passes_per_image": bundle.forward_passes},
        data={"source": ds.source, "split": opts.split, "images": int(len(ds))},
        settings=settings, reference=ref[0] if ref else None, rows=tuple(rows), auto=tuple(auto), notes=tuple(notes))


def check_specs(report: BenchReport, specs) -> list:
    """Each spec judged against the report's row with its configuration (see specs.check)."""
    from .specs import check

    out = []
    for s in specs:
        row = None if s.applicable() is not None else report.row_for(s.backend, s.precision, s.device, s.threads, s.artifact)
        out.append(check(row, s, bundle_arch=report.bundle.get("arch")))
    return out


def gate(verdicts) -> None:
    """Raise SpecFailed if any verdict failed (the CLI's exit 1)."""
    from .errors import SpecFailed

    failed = [v for v in verdicts if v.failed]
    if failed:
        names = ", ".join(f"{v.spec} ({', '.join(c.name for c in v.criteria if c.status == 'FAIL')})" for v in failed)
        raise SpecFailed(f"{len(failed)} of {len(verdicts)} spec(s) failed: {names}")


__all__ = ["BenchOptions", "BenchReport", "BenchRow", "LatencyStats", "Accuracy", "AutoChoice", "Reference",
           "run_bench", "check_specs", "gate", "time_call", "time_runner", "predict_logits", "TIMED", "SCHEMA"]
