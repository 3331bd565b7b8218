"""User-facing errors: one line, a name (file/option) and what is wrong. The CLI maps them to exit codes."""
from __future__ import annotations


class NinEdgeError(Exception):
    """A bad input or an unmet requirement. Printed as one line, never with a traceback."""

    exit_code = 2


class BackendUnavailable(NinEdgeError):
    """A backend package is not installed (or has no usable device). Never silently replaced."""

    def __init__(self, name: str, extra: str | None = None, why: str | None = None):
        self.name, self.extra = name, extra
        msg = f"backend '{name}' is not available"
        if why:
            msg += f": {why}"
        if extra:
            msg += f" (install it with: pip install 'nin-edge[{extra}]')"
        super().__init__(msg)


class SpecFailed(NinEdgeError):
    """A deployment spec was evaluated and at least one criterion failed (exit 1, not a usage error)."""

    exit_code = 1
