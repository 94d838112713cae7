"""Find and render the jinja2 templates (templates/ in a checkout, or the copy
force-included into the wheel as tenantctl/_templates).

Every template goes through the one environment here, so they all fail on an
undefined variable and escaping is decided in one place, by template name."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def templates_dir() -> Path:
    for candidate in (_PACKAGE_DIR.parent.parent / "templates", _PACKAGE_DIR / "_templates"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("tenantctl templates not found (broken install?)")


@lru_cache(maxsize=1)
def _env():
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        # HTML pages carry data (tenant ids, error messages, drill details), so
        # *.html.j2 is escaped; YAML, SQL and markdown must come out verbatim.
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default_for_string=False,
                                            default=False),
    )


def render(name: str, **variables) -> str:
    return _env().get_template(name).render(**variables)
