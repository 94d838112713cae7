"""What a tenant (or a cell) was last applied from: its spec and the program's source.

`apply` skips a tenant whose fingerprint equals the one in its registry record,
so an unchanged tenant costs one registry read instead of a preview.

The program is the one the engines actually run: `<project>/infra` when the
project holds it (the PulumiEngine runs Pulumi.yaml's `main: infra/`), else the
installed `infra` package (what the LocalEngine imports), plus the templates
that shape deployed state (stack files, tenant schema SQL; the report
templates, *.md.j2 and *.html.j2, deploy nothing and are left out so that
editing a report does not mark every tenant changed), plus the tenantctl
version (the engines' own code).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from functools import lru_cache
from pathlib import Path

from tenantctl import __version__
from tenantctl.models import CellSpec, TenantSpec

REPORT_SUFFIXES = (".md.j2", ".html.j2")


def program_dir(project_dir: Path) -> Path | None:
    local = project_dir / "infra"
    if (local / "program.py").is_file():
        return local
    spec = importlib.util.find_spec("infra")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _hash_tree(digest: hashlib._Hash, root: Path, pattern: str, label: str) -> None:
    for path in sorted(root.rglob(pattern)):
        if "__pycache__" in path.parts or path.name.endswith(REPORT_SUFFIXES):
            continue
        digest.update(f"{label}/{path.relative_to(root)}\0".encode())
        digest.update(path.read_bytes())
        digest.update(b"\0")


@lru_cache(maxsize=8)
def program_fingerprint(project_dir: Path) -> str:
    """Hash of the infra program's sources, the deploying templates and the tenantctl version."""
    from tenantctl.templates import templates_dir

    digest = hashlib.sha256(__version__.encode())
    infra = program_dir(Path(project_dir))
    if infra is not None:
        _hash_tree(digest, infra, "*.py", "infra")
    _hash_tree(digest, templates_dir(), "*.j2", "templates")
    return digest.hexdigest()


def applied_hash(spec: TenantSpec, project_dir: Path, program: str | None = None,
                 cell: CellSpec | None = None) -> str:
    """``program``: the program fingerprint when the caller already has it (a plan over many tenants).
    ``cell``: the tenant's cell, whose settings its stack reads (its logins' connection limit, its
    alarm topics' subscriptions): a change there re-applies the tenants that take it."""
    program = program or program_fingerprint(project_dir)
    limit = spec.connection_limit(cell.db_connection_limit if cell is not None else None)
    # Only when there are some: the fingerprints of tenants of a cell without stay as they were.
    subs = json.dumps([s.model_dump() for s in cell.alarm_subscriptions]) if cell and cell.alarm_subscriptions else ""
    return hashlib.sha256(f"{spec.content_hash()}:{program}:{limit}{subs and ':'}{subs}".encode()).hexdigest()


def cell_hash(spec: CellSpec, project_dir: Path) -> str:
    """What a cell's stack was applied from: its spec and the program. What no
    resource reads is left out (``CellSpec.UNDEPLOYED``: ``draining``, the counter's
    flag; the connection budget's settings); so is what the spec leaves ``unwritten``."""
    dumped = json.dumps(spec.model_dump(mode="json", exclude=set(spec.UNDEPLOYED) | spec.unwritten), sort_keys=True)
    return hashlib.sha256(f"{dumped}:{program_fingerprint(project_dir)}".encode()).hexdigest()
