"""Find and render the jinja2 templates (templates/ in a checkout, or the copy
force-included into the wheel as tenantctl/_templates).

Every template goes through the one environment here, so they all fail on an
undefined variable and escaping is decided in one place, by template name."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

_PACKAGE_DIR = Path(__file__).resolve().parent


def templates_dir() -> Path:
    for candidate in (_PACKAGE_DIR.parent.parent / "templates", _PACKAGE_DIR / "_templates"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("tenantctl templates not found (broken install?)")


MAX_VALUE_CHARS = 160  # a policy document in a markdown cell is cut, not pasted whole


def md_cell(value: Any) -> str:
    """Text inside a markdown table cell: pipes escaped, one line."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def md_value(value: Any) -> str:
    """A property value in a markdown cell: as code, compact JSON for documents, cut when long."""
    if value is None:
        return "*(none)*"
    # (as engines.diffs.value_text writes it: importing it here would close an import circle)
    document = isinstance(value, (dict, list, bool))
    text = json.dumps(value, sort_keys=True, separators=(",", ":")) if document else str(value)
    if len(text) > MAX_VALUE_CHARS:
        text = text[:MAX_VALUE_CHARS] + "…"
    return "`" + md_cell(text).replace("`", "'") + "`"


@lru_cache(maxsize=1)
def _env():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        # HTML pages carry data (tenant ids, error messages, drill details), so
        # *.html.j2 is escaped; YAML, SQL and markdown must come out verbatim.
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default_for_string=False,
                                            default=False),
    )
    env.filters.update(cell=md_cell, value=md_value)
    return env


def render(name: str, **variables) -> str:
    return _env().get_template(name).render(**variables)
