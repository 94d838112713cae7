"""Supabase splinter's generic database lints, adapted to a tenant schema.

splinter (github.com/supabase/splinter) lints the schemas Supabase exposes
through its API; here the exposed schema is the tenant's, and the tenant
setting ``app.tenant_id`` plays the part of ``auth.uid()``. Each lint keeps
splinter's number and name (adapted names say what changed). Lints tied to
Supabase itself are left out: 0002 auth_users_exposed, 0012
auth_allow_anonymous_sign_ins, 0015 rls_references_user_metadata, 0019
insecure_queue_exposed_in_api, 0021 fkey_to_auth_unique (Supabase's auth and
queue schemas); so are lints that need a database's history rather than its
definition: 0005 unused_index, 0020 table_bloat, 0022
extension_versions_outdated (operations, not isolation).

Every query reads catalogs only, so the tenant's own login can run them (as
``tenantctl check`` does); ``lint_schema`` returns what each lint found.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_IN_SCHEMA = "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %(schema)s"


@dataclass(frozen=True)
class Lint:
    code: str  # splinter's number
    name: str  # splinter's name ("tenant_schema" where splinter says "api" or "public")
    query: str  # rows of (object, detail) for %(schema)s


@dataclass(frozen=True)
class Finding:
    code: str
    name: str
    object: str
    detail: str

    def __str__(self) -> str:
        return f"{self.code} {self.name} {self.object}: {self.detail}"


LINTS: tuple[Lint, ...] = (
    Lint("0001", "unindexed_foreign_keys", f"""
        SELECT c.relname || '.' || con.conname, 'foreign key without a covering index'
        FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid {_IN_SCHEMA} AND con.contype = 'f'
        AND NOT EXISTS (
          SELECT 1 FROM pg_index i WHERE i.indrelid = con.conrelid
          AND (SELECT array_agg(k ORDER BY k) FROM unnest((i.indkey::int2[])[0:cardinality(con.conkey) - 1]) k)
            = (SELECT array_agg(k ORDER BY k) FROM unnest(con.conkey) k))"""),
    # splinter's auth_rls_initplan: auth.uid() in a policy is evaluated per row
    # unless wrapped in a SELECT (an initPlan, evaluated once per query).
    Lint("0003", "tenant_setting_rls_initplan", """
        SELECT p.tablename || '.' || p.policyname,
               'current_setting() evaluated per row: wrap it in (SELECT current_setting(...))'
        FROM pg_policies p WHERE p.schemaname = %(schema)s
        AND regexp_count(coalesce(p.qual, '') || ' ' || coalesce(p.with_check, ''), 'current_setting\\(', 1, 'i')
          > regexp_count(coalesce(p.qual, '') || ' ' || coalesce(p.with_check, ''),
                         'select\\s+current_setting\\(', 1, 'i')"""),
    Lint("0004", "no_primary_key", f"""
        SELECT c.relname, 'no primary key'
        FROM pg_class c {_IN_SCHEMA} AND c.relkind IN ('r', 'p')
        AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)"""),
    Lint("0006", "multiple_permissive_policies", """
        SELECT p.tablename || ' (' || r::text || ', ' || op || ')',
               count(*) || ' permissive policies: ' || string_agg(p.policyname::text, ', ' ORDER BY p.policyname)
        FROM pg_policies p, unnest(p.roles) r,
             unnest(CASE p.cmd WHEN 'ALL' THEN ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE']
                    ELSE ARRAY[p.cmd] END) op
        WHERE p.schemaname = %(schema)s AND p.permissive = 'PERMISSIVE'
        GROUP BY p.tablename, r, op HAVING count(*) > 1"""),
    Lint("0007", "policy_exists_rls_disabled", f"""
        SELECT c.relname, count(*) || ' policies while row level security is disabled'
        FROM pg_class c JOIN pg_policy p ON p.polrelid = c.oid {_IN_SCHEMA}
        AND NOT c.relrowsecurity GROUP BY c.relname"""),
    Lint("0008", "rls_enabled_no_policy", f"""
        SELECT c.relname, 'row level security enabled without any policy'
        FROM pg_class c {_IN_SCHEMA} AND c.relkind IN ('r', 'p') AND c.relrowsecurity
        AND NOT EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid)"""),
    Lint("0009", "duplicate_index", f"""
        SELECT c.relname, string_agg(ic.relname::text, ', ' ORDER BY ic.relname) || ' are identical'
        FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_class c ON c.oid = i.indrelid {_IN_SCHEMA}
        GROUP BY c.relname, i.indkey::text, i.indclass::text, coalesce(pg_get_expr(i.indexprs, i.indrelid), ''),
                 coalesce(pg_get_expr(i.indpred, i.indrelid), '')
        HAVING count(*) > 1"""),
    Lint("0010", "security_definer_view", f"""
        SELECT c.relname, 'view runs with its owner''s rights (security_invoker off)'
        FROM pg_class c {_IN_SCHEMA} AND c.relkind = 'v'
        AND NOT coalesce(c.reloptions && ARRAY['security_invoker=true', 'security_invoker=on',
                                                'security_invoker=1'], false)"""),
    Lint("0011", "function_search_path_mutable", """
        SELECT p.proname::text, 'search_path not pinned (proconfig)'
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = %(schema)s
        AND NOT EXISTS (SELECT 1 FROM unnest(coalesce(p.proconfig, '{}')) cfg WHERE cfg LIKE 'search_path=%%')"""),
    Lint("0013", "rls_disabled_in_tenant_schema", f"""
        SELECT c.relname, 'row level security disabled'
        FROM pg_class c {_IN_SCHEMA} AND c.relkind IN ('r', 'p') AND NOT c.relrowsecurity"""),
    # Database-wide: an extension in public is in every role's search path.
    Lint("0014", "extension_in_public", """
        SELECT e.extname::text, 'installed in schema public'
        FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
        WHERE n.nspname = 'public'"""),
    Lint("0016", "materialized_view_in_tenant_schema", f"""
        SELECT c.relname, 'materialized views have no row level security'
        FROM pg_class c {_IN_SCHEMA} AND c.relkind = 'm'"""),
    Lint("0017", "foreign_table_in_tenant_schema", f"""
        SELECT c.relname, 'foreign tables have no row level security'
        FROM pg_class c {_IN_SCHEMA} AND c.relkind = 'f'"""),
    Lint("0018", "unsupported_reg_types", f"""
        SELECT c.relname || '.' || a.attname, format_type(a.atttypid, a.atttypmod) || ' blocks pg_upgrade'
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid {_IN_SCHEMA}
        AND a.attnum > 0 AND NOT a.attisdropped
        AND a.atttypid IN ('regcollation'::regtype, 'regconfig'::regtype, 'regdictionary'::regtype,
                           'regnamespace'::regtype, 'regoper'::regtype, 'regoperator'::regtype,
                           'regproc'::regtype, 'regprocedure'::regtype)"""),
)


# Every lint in one statement (one round trip, in LINTS order): each query's
# rows tagged with its position.
_ALL = "\nUNION ALL\n".join(
    f"SELECT {i} AS lint, q.object::text, q.detail::text FROM ({lint.query}\n) AS q(object, detail)"
    for i, lint in enumerate(LINTS)) + "\nORDER BY 1"


def lint_schema(conn: Any, schema: str) -> list[Finding]:
    """Every finding of every lint on ``schema`` (``conn``: any psycopg connection)."""
    return [Finding(LINTS[i].code, LINTS[i].name, obj, detail)
            for i, obj, detail in conn.execute(_ALL, {"schema": schema}).fetchall()]
