"""Backend builders: ONNX → OpenVINO IR (openvino.py); ONNX → TensorRT engine / trtexec script (tensorrt.py).

Each imports its backend lazily and raises BackendUnavailable (naming the pip extra) when it is missing.
"""
