"""TensorRT: the trtexec script every bundle carries, and engine building where TensorRT and a GPU exist.

The bundle always holds `tensorrt/build_engine.sh`, which builds engines on the target (a Jetson or any
NVIDIA GPU machine) with trtexec:
  * fp32/fp16 engines from model.onnx (fp16 via the `--fp16` builder flag);
  * the INT8 engine from model.int8.trt.onnx by explicit quantization: the Q/DQ nodes carry the scales and
    the network is built `--stronglyTyped`, so no precision flag and no calibrator is involved (TensorRT's
    docs: "use explicit quantization with strong typing; precision-control build flags are not required and
    should not be specified"; implicit INT8 calibrators are deprecated since 10.1 and gone in 11).
Building engines here needs the `tensorrt` package and a GPU; without them `--formats tensorrt` fails clearly.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from ..errors import BackendUnavailable, NinEdgeError

NOT_HERE = ("TensorRT is not installed here; the bundle's tensorrt/build_engine.sh builds engines on the "
            "target (Jetson/GPU)")
MAX_BATCH = 64
OPT_BATCH = 1


def require_tensorrt() -> None:
    if importlib.util.find_spec("tensorrt") is None:
        raise BackendUnavailable("tensorrt", "tensorrt", why=NOT_HERE)
    from ..envinfo import gpus

    if not gpus():
        raise BackendUnavailable("tensorrt", None, why="no NVIDIA GPU found (nvidia-smi lists none); the bundle's "
                                 "tensorrt/build_engine.sh builds engines on the target (Jetson/GPU)")


def build_script(input_name: str, size: int) -> str:
    """The bash script written to tensorrt/build_engine.sh (checked with `bash -n` in the tests)."""
    shape = f"3x{size}x{size}"
    return f"""#!/usr/bin/env bash
# Build TensorRT engines for this nin-edge bundle on the deployment target (NVIDIA GPU or Jetson).
#   tensorrt/build_engine.sh [fp32|fp16|int8|all]      (default: all)
# Environment: TRTEXEC (path to trtexec), OPT_BATCH ({OPT_BATCH}), MAX_BATCH ({MAX_BATCH}),
#              DLA_CORE (Jetson only: build for that DLA core, GPU fallback for layers DLA cannot run).
# INT8 uses explicit quantization: model.int8.trt.onnx carries symmetric int8 Q/DQ scales from nin-edge's
# calibration, so it is built --stronglyTyped (no --int8 flag, no calibration cache).
set -euo pipefail

HERE="$(cd "$(dirname "${{BASH_SOURCE[0]}}")" && pwd)"
BUNDLE="$(dirname "$HERE")"
TRTEXEC="${{TRTEXEC:-$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)}}"
OPT_BATCH="${{OPT_BATCH:-{OPT_BATCH}}}"
MAX_BATCH="${{MAX_BATCH:-{MAX_BATCH}}}"
WHICH="${{1:-all}}"

if [[ ! -x "$TRTEXEC" ]]; then
  echo "error: trtexec not found (set TRTEXEC=/path/to/trtexec)" >&2
  exit 2
fi

SHAPES=(--minShapes={input_name}:1x{shape} --optShapes={input_name}:${{OPT_BATCH}}x{shape} --maxShapes={input_name}:${{MAX_BATCH}}x{shape})
DLA=()
if [[ -n "${{DLA_CORE:-}}" ]]; then
  DLA=(--useDLACore="$DLA_CORE" --allowGPUFallback)
fi

build() {{  # build <precision> <onnx> <flags...>
  local precision="$1" onnx="$2"
  shift 2
  echo "== $precision engine from $onnx"
  "$TRTEXEC" --onnx="$BUNDLE/$onnx" --saveEngine="$HERE/model.$precision.engine" \\
    "${{SHAPES[@]}}" "${{DLA[@]}}" --skipInference "$@"
}}

case "$WHICH" in
  fp32|fp16|int8|all) ;;
  *) echo "error: unknown precision '$WHICH' (fp32, fp16, int8 or all)" >&2; exit 2 ;;
esac
if [[ "$WHICH" == fp32 || "$WHICH" == all ]]; then build fp32 model.onnx; fi
if [[ "$WHICH" == fp16 || "$WHICH" == all ]]; then build fp16 model.onnx --fp16; fi
if [[ "$WHICH" == int8 || "$WHICH" == all ]]; then
  if [[ -f "$BUNDLE/model.int8.trt.onnx" ]]; then
    build int8 model.int8.trt.onnx --stronglyTyped
  else
    echo "skip int8: no model.int8.trt.onnx (export with: nin-edge export --int8)" >&2
  fi
fi
"""


def build_engine(onnx_path: Path, engine_path: Path, precision: str, input_name: str, size: int,
                 max_batch: int = MAX_BATCH) -> dict:
    """Build a serialized engine with the TensorRT Python API (+ a .engine.json sidecar). GPU machines only."""
    require_tensorrt()
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    strongly_typed = precision == "int8"  # explicit quantization: the Q/DQ nodes decide the types
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise NinEdgeError(f"{onnx_path}: TensorRT could not parse it ({errs[:300]})")
    config = builder.create_builder_config()
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, (1, 3, size, size), (OPT_BATCH, 3, size, size), (max_batch, 3, size, size))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise NinEdgeError(f"{onnx_path}: TensorRT failed to build the {precision} engine")
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    engine_path.write_bytes(bytes(plan))
    from ..envinfo import gpus

    side = {"precision": precision, "source": Path(onnx_path).name, "strongly_typed": strongly_typed,
            "tensorrt": trt.__version__, "gpu": (gpus() or ["?"])[0],
            "profile": {"min": 1, "opt": OPT_BATCH, "max": max_batch}}
    engine_path.with_name(engine_path.name + ".json").write_text(json.dumps(side, indent=2) + "\n")
    return side
