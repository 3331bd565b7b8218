import typer

from . import app


@app.command("demo", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def demo_cmd() -> None:
    """(not built yet)"""
    typer.echo("error: 'nin-edge demo' is not built yet", err=True)
    raise typer.Exit(2)
