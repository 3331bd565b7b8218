import typer

from . import app


@app.command("bench", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def bench_cmd() -> None:
    """(not built yet)"""
    typer.echo("error: 'nin-edge bench' is not built yet", err=True)
    raise typer.Exit(2)
