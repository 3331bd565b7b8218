import typer

from . import app


@app.command("diagnose", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def diagnose_cmd() -> None:
    """(not built yet)"""
    typer.echo("error: 'nin-edge diagnose' is not built yet", err=True)
    raise typer.Exit(2)
