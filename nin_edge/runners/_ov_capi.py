"""OpenVINO's C API through ctypes: the OpenVINO runner's per-call path when the installed wheel ships it.

Why: at batch 1 a call of the shipped int8 model takes ~0.2 ms, and the Python binding's synchronous `infer`
alone adds 7–12 µs on top of OpenVINO's own C++ timing of that call (what `benchmark_app -api sync` reports);
`ov_infer_request_infer` through ctypes adds ~3 µs (measured interleaved, notes in benchmarks/RESULTS.md).
The wheel ships `libopenvino_c` beside the library the Python binding uses, so both talk to the same runtime.

Only what the runner needs: read an IR, reshape it to a static batch, compile it with string properties
(`ov_core_compile_model_props`, the non-variadic entry point safe for FFI callers), read properties back, one
infer request with numpy views of its input/output memory. Every handle is freed by `close()` or, if the
caller forgets, by a finalizer. `load()` returns None where the library or an entry point is missing (older
wheels): the runner then uses the Python binding and says so.
"""
from __future__ import annotations

import ctypes as C
import functools
import glob
import os
import weakref

import numpy as np

_P = C.c_void_p


class _Property(C.Structure):  # ov_property_t: {const char* key; const void* value;}
    _fields_ = [("key", C.c_char_p), ("value", C.c_void_p)]


class _Dimension(C.Structure):  # ov_dimension_t
    _fields_ = [("min", C.c_int64), ("max", C.c_int64)]


class _PartialShape(C.Structure):  # ov_partial_shape_t: {ov_rank_t rank; ov_dimension_t* dims;}
    _fields_ = [("rank", _Dimension), ("dims", C.POINTER(_Dimension))]


# name → (argtypes, restype); all return ov_status_e (int, 0 = OK) unless given
_SIGNATURES = {
    "ov_core_create": ([C.POINTER(_P)], C.c_int),
    "ov_core_free": ([_P], None),
    "ov_core_read_model": ([_P, C.c_char_p, C.c_char_p, C.POINTER(_P)], C.c_int),
    "ov_model_free": ([_P], None),
    "ov_partial_shape_create_static": ([C.c_int64, C.POINTER(C.c_int64), C.POINTER(_PartialShape)], C.c_int),
    "ov_partial_shape_free": ([C.POINTER(_PartialShape)], None),
    "ov_model_reshape_single_input": ([_P, _PartialShape], C.c_int),
    "ov_core_compile_model_props": ([_P, _P, C.c_char_p, C.c_size_t, C.POINTER(_Property), C.POINTER(_P)], C.c_int),
    "ov_compiled_model_get_property": ([_P, C.c_char_p, C.POINTER(C.c_void_p)], C.c_int),
    "ov_compiled_model_create_infer_request": ([_P, C.POINTER(_P)], C.c_int),
    "ov_compiled_model_free": ([_P], None),
    "ov_infer_request_get_input_tensor_by_index": ([_P, C.c_size_t, C.POINTER(_P)], C.c_int),
    "ov_infer_request_get_output_tensor_by_index": ([_P, C.c_size_t, C.POINTER(_P)], C.c_int),
    "ov_infer_request_infer": ([_P], C.c_int),
    "ov_infer_request_free": ([_P], None),
    "ov_tensor_data": ([_P, C.POINTER(C.c_void_p)], C.c_int),
    "ov_tensor_free": ([_P], None),
    "ov_free": ([C.c_void_p], None),
    "ov_get_last_err_msg": ([], C.c_char_p),
}


class OvCError(RuntimeError):
    pass


@functools.lru_cache(maxsize=1)
def load() -> C.CDLL | None:
    """The C library next to the Python binding, with typed entry points; None if absent or too old."""
    import openvino

    libdir = os.path.join(os.path.dirname(openvino.__file__), "libs")
    names = sorted(n for pattern in ("libopenvino_c.so*", "libopenvino_c*.dylib", "openvino_c.dll")
                   for n in glob.glob(os.path.join(libdir, pattern)))
    if not names:
        return None
    try:
        lib = C.CDLL(names[0])  # CDLL releases the GIL around each call, as the Python binding's infer does
        for name, (argtypes, restype) in _SIGNATURES.items():
            f = getattr(lib, name)
            f.argtypes, f.restype = argtypes, restype
    except (OSError, AttributeError):
        return None
    return lib


def last_error(lib: C.CDLL) -> str:
    """First line of OpenVINO's last error message ('' if none)."""
    msg = (lib.ov_get_last_err_msg() or b"").decode(errors="replace").strip().splitlines()
    return msg[0][:200] if msg else ""


def _check(lib: C.CDLL, status: int, what: str) -> None:
    if status != 0:
        raise OvCError(f"{what}: {last_error(lib) or f'status {status}'}")


def _free_all(lib: C.CDLL, handles: list[tuple[str, C.c_void_p]]) -> None:
    for fn, h in reversed(handles):  # children before parents
        if h:
            getattr(lib, fn)(h)
    handles.clear()


class Model:
    """A core and one model read from an IR (xml + bin beside it)."""

    def __init__(self, lib: C.CDLL, xml: str):
        self.lib = lib
        self._handles: list[tuple[str, C.c_void_p]] = []
        self._finalizer = weakref.finalize(self, _free_all, lib, self._handles)
        self.core, self.model = _P(), _P()
        _check(lib, lib.ov_core_create(C.byref(self.core)), "create core")
        self._handles.append(("ov_core_free", self.core))
        _check(lib, lib.ov_core_read_model(self.core, os.fsencode(xml), None, C.byref(self.model)), "read model")
        self._handles.append(("ov_model_free", self.model))

    def compile(self, shape: tuple[int, ...], device: str, config: dict[str, str]) -> "Request":
        dims = (C.c_int64 * len(shape))(*shape)
        ps = _PartialShape()
        _check(self.lib, self.lib.ov_partial_shape_create_static(len(shape), dims, C.byref(ps)), "shape")
        try:
            _check(self.lib, self.lib.ov_model_reshape_single_input(self.model, ps), f"reshape to {list(shape)}")
        finally:
            self.lib.ov_partial_shape_free(C.byref(ps))
        return Request(self, device, config)

    def close(self) -> None:
        self._finalizer()


class Request:
    """A compiled model and its one infer request; `call()` runs it on the data in `input`, into `output`."""

    def __init__(self, model: Model, device: str, config: dict[str, str]):
        lib = self.lib = model.lib
        self._model = model  # the core must outlive what it compiled
        self._handles: list[tuple[str, C.c_void_p]] = []
        self._finalizer = weakref.finalize(self, _free_all, lib, self._handles)
        values = [C.c_char_p(v.encode()) for v in config.values()]  # kept alive through the call
        props = (_Property * len(config))(*[_Property(k.encode(), C.cast(v, C.c_void_p))
                                            for k, v in zip(config, values)])
        self.compiled, self.request = _P(), _P()
        _check(lib, lib.ov_core_compile_model_props(model.core, model.model, device.encode(), len(config), props,
                                                    C.byref(self.compiled)), f"compile for {device}")
        self._handles.append(("ov_compiled_model_free", self.compiled))
        _check(lib, lib.ov_compiled_model_create_infer_request(self.compiled, C.byref(self.request)),
               "create infer request")
        self._handles.append(("ov_infer_request_free", self.request))
        self.call = functools.partial(lib.ov_infer_request_infer, self.request)  # → status, 0 = OK

    def view(self, which: str, shape: tuple[int, ...]) -> np.ndarray:
        """A float32 numpy view of the request's own input or output memory (static shapes: it stays put)."""
        getter = getattr(self.lib, f"ov_infer_request_get_{which}_tensor_by_index")
        t, data = _P(), C.c_void_p()
        _check(self.lib, getter(self.request, 0, C.byref(t)), f"{which} tensor")
        self._handles.append(("ov_tensor_free", t))
        _check(self.lib, self.lib.ov_tensor_data(t, C.byref(data)), f"{which} data")
        return np.ctypeslib.as_array(C.cast(data, C.POINTER(C.c_float)), shape=shape)

    def get_property(self, key: str) -> str:
        out = C.c_void_p()
        _check(self.lib, self.lib.ov_compiled_model_get_property(self.compiled, key.encode(), C.byref(out)),
               f"property {key}")
        try:
            return C.string_at(out).decode()
        finally:
            self.lib.ov_free(out)

    def last_error(self) -> str:
        return last_error(self.lib)

    def close(self) -> None:
        self._finalizer()
