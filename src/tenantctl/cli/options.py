"""Options several commands share, declared once so they read the same everywhere."""

from __future__ import annotations

from typing import Annotated

import typer

JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]
YesFlag = Annotated[bool, typer.Option(
    "--yes", "-y", help="Go ahead with what deletes or replaces without asking (without it: listed and asked on a "
                        "terminal, refused elsewhere with exit 13).")]
