"""Typed, frozen spec dataclasses loaded from TOML: unknown keys and wrong types are rejected by name.

    spec = load_toml_spec(CalibrationSpec, "calibration/default.toml")

Nested tables map to nested dataclass fields. Each error names the file and the dotted key.
"""
from __future__ import annotations

import dataclasses
import sys
import types
import typing
from pathlib import Path

from .errors import NinEdgeError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[no-redef]

SPECS_DIR = Path(__file__).parent / "specs"


def _type_ok(value, tp) -> tuple[bool, object]:
    origin = typing.get_origin(tp)
    if tp is typing.Any:
        return True, value
    if origin in (typing.Union, types.UnionType):
        for alt in typing.get_args(tp):
            ok, v = _type_ok(value, alt)
            if ok:
                return True, v
        return False, value
    if tp is type(None):
        return value is None, value
    if tp is float:
        return (isinstance(value, (int, float)) and not isinstance(value, bool)), float(value) if isinstance(value, (int, float)) else value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is str:
        return isinstance(value, str), value
    if origin is tuple:
        if not isinstance(value, list):
            return False, value
        args = typing.get_args(tp)
        elem = args[0] if args else typing.Any
        conv = []
        for v in value:
            ok, cv = _type_ok(v, elem)
            if not ok:
                return False, value
            conv.append(cv)
        return True, tuple(conv)
    if isinstance(tp, type) and issubclass(tp, str) and hasattr(tp, "__members__"):  # str Enum
        try:
            return True, tp(value)
        except ValueError:
            return False, value
    return isinstance(value, tp) if isinstance(tp, type) else True, value


def _type_name(tp) -> str:
    if isinstance(tp, type) and hasattr(tp, "__members__"):
        return "one of " + ", ".join(repr(m.value) for m in tp)  # type: ignore[attr-defined]
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def build_spec(cls, data: dict, where: str, prefix: str = ""):
    if not isinstance(data, dict):
        raise NinEdgeError(f"{where}: '{prefix.rstrip('.') or '<root>'}' must be a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise NinEdgeError(f"{where}: unknown key '{prefix}{unknown[0]}' (allowed: {', '.join(sorted(fields))})")
    kwargs = {}
    for name, f in fields.items():
        key = f"{prefix}{name}"
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:  # type: ignore[misc]
                raise NinEdgeError(f"{where}: missing required key '{key}'")
            continue
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = build_spec(tp, data[name], where, key + ".")
            continue
        ok, v = _type_ok(data[name], tp)
        if not ok:
            raise NinEdgeError(f"{where}: key '{key}' = {data[name]!r} has the wrong type (expected {_type_name(tp)})")
        kwargs[name] = v
    try:
        obj = cls(**kwargs)
    except (ValueError, TypeError) as e:
        raise NinEdgeError(f"{where}: {e}") from None
    return obj


def resolve_spec_path(name_or_path: str, kind: str) -> Path:
    """A path, or a bare name looked up in the package's shipped specs/<kind>/NAME.toml."""
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists() or "/" in name_or_path:
        if not p.exists():
            raise NinEdgeError(f"{p}: spec file not found")
        return p
    shipped = SPECS_DIR / kind / f"{name_or_path}.toml"
    if not shipped.exists():
        names = sorted(q.stem for q in (SPECS_DIR / kind).glob("*.toml"))
        raise NinEdgeError(f"unknown {kind} spec '{name_or_path}' (shipped: {', '.join(names) or 'none'})")
    return shipped


def load_toml_spec(cls, path: str | Path):
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise NinEdgeError(f"{p}: spec file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise NinEdgeError(f"{p}: not valid TOML ({e})") from None
    return build_spec(cls, data, str(p))
