import typer

from ..demo import Precision, Target
from . import app
from ._common import guard


@app.command("demo")
def demo_cmd(
    source: str = typer.Option(..., help="camera index (0), /dev/videoN, video file, folder of images, "
                               "rtsp://... URL, or a GStreamer pipeline ending in appsink"),
    bundle: str = typer.Option("bundle", help="bundle directory (make one with: nin-edge export --int8)"),
    target: Target = typer.Option("onnxruntime", help="runner that executes the model"),
    precision: Precision = typer.Option(None, help="precision to run (default: the target's default, as in "
                                        "bench: onnxruntime int8, torch fp32)"),
    device: str = typer.Option(None, help="runner device (default: the runner's own, cpu or cuda)"),
    threads: int = typer.Option(None, min=1, help="inference threads (default: the runner's choice)"),
    show: bool = typer.Option(None, "--show/--no-show",
                              help="open a window (q/Esc quits); default: a window when a display is available"),
    output: str = typer.Option(None, help="annotated video (.mp4/.avi/.mkv); for a folder: the contact sheet .png"),
    predictions: str = typer.Option(None, help="per-frame predictions JSONL (default: next to --output, .jsonl)"),
    max_frames: int = typer.Option(None, min=1, help="stop after this many frames (or images)"),
    realtime: bool = typer.Option(False, help="play a video file at its own frame rate, dropping frames like a camera"),
    force: bool = typer.Option(False, help="replace existing --output/--predictions files"),
) -> None:
    """Classify a camera, stream, video or folder live, with top-3, FPS and latency drawn on each frame."""
    from ..demo import DemoOptions, run_demo

    with guard():
        summary = run_demo(DemoOptions(source=source, bundle=bundle, target=target, precision=precision,
                                       device=device, threads=threads, show=show, output=output,
                                       predictions=predictions, max_frames=max_frames, realtime=realtime,
                                       force=force))
        typer.echo(summary.format())
