"""`nin-edge demo`: real videos built from CIFAR-10 test images, run headless (and in a window under Xvfb) on a
CPU runner; per-frame predictions checked against the bench pipeline (preprocess → runner) on the same
decoded frames; outputs decoded; bad inputs give one-line errors with exit code 2."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from typer.testing import CliRunner  # noqa: E402

from nin_edge.cli import app  # noqa: E402
from nin_edge.demo import (  # noqa: E402
    CaptureThread, DemoOptions, LatestFrame, SourceKind, canvas_for, display_problem, frame_to_rgb,
    opencv_has, run_demo, softmax, top_panel_rect,
)
from nin_edge.preprocess import preprocess  # noqa: E402

N_FRAMES = 24
SIDE = 128  # CIFAR images upscaled ×4 (nearest) like a small real video


def _write_video(path: Path, frames_bgr: list[np.ndarray], fourcc: str, fps: float = 10.0,
                 color: bool = True) -> Path:
    h, w = frames_bgr[0].shape[:2]
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h), color)
    assert wr.isOpened(), f"this OpenCV cannot write {fourcc} to {path.suffix}"
    for f in frames_bgr:
        wr.write(f)
    wr.release()
    return path


def _decode_all(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        out.append(f)
    cap.release()
    return out


@pytest.fixture(scope="module")
def cifar_frames():
    from nin_edge.data import load_dataset

    ds = load_dataset("bundled:eval")
    idx = np.arange(0, 1000, 1000 // N_FRAMES)[:N_FRAMES]  # spread over the classes
    return [cv2.resize(ds.images[i][:, :, ::-1], (SIDE, SIDE), interpolation=cv2.INTER_NEAREST) for i in idx]


@pytest.fixture(scope="module")
def clips(tmp_path_factory, cifar_frames):
    d = tmp_path_factory.mktemp("clips")
    return {
        "ffv1": _write_video(d / "cifar.avi", cifar_frames, "FFV1"),  # lossless: decodes to exactly these pixels
        "mp4v": _write_video(d / "cifar.mp4", cifar_frames, "mp4v"),
    }


def _reference(bundle, frames_bgr, precision, target="onnxruntime"):
    """`nin-edge bench`'s accuracy path on the decoded frames: preprocess (one batch) → predict_logits → softmax."""
    from nin_edge.bench import predict_logits
    from nin_edge.runners import create_runner

    x = preprocess([f[:, :, ::-1] for f in frames_bgr], bundle.preprocess)
    with create_runner(target, bundle, precision=precision) as r:
        return softmax(predict_logits(r, x, batch=8))


def _check_predictions(lines: list[dict], ref_probs: np.ndarray, classes: list[str], indices=None) -> None:
    indices = list(range(len(ref_probs))) if indices is None else indices
    assert [ln["frame"] for ln in lines] == indices
    for ln in lines:
        p = ref_probs[ln["frame"]]
        want = list(np.argsort(-p, kind="stable")[:3])
        assert [t["index"] for t in ln["top"]] == want, ln
        assert [t["class"] for t in ln["top"]] == [classes[i] for i in want]
        np.testing.assert_allclose([t["prob"] for t in ln["top"]], p[want], atol=1e-5)
        assert ln["infer_ms"] > 0


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(s) for s in Path(path).read_text().splitlines()]


def _cli(*args, env=None):
    res = CliRunner().invoke(app, ["demo", *map(str, args)], env=env)
    return res.exit_code, res.output


# --------------------------------------------------------------------------- headless, end to end
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_headless_video_predictions_match_bench_pipeline(default_bundle, clips, cifar_frames, tmp_path, precision):
    out = tmp_path / "annotated.mkv"  # FFV1: the written frames can be compared exactly
    code, text = _cli("--source", clips["ffv1"], "--bundle", default_bundle.root, "--target", "onnxruntime",
                      "--precision", precision, "--no-show", "--output", out)
    assert code == 0, text
    assert f"summary: {N_FRAMES} frames" in text and "p50" in text and "p99" in text and "FPS" in text
    assert "stopped: end of video" in text
    decoded = _decode_all(clips["ffv1"])
    assert len(decoded) == N_FRAMES
    assert all(np.array_equal(a, b) for a, b in zip(decoded, cifar_frames))  # the real CIFAR test images
    lines = _jsonl(tmp_path / "annotated.jsonl")
    _check_predictions(lines, _reference(default_bundle, decoded, precision), default_bundle.classes)

    written = _decode_all(out)
    assert len(written) == N_FRAMES
    for raw, shown in zip(decoded, written):
        base = canvas_for(raw)
        assert shown.shape == base.shape == (384, 384, 3)
        x0, y0, x1, y1 = top_panel_rect(base.shape, 3)
        diff = np.abs(shown.astype(int) - base.astype(int))
        assert diff[y0:y1, x0:x1].mean() > 20, "no overlay drawn in the top panel"
        mid = slice(y1 + 5, base.shape[0] // 2 + 60)
        assert diff[mid].max() == 0, "the picture under the overlay is not the frame itself"


def test_mp4_source_and_output_and_max_frames(default_bundle, clips, tmp_path):
    out = tmp_path / "demo.mp4"
    code, text = _cli("--source", clips["mp4v"], "--bundle", default_bundle.root, "--precision", "fp32",
                      "--no-show", "--output", out, "--max-frames", 7)
    assert code == 0, text
    assert "summary: 7 frames" in text and "reached --max-frames 7" in text
    decoded = _decode_all(clips["mp4v"])[:7]
    _check_predictions(_jsonl(tmp_path / "demo.jsonl"), _reference(default_bundle, decoded, "fp32"),
                       default_bundle.classes)
    assert len(_decode_all(out)) == 7
    # a second run does not overwrite without --force, and does with it
    code, text = _cli("--source", clips["mp4v"], "--bundle", default_bundle.root, "--no-show", "--output", out)
    assert code == 2 and "already exists" in text and "--force" in text
    code, text = _cli("--source", clips["mp4v"], "--bundle", default_bundle.root, "--no-show", "--output", out,
                      "--force", "--max-frames", 2)
    assert code == 0, text
    assert len(_decode_all(out)) == 2


def test_torch_target_and_predictions_only(default_bundle, clips, tmp_path):
    preds = tmp_path / "p.jsonl"
    s = run_demo(DemoOptions(source=str(clips["ffv1"]), bundle=str(default_bundle.root), target="torch",
                             show=False, predictions=str(preds), max_frames=5))
    assert (s.target, s.precision, s.device, s.frames, s.output) == ("torch", "fp32", "cpu", 5, None)
    decoded = _decode_all(clips["ffv1"])[:5]
    _check_predictions(_jsonl(preds), _reference(default_bundle, decoded, "fp32", target="torch"),
                       default_bundle.classes)


def test_odd_sized_and_grayscale_video_frames(default_bundle, cifar_frames, tmp_path):
    odd = [cv2.resize(f, (47, 33), interpolation=cv2.INTER_AREA) for f in cifar_frames[:6]]
    gray = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in cifar_frames[:6]]
    for name, frames, color in (("odd", odd, True), ("gray", gray, False)):
        clip = _write_video(tmp_path / f"{name}.avi", frames, "FFV1", color=color)
        preds = tmp_path / f"{name}.jsonl"
        s = run_demo(DemoOptions(source=str(clip), bundle=str(default_bundle.root), precision="fp32", show=False,
                                 output=str(tmp_path / f"{name}.mp4"), predictions=str(preds)))
        assert s.frames == 6
        decoded = _decode_all(clip)
        _check_predictions(_jsonl(preds), _reference(default_bundle, decoded, "fp32"), default_bundle.classes)
        w = _decode_all(tmp_path / f"{name}.mp4")
        assert len(w) == 6 and w[0].shape[0] % 2 == 0 and w[0].shape[1] % 2 == 0


def test_frame_to_rgb_handles_every_layout():
    bgr = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    assert np.array_equal(frame_to_rgb(bgr), bgr[:, :, ::-1])
    bgra = np.concatenate([bgr, np.full((5, 7, 1), 9, np.uint8)], axis=2)
    assert np.array_equal(frame_to_rgb(bgra), bgr[:, :, ::-1])
    g = bgr[:, :, 0]
    for gray in (g, g[:, :, None]):
        out = frame_to_rgb(gray)
        assert out.shape == (5, 7, 3) and all(np.array_equal(out[:, :, c], g) for c in range(3))
    assert np.array_equal(frame_to_rgb(g.astype(np.uint16) << 8)[:, :, 0], g)
    x = preprocess(frame_to_rgb(g))  # grayscale and odd sizes go through THE preprocessing
    assert x.shape == (1, 3, 32, 32) and x.dtype == np.float32


# --------------------------------------------------------------------------- live path: capture thread, drops
def test_realtime_file_uses_live_path_and_drops_stale_frames(default_bundle, cifar_frames, tmp_path):
    clip = _write_video(tmp_path / "fast.avi", cifar_frames, "FFV1", fps=200.0)  # 24 frames in 0.12 s
    seen = []

    def slow_consumer(index, frame, canvas):  # a model far slower than the camera
        seen.append(index)
        time.sleep(0.05)

    preds = tmp_path / "live.jsonl"
    s = run_demo(DemoOptions(source=str(clip), bundle=str(default_bundle.root), precision="fp32", show=False,
                             predictions=str(preds), realtime=True), on_frame=slow_consumer)
    assert s.captured == N_FRAMES and s.frames + s.dropped == s.captured
    assert s.dropped >= N_FRAMES // 2, s  # 20 fps of consumption against 200 fps of capture
    assert s.stop_reason == "end of video" and "dropped" in s.format()
    assert seen == sorted(seen) and len(set(seen)) == len(seen)
    lines = _jsonl(preds)
    assert all(ln["age_ms"] >= ln["infer_ms"] for ln in lines)  # frame age includes its inference
    _check_predictions(lines, _reference(default_bundle, _decode_all(clip), "fp32"), default_bundle.classes,
                       indices=seen)


def test_latest_frame_keeps_only_the_newest():
    slot = LatestFrame()
    for i in range(4):
        slot.put(i)
    assert slot.get(0.01) == 3 and (slot.captured, slot.dropped) == (4, 3)
    assert slot.get(0.01) is None  # nothing new: a timeout, not the same frame again
    slot.put(4)
    slot.close("stream ended")
    assert slot.get(0.01) == 4  # the last frame is still delivered
    end = slot.get(0.01)
    assert end is not None and end != 4 and slot.reason == "stream ended"


class _FakeCamera:
    """A camera that delivers `n` frames, then fails every read (unplugged) or raises."""

    def __init__(self, n: int, raise_after: bool = False):
        self.n, self.raise_after, self.reads, self.released = n, raise_after, 0, False

    def read(self):
        self.reads += 1
        if self.reads <= self.n:
            return True, np.zeros((4, 4, 3), np.uint8)
        if self.raise_after:
            raise RuntimeError("USB transfer failed")
        return False, None

    def release(self):
        self.released = True


def _drain(slot: LatestFrame, th: threading.Thread) -> list:
    got = []
    while True:
        item = slot.get(1.0)
        if item is None:
            continue
        if not isinstance(item, tuple):
            break
        got.append(item[0])
    th.join(2)
    return got


def test_capture_thread_reports_camera_disconnect():
    cam, slot = _FakeCamera(3), LatestFrame()
    th = CaptureThread(cam, slot, SourceKind.camera, max_failures=5, retry_s=0.001)
    th.start()
    _drain(slot, th)
    assert slot.reason == "camera disconnected" and slot.captured == 3 and cam.released
    assert cam.reads == 3 + 5  # a few retries (a camera may skip a frame), then it is declared gone
    cam, slot = _FakeCamera(2, raise_after=True), LatestFrame()
    th = CaptureThread(cam, slot, SourceKind.stream)
    th.start()
    _drain(slot, th)
    assert slot.reason.startswith("capture error: RuntimeError: USB transfer failed") and cam.released
    cam, slot = _FakeCamera(2), LatestFrame()
    th = CaptureThread(cam, slot, SourceKind.stream)
    th.start()
    _drain(slot, th)
    assert slot.reason == "stream ended" and cam.reads == 3


# --------------------------------------------------------------------------- folder → contact sheet
def test_folder_contact_sheet_and_predictions(default_bundle, tmp_path):
    from nin_edge.data import decode_image, load_dataset

    ds = load_dataset("bundled:eval")
    d = tmp_path / "photos"
    (d / "sub").mkdir(parents=True)
    for i in range(5):
        cv2.imwrite(str(d / f"cifar{i}.png"), ds.images[i * 100][:, :, ::-1])
    cv2.imwrite(str(d / "sub" / "gray_odd.png"), cv2.cvtColor(
        cv2.resize(ds.images[7][:, :, ::-1], (45, 31)), cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(d / "big.jpg"), cv2.resize(ds.images[8][:, :, ::-1], (301, 177)))
    bgra = cv2.cvtColor(ds.images[9][:, :, ::-1], cv2.COLOR_BGR2BGRA)
    cv2.imwrite(str(d / "alpha.png"), bgra)
    (d / "broken.jpg").write_bytes(b"not an image")
    (d / "notes.txt").write_text("ignored")
    sheet = tmp_path / "sheet.png"
    code, text = _cli("--source", d, "--bundle", default_bundle.root, "--precision", "fp32", "--no-show",
                      "--output", sheet)
    assert code == 0, text
    assert "summary: 8 images" in text and "broken.jpg" in text and "skipped" in text
    img = cv2.imread(str(sheet))
    assert img is not None and img.shape[0] > 300 and img.shape[1] > 300
    lines = _jsonl(tmp_path / "sheet.jsonl")
    names = [ln["file"] for ln in lines]
    assert names == sorted(names) and "sub/gray_odd.png" in names and "broken.jpg" not in names
    rgbs = [decode_image((d / n).read_bytes(), n) for n in names]
    from nin_edge.runners import create_runner

    with create_runner("onnxruntime", default_bundle, precision="fp32") as r:
        ref = np.concatenate([softmax(r.infer(preprocess(im, default_bundle.preprocess))) for im in rgbs])
    for k, ln in enumerate(lines):
        ln["frame"] = k
    _check_predictions(lines, ref, default_bundle.classes)


def test_folder_defaults_to_contact_sheet_in_cwd(default_bundle, tmp_path, monkeypatch):
    d = tmp_path / "pics"
    d.mkdir()
    cv2.imwrite(str(d / "a.png"), np.full((32, 32, 3), 128, np.uint8))
    monkeypatch.chdir(tmp_path)
    s = run_demo(DemoOptions(source=str(d), bundle=str(default_bundle.root), show=False))
    assert s.output == "pics-contact-sheet.png" and (tmp_path / "pics-contact-sheet.png").exists()
    assert s.predictions == "pics-contact-sheet.jsonl" and len(_jsonl(tmp_path / s.predictions)) == 1


# --------------------------------------------------------------------------- bad input → one line, exit 2
def _bad(tmp_path: Path, default_bundle, source, *extra, expect: str, env=None) -> None:
    code, text = _cli("--source", source, "--bundle", default_bundle.root, "--no-show", *extra, env=env)
    assert code == 2, text
    assert "Traceback" not in text and text.startswith("error: ") and expect in text, text
    assert not [p for p in tmp_path.rglob(".*tmp-*")], "temp files left behind"


def test_bad_sources(default_bundle, tmp_path, clips):
    notvideo = tmp_path / "notes.mp4"
    notvideo.write_text("hello, I am text " * 50)
    empty = tmp_path / "empty.avi"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.avi"
    truncated.write_bytes(clips["ffv1"].read_bytes()[:300])
    empty_dir = tmp_path / "nothing"
    empty_dir.mkdir()
    junk_dir = tmp_path / "junk"
    junk_dir.mkdir()
    (junk_dir / "a.jpg").write_bytes(b"\x00" * 10)
    cases = [
        ("7", "cannot open camera 7"),
        ("/dev/video99", "no such camera device"),
        (notvideo, "cannot read it as a video"),
        (empty, "video"),
        (truncated, "video"),
        (empty_dir, "folder holds no images"),
        (junk_dir, "could be decoded"),
        (tmp_path / "missing.mp4", "no such file or directory"),
        ("rtsp://127.0.0.1:1/cam", "cannot open the stream"),
        ("ftp://example.com/x.mp4", "unsupported URL scheme"),
        ("videotestsrc ! videoconvert", "must end in appsink"),
    ]
    for src, expect in cases:
        out = tmp_path / ("o.png" if Path(str(src)).is_dir() else "o.mp4")
        _bad(tmp_path, default_bundle, src, "--output", out, expect=expect)
        assert not out.exists()


def test_gstreamer_pipeline(default_bundle, tmp_path):
    pipeline = "videotestsrc num-buffers=5 ! videoconvert ! video/x-raw,format=BGR ! appsink"
    if not opencv_has("GStreamer"):
        _bad(tmp_path, default_bundle, pipeline, expect="needs OpenCV built with GStreamer")
        return
    code, text = _cli("--source", pipeline, "--bundle", default_bundle.root, "--no-show")
    assert code == 0 and "summary:" in text, text


def test_bad_options(default_bundle, clips, tmp_path):
    _bad(tmp_path, default_bundle, clips["ffv1"], "--output", tmp_path / "x.gif", expect="unsupported video suffix")
    _bad(tmp_path, default_bundle, clips["ffv1"], "--precision", "fp16", expect="no precision 'fp16'")
    _bad(tmp_path, default_bundle, "rtsp://127.0.0.1:1/x", "--realtime", expect="--realtime applies to a video file")
    code, text = _cli("--source", clips["ffv1"], "--bundle", default_bundle.root, "--max-frames", 0)
    assert code == 2 and "--max-frames" in text  # Typer's own range check
    from nin_edge.errors import NinEdgeError

    for bad in ({"max_frames": 0}, {"target": "tflite"}, {"precision": "int4"}):
        with pytest.raises(NinEdgeError, match=next(iter(bad)).replace("_", "-")):
            DemoOptions(source="0", **bad)
    code, text = _cli("--source", clips["ffv1"], "--bundle", tmp_path / "nobundle", "--no-show")
    assert code == 2 and "bundle directory not found" in text and "nin-edge export" in text


def test_show_without_display_says_what_to_do(default_bundle, clips, tmp_path):
    env = {k: "" for k in ("DISPLAY", "WAYLAND_DISPLAY")}
    code, text = _cli("--source", clips["ffv1"], "--bundle", default_bundle.root, "--show", env=env)
    assert code == 2 and "--no-show --output" in text and "no display" in text, text
    # a display that is set but unreachable: Qt would abort the process; the probe turns it into a message
    code, text = _cli("--source", clips["ffv1"], "--bundle", default_bundle.root, "--show",
                      env={"DISPLAY": ":987", "WAYLAND_DISPLAY": ""})
    assert code == 2 and "cannot open a window" in text and "--no-show --output" in text, text
    # without --show/--no-show the demo runs headless and says so
    code, text = _cli("--source", clips["ffv1"], "--bundle", default_bundle.root, "--max-frames", 2, env=env)
    assert code == 0 and "running without a window" in text and "summary: 2 frames" in text, text


# --------------------------------------------------------------------------- the window, under Xvfb
def _start_xvfb():
    xvfb = shutil.which("Xvfb")
    if not xvfb:
        return None, None
    for n in range(90, 130):
        if not Path(f"/tmp/.X11-unix/X{n}").exists() and not Path(f"/tmp/.X{n}-lock").exists():
            break
    proc = subprocess.Popen([xvfb, f":{n}", "-screen", "0", "1024x768x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        if Path(f"/tmp/.X11-unix/X{n}").exists():
            break
        time.sleep(0.05)
    return proc, f":{n}"


@pytest.fixture
def xdisplays():
    """A function → the environment of a fresh display OpenCV can open (a private Xvfb per call, or the
    session's own display). Window tests run the demo in a child process: OpenCV's Qt binds a process to
    one X connection for life, and a server that goes away takes the process with it."""
    procs = []
    own = os.environ.get("DISPLAY") if (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) \
        and display_problem() is None else None

    def new_display() -> dict:
        if own:
            return dict(os.environ)
        proc, name = _start_xvfb()
        if proc is None:
            pytest.skip("no display and no Xvfb to make one (Debian: apt-get install xvfb)")
        procs.append(proc)
        env = {k: v for k, v in os.environ.items() if k != "WAYLAND_DISPLAY"}
        env["DISPLAY"] = name
        return env

    yield new_display
    for p in procs:
        p.terminate()
        p.wait(5)


def _child(code: str, env: dict, *args) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-c", code, *map(str, args)], env=env, capture_output=True, text=True,
                       timeout=300)
    if r.returncode == 2 and "SKIP:" in r.stdout:
        pytest.skip(r.stdout.split("SKIP:", 1)[1].strip())
    assert r.returncode == 0, r.stdout + r.stderr
    return r


_GRAB_CHILD = """
import os, sys, numpy as np, cv2
from PIL import ImageGrab, features
from nin_edge.demo import DemoOptions, canvas_for, display_problem, run_demo, top_panel_rect
clip, bundle, out = sys.argv[1:4]
if (why := display_problem()) is not None:
    print("SKIP: OpenCV cannot open a window on", os.environ["DISPLAY"], why); sys.exit(2)
if not features.check("xcb"):
    print("SKIP: Pillow was built without XCB: cannot grab the X display"); sys.exit(2)
grabs = []
def grab(index, frame, canvas):
    if index != 8:
        return
    x0, y0, x1, y1 = top_panel_rect(canvas.shape, 3)
    panel = np.ascontiguousarray(canvas[y0:y1, x0:x1])
    for _ in range(20):  # let the window system map and paint the window (a loaded CI box is slow)
        cv2.waitKey(50)
        screen = np.asarray(ImageGrab.grab(xdisplay=os.environ["DISPLAY"]))[:, :, ::-1].copy()
        score, _, loc, _ = cv2.minMaxLoc(cv2.matchTemplate(screen, panel, cv2.TM_SQDIFF_NORMED))
        if score < 0.01:
            break
    grabs.append(dict(screen=screen, shown=canvas.copy(), raw=canvas_for(frame), score=score, loc=loc))
s = run_demo(DemoOptions(source=clip, bundle=bundle, precision="fp32", show=True), on_frame=grab)
np.savez(out, frames=s.frames, notes=len(s.notes), **grabs[0])
"""


@pytest.mark.slow
def test_window_shows_the_overlay(default_bundle, cifar_frames, tmp_path, xdisplays):
    # one image repeated: the top-3 panel is the same on every frame, so the grab cannot race a frame change
    clip = _write_video(tmp_path / "still.avi", [cifar_frames[3]] * 12, "FFV1")
    # Qt on a bare Xvfb (no window manager) now and then never gets its first Expose and paints nothing
    # (measured here: a plain cv2.imshow window stayed black in ~1 of 6 fresh Xvfb servers, whatever the wait).
    # An all-black screen is that race, not a demo result: retry in a fresh server and process. A window
    # that shows anything is judged on what it shows.
    for attempt in range(5):
        _child(_GRAB_CHILD, xdisplays(), clip, default_bundle.root, tmp_path / "grab.npz")
        g = np.load(tmp_path / "grab.npz")
        assert int(g["frames"]) == 12 and int(g["notes"]) == 0
        if g["screen"].max() > 0:
            break
    screen, shown, raw, score = g["screen"], g["shown"], g["raw"], float(g["score"])
    assert screen.max() > 0, "the window never appeared on 5 fresh Xvfb displays"
    x0, y0, x1, y1 = top_panel_rect(shown.shape, 3)
    assert score < 0.01, f"the overlay panel is not on screen (best match {score:.3f})"
    x, y = (int(v) for v in g["loc"])
    on_screen = screen[y:y + (y1 - y0), x:x + (x1 - x0)].astype(int)
    assert np.abs(on_screen - raw[y0:y1, x0:x1]).mean() > 20  # what is on screen is the overlay, not the raw frame
    below = screen[y + y1 + 5:y + y1 + 105, x:x + (x1 - x0)].astype(int)
    assert np.abs(below - raw[y1 + 5:y1 + 105, x0:x1]).max() == 0  # and the frame itself under it


_QUIT_CHILD = """
import sys, cv2
from nin_edge.demo import DemoOptions, run_demo
clip, bundle, out = sys.argv[1:4]
real_wait, calls = cv2.waitKey, []
def press_esc_on_fifth(ms):  # a user pressing Esc while the fifth frame is up
    real_wait(ms)
    calls.append(ms)
    return 27 if len(calls) == 5 else -1
cv2.waitKey = press_esc_on_fifth
s = run_demo(DemoOptions(source=clip, bundle=bundle, precision="fp32", show=True, output=out))
print(s.format())
"""


@pytest.mark.slow
def test_quit_key_stops_cleanly_and_keeps_outputs(default_bundle, clips, tmp_path, xdisplays):
    out = tmp_path / "q.mkv"
    r = _child(_QUIT_CHILD, xdisplays(), clips["ffv1"], default_bundle.root, out)
    assert "stopped: quit by user" in r.stdout and "summary: 5 frames" in r.stdout, r.stdout
    assert len(_decode_all(out)) == 5 and len(_jsonl(tmp_path / "q.jsonl")) == 5
