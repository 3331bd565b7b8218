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


# The `<engine>.json` sidecar, one schema for both builders (the Python API here, trtexec in build_engine.sh)
# and the one reader (runners/tensorrt_runner.py). Fields a builder could not learn are null; the check skips them.
SIDECAR_KEYS = ("precision", "source", "strongly_typed", "tensorrt_version", "gpu_name", "compute_capability",
                "dla_core", "profile", "built_by")


def engine_sidecar(precision: str, source: str, *, tensorrt_version: str | None, gpu_name: str | None,
                   compute_capability: str | None, dla_core: int | None = None, max_batch: int = MAX_BATCH,
                   built_by: str = "nin-edge export") -> dict:
    return {"precision": precision, "source": source, "strongly_typed": precision == "int8",
            "tensorrt_version": tensorrt_version, "gpu_name": gpu_name, "compute_capability": compute_capability,
            "dla_core": dla_core, "profile": {"min": 1, "opt": OPT_BATCH, "max": max_batch}, "built_by": built_by}


def check_sidecar(meta: dict, engine: Path, *, tensorrt_version: str, compute_capability: str, gpu_name: str,
                  rebuild: str) -> None:
    """Refuse an engine built by another TensorRT version or for another GPU architecture (they are not portable)."""
    unknown = sorted(set(meta) - set(SIDECAR_KEYS))
    if unknown:
        raise NinEdgeError(f"{engine}.json: unknown sidecar key(s) {', '.join(unknown)} (expected {', '.join(SIDECAR_KEYS)})")
    built = meta.get("tensorrt_version")
    if built and str(built) != tensorrt_version:
        raise NinEdgeError(f"{engine}: built with TensorRT {built}, this is TensorRT {tensorrt_version}; "
                           f"engines are not portable across versions (rebuild: {rebuild})")
    cc = meta.get("compute_capability")
    if cc and str(cc) != compute_capability:
        raise NinEdgeError(f"{engine}: built for {meta.get('gpu_name') or '?'} (compute {cc}), this GPU is "
                           f"{gpu_name} (compute {compute_capability}) (rebuild: {rebuild})")


def build_script(input_name: str, size: int) -> str:
    """The bash script written to tensorrt/build_engine.sh (checked with `bash -n` and run in the tests)."""
    return (_SCRIPT.replace("@INPUT@", input_name).replace("@SHAPE@", f"3x{size}x{size}")
            .replace("@OPT_BATCH@", str(OPT_BATCH)).replace("@MAX_BATCH@", str(MAX_BATCH)))


# a plain (not f-) string: bash braces and backslashes stay as written; @NAME@ are filled in by build_script
_SCRIPT = r"""#!/usr/bin/env bash
# Build TensorRT engines for this nin-edge bundle on the deployment target (NVIDIA GPU or Jetson).
#   tensorrt/build_engine.sh [fp32|fp16|int8|all]      (default: all)
# Environment: TRTEXEC (path to trtexec), OPT_BATCH (@OPT_BATCH@), MAX_BATCH (@MAX_BATCH@),
#              DLA_CORE (Jetson only: build for that DLA core, GPU fallback for layers DLA cannot run).
# INT8 uses explicit quantization: model.int8.trt.onnx carries symmetric int8 Q/DQ scales from nin-edge's
# calibration, so it is built --stronglyTyped (no --int8 flag, no calibration cache).
# Each engine gets a model.<precision>.engine.json sidecar (TensorRT version, GPU, compute capability, DLA
# core) that `nin-edge bench` checks before running it; both are written under temporary names, then renamed.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BUNDLE="$(dirname "$HERE")"
TRTEXEC="${TRTEXEC:-$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)}"
OPT_BATCH="${OPT_BATCH:-@OPT_BATCH@}"
MAX_BATCH="${MAX_BATCH:-@MAX_BATCH@}"
WHICH="${1:-all}"

if [[ ! -x "$TRTEXEC" ]]; then
  echo "error: trtexec not found (set TRTEXEC=/path/to/trtexec)" >&2
  exit 2
fi

SHAPES=(--minShapes=@INPUT@:1x@SHAPE@ --optShapes=@INPUT@:${OPT_BATCH}x@SHAPE@ --maxShapes=@INPUT@:${MAX_BATCH}x@SHAPE@)
DLA=()
if [[ -n "${DLA_CORE:-}" ]]; then
  DLA=(--useDLACore="$DLA_CORE" --allowGPUFallback)
fi

# What the sidecar records about this machine; null where it cannot be learned (no nvidia-smi on a Jetson).
TRT_VERSION="$(python3 -c 'import tensorrt; print(tensorrt.__version__)' 2>/dev/null || true)"
GPU_LINE="$(nvidia-smi --query-gpu=name,compute_cap --format=csv,noheader 2>/dev/null | head -n 1 || true)"
GPU_NAME=""
GPU_CC=""
if [[ "$GPU_LINE" == *", "* ]]; then
  GPU_NAME="${GPU_LINE%, *}"
  GPU_CC="${GPU_LINE##*, }"
fi

json_str() {  # a JSON string, or null when empty
  if [[ -z "$1" ]]; then
    printf 'null'
  else
    local v="${1//\\/\\\\}"
    v="${v//\"/\\\"}"
    printf '"%s"' "$v"
  fi
}

build() {  # build <precision> <onnx> <flags...>
  local precision="$1" onnx="$2"
  shift 2
  local engine="$HERE/model.$precision.engine"
  echo "== $precision engine from $onnx"
  rm -f "$engine.tmp" "$engine.json.tmp"
  "$TRTEXEC" --onnx="$BUNDLE/$onnx" --saveEngine="$engine.tmp" \
    "${SHAPES[@]}" "${DLA[@]}" --skipInference "$@"
  if [[ ! -s "$engine.tmp" ]]; then
    echo "error: trtexec wrote no $precision engine ($engine.tmp)" >&2
    exit 1
  fi
  local strong=false dla=null
  if [[ "$precision" == int8 ]]; then strong=true; fi
  if [[ -n "${DLA_CORE:-}" ]]; then dla="$DLA_CORE"; fi
  printf '{"precision": "%s", "source": "%s", "strongly_typed": %s, "tensorrt_version": %s, "gpu_name": %s, "compute_capability": %s, "dla_core": %s, "profile": {"min": 1, "opt": %s, "max": %s}, "built_by": "tensorrt/build_engine.sh"}\n' \
    "$precision" "$onnx" "$strong" "$(json_str "$TRT_VERSION")" "$(json_str "$GPU_NAME")" "$(json_str "$GPU_CC")" \
    "$dla" "$OPT_BATCH" "$MAX_BATCH" > "$engine.json.tmp"
  mv -f "$engine.tmp" "$engine"
  mv -f "$engine.json.tmp" "$engine.json"
}

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
    import torch

    from ..atomic import atomic_write, atomic_write_text

    side = engine_sidecar(precision, Path(onnx_path).name, tensorrt_version=trt.__version__,
                          gpu_name=torch.cuda.get_device_name(),
                          compute_capability="{}.{}".format(*torch.cuda.get_device_capability()), max_batch=max_batch)
    atomic_write(engine_path, lambda p: p.write_bytes(bytes(plan)))
    atomic_write_text(engine_path.with_name(engine_path.name + ".json"), json.dumps(side, indent=2) + "\n")
    return side
