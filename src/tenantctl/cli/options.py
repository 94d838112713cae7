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
            from tenantctl.naming import forget_hint, require_valid

            require_valid(value, hint=forget_hint(value) if existing else "")
        return value

    return typer.Argument(help=help, callback=check, metavar=metavar)
