"""Options several commands share, declared once so they read the same everywhere."""

from typing import Annotated, Any, Optional

import typer

JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]
YesFlag = Annotated[bool, typer.Option(
    "--yes", "-y", help="Go ahead with what deletes or replaces without asking (without it: listed and asked on a "
                        "terminal, refused elsewhere with exit 13).")]


def tenant_argument(help: str, *, existing: bool = True, metavar: str = "ID") -> Any:
    """A tenant id argument checked against the naming rules before the command
    touches any target (the operations check it again). ``existing``: the
    command reads a tenant that may exist, so a refusal says how `forget`
    removes what an invalid id left behind. ``metavar``: its name in --help and
    usage errors, as the README's commands table writes it."""
    def check(value: Optional[str]) -> Optional[str]:
        if value is not None:
            _require_valid(value, existing)
        return value

    return typer.Argument(help=help, callback=check, metavar=metavar)


def tenants_argument(help: str) -> Any:
    """Tenant ids (none or several: a command that also takes ``--all``), each
    checked as ``tenant_argument`` checks an existing tenant's."""
    def check(values: Optional[list[str]]) -> Optional[list[str]]:
        for value in values or ():
            _require_valid(value, existing=True)
        return values

    return typer.Argument(help=help, callback=check, metavar="ID", show_default=False)


def _require_valid(value: str, existing: bool) -> None:
    from tenantctl.naming import forget_hint, require_valid

    require_valid(value, hint=forget_hint(value) if existing else "")
