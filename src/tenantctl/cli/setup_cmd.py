"""`tenantctl setup pulumi`: install the Pulumi CLI the aws target needs (opt-in)."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from tenantctl.cli.output import console, print_json

app = typer.Typer(name="setup", no_args_is_help=True,
                  help="Install what the aws target needs.")


@app.command("pulumi")
def pulumi(
    version: Annotated[Optional[str], typer.Option(
        help="CLI version (default: the one matching the installed pulumi SDK).")] = None,
    root: Annotated[Optional[Path], typer.Option(help="Install root (default: ~/.pulumi/versions/<version>).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")] = False,
) -> None:
    """Download and install the Pulumi CLI (needs internet access).

    tenantctl finds it afterwards without PATH changes when installed in the
    default root; with --root, set TENANTCTL_PULUMI_ROOT (or `pulumi_root` under
    aws in tenantctl.toml) to the same directory.
    """
    from tenantctl.engines.pulumi.cli import default_root, install

    if not json_out:
        into = root or default_root(version.lstrip("v") if version else None)
        console.print(f"installing the Pulumi CLI into {into} …")
    result = install(version, root)
    if json_out:
        print_json(result)
        return
    console.print(f"Pulumi CLI {result.version} installed: {result.command}")
    if root is not None:
        console.print(f"tell tenantctl where it is: export TENANTCTL_PULUMI_ROOT={result.root}")
