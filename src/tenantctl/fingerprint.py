"""What a tenant was last applied from: its spec and the program's source.

`apply` skips a tenant whose fingerprint equals the one in its registry record,
so an unchanged tenant costs one registry read instead of a preview.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

from tenantctl import __version__
from tenantctl.models import TenantSpec


@lru_cache(maxsize=8)
def program_fingerprint(project_dir: Path) -> str:
    """Hash of infra/ and templates/ sources plus the tenantctl version."""
    digest = hashlib.sha256(__version__.encode())
    for folder, pattern in (("infra", "*.py"), ("templates", "*.j2")):
        for path in sorted((project_dir / folder).rglob(pattern)):
            if "__pycache__" in path.parts:
                continue
            digest.update(str(path.relative_to(project_dir)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def applied_hash(spec: TenantSpec, project_dir: Path) -> str:
    return hashlib.sha256(f"{spec.content_hash()}:{program_fingerprint(project_dir)}".encode()).hexdigest()
