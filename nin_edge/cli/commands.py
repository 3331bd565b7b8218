"""Imports every command module so each registers itself on the app (one module per command)."""
from . import average, bench, demo, diagnose, export, info, models, pipeline, train, update_bn  # noqa: F401
