"""The main job: weights → verified deployment bundle → benchmark of every artifact → PASS/FAIL per spec.

    result = run_pipeline(PipelineOptions(out="nin-edge-out"))

Stages, each the library function of its own command (no second implementation):
  weights  shipped default, a checkpoint (`--weights`), or a fresh run of `train.train` (`--train`)
  bundle   `export.export_bundle(--int8)` with every format this machine can build, cached: the bundle is
           reused when a content hash of (weights bytes, export options, calibration spec text, export code)
           matches the one recorded beside it and every artifact still matches its sha256 (`--fresh` rebuilds)
  bench    `bench.run_bench` on every artifact (`--target all`) plus each spec's configuration
  verdict  `bench.check_specs` → summary table, `summary.json`, `report/` (report.md + plots + bench.json)
Every output is written to a temporary name and renamed when complete, so Ctrl-C at any stage leaves the
previous complete outputs intact. An error names its stage once.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from .atomic import atomic_write_text
from .errors import NinEdgeError

STAGES = ("weights", "bundle", "bench", "verdict")
CACHE_FILE = "pipeline-cache.json"
# Source files whose code decides what the bundle contains: a change in any of them invalidates the cache.
_EXPORT_CODE = ("export.py", "quantize.py", "calibration.py", "bundle.py", "preprocess.py", "models.py",
                "build/openvino.py", "build/tensorrt.py", "diagnose.py", "tta.py")


@dataclass(frozen=True)
class PipelineOptions:
    weights: str | None = None            # None: shipped weights (or the fresh run's best.pt with `train`)
    train: object | None = None           # a train.TrainConfig: train first (its `out` defaults under OUT/train)
    specs: tuple[str, ...] = ()           # target spec names/paths; () = shipped specs runnable here
    calib: str = "default"
    method: str | None = None             # calibration method; None = export's default
    tta: str = "none"                     # export --tta: test-time augmentation inside every artifact
    data: str = "bundled:eval"            # evaluation data for the bench
    out: str = "nin-edge-out"
    fresh: bool = False
    batches: tuple[int, ...] = (1, 64)
    seconds: float = 0.5                  # timed wall time per batch size and row
    threads: int | None = None
    max_images: int | None = None         # evaluate on the first N images of `data` only
    progress: bool = True


@dataclass(frozen=True)
class PipelineResult:
    out: Path
    weights: str
    bundle: Path
    bundle_reused: bool
    tensorrt: str                          # "built" or why it was skipped
    report: object                         # bench.BenchReport
    verdicts: tuple
    stage_seconds: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return bool(self.verdicts) and not any(v.failed for v in self.verdicts)


@contextlib.contextmanager
def _stage(name: str, times: dict, say):
    """Time a stage and prefix any user error with its name (once)."""
    t = time.perf_counter()
    say(f"[bold cyan]▶ {name}[/]")
    try:
        yield
    except NinEdgeError as e:
        if not str(e).startswith("stage '"):
            err = type(e).__new__(type(e))
            NinEdgeError.__init__(err, f"stage '{name}': {e}")
            err.exit_code = e.exit_code
            raise err from None
        raise
    finally:
        times[name] = round(time.perf_counter() - t, 2)


def _sha256_file(p: Path) -> str:
    from .data import sha256_file

    return sha256_file(p)


def tensorrt_status() -> str:
    """'available' when TensorRT and an NVIDIA GPU are both here, else why not."""
    if importlib.util.find_spec("tensorrt") is None:
        return "skipped: no TensorRT/GPU here (tensorrt is not installed; use the bundle's tensorrt/build_engine.sh on the target)"
    from .envinfo import gpus

    if not gpus():
        return "skipped: no TensorRT/GPU here (tensorrt is installed but no NVIDIA GPU was found)"
    return "available"


def export_formats() -> tuple[str, ...]:
    fmts = ["onnx"]
    if importlib.util.find_spec("openvino") is not None and importlib.util.find_spec("nncf") is not None:
        fmts.append("openvino")
    if tensorrt_status() == "available":
        fmts.append("tensorrt")
    return tuple(fmts)


def bundle_key(weights: Path, export_opts, calib: str) -> str:
    """Content hash of everything the bundle is made from (not of paths or timestamps)."""
    from . import __version__
    from .calibration import load_calibration_spec
    from .data import SUBSETS_DIR

    h = hashlib.sha256()
    h.update(_sha256_file(weights).encode())
    opts = asdict(export_opts)
    for k in ("out", "force", "progress", "weights"):
        opts.pop(k, None)
    h.update(json.dumps(opts, sort_keys=True, default=str).encode())
    calib_path = Path(calib)
    if calib_path.is_dir():  # a folder of the user's images: hash names and bytes
        for p in sorted(calib_path.rglob("*")):
            if p.is_file():
                h.update(str(p.relative_to(calib_path)).encode())
                h.update(_sha256_file(p).encode())
    else:  # a spec: its text, and the bytes of the data it samples from
        spec, where = load_calibration_spec(calib)
        h.update(Path(where).read_bytes())
        src = str(spec.source)
        data_file = SUBSETS_DIR / f"{src.split(':', 1)[1]}.npz" if src.startswith("bundled:") else Path(src)
        if data_file.is_file():
            h.update(_sha256_file(data_file).encode())
    root = Path(__file__).parent
    for rel in _EXPORT_CODE:
        p = root / rel
        if p.exists():
            h.update(p.read_bytes())
    h.update(__version__.encode())
    return h.hexdigest()


def _cached_bundle(out: Path, bundle_dir: Path, key: str):
    """The existing bundle if it was made from the same inputs and is intact, else None."""
    from .bundle import Bundle

    cache = out / CACHE_FILE
    if not cache.exists() or not (bundle_dir / "bundle.json").exists():
        return None
    try:
        rec = json.loads(cache.read_text())
        b = Bundle.load(bundle_dir)
    except (json.JSONDecodeError, NinEdgeError):
        return None
    if rec.get("bundle_key") != key or rec.get("bundle_json_sha256") != _sha256_file(bundle_dir / "bundle.json"):
        return None
    if b.verify():  # an artifact was changed or removed since
        return None
    return b


def default_specs(arch: str | None = None) -> list:
    """Shipped target specs that can be judged here: backend installed, this machine, this model."""
    from .runners.base import available_runners
    from .specs import list_target_specs, load_target_spec

    avail = available_runners()
    out = []
    for name in list_target_specs():
        s = load_target_spec(name)
        if avail.get(s.backend) is None and s.applicable() is None and (not s.arch or not arch or s.arch == arch):
            out.append(s)
    return out


def run_pipeline(opts: PipelineOptions) -> PipelineResult:
    from rich.markup import escape

    from .bench import BenchOptions, check_specs, run_bench
    from .checkpoint import load_model, shipped_weights
    from .export import ExportOptions, export_bundle
    from .report import to_json_dict, write_report
    from .specs import load_target_spec

    if opts.weights and opts.train is not None:
        raise NinEdgeError("give --weights or --train, not both")
    out = Path(opts.out)
    if out.exists() and not out.is_dir():
        raise NinEdgeError(f"--out {out}: exists and is not a directory")
    say = _printer(opts.progress)
    times: dict[str, float] = {}

    # ---- 1. weights
    with _stage("weights", times, say):
        if opts.train is not None:
            from .train import train

            cfg = opts.train
            if cfg.out in ("", "runs/train"):
                cfg = replace(cfg, out=str(out / "train"))
            res = train(cfg)
            weights = Path(res.out) / "best.pt"
        else:
            weights = Path(opts.weights) if opts.weights else shipped_weights()
        _, meta = load_model(weights)  # fails here, named, if missing/corrupt/wrong arch
        say(f"  weights: {escape(str(weights))} ({meta['arch']}, {len(meta['classes'])} classes)")

    # ---- 2. bundle (cached by content hash)
    trt = tensorrt_status()
    with _stage("bundle", times, say):
        bundle_dir = out / "bundle"
        eo = ExportOptions(weights=str(weights), out=str(bundle_dir), int8=True, calib=opts.calib,
                           formats=export_formats(), force=True, progress=opts.progress, tta=opts.tta,
                           **({"method": opts.method} if opts.method else {}))
        key = bundle_key(weights, eo, opts.calib)
        bundle = None if opts.fresh else _cached_bundle(out, bundle_dir, key)
        reused = bundle is not None
        if reused:
            say(f"  reusing {bundle_dir} (same weights, options, calibration and export code; --fresh rebuilds)")
        else:
            if bundle_dir.exists() and not (bundle_dir / "bundle.json").exists() and any(bundle_dir.iterdir()):
                raise NinEdgeError(f"{bundle_dir}: exists and is not a nin-edge bundle; refusing to replace it")
            (out / CACHE_FILE).unlink(missing_ok=True)  # a half-replaced cache record must never match
            bundle = export_bundle(eo).bundle
            atomic_write_text(out / CACHE_FILE, json.dumps(
                {"bundle_key": key, "bundle_json_sha256": _sha256_file(bundle_dir / "bundle.json")}, indent=1))
        say(f"  TensorRT engine: {'built' if trt == 'available' else trt}")

    # ---- 3. bench every artifact, and each spec's configuration
    with _stage("bench", times, say):
        specs = [load_target_spec(s) for s in opts.specs] if opts.specs else default_specs(bundle.arch)
        if not specs:
            raise NinEdgeError("no target spec can be judged on this machine (pass --spec targets/X.toml)")
        report = run_bench(BenchOptions(bundle=str(bundle_dir), targets=("all",), data=opts.data,
                                        batches=opts.batches, seconds=opts.seconds, threads=opts.threads,
                                        max_images=opts.max_images,
                                        specs=tuple(specs), progress=(lambda m: say(f"  {escape(m)}")) if opts.progress else None))

    # ---- 4. verdict + report
    with _stage("verdict", times, say):
        verdicts = tuple(check_specs(report, specs))
        write_report(report, out / "report", verdicts, force=True)
    summary = {
        "schema": "nin-edge-pipeline/1", "weights": str(weights), "bundle": str(bundle_dir),
        "bundle_reused": reused, "tensorrt": trt, "stage_seconds": times,
        "passed": bool(verdicts) and not any(v.failed for v in verdicts),
        "verdicts": [{"spec": v.spec, "status": v.status, "row": v.row,
                      "criteria": [asdict(c) for c in v.criteria]} for v in verdicts],
        "bench": to_json_dict(report, verdicts, samples=False),
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1, default=str) + "\n")
    return PipelineResult(out, str(weights), bundle_dir, reused, trt, report, verdicts, times)


def _printer(enabled: bool):
    if not enabled:
        return lambda msg: None
    from rich.console import Console

    console = Console(stderr=True, highlight=False)
    return console.print
