import typer

from . import app
from ._common import guard


@app.command("info")
def info_cmd(json_out: bool = typer.Option(False, "--json", help="print machine-readable JSON")) -> None:
    """Versions of every backend, CPU ISA features, threads and GPUs of this machine."""
    import json

    from ..envinfo import environment

    with guard():
        env = environment()
        if json_out:
            typer.echo(json.dumps(env, indent=2))
            return
        from rich.console import Console
        from rich.table import Table

        t = Table(title="nin-edge environment", show_header=False)
        t.add_column("key"), t.add_column("value")
        for k, v in env["versions"].items():
            t.add_row(k, v)
        t.add_row("cpu", env["cpu"]["model"])
        t.add_row("isa", ", ".join(f"{k}:{'yes' if v else 'no'}" for k, v in env["cpu"]["isa"].items()))
        t.add_row("threads", str(env["cpu"]["threads"]))
        t.add_row("gpus", ", ".join(env["gpus"]) or "none")
        Console().print(t)
