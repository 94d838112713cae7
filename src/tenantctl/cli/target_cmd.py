"""`tenantctl target show | set`: which target commands run against."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from tenantctl.cli.options import JsonFlag
from tenantctl.cli.output import console, print_json, table

app = typer.Typer(name="target", no_args_is_help=True,
                  help="Which target commands run against: the sandbox or AWS.")


@app.command("show")
def show(json_out: JsonFlag = False) -> None:
    """The resolved target: kind, where it came from, and the aws settings."""
    from tenantctl.engines.pulumi.engine import backend_kind, cli_available, stack_name
    from tenantctl.naming import PLATFORM_STACK
    from tenantctl.project import Project, find_root
    from tenantctl.target import find_config, load_target

    target = load_target()
    config = find_config()
    root = find_root()
    details = {"config_file": str(config) if config else None, "project_dir": str(root)}
    if target.kind == "sandbox":
        from tenantctl.sandbox import resolve_state_dir

        details["sandbox_dir"] = str(resolve_state_dir(target.sandbox.state_dir, root))
    if target.kind == "aws":
        project = Project.load(root).name
        details |= {"backend": backend_kind(target.aws.backend_url),
                    "platform_stack": stack_name(PLATFORM_STACK, project, target.aws.backend_url, target.aws.org),
                    "pulumi_cli": cli_available(target.aws.pulumi_root)}
    if json_out:
        print_json({**target.model_dump(mode="json"), **details})
        return
    rows = [("kind", target.kind), ("source", target.source), *details.items()]
    if target.kind == "aws":
        rows += [(f"aws.{k}", v) for k, v in target.aws.model_dump(mode="json").items()]
    else:
        rows += [(f"sandbox.{k}", v) for k, v in target.sandbox.model_dump(mode="json").items()]
    table("target", ["setting", "value"], rows)


@app.command("set")
def set_(
    kind: Annotated[str, typer.Argument(metavar="KIND", help="sandbox or aws.")],
    region: Annotated[Optional[str], typer.Option(help="aws: default region.")] = None,
    profile: Annotated[Optional[str], typer.Option(help="aws: AWS profile.")] = None,
    backend_url: Annotated[Optional[str], typer.Option(help="aws: Pulumi backend (file://, s3://, https://).")] = None,
    secrets_provider: Annotated[Optional[str], typer.Option(help="aws: awskms://… or passphrase.")] = None,
    org: Annotated[Optional[str], typer.Option(help="aws: Pulumi Cloud organisation.")] = None,
    path: Annotated[Optional[Path], typer.Option(
        help="File to write (default: tenantctl.toml at the project root).")] = None,
) -> None:
    """Write tenantctl.toml pinning the target (environment variables still override it)."""
    from pydantic import ValidationError

    from tenantctl.errors import InvalidInput
    from tenantctl.models import describe_validation_error
    from tenantctl.project import find_root
    from tenantctl.target import CONFIG_FILE, AwsTarget, Target, render_config

    try:
        aws = AwsTarget(region=region, profile=profile, backend_url=backend_url,
                        secrets_provider=secrets_provider, org=org)
        target = Target.model_validate({"kind": kind, "aws": aws})
    except ValidationError as exc:
        raise InvalidInput(describe_validation_error(exc)) from None
    out = path or find_root() / CONFIG_FILE
    out.write_text(render_config(target))
    console.print(f"wrote {out}")
