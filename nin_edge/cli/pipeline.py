import typer

from . import app


@app.command("pipeline", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def pipeline_cmd() -> None:
    """(not built yet)"""
    typer.echo("error: 'nin-edge pipeline' is not built yet", err=True)
    raise typer.Exit(2)
