"""The OpenCV demo: classify a camera, a stream, a video file or a folder of images with any runner.

    summary = run_demo(DemoOptions(source="clip.mp4", bundle="bundle", output="out.mp4", show=False))

Every frame goes through the same path as `nin-edge bench`: BGR frame → RGB → `preprocess.preprocess`
(the bundle's own spec: shorter side resized to the model input, centre crop; grayscale replicated, alpha
dropped) → `Runner.infer` on a batch of one → softmax → top-k. The overlay shows the top-3 classes with
probabilities, the target and precision, the measured FPS (sliding window over the last frames, whole loop:
capture wait + preprocess + inference + drawing + writing) and the per-frame inference latency (the runner
call alone, after one untimed warm-up call).

Sources (see `resolve_source`): a camera index (``0``) or device (``/dev/video0``), a video file, a stream
URL (``rtsp://``, ``http://``...), a GStreamer pipeline (any string with ``!``; Jetson CSI cameras) or a
folder of images. Live sources (camera/stream/pipeline, or a file with ``realtime=True``) are read by a
capture thread into a one-slot buffer: a slow model makes the demo drop stale frames (counted and shown)
instead of building a backlog, and capture never waits for inference. Files are read in the loop, every
frame, in order, so their predictions are deterministic. A folder gives a labelled contact sheet (PNG).

A source that ends (end of file, stream closed, camera unplugged), `q`/Esc in the window, closing the window,
Ctrl-C or `max_frames` all stop the demo cleanly: outputs written so far are finalised (temp file → rename)
and a `DemoSummary` is returned. Only an error (NinEdgeError) leaves no output behind.
"""
from __future__ import annotations

import contextlib
import enum
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .errors import NinEdgeError
from .preprocess import to_rgb_uint8
from .runners.base import PRECISIONS, list_runners

# Choices for the CLI come from the runner registry: a new runner is a new --target without touching this file.
Target = enum.Enum("Target", {n: n for n in list_runners()}, type=str)  # type: ignore[misc]
Precision = enum.Enum("Precision", {p: p for p in PRECISIONS}, type=str)  # type: ignore[misc]


class SourceKind(str, enum.Enum):
    camera = "camera"
    stream = "stream"
    gstreamer = "gstreamer"
    video = "video"
    images = "images"


LIVE_KINDS = (SourceKind.camera, SourceKind.stream, SourceKind.gstreamer)
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")
# output suffix → fourcc; mp4v/MJPG play almost everywhere, FFV1 (.mkv) is lossless for exact comparisons
VIDEO_FOURCC = {".mp4": "mp4v", ".avi": "MJPG", ".mkv": "FFV1"}
WINDOW = "nin-edge demo"
QUIT_KEYS = (ord("q"), ord("Q"), 27)
MIN_CANVAS = 360  # small frames (CIFAR-sized) are upscaled so the overlay text stays legible
FPS_WINDOW = 30  # frames in the sliding window behind the displayed FPS


@dataclass(frozen=True)
class DemoOptions:
    source: str
    bundle: str = "bundle"
    target: Target = Target("onnxruntime")  # type: ignore[call-arg]
    precision: Precision | None = None  # None: the runner's default (onnxruntime: int8, as `nin-edge bench`)
    device: str | None = None  # None: the runner's first device (cpu for CPU runners, cuda for tensorrt)
    threads: int | None = None
    show: bool | None = None  # None: a window if a display is available, else headless (said in the notes)
    output: str | None = None  # annotated video (.mp4/.avi/.mkv), or the contact sheet (.png) for a folder
    predictions: str | None = None  # JSONL, one line per frame; default: next to `output` with .jsonl
    max_frames: int | None = None
    realtime: bool = False  # play a file at its own frame rate through the live path (drops stale frames)
    topk: int = 3
    force: bool = False

    def __post_init__(self):
        for name, enum_cls in (("target", Target), ("precision", Precision)):
            v = getattr(self, name)
            if v is None and name == "precision":
                continue
            try:
                object.__setattr__(self, name, enum_cls(v.value if isinstance(v, enum.Enum) else v))
            except ValueError:
                raise NinEdgeError(f"--{name} {v!r}: choose one of {', '.join(e.value for e in enum_cls)}") from None
        if self.max_frames is not None and self.max_frames < 1:
            raise NinEdgeError(f"--max-frames {self.max_frames}: must be at least 1")
        if self.topk < 1:
            raise NinEdgeError(f"topk {self.topk}: must be at least 1")


@dataclass(frozen=True)
class DemoSummary:
    source: str
    kind: str
    target: str
    precision: str
    device: str
    frames: int  # frames classified
    captured: int  # frames read from the source (live: frames + dropped)
    dropped: int  # stale frames replaced in the one-slot buffer before inference could take them
    wall_s: float
    mean_fps: float  # frames / wall_s over the whole loop
    latency_ms_p50: float  # runner.infer per frame
    latency_ms_p99: float
    latency_ms_mean: float
    stop_reason: str
    output: str | None = None
    predictions: str | None = None
    skipped: tuple[str, ...] = ()  # folder files that could not be decoded
    notes: tuple[str, ...] = ()

    def format(self) -> str:
        lines = [f"stopped: {self.stop_reason}"]
        lines += [f"note: {n}" for n in self.notes]
        lines += [f"skipped {s}" for s in self.skipped]
        drop = f"captured {self.captured}, dropped {self.dropped}" if self.kind in [k.value for k in LIVE_KINDS] \
            or self.dropped else f"dropped {self.dropped}"
        noun = "images" if self.kind == SourceKind.images.value else "frames"
        lines.append(f"summary: {self.frames} {noun} ({drop}) in {self.wall_s:.2f} s, mean {self.mean_fps:.1f} FPS; "
                     f"inference p50 {self.latency_ms_p50:.2f} ms, p99 {self.latency_ms_p99:.2f} ms "
                     f"({self.target} {self.precision} on {self.device})")
        for what, p in (("output", self.output), ("predictions", self.predictions)):
            if p:
                lines.append(f"wrote {what}: {p}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- sources
@dataclass(frozen=True)
class Source:
    kind: SourceKind
    spec: str  # what the user typed
    arg: int | str  # what cv2.VideoCapture gets (unused for images)
    files: tuple[Path, ...] = ()  # images only

    @property
    def live(self) -> bool:
        return self.kind in LIVE_KINDS


def opencv_has(feature: str) -> bool:
    """True when cv2.getBuildInformation() lists `feature` (e.g. 'GStreamer') with YES."""
    import cv2

    return re.search(rf"^\s*{re.escape(feature)}:\s*YES", cv2.getBuildInformation(), re.M) is not None


def _list_images(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


def _camera_hint() -> str:
    devs = sorted(str(p) for p in Path("/dev").glob("video*")) if sys.platform.startswith("linux") else []
    return f"cameras here: {', '.join(devs)}" if devs else "no camera devices found on this machine"


def resolve_source(spec: str) -> Source:
    """Decide what `--source` names, checking what can be checked before opening it."""
    s = str(spec).strip()
    if not s:
        raise NinEdgeError("--source is empty (a camera index, /dev/videoN, a video file, a folder, a URL or a pipeline)")
    if "!" in s:
        if "appsink" not in s:
            raise NinEdgeError(f"--source {s!r}: a GStreamer pipeline must end in appsink "
                               "(e.g. '... ! videoconvert ! video/x-raw,format=BGR ! appsink drop=1')")
        if not opencv_has("GStreamer"):
            import cv2

            raise NinEdgeError(f"--source: a GStreamer pipeline needs OpenCV built with GStreamer; this OpenCV "
                               f"({cv2.__version__}) has none (on a Jetson use JetPack's OpenCV, e.g. python3-opencv, "
                               "or a USB camera as /dev/videoN)")
        return Source(SourceKind.gstreamer, s, s)
    if re.fullmatch(r"\d+", s):
        return Source(SourceKind.camera, s, int(s))
    m = re.match(r"([a-zA-Z][a-zA-Z0-9+.-]*)://", s)
    if m:
        if m.group(1).lower() not in STREAM_SCHEMES:
            raise NinEdgeError(f"--source {s!r}: unsupported URL scheme '{m.group(1)}' (use one of: {', '.join(STREAM_SCHEMES)})")
        return Source(SourceKind.stream, s, s)
    if s.startswith("/dev/video"):
        if not os.path.exists(s):
            raise NinEdgeError(f"--source {s}: no such camera device ({_camera_hint()})")
        return Source(SourceKind.camera, s, s)
    p = Path(s).expanduser()
    if not p.exists():
        raise NinEdgeError(f"--source {s}: no such file or directory")
    if p.is_dir():
        files = _list_images(p)
        if not files:
            raise NinEdgeError(f"--source {s}: folder holds no images ({', '.join(IMAGE_EXTS)})")
        return Source(SourceKind.images, s, str(p), tuple(files))
    if not os.access(p, os.R_OK):
        raise NinEdgeError(f"--source {s}: file is not readable (permission denied)")
    if p.suffix.lower() in IMAGE_EXTS:
        return Source(SourceKind.images, s, str(p.parent), (p,))
    return Source(SourceKind.video, s, str(p))


@contextlib.contextmanager
def _quiet_opencv():
    """OpenCV and FFmpeg print their own warnings when an open fails; we raise one clear error instead.

    FFmpeg's level is read from OPENCV_FFMPEG_LOGLEVEL (set it to 32 to see FFmpeg's messages again).
    """
    import cv2

    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    log = getattr(getattr(cv2, "utils", None), "logging", None)
    old = log.getLogLevel() if log else None
    if log:
        log.setLogLevel(log.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        if log:
            log.setLogLevel(old)


def open_capture(src: Source):
    """cv2.VideoCapture for a camera/stream/pipeline/video, checked open; errors name the source."""
    import cv2

    with _quiet_opencv():
        if src.kind is SourceKind.gstreamer:
            cap = cv2.VideoCapture(src.arg, cv2.CAP_GSTREAMER)
        elif src.kind is SourceKind.stream:
            # bounded waits: an unreachable camera on the network must not hang the demo for FFmpeg's default
            cap = cv2.VideoCapture(src.arg, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 10000,
                                                             cv2.CAP_PROP_READ_TIMEOUT_MSEC, 10000])
        elif src.kind is SourceKind.camera and isinstance(src.arg, str) and sys.platform.startswith("linux"):
            cap = cv2.VideoCapture(src.arg, cv2.CAP_V4L2)
        else:
            cap = cv2.VideoCapture(src.arg)
    if not cap.isOpened():
        cap.release()
        why = {
            SourceKind.camera: f"cannot open camera {src.spec} ({_camera_hint()})",
            SourceKind.stream: "cannot open the stream (unreachable, refused or not a video stream)",
            SourceKind.gstreamer: "GStreamer could not start this pipeline",
            SourceKind.video: "cannot read it as a video (corrupt, or not a format OpenCV's FFmpeg decodes)",
        }[src.kind]
        raise NinEdgeError(f"--source {src.spec}: {why}")
    if src.kind is SourceKind.camera:
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # driver-side queue of one: frames are fresh, not seconds old
    return cap


def source_fps(cap, default: float = 30.0) -> float:
    import cv2

    fps = cap.get(cv2.CAP_PROP_FPS)
    return float(fps) if fps and math.isfinite(fps) and 1.0 <= fps <= 1000.0 else default


def frame_to_rgb(frame: np.ndarray) -> np.ndarray:
    """An OpenCV frame (BGR, BGRA, gray HxW or HxWx1; 8 or 16 bit) → HxWx3 RGB uint8."""
    if frame.dtype == np.uint16:
        frame = (frame >> 8).astype(np.uint8)
    if frame.ndim == 3 and frame.shape[2] == 3:
        return np.ascontiguousarray(frame[:, :, ::-1])
    if frame.ndim == 3 and frame.shape[2] == 4:
        return np.ascontiguousarray(frame[:, :, [2, 1, 0]])
    return to_rgb_uint8(frame)


# --------------------------------------------------------------------------- live capture
_END = object()


class LatestFrame:
    """A one-slot buffer between capture and inference: `put` replaces an unconsumed frame (counted as dropped).

    Capture never waits for inference and inference always gets the newest frame, so a slow model shows
    fresh frames at a lower rate instead of an ever-growing delay.
    """

    def __init__(self):
        self._cond = threading.Condition()
        self._item = None
        self._reason: str | None = None
        self.captured = 0
        self.dropped = 0

    def put(self, item) -> None:
        with self._cond:
            if self._item is not None:
                self.dropped += 1
            self._item = item
            self.captured += 1
            self._cond.notify()

    def close(self, reason: str) -> None:
        with self._cond:
            if self._reason is None:
                self._reason = reason
            self._cond.notify_all()

    @property
    def reason(self) -> str | None:
        return self._reason

    def get(self, timeout: float):
        """The newest frame; `_END` once closed and drained; None on timeout."""
        with self._cond:
            self._cond.wait_for(lambda: self._item is not None or self._reason is not None, timeout)
            if self._item is not None:
                item, self._item = self._item, None
                return item
            return _END if self._reason is not None else None


class CaptureThread(threading.Thread):
    """Reads `cap` as fast as it delivers (or at `pace_fps` for a file played in real time) into a LatestFrame.

    `cap` is anything with read() → (ok, frame) and release(). A camera that fails `max_failures` reads in a
    row is reported as disconnected; a stream or file that fails once has ended.
    """

    def __init__(self, cap, slot: LatestFrame, kind: SourceKind, pace_fps: float | None = None,
                 max_failures: int = 10, retry_s: float = 0.05):
        super().__init__(name="nin-edge-capture", daemon=True)
        self.cap, self.slot, self.kind, self.pace_fps = cap, slot, kind, pace_fps
        self.max_failures, self.retry_s = max_failures, retry_s
        self.stop_event = threading.Event()
        self.t0 = time.perf_counter()

    def run(self) -> None:
        index, failures = 0, 0
        reason = "stopped"
        try:
            while not self.stop_event.is_set():
                if self.pace_fps:
                    delay = self.t0 + index / self.pace_fps - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                ok, frame = self.cap.read()
                if not ok or frame is None:
                    failures += 1
                    if self.kind is SourceKind.camera and failures < self.max_failures:
                        time.sleep(self.retry_s)  # a camera may skip a frame; many in a row means it is gone
                        continue
                    reason = {SourceKind.camera: "camera disconnected" if index else "camera delivered no frames",
                              SourceKind.video: "end of video"}.get(self.kind, "stream ended")
                    break
                failures = 0
                self.slot.put((index, frame, time.perf_counter()))
                index += 1
        except Exception as e:  # noqa: BLE001 - the main loop reports it and stops cleanly
            reason = f"capture error: {type(e).__name__}: {e}"
        finally:
            with contextlib.suppress(Exception):
                self.cap.release()
            self.slot.close(reason)


# --------------------------------------------------------------------------- drawing
def canvas_for(frame_bgr: np.ndarray, min_side: int = MIN_CANVAS) -> np.ndarray:
    """The picture the overlay is drawn on: small frames upscaled by a whole factor (nearest), even sizes.

    Whole-factor nearest keeps pixels honest (no invented detail); even sizes keep every video encoder happy.
    """
    import cv2

    img = frame_bgr if frame_bgr.ndim == 3 and frame_bgr.shape[2] == 3 else \
        frame_to_rgb(frame_bgr)[:, :, ::-1]
    h, w = img.shape[:2]
    k = max(1, math.ceil(min_side / min(h, w)))
    if k > 1:
        img = cv2.resize(img, (w * k, h * k), interpolation=cv2.INTER_NEAREST)
    h, w = img.shape[:2]
    if h % 2 or w % 2:
        img = cv2.copyMakeBorder(img, 0, h % 2, 0, w % 2, cv2.BORDER_REPLICATE)
    return np.ascontiguousarray(img)


def _shade(img: np.ndarray, x0: int, y0: int, x1: int, y1: int, alpha: float = 0.35) -> None:
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(img.shape[1], x1), min(img.shape[0], y1)
    roi = img[y0:y1, x0:x1]
    roi[:] = (roi.astype(np.float32) * alpha).astype(np.uint8)


def _text(img, s, org, scale, color=(255, 255, 255), thick=1) -> None:
    import cv2

    cv2.putText(img, s, org, cv2.FONT_HERSHEY_SIMPLEX, scale, color, thick, cv2.LINE_AA)


def _fit(s: str, max_w: int, scale: float, thick: int) -> float:
    import cv2

    w = cv2.getTextSize(s, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)[0][0]
    return scale if w <= max_w else scale * max_w / w


def top_panel_rect(canvas_shape, k: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the top-k panel drawn by `draw_overlay` (tests look for the overlay there)."""
    h, w = canvas_shape[:2]
    s = _scale(h, w)
    return 0, 0, w, int(20 * s) + int(36 * s) * k


def _scale(h: int, w: int) -> float:
    return min(2.0, max(0.45, min(h, w) / 600))


def crop_box(h: int, w: int) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of the centre square THE preprocessing keeps from an h×w picture; None when square."""
    if h == w:
        return None
    side = min(h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    return x0, y0, x0 + side, y0 + side


def _draw_crop(img: np.ndarray, box, color=(0, 215, 255)) -> None:
    import cv2

    if box is not None:
        x0, y0, x1, y1 = box
        cv2.rectangle(img, (x0, y0), (x1 - 1, y1 - 1), color, max(1, min(img.shape[:2]) // 300))


def draw_overlay(canvas: np.ndarray, top: list[tuple[str, float]], status: list[str],
                 frame_hw: tuple[int, int] | None = None) -> np.ndarray:
    """Draw top-k (class, prob) with bars at the top and status lines at the bottom, in place; returns canvas.

    With `frame_hw` (the frame's size before `canvas_for`) a non-square frame also gets a thin box around the
    centre square the model actually sees.
    """
    import cv2

    h, w = canvas.shape[:2]
    s = _scale(h, w)
    thick = max(1, round(2 * s))
    if frame_hw is not None and (box := crop_box(*frame_hw)) is not None:
        k = h // frame_hw[0] if h // frame_hw[0] == w // frame_hw[1] else 1
        _draw_crop(canvas, tuple(v * k for v in box))
    pad, line = int(8 * s), int(36 * s)
    x0, y0, x1, y1 = top_panel_rect(canvas.shape, len(top))
    _shade(canvas, x0, y0, x1, y1)
    bar_w = w - 2 * pad
    for i, (name, p) in enumerate(top):
        y = int(16 * s) + i * line
        color = (80, 220, 80) if i == 0 else (200, 160, 60)
        cv2.rectangle(canvas, (pad, y + int(line * 0.74)), (pad + max(1, int(bar_w * p)), y + int(line * 0.9)),
                      color, -1)
        label = f"{name}  {100 * p:5.1f}%"
        _text(canvas, label, (pad, y + int(line * 0.62)), _fit(label, bar_w, 0.9 * s * 1.25, thick),
              (255, 255, 255), thick)
    line2 = int(26 * s)
    yb = h - line2 * len(status) - pad
    _shade(canvas, 0, yb - pad // 2, w, h)
    for i, st in enumerate(status):
        _text(canvas, st, (pad, yb + (i + 1) * line2 - int(6 * s)), _fit(st, w - 2 * pad, 0.75 * s * 1.25, thick),
              (255, 255, 255), max(1, thick - 1))
    return canvas


def contact_sheet(items: list[tuple[str, np.ndarray, list[tuple[str, float]]]], header: str,
                  tile: int = 160, max_cols: int = 8) -> np.ndarray:
    """A BGR grid: each image fitted in a tile (aspect kept), its file name and top-3 under it."""
    import cv2

    n = len(items)
    cols = max(1, min(max_cols, math.ceil(math.sqrt(n))))
    rows = math.ceil(n / cols)
    cap_h, head_h, gap = 62, 34, 6
    W = cols * (tile + gap) + gap
    H = head_h + rows * (tile + cap_h + gap) + gap
    sheet = np.full((H, W, 3), 245, np.uint8)
    cv2.rectangle(sheet, (0, 0), (W, head_h), (60, 60, 60), -1)
    _text(sheet, header, (gap, head_h - 11), _fit(header, W - 2 * gap, 0.55, 1), (255, 255, 255), 1)
    for i, (name, rgb, top) in enumerate(items):
        r, c = divmod(i, cols)
        x, y = gap + c * (tile + gap), head_h + gap + r * (tile + cap_h + gap)
        h, w = rgb.shape[:2]
        k = tile / max(h, w)
        nh, nw = max(1, round(h * k)), max(1, round(w * k))
        small = max(h, w) <= tile and tile % max(h, w) == 0
        img = cv2.resize(rgb[:, :, ::-1], (nw, nh),
                         interpolation=cv2.INTER_NEAREST if small else (cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR))
        cell = np.zeros((tile, tile, 3), np.uint8)
        oy, ox = (tile - nh) // 2, (tile - nw) // 2
        cell[oy:oy + nh, ox:ox + nw] = img
        if (box := crop_box(nh, nw)) is not None:  # what the model sees of a non-square image
            _draw_crop(cell, (box[0] + ox, box[1] + oy, box[2] + ox, box[3] + oy))
        sheet[y:y + tile, x:x + tile] = cell
        lines = [(name, 0.4, (90, 90, 90))]
        if top:
            lines.append((f"{top[0][0]} {100 * top[0][1]:.0f}%", 0.5, (20, 120, 20)))
            lines.append((" / ".join(f"{c_} {100 * p:.0f}%" for c_, p in top[1:3]), 0.38, (60, 60, 60)))
        for j, (s, sc, col) in enumerate(lines):
            _text(sheet, s, (x, y + tile + 16 + j * 20), _fit(s, tile, sc, 1), col, 1)
    return sheet


# --------------------------------------------------------------------------- outputs (temp → rename)
def _tmp_sibling(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.tmp-", suffix=path.suffix)
    os.close(fd)
    os.chmod(name, 0o644)  # mkstemp's 0600 would make the result private to this user
    return Path(name)


class AtomicVideo:
    """cv2.VideoWriter into a temp sibling (same suffix, so the container matches), renamed by `commit`."""

    def __init__(self, path: Path, fps: float):
        self.path, self.fps = path, fps
        self.tmp: Path | None = None
        self.writer = None
        self.size: tuple[int, int] | None = None
        self.frames = 0

    def write(self, canvas: np.ndarray) -> None:
        import cv2

        if self.writer is None:
            self.size = (canvas.shape[1], canvas.shape[0])
            self.tmp = _tmp_sibling(self.path)
            with _quiet_opencv():
                self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*VIDEO_FOURCC[self.path.suffix.lower()]),
                                              self.fps, self.size)
            if not self.writer.isOpened():
                self.abort()
                raise NinEdgeError(f"--output {self.path}: OpenCV cannot write this video format here "
                                   f"(try one of: {', '.join(VIDEO_FOURCC)})")
        if (canvas.shape[1], canvas.shape[0]) != self.size:  # a source whose frame size changes mid-stream
            canvas = cv2.resize(canvas, self.size, interpolation=cv2.INTER_AREA)
        self.writer.write(canvas)
        self.frames += 1

    def commit(self) -> bool:
        if self.writer is None:
            return False
        self.writer.release()
        self.writer = None
        os.replace(self.tmp, self.path)
        return True

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)


class AtomicLines:
    """A JSONL file written to a temp sibling and renamed by `commit`."""

    def __init__(self, path: Path):
        self.path = path
        self.tmp = _tmp_sibling(path)
        self.f = open(self.tmp, "w")

    def write(self, record: dict) -> None:
        self.f.write(json.dumps(record) + "\n")

    def commit(self) -> None:
        self.f.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self.f.close()
        self.tmp.unlink(missing_ok=True)


def _write_png_atomic(path: Path, img: np.ndarray) -> None:
    import cv2

    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise NinEdgeError(f"--output {path}: PNG encoding failed")
    tmp = _tmp_sibling(path)
    try:
        tmp.write_bytes(buf.tobytes())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------- display
def display_problem() -> str | None:
    """Why no OpenCV window can be opened here, or None when one can.

    Probed in a child process: Qt aborts the whole process (no exception) when it cannot reach a display, and
    the demo must fail with a message instead.
    """
    import cv2

    gui = re.search(r"^\s*GUI:\s*(\S+)", cv2.getBuildInformation(), re.M)
    if gui and gui.group(1).upper() == "NONE":
        return "this OpenCV build has no GUI support (opencv-python-headless?)"
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no display (DISPLAY is not set)"
    if not sys.platform.startswith(("linux", "freebsd")):
        return None  # Win32/Cocoa windows report failure as an OpenCV error instead of ending the process
    probe = "import cv2, numpy; cv2.namedWindow('probe'); cv2.imshow('probe', numpy.zeros((8, 8, 3), numpy.uint8)); " \
            "cv2.waitKey(1); cv2.destroyAllWindows()"
    try:
        r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "opening a test window timed out"
    if r.returncode != 0:
        last = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
        where = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or "the desktop"
        return f"OpenCV cannot open a window on {where}" + (f" ({last[0].strip()[:160]})" if last else "")
    return None


class Window:
    def __init__(self):
        import cv2

        self.cv2 = cv2
        cv2.namedWindow(WINDOW, cv2.WINDOW_AUTOSIZE | cv2.WINDOW_GUI_NORMAL)

    def show(self, img: np.ndarray, wait_ms: int = 1) -> bool:
        """Show `img`; False when the user pressed q/Esc or closed the window."""
        cv2 = self.cv2
        cv2.imshow(WINDOW, img)
        key = cv2.waitKey(wait_ms)
        if key != -1 and (key & 0xFF) in QUIT_KEYS:
            return False
        return cv2.getWindowProperty(WINDOW, cv2.WND_PROP_VISIBLE) >= 1

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.cv2.destroyWindow(WINDOW)
            self.cv2.waitKey(1)


# --------------------------------------------------------------------------- the loop
def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def topk(probs: np.ndarray, k: int) -> list[int]:
    return [int(i) for i in np.argsort(-probs, kind="stable")[:k]]


@dataclass
class _Stats:
    latencies_ms: list[float] = field(default_factory=list)
    stamps: deque = field(default_factory=lambda: deque(maxlen=FPS_WINDOW))

    def fps(self) -> float:
        if len(self.stamps) < 2:
            return 0.0
        return (len(self.stamps) - 1) / max(1e-9, self.stamps[-1] - self.stamps[0])


FrameHook = Callable[[int, np.ndarray, np.ndarray], None]


def _output_paths(opts: DemoOptions, src: Source) -> tuple[Path | None, Path | None]:
    out = Path(opts.output).expanduser() if opts.output else None
    if src.kind is SourceKind.images:
        if out is None:
            out = Path(f"{Path(src.arg).resolve().name or 'images'}-contact-sheet.png")
        if out.suffix.lower() != ".png":
            raise NinEdgeError(f"--output {out}: a folder source writes a contact sheet; use a .png path")
    elif out is not None and out.suffix.lower() not in VIDEO_FOURCC:
        raise NinEdgeError(f"--output {out}: unsupported video suffix (choose: {', '.join(VIDEO_FOURCC)})")
    preds = Path(opts.predictions).expanduser() if opts.predictions else (out.with_suffix(".jsonl") if out else None)
    if preds is not None and out is not None and preds.resolve() == out.resolve():
        raise NinEdgeError(f"--predictions {preds}: same path as --output")
    for p, opt in ((out, "--output"), (preds, "--predictions")):
        if p is None:
            continue
        if p.exists() and not opts.force:
            raise NinEdgeError(f"{opt} {p}: already exists (use --force to replace it)")
        if p.is_dir():
            raise NinEdgeError(f"{opt} {p}: is a directory")
    return out, preds


def _record(index: int, probs: np.ndarray, order: list[int], classes: list[str], ms: float, **extra) -> dict:
    return {"frame": index, **extra,
            "top": [{"class": classes[i], "index": i, "prob": float(probs[i])} for i in order],
            "infer_ms": round(ms, 4)}


def run_demo(opts: DemoOptions, on_frame: FrameHook | None = None) -> DemoSummary:
    """Run the demo to the end of the source, a quit key, Ctrl-C or max_frames; see the module doc.

    `on_frame(index, frame_bgr, canvas_bgr)` is called after each frame is drawn (and shown/written): a
    hook for embedding the demo (and for tests to grab the window while it is up).
    """
    from .bundle import Bundle
    from .runners.base import create_runner, get_runner_class

    src = resolve_source(opts.source)
    if opts.realtime and src.kind is not SourceKind.video:
        raise NinEdgeError("--realtime applies to a video file source only (cameras and streams are live already)")
    out, preds_path = _output_paths(opts, src)
    notes: list[str] = []
    show = opts.show
    if show is None or show:
        problem = display_problem()
        if problem and show:
            raise NinEdgeError(f"--show: {problem}; run headless with --no-show --output demo.mp4")
        if problem:
            notes.append(f"{problem}: running without a window" + ("" if out else " (add --output demo.mp4 to keep the result)"))
        show = problem is None
    bundle = Bundle.load(opts.bundle)
    target = opts.target.value
    runner_cls = get_runner_class(target)
    precision = opts.precision.value if opts.precision else getattr(runner_cls, "default_precision", "fp32")
    device = opts.device or runner_cls.devices[0]
    cap = open_capture(src) if src.kind is not SourceKind.images else None
    run = None
    try:
        with create_runner(target, bundle, precision=precision, device=device, threads=opts.threads) as runner:
            # warm-up outside the measurement: the first call builds kernels/plans on most backends
            runner.prepare(1)
            runner.infer(np.zeros((1, 3, bundle.input_size, bundle.input_size), np.float32))
            runner.synchronize()
            run = _Loop(opts, src, bundle, runner, precision, device, show, on_frame)
            if src.kind is SourceKind.images:
                return run.images(out, preds_path, notes)
            return run.video(cap, out, preds_path, notes)
    finally:
        # once a capture thread owns `cap` it releases it itself (never from two threads at once)
        if cap is not None and not (run and run.capture_thread_started):
            cap.release()


class _Loop:
    def __init__(self, opts, src, bundle, runner, precision, device, show, on_frame):
        self.opts, self.src, self.bundle, self.runner, self.device = opts, src, bundle, runner, device
        self.precision = precision
        self.show, self.on_frame = show, on_frame
        self.classes = bundle.classes
        self.spec = bundle.preprocess
        self.stats = _Stats()
        tta = f" + {bundle.tta} TTA" if bundle.tta != "none" else ""  # export --tta: inside the artifact
        self.label = f"{opts.target.value} {precision} ({device}){tta}"
        self.capture_thread_started = False

    def classify(self, rgb: np.ndarray) -> tuple[np.ndarray, list[int], float]:
        from .preprocess import preprocess

        x = preprocess(rgb, self.spec)
        t0 = time.perf_counter()
        logits = self.runner.infer(x)
        self.runner.synchronize()
        ms = (time.perf_counter() - t0) * 1e3
        self.stats.latencies_ms.append(ms)
        probs = softmax(logits[0])
        return probs, topk(probs, self.opts.topk), ms

    def summary(self, frames, captured, dropped, wall, reason, out, preds, notes, skipped=()) -> DemoSummary:
        lat = np.asarray(self.stats.latencies_ms or [float("nan")])
        return DemoSummary(
            source=self.src.spec, kind=self.src.kind.value, target=self.opts.target.value,
            precision=self.precision, device=self.device, frames=frames, captured=captured,
            dropped=dropped, wall_s=wall, mean_fps=frames / wall if wall > 0 else 0.0,
            latency_ms_p50=float(np.percentile(lat, 50)), latency_ms_p99=float(np.percentile(lat, 99)),
            latency_ms_mean=float(lat.mean()), stop_reason=reason, output=str(out) if out else None,
            predictions=str(preds) if preds else None, skipped=tuple(skipped), notes=tuple(notes))

    # ---- camera / stream / video
    def _frames(self, cap, live: bool, pace: float | None) -> tuple[Iterator, Callable[[], tuple[int, int, str]], Callable]:
        """(iterator of (index, frame, capture time or None), counters() → (captured, dropped, end reason), stop())."""
        if live:
            slot = LatestFrame()
            th = CaptureThread(cap, slot, self.src.kind, pace_fps=pace)
            th.start()
            self.capture_thread_started = True

            def it():
                while True:
                    item = slot.get(timeout=0.25)
                    if item is _END:
                        return
                    if item is not None:
                        yield item

            def stop():
                th.stop_event.set()
                th.join(timeout=3.0)  # a blocked camera read returns within a frame time; never hang on exit

            return it(), lambda: (slot.captured, slot.dropped, slot.reason or "stopped"), stop

        state = {"n": 0, "reason": "end of video"}

        def it_file():
            while True:
                ok, frame = cap.read()
                if not ok or frame is None:
                    return
                state["n"] += 1
                yield state["n"] - 1, frame, None

        return it_file(), lambda: (state["n"], 0, state["reason"]), lambda: None  # run_demo releases cap

    def video(self, cap, out: Path | None, preds_path: Path | None, notes: list[str]) -> DemoSummary:
        opts = self.opts
        live = self.src.live or opts.realtime
        fps_src = source_fps(cap)
        writer = AtomicVideo(out, fps_src) if out else None
        preds, window, n, reason = None, None, 0, None
        try:
            preds = AtomicLines(preds_path) if preds_path else None
            window = Window() if self.show else None
            frames_it, counters, stop = self._frames(cap, live, fps_src if opts.realtime else None)
            t_start = time.perf_counter()
            try:
                for index, frame, t_capture in frames_it:
                    rgb = frame_to_rgb(frame)
                    probs, order, ms = self.classify(rgb)
                    self.stats.stamps.append(time.perf_counter())
                    n += 1
                    _, dropped, _ = counters()
                    canvas = canvas_for(frame)
                    fps = self.stats.fps()
                    status = [self.label, (f"{fps:.1f} FPS" if fps else "-- FPS") + f"  infer {ms:.2f} ms"
                              + (f"  dropped {dropped}" if live else "")]
                    draw_overlay(canvas, [(self.classes[i], float(probs[i])) for i in order], status, frame.shape[:2])
                    if preds:
                        # live: how old the frame is when its prediction is ready (buffer wait + inference)
                        extra = {"age_ms": round((time.perf_counter() - t_capture) * 1e3, 3)} if t_capture else {}
                        preds.write(_record(index, probs, order, self.classes, ms, **extra))
                    if writer:
                        writer.write(canvas)
                    if window and not window.show(canvas):
                        reason = "quit by user"
                    if self.on_frame:
                        self.on_frame(index, frame, canvas)
                    if reason is None and opts.max_frames and n >= opts.max_frames:
                        reason = f"reached --max-frames {opts.max_frames}"
                    if reason:
                        break
            except KeyboardInterrupt:
                reason = "interrupted (Ctrl-C)"
            finally:
                stop()
            wall = time.perf_counter() - t_start
            captured, dropped, end = counters()
            if n == 0 and reason is None:
                what = "video" if self.src.kind is SourceKind.video else "source"
                raise NinEdgeError(f"--source {self.src.spec}: the {what} yielded no frames "
                                   f"({end}; corrupt, empty or not a video OpenCV can decode)")
            reason = reason or end
            if writer and writer.commit() is False:
                out = None
            if preds:
                preds.commit()
        except BaseException:
            if writer:
                writer.abort()
            if preds:
                preds.abort()
            raise
        finally:
            if window:
                window.close()
        if not live:
            captured = n
        return self.summary(n, captured, dropped, wall, reason, out, preds_path, notes)

    # ---- folder of images
    def images(self, out: Path, preds_path: Path | None, notes: list[str]) -> DemoSummary:
        from .data import decode_image

        root = Path(self.src.arg)
        files = self.src.files[: self.opts.max_frames] if self.opts.max_frames else self.src.files
        items, skipped = [], []
        preds = AtomicLines(preds_path) if preds_path else None
        reason = "all images classified" if len(files) == len(self.src.files) else \
            f"reached --max-frames {self.opts.max_frames}"
        t_start = time.perf_counter()
        try:
            try:
                for i, f in enumerate(files):
                    name = f.relative_to(root).as_posix()
                    try:
                        rgb = decode_image(f.read_bytes(), str(f))
                    except (NinEdgeError, OSError) as e:
                        skipped.append(f"{f}: {e}" if isinstance(e, OSError) else str(e))
                        continue
                    probs, order, ms = self.classify(rgb)
                    self.stats.stamps.append(time.perf_counter())
                    top = [(self.classes[j], float(probs[j])) for j in order]
                    items.append((name, rgb, top))
                    if preds:
                        preds.write(_record(i, probs, order, self.classes, ms, file=name))
            except KeyboardInterrupt:
                reason = "interrupted (Ctrl-C)"
            wall = time.perf_counter() - t_start
            if not items:
                raise NinEdgeError(f"--source {self.src.spec}: none of its {len(files)} image files could be decoded")
            lat = np.asarray(self.stats.latencies_ms)
            header = (f"nin-edge  {self.bundle.arch}  {self.label}  {len(items)} images  "
                      f"infer p50 {np.percentile(lat, 50):.2f} ms")
            sheet = contact_sheet(items, header)
            out.parent.mkdir(parents=True, exist_ok=True)
            _write_png_atomic(out, sheet)
            if preds:
                preds.commit()
        except BaseException:
            if preds:
                preds.abort()
            raise
        if self.show:
            w = Window()
            try:
                while w.show(sheet, wait_ms=100):
                    pass
            except KeyboardInterrupt:
                pass
            finally:
                w.close()
        n = len(items)
        return self.summary(n, n + len(skipped), 0, wall, reason, out, preds_path, notes, skipped)


__all__ = ["DemoOptions", "DemoSummary", "Target", "Precision", "SourceKind", "run_demo", "resolve_source",
           "LatestFrame", "CaptureThread", "canvas_for", "draw_overlay", "contact_sheet", "display_problem",
           "frame_to_rgb", "top_panel_rect"]
