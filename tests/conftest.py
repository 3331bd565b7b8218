"""Shared fixtures. The default bundle is exported once per test session from the shipped weights."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("NIN_EDGE_CACHE", os.path.join(os.path.dirname(__file__), "..", ".cache", "test-cache"))


def _have(mod: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(mod) is not None


@pytest.fixture(scope="session")
def default_bundle(tmp_path_factory):
    """A complete bundle (ONNX fp32, both INT8 Q/DQ forms, OpenVINO IRs if installed) from the shipped weights."""
    from nin_edge.bundle import Bundle
    from nin_edge.export import ExportOptions, export_bundle

    out = tmp_path_factory.mktemp("bundle") / "b"
    formats = ("onnx", "openvino") if _have("openvino") else ("onnx",)
    export_bundle(ExportOptions(out=str(out), int8=True, formats=formats, progress=False))
    return Bundle.load(out)
