import typer

from . import app


@app.command("export", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def export_cmd() -> None:
    """(not built yet)"""
    typer.echo("error: 'nin-edge export' is not built yet", err=True)
    raise typer.Exit(2)
