"""What a pooled tenant's own database login (the credentials its secret holds,
which its workload reads) can do beside its schema, and what the platform
makes of it: the sandbox's PostgreSQL, the CLI."""

from __future__ import annotations

import json

import boto3
import psycopg
import pytest
import yaml
from psycopg import sql

from tenantctl.tenant_schema_sql import DATABASE_ACL_LOCK, take_acl_lock

pytestmark = pytest.mark.integration

HOARDER = "qx-lo"


def login(sandbox, secret_arn: str) -> psycopg.Connection:
    """A connection as the login the secret holds, as the tenant's workload can open one."""
    secrets = boto3.client("secretsmanager", endpoint_url=sandbox.aws_endpoint_url, region_name=sandbox.region)
    creds = json.loads(secrets.get_secret_value(SecretId=secret_arn)["SecretString"])
    return psycopg.connect(host=creds["host"], port=creds["port"], dbname=creds["dbname"], user=creds["username"],
                           password=creds["password"], autocommit=True)


def large_objects_of(sandbox, database: str, role: str) -> list[int]:
    with psycopg.connect(sandbox.pg_dsn(database)) as conn:
        return [r[0] for r in conn.execute(
            "SELECT m.oid::bigint FROM pg_largeobject_metadata m JOIN pg_roles r ON r.oid = m.lomowner "
            "WHERE r.rolname = %s", (role,))]


def test_large_objects_of_a_tenant_and_its_workspace_fail_the_check_and_go_with_the_tenant(
        sandbox, tenantctl_cli):
    assert tenantctl_cli("provision", HOARDER).returncode == 0
    ws = json.loads(tenantctl_cli("workspace", "add", HOARDER, "hr", "--json").stdout)["workspace"]
    store = json.loads(tenantctl_cli("status", HOARDER, "--json").stdout)["resources"]["store"]
    for owner in (store, ws["store"]):
        with login(sandbox, owner["secret_arn"]) as conn:  # no privilege governs lo_create
            conn.execute("SELECT lo_from_bytea(0, 'kept outside the schema, its RLS and its backups')")
        assert len(large_objects_of(sandbox, owner["database"], owner["role"])) == 1

    checked = tenantctl_cli("check", HOARDER, "--json")
    assert checked.returncode == 8, checked.stdout + checked.stderr
    failed = {(c["area"], c["name"]): c["detail"] for c in json.loads(checked.stdout)["checks"]
              if c["outcome"] == "fail"}
    assert set(failed) == {("database", "role-owns-nothing"), ("workspace hr/database", "role-owns-nothing")}, failed
    assert all("owns large object " in detail for detail in failed.values()), failed

    gone = tenantctl_cli("deprovision", HOARDER, "--yes", "--json")
    assert gone.returncode == 0, gone.stderr
    for owner in (store, ws["store"]):
        assert large_objects_of(sandbox, owner["database"], owner["role"]) == []
        with psycopg.connect(sandbox.pg_dsn(owner["database"])) as conn:
            assert conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (owner["role"],)).fetchone() is None


def test_a_tenant_login_holding_the_acl_lock_stalls_neither_helpers_nor_provisions(sandbox, tenantctl_cli):
    """Any role may take any advisory lock, and the ACL lock's key is in the
    source: a tenant's login holding it used to stall every schema script and
    ACL change of its database, its neighbours' provisions included."""
    assert tenantctl_cli("provision", "qx-lock").returncode == 0
    store = json.loads(tenantctl_cli("status", "qx-lock", "--json").stdout)["resources"]["store"]
    holder = login(sandbox, store["secret_arn"])
    holder.execute("SELECT pg_advisory_lock(%s)", (DATABASE_ACL_LOCK,))
    with psycopg.connect(sandbox.pg_dsn(store["database"])) as admin:
        admin.execute("SET statement_timeout = '60s'")  # the bound on a hang, not a timing
        with admin.transaction():
            take_acl_lock(admin)
            held = admin.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = "
                                 "pg_backend_pid() AND granted").fetchone()[0]
    assert held == 1
    with pytest.raises(psycopg.OperationalError):  # its session was ended
        holder.execute("SELECT 1")

    holder = login(sandbox, store["secret_arn"])  # again, then a neighbour's provision (the template's script)
    holder.execute("SELECT pg_advisory_lock(%s)", (DATABASE_ACL_LOCK,))
    pid = holder.info.backend_pid
    provisioned = tenantctl_cli("provision", "qx-lock2")
    assert provisioned.returncode == 0, provisioned.stderr
    assert _ended(holder)
    # The operator is told which session was ended, and whose.
    assert (f"note: ended session {pid} of role {store['role']} in database {store['database']}, which held or "
            "awaited the database ACL lock") in provisioned.stderr, provisioned.stderr


def suspend_and_see_logins_closed(cli, sandbox, tenant_id: str, stores, open_sessions) -> None:
    """`suspend` ends the sessions of the tenant's and its workspace's logins and makes them
    NOLOGIN, and `check` (every probe run as the role) passes, saying so."""
    suspended = cli("suspend", tenant_id, "--json")
    assert suspended.returncode == 0, suspended.stderr
    assert all(_ended(conn) for conn in open_sessions)
    for each in stores:
        assert role_row(sandbox, each)[1] is False
        with pytest.raises(psycopg.OperationalError, match="not permitted to log in"):
            login(sandbox, each["secret_arn"])
    checked = cli("check", tenant_id, "--json")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    login_checks = {c["area"]: c for c in json.loads(checked.stdout)["checks"] if c["name"] == "role-login"}
    assert set(login_checks) == {"database", "workspace hr/database"}
    assert all("NOLOGIN, no session open" in c["detail"] for c in login_checks.values()), login_checks


def _ended(conn: psycopg.Connection) -> bool:
    try:
        conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return True
    return False


# -- what a pooled tenant's own login may hold, keep while suspended, and set for itself -------

def admin_sql(sandbox, store: dict, statement: str) -> list:
    """``statement`` as the sandbox's superuser in the store's database ({role}: the store's role)."""
    with psycopg.connect(sandbox.pg_dsn(store["database"]), autocommit=True) as conn:
        cur = conn.execute(sql.SQL(statement).format(role=sql.Identifier(store["role"]),
                                                     database=sql.Identifier(store["database"])))
        return cur.fetchall() if cur.description else []


def role_row(sandbox, store: dict) -> tuple:
    """(rolconnlimit, rolcanlogin) of the store's role."""
    [row] = admin_sql(sandbox, store, "SELECT rolconnlimit, rolcanlogin FROM pg_roles WHERE rolname = "
                                      + "'" + store["role"] + "'")
    return row


def failed_checks(run) -> dict:
    return {(c["area"], c["name"]): c["detail"] for c in json.loads(run.stdout)["checks"] if c["outcome"] == "fail"}


def schema_drift(tenantctl_cli, tenant_id: str) -> dict:
    """The property diffs `refresh` finds on the tenant's schema resources, by resource name."""
    run = tenantctl_cli("refresh", tenant_id, "--json")
    [tenant] = json.loads(run.stdout)["tenants"]
    return {r["name"]: {d["path"]: (d["old"], d["new"]) for d in r["diffs"]}
            for r in tenant["resources"] if r["name"].endswith("-schema")}


CAPPED = "iso2-cap"


def test_a_pooled_login_holds_at_most_its_connection_limit_and_a_changed_one_is_found_and_reset(
        sandbox, tenantctl_cli):
    """One tenant's login used to be able to take every connection slot of the shared
    server (no CONNECTION LIMIT): the gateway's pools and its neighbours' logins failed."""
    for bad in ("0", "1001"):
        refused = tenantctl_cli("provision", CAPPED, "--db-connection-limit", bad, "--json")
        assert refused.returncode == 3, refused.stdout + refused.stderr
        assert "db_connection_limit" in json.loads(refused.stdout)["error"]["message"]
    assert tenantctl_cli("status", CAPPED).returncode == 6  # nothing was created

    made = tenantctl_cli("provision", CAPPED, "--db-connection-limit", "2")
    assert made.returncode == 0, made.stderr
    ws = json.loads(tenantctl_cli("workspace", "add", CAPPED, "ops", "--json").stdout)["workspace"]
    store = json.loads(tenantctl_cli("status", CAPPED, "--json").stdout)["resources"]["store"]
    assert role_row(sandbox, store) == (2, True) and role_row(sandbox, ws["store"]) == (2, True)
    held = [login(sandbox, store["secret_arn"]) for _ in range(2)]
    with pytest.raises(psycopg.OperationalError, match="too many connections for role"):
        login(sandbox, store["secret_arn"])
    login(sandbox, ws["store"]["secret_arn"]).close()  # each role its own bound
    for conn in held:
        conn.close()

    # A neighbour without a setting of its own gets the cell's default.
    assert tenantctl_cli("provision", "iso2-dflt").returncode == 0
    neighbour = json.loads(tenantctl_cli("status", "iso2-dflt", "--json").stdout)["resources"]["store"]
    assert role_row(sandbox, neighbour)[0] == 10

    admin_sql(sandbox, store, "ALTER ROLE {role} CONNECTION LIMIT -1")
    checked = tenantctl_cli("check", CAPPED, "--json")
    assert checked.returncode == 8, checked.stdout + checked.stderr
    assert set(failed_checks(checked)) == {("database", "role-connection-limit")}, failed_checks(checked)
    assert "CONNECTION LIMIT none, its spec and cell say 2" in failed_checks(checked)[
        ("database", "role-connection-limit")]
    assert schema_drift(tenantctl_cli, CAPPED)[f"{CAPPED}-schema"] == {"connection_limit": (2, -1)}
    assert tenantctl_cli("provision", CAPPED).returncode == 0  # the repair
    assert role_row(sandbox, store) == (2, True)

    raised = tenantctl_cli("provision", CAPPED, "--db-connection-limit", "5")  # options update in place
    assert raised.returncode == 0, raised.stderr
    assert role_row(sandbox, store)[0] == 5 and role_row(sandbox, ws["store"])[0] == 5
    assert tenantctl_cli("check", CAPPED).returncode == 0


SUSPENDED = "iso2-sus"


def test_a_suspended_pooled_tenant_can_no_longer_log_in_and_resume_gives_its_logins_back(
        sandbox, tenantctl_cli, project):
    """Suspension used to leave a pooled tenant's DB login as it was: a workload that
    had read its secret kept its store (and its share of the shared server)."""
    assert tenantctl_cli("provision", SUSPENDED).returncode == 0
    ws = json.loads(tenantctl_cli("workspace", "add", SUSPENDED, "hr", "--json").stdout)["workspace"]
    store = json.loads(tenantctl_cli("status", SUSPENDED, "--json").stdout)["resources"]["store"]
    stores = (store, ws["store"])
    open_sessions = [login(sandbox, s["secret_arn"]) for s in stores]

    # check runs every probe as the role (through the gateway) and expects it closed
    suspend_and_see_logins_closed(tenantctl_cli, sandbox, SUSPENDED, stores, open_sessions)
    assert tenantctl_cli("suspend", SUSPENDED).returncode == 0  # idempotent

    # A login given back out of band, and a session that outlived a NOLOGIN (a suspend killed
    # after its script, before it ended the sessions): check fails, refresh shows it, suspend converges.
    admin_sql(sandbox, ws["store"], "ALTER ROLE {role} LOGIN")
    survivor = login(sandbox, ws["store"]["secret_arn"])
    admin_sql(sandbox, ws["store"], "ALTER ROLE {role} NOLOGIN")
    admin_sql(sandbox, store, "ALTER ROLE {role} LOGIN")
    checked = tenantctl_cli("check", SUSPENDED, "--json")
    assert checked.returncode == 8, checked.stdout + checked.stderr
    failed = failed_checks(checked)
    assert set(failed) == {("database", "role-login"), ("workspace hr/database", "role-login")}, failed
    assert "may log in while suspended" in failed[("database", "role-login")]
    assert f"1 session(s) still logged in as {ws['store']['role']}" in failed[("workspace hr/database", "role-login")]
    drift = schema_drift(tenantctl_cli, SUSPENDED)
    assert drift[f"{SUSPENDED}-schema"] == {"login": (False, True)}
    assert drift[f"{SUSPENDED}--hr-schema"] == {"login": (False, True)}
    assert tenantctl_cli("suspend", SUSPENDED).returncode == 0
    assert _ended(survivor) and role_row(sandbox, store)[1] is False
    assert tenantctl_cli("check", SUSPENDED).returncode == 0

    # A move is refused while suspended (and hibernation is for dedicated tenants).
    for args, why in ((("move", SUSPENDED, "--tier", "dedicated"), "is suspended"),
                      (("hibernate", SUSPENDED), "is pooled")):
        refused = tenantctl_cli(*args)
        assert refused.returncode == 3 and why in refused.stderr, refused.stderr

    resumed = tenantctl_cli("resume", SUSPENDED, "--json")
    assert resumed.returncode == 0, resumed.stderr
    for each in stores:
        assert role_row(sandbox, each)[1] is True
        login(sandbox, each["secret_arn"]).close()
    assert "suspended" not in yaml.safe_load((project / "stacks" / f"Pulumi.{SUSPENDED}.yaml").read_text())[
        "config"]["tenantctl:tenant"]
    assert tenantctl_cli("check", SUSPENDED).returncode == 0


def test_role_defaults_a_tenant_sets_for_itself_are_reported_and_reset(sandbox, tenantctl_cli):
    """A role may change its own defaults, which every later login as it inherits,
    tenantctl's checks included: a 1 ms statement timeout made them fail."""
    tenant = "iso2-defaults"
    assert tenantctl_cli("provision", tenant).returncode == 0
    store = json.loads(tenantctl_cli("status", tenant, "--json").stdout)["resources"]["store"]
    with login(sandbox, store["secret_arn"]) as conn:
        conn.execute(sql.SQL("ALTER ROLE {} SET work_mem = '64kB'").format(sql.Identifier(store["role"])))
        conn.execute(sql.SQL("ALTER ROLE {} IN DATABASE {} SET lock_timeout = '1ms'").format(
            sql.Identifier(store["role"]), sql.Identifier(store["database"])))

    checked = tenantctl_cli("check", tenant, "--json")
    assert checked.returncode == 8, checked.stdout + checked.stderr
    failed = failed_checks(checked)
    assert set(failed) == {("database", "role-settings")}, failed
    assert "work_mem=64kB" in failed[("database", "role-settings")]
    assert f"lock_timeout=1ms (in database {store['database']})" in failed[("database", "role-settings")]
    drift = schema_drift(tenantctl_cli, tenant)[f"{tenant}-schema"]
    assert drift and all(path.startswith("role_settings") for path in drift), drift
    assert "work_mem=64kB" in json.dumps(drift), drift

    with login(sandbox, store["secret_arn"]) as conn:  # the one that broke tenantctl's own logins
        conn.execute(sql.SQL("ALTER ROLE {} SET statement_timeout = '1ms'").format(sql.Identifier(store["role"])))
    assert tenantctl_cli("provision", tenant).returncode == 0  # the repair resets them all
    settings = admin_sql(sandbox, store, "SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_roles r "
                                         "ON r.oid = s.setrole WHERE r.rolname = " + "'" + store["role"] + "'")
    assert settings == [([f"search_path={store['schema_name']}"],)]
    assert tenantctl_cli("check", tenant).returncode == 0


DEDICATED_SUSPENDED = "s3-ded"


def test_a_suspended_dedicated_tenants_logins_are_closed_and_resume_gives_them_back(sandbox, tenantctl_cli):
    """A dedicated tenant's app logins used to stay open while it was suspended
    (its server is its own): a workload that had read its secret kept its store.
    Suspension closes them as a pooled tenant's, never the admin's login."""
    made = tenantctl_cli("provision", DEDICATED_SUSPENDED, "--tier", "dedicated")
    assert made.returncode == 0, made.stderr
    ws = json.loads(tenantctl_cli("workspace", "add", DEDICATED_SUSPENDED, "hr", "--json").stdout)["workspace"]
    store = json.loads(tenantctl_cli("status", DEDICATED_SUSPENDED, "--json").stdout)["resources"]["store"]
    stores = (store, ws["store"])
    open_sessions = [login(sandbox, s["secret_arn"]) for s in stores]
    admin = psycopg.connect(sandbox.pg_dsn(store["database"]), autocommit=True)  # the admin's, kept

    # check runs every probe as the role (through the admin's login, no gateway here) and expects it closed
    suspend_and_see_logins_closed(tenantctl_cli, sandbox, DEDICATED_SUSPENDED, stores, open_sessions)
    assert not _ended(admin)

    admin_sql(sandbox, store, "ALTER ROLE {role} LOGIN")  # given back out of band: found, and converged
    failed = failed_checks(tenantctl_cli("check", DEDICATED_SUSPENDED, "--json"))
    assert set(failed) == {("database", "role-login")}, failed
    assert tenantctl_cli("suspend", DEDICATED_SUSPENDED).returncode == 0
    assert role_row(sandbox, store)[1] is False

    resumed = tenantctl_cli("resume", DEDICATED_SUSPENDED, "--json")
    assert resumed.returncode == 0, resumed.stderr
    for each in stores:
        assert role_row(sandbox, each)[1] is True
        login(sandbox, each["secret_arn"]).close()
    assert tenantctl_cli("check", DEDICATED_SUSPENDED).returncode == 0
    admin.close()


ROTATED = "s3-rot"


def test_a_rotation_while_suspended_is_deferred_and_resume_finishes_it(sandbox, tenantctl_cli):
    """The 30-day rotation logs in as the role to set its new password, which a
    suspended tenant's NOLOGIN refuses: it used to fail with `none of the
    pending, current or previous passwords logs in`, and its pending version
    waited for the next schedule. It now says why (the password authenticates,
    the role may not log in), leaves LOGIN closed, and `resume` finishes it
    once the logins are back."""
    from tenantctl.sandbox import rotation

    assert tenantctl_cli("provision", ROTATED).returncode == 0
    ws = json.loads(tenantctl_cli("workspace", "add", ROTATED, "hr", "--json").stdout)["workspace"]
    store = json.loads(tenantctl_cli("status", ROTATED, "--json").stdout)["resources"]["store"]
    stores = (store, ws["store"])
    sm = boto3.client("secretsmanager", endpoint_url=sandbox.aws_endpoint_url, region_name=sandbox.region)

    def secret(arn: str, stage: str = "AWSCURRENT") -> dict:
        return json.loads(sm.get_secret_value(SecretId=arn, VersionStage=stage)["SecretString"])

    def stages(arn: str) -> str:
        return str(sm.describe_secret(SecretId=arn)["VersionIdsToStages"])

    old = {s["secret_arn"]: secret(s["secret_arn"]) for s in stores}
    assert tenantctl_cli("suspend", ROTATED).returncode == 0
    for each in stores:
        with pytest.raises(rotation.RotationDeferred, match="NOLOGIN.*`tenantctl resume s3-rot`"):
            rotation.rotate(sm, each["secret_arn"])
        assert role_row(sandbox, each)[1] is False  # never given back to rotate it
        assert "AWSPENDING" in stages(each["secret_arn"])
        assert secret(each["secret_arn"]) == old[each["secret_arn"]]
        with pytest.raises(psycopg.OperationalError, match="not permitted to log in"):
            login(sandbox, each["secret_arn"])  # still the old password: it authenticates, the login is refused

    resumed = tenantctl_cli("resume", ROTATED, "--json")
    assert resumed.returncode == 0, resumed.stderr
    done = json.loads(resumed.stdout)["done"]
    assert "deferred password rotation finished (tenant, workspace hr)" in done, resumed.stdout
    for each in stores:
        arn = each["secret_arn"]
        assert secret(arn)["password"] != old[arn]["password"] and "AWSPENDING" not in stages(arn)
        login(sandbox, arn).close()
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(host=old[arn]["host"], port=old[arn]["port"], dbname=old[arn]["dbname"],
                            user=old[arn]["username"], password=old[arn]["password"]).close()
    again = tenantctl_cli("resume", ROTATED, "--json")  # idempotent: nothing pending any more
    assert again.returncode == 0 and json.loads(again.stdout)["done"] == [], again.stdout
    assert tenantctl_cli("check", ROTATED).returncode == 0
