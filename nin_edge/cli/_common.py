from __future__ import annotations

import contextlib
import sys

import typer


@contextlib.contextmanager
def guard():
    """Map library errors to one stderr line + exit code; Ctrl-C to 130 (the library already cleaned up)."""
    from ..errors import NinEdgeError

    try:
        yield
    except NinEdgeError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(e.exit_code) from None
    except KeyboardInterrupt:
        typer.echo("interrupted: no half-written output was kept", err=True)
        raise typer.Exit(130) from None


def parse_csv_ints(value: str, option: str) -> list[int]:
    from ..errors import NinEdgeError

    try:
        out = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise NinEdgeError(f"{option} {value!r}: expected comma-separated integers") from None
    if not out or any(v < 1 for v in out):
        raise NinEdgeError(f"{option} {value!r}: every value must be a positive integer")
    return out


def echo_err(msg: str) -> None:
    print(msg, file=sys.stderr)
