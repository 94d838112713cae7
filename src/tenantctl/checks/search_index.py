"""``search-analyzer``: a store's search index against tenantctl's analyzer,
run by ``db_posture`` on its connection as the store's role (the tenant's or
a workspace's). Each live search key's analyzer is read from the store
(``search_keys`` and ``search_analyzers``, the runtime's tables; a key with
no row, or a store without the table, is ``analyzer.LEGACY_IDENTITY``, as
the runtime takes it). A key of another analyzer than tenantctl's own
``analyzer.identity()`` is a warning naming the store, the analyzer found and
the fix (`tenantctl search reindex ID`), never a failure: right after an
upgrade every store is on the old analyzer, and runtimes still serve it (as
the index records it; `search reindex --all --outdated` moves a fleet). A
store with no key yet passes: its first writer records its own analyzer.
"""

from __future__ import annotations

from typing import Any

from psycopg import sql

from tenant_runtime import analyzer
from tenant_runtime.tables import SEARCH_ANALYZERS, SEARCH_KEYS
from tenantctl.checks.results import Outcome


def index_analyzers(conn: Any, schema: str, row_key: str, setting: str, recorded: bool) -> list[str]:
    """The analyzer of each live search key of the store, oldest first, as its
    role sees them with ``setting`` naming ``row_key`` (its RLS), in a
    transaction of their own; ``recorded``: the store has ``search_analyzers``."""
    keys = sql.Identifier(schema, SEARCH_KEYS)
    if recorded:
        query = sql.SQL("SELECT a.analyzer FROM {} k LEFT JOIN {} a ON a.tenant_id = k.tenant_id "
                        "AND a.key_version = k.version WHERE k.tenant_id = %s ORDER BY k.version").format(
            keys, sql.Identifier(schema, SEARCH_ANALYZERS))
    else:
        query = sql.SQL("SELECT NULL::text FROM {} k WHERE k.tenant_id = %s ORDER BY k.version").format(keys)
    with conn.transaction():
        conn.execute("SELECT set_config(%s, %s, true)", (setting, row_key))
        rows = conn.execute(query, (row_key,)).fetchall()
    return [r[0] or analyzer.LEGACY_IDENTITY for r in rows]


def analyzer_outcome(found: list[str], tenant_id: str, workspace: str | None) -> tuple[bool | Outcome, str]:
    """Pass, or warn, for a store whose live keys' analyzers are ``found``."""
    current = analyzer.identity()
    store = f"workspace {workspace}'s" if workspace else "the tenant's"
    if not found:
        return True, f"{store} search index has no key yet (its first writer records its analyzer)"
    others = list(dict.fromkeys(a for a in found if a != current))
    if not others:
        return True, f"{store} search index built by tenantctl's analyzer {current}"
    half = f" (part by {current}: a reindex unfinished)" if current in found else ""
    return Outcome.warned, (f"{store} search index was built by analyzer {', '.join(others)}{half}, not "
                            f"tenantctl's {current}: `tenantctl search reindex {tenant_id}` rebuilds it")
