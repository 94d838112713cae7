"""`tenantctl sandbox up|down|status` (placeholder: filled by the sandbox work)."""

import typer


def register(app: typer.Typer) -> None:
    sandbox = typer.Typer(help="The local sandbox: moto server + embedded PostgreSQL.", no_args_is_help=True)
    app.add_typer(sandbox, name="sandbox")
