import typer

from . import app
from ._common import guard


@app.command("models")
def models_cmd() -> None:
    """List the NIN model zoo with parameter counts and MACs per image."""
    from rich.console import Console
    from rich.table import Table

    from ..models import count_macs, count_params, create_model, list_models, model_info

    with guard():
        t = Table(title="NIN model zoo")
        for col in ("name", "input", "params", "MACs/image", "description"):
            t.add_column(col, justify="right" if col in ("params", "MACs/image", "input") else "left")
        for name in list_models():
            info = model_info(name)
            m = create_model(name)  # each model's own class count (1000 for nin-imagenet)
            t.add_row(name, f"{info.input_size}²", f"{count_params(m):,}", f"{count_macs(m, info.input_size) / 1e6:,.1f} M",
                      info.description)
        Console().print(t)
