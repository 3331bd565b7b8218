"""Thin Typer CLI: each command parses, calls one library function, prints, maps errors to exit codes.

Each command lives in its own module (nin_edge/cli/<command>.py) and registers itself on `app`; heavy
libraries are imported inside the command functions so `nin-edge --help` stays fast and works without
openvino/tensorrt. User errors (NinEdgeError) become one line on stderr and the error's exit code
(2 = bad input, 1 = a spec failed), never a traceback — see `guard`.
"""
from __future__ import annotations

import typer

app = typer.Typer(name="nin-edge", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Network-in-Network from training to the edge: train, export (ONNX/INT8/OpenVINO/TensorRT), bench, demo.")

from . import commands  # noqa: E402,F401  (registers every command)


def main() -> None:
    app()
