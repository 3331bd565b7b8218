"""Runners by name, imported lazily: `import nin_edge` never imports openvino or tensorrt."""
from .base import Runner, available_runners, create_runner, get_runner_class, list_runners  # noqa: F401
