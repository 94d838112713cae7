"""RDS: subnet groups, parameter groups, and PostgreSQL instances stood in for
by the sandbox.

The instance record is created in moto's RDS (so describe/ARNs/alarms behave)
while the database itself is a database of the sandbox PostgreSQL: the
instance's ``dbName`` is created there (the sandbox's main database is used as
is), its address/port are the sandbox's, and a managed master password
becomes a Secrets Manager secret holding the sandbox superuser's credentials,
with RDS's 7-day rotation schedule recorded on it (the sandbox never rotates
its superuser). Deleting the instance drops that database and its secret.

Settings the sandbox PostgreSQL cannot take from moto are recorded, not
applied: the parameter group (``rds.force_ssl``: sandbox connections stay
plain TCP on the loopback), IAM database authentication, log exports and
enhanced monitoring. The checks read them from moto as they would from RDS.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from tenantctl.engines.local.handlers.base import (
    Context,
    Desired,
    Handler,
    as_int,
    exists,
    ignore_missing,
    read_or_none,
)
from tenantctl.engines.local.handlers.secretsmanager import delete_secret, find_secret


class SubnetGroupHandler(Handler):
    type = "aws:rds/subnetGroup:SubnetGroup"
    replace_on = ("name", "namePrefix")

    def find(self, ctx: Context, d: Desired) -> str | None:
        name = d.physical_name()
        return name if exists(lambda: ctx.client("rds").describe_db_subnet_groups(DBSubnetGroupName=name)) else None

    def make(self, ctx: Context, d: Desired) -> str:
        ctx.client("rds").create_db_subnet_group(
            DBSubnetGroupName=d.physical_name(), DBSubnetGroupDescription=d.get("description", "Managed by Pulumi"),
            SubnetIds=list(d.get("subnetIds", [])), Tags=d.tag_list())
        return d.physical_name()

    def read(self, ctx: Context, rid: str | None, d: Desired) -> dict[str, Any] | None:
        got = read_or_none(lambda: ctx.client("rds").describe_db_subnet_groups(
            DBSubnetGroupName=rid or d.physical_name()))
        if got is None:
            return None
        live = [s["SubnetIdentifier"] for s in got["DBSubnetGroups"][0]["Subnets"]]
        wanted = list(d.get("subnetIds", []))
        return {"subnetIds": wanted if set(live) == set(wanted) else live}  # order is not drift

    def configure(self, ctx: Context, rid: str, d: Desired, olds: dict[str, Any] | None) -> dict[str, Any]:
        rds = ctx.client("rds")
        group = rds.describe_db_subnet_groups(DBSubnetGroupName=rid)["DBSubnetGroups"][0]
        if olds is not None and {s["SubnetIdentifier"] for s in group["Subnets"]} != set(d.get("subnetIds", [])):
            # moto 5.2's ModifyDBSubnetGroup drops the group from its store
            # (pops it without putting it back): recreate it instead.
            rds.delete_db_subnet_group(DBSubnetGroupName=rid)
            self.make(ctx, d)
            group = rds.describe_db_subnet_groups(DBSubnetGroupName=rid)["DBSubnetGroups"][0]
        return {"arn": group["DBSubnetGroupArn"], "name": rid, "tagsAll": d.tags()}

    def remove(self, ctx: Context, rid: str, d: Desired) -> None:
        ignore_missing(lambda: ctx.client("rds").delete_db_subnet_group(DBSubnetGroupName=rid))


class ParameterGroupHandler(Handler):
    type = "aws:rds/parameterGroup:ParameterGroup"
    replace_on = ("name", "namePrefix", "family", "description")

    def find(self, ctx: Context, d: Desired) -> str | None:
        name = d.physical_name()
        got = read_or_none(lambda: ctx.client("rds").describe_db_parameter_groups(DBParameterGroupName=name))
        return name if got and got["DBParameterGroups"] else None  # moto answers an unknown name with none

    def read(self, ctx: Context, rid: str | None, d: Desired) -> dict[str, Any] | None:
        """The declared parameters' live values (``rds.force_ssl`` turned off is drift), in their declared order."""
        name = rid or d.physical_name()
        if self.find(ctx, d) is None:
            return None
        pages = ctx.client("rds").get_paginator("describe_db_parameters").paginate(DBParameterGroupName=name)
        live = {p["ParameterName"]: p.get("ParameterValue") for page in pages for p in page["Parameters"]}
        return {"parameters": [{**p, "value": live.get(p["name"])} for p in d.get("parameters", [])]}

    def make(self, ctx: Context, d: Desired) -> str:
        ctx.client("rds").create_db_parameter_group(
            DBParameterGroupName=d.physical_name(), DBParameterGroupFamily=d.get("family"),
            Description=d.get("description", "Managed by Pulumi"), Tags=d.tag_list())
        return d.physical_name()

    def configure(self, ctx: Context, rid: str, d: Desired, olds: dict[str, Any] | None) -> dict[str, Any]:
        rds = ctx.client("rds")
        params = [{"ParameterName": p["name"], "ParameterValue": str(p["value"]),
                   "ApplyMethod": p.get("applyMethod", "immediate")} for p in d.get("parameters", [])]
        if params:
            rds.modify_db_parameter_group(DBParameterGroupName=rid, Parameters=params)
        dropped = {p["name"] for p in (olds or {}).get("parameters", [])} - {p["ParameterName"] for p in params}
        if dropped:
            rds.reset_db_parameter_group(DBParameterGroupName=rid, Parameters=[
                {"ParameterName": n, "ApplyMethod": "pending-reboot"} for n in sorted(dropped)])
        group = rds.describe_db_parameter_groups(DBParameterGroupName=rid)["DBParameterGroups"][0]
        return {"arn": group.get("DBParameterGroupArn", ""), "name": rid, "tagsAll": d.tags()}

    def remove(self, ctx: Context, rid: str, d: Desired) -> None:
        ignore_missing(lambda: ctx.client("rds").delete_db_parameter_group(DBParameterGroupName=rid))


MASTER_ROTATION_DAYS = 7


def master_secret_name(identifier: str) -> str:
    return f"rds!db-{identifier}"


# input -> DescribeDBInstances field: what configure modifies, so what a refresh reads back.
INSTANCE_FIELDS = {"instanceClass": "DBInstanceClass", "allocatedStorage": "AllocatedStorage",
                   "deletionProtection": "DeletionProtection", "backupRetentionPeriod": "BackupRetentionPeriod",
                   "multiAz": "MultiAZ"}


class InstanceHandler(Handler):
    type = "aws:rds/instance:Instance"
    replace_on = ("identifier", "engine", "dbName", "username", "storageEncrypted", "kmsKeyId")
    read_defaults = {"allocatedStorage": 20, "deletionProtection": False, "backupRetentionPeriod": 0,
                     "multiAz": False}

    def read(self, ctx: Context, rid: str | None, d: Desired) -> dict[str, Any] | None:
        got = read_or_none(lambda: ctx.client("rds").describe_db_instances(DBInstanceIdentifier=rid or self._ident(d)))
        if got is None:
            return None
        instance = got["DBInstances"][0]
        return {key: instance.get(field) for key, field in INSTANCE_FIELDS.items()}

    def _ident(self, d: Desired) -> str:
        return d.physical_name("identifier")

    def find(self, ctx: Context, d: Desired) -> str | None:
        ident = self._ident(d)
        return ident if exists(lambda: ctx.client("rds").describe_db_instances(DBInstanceIdentifier=ident)) else None

    def make(self, ctx: Context, d: Desired) -> str:
        args: dict[str, Any] = {
            "DBInstanceIdentifier": self._ident(d), "Engine": d.get("engine", "postgres"),
            "DBInstanceClass": d.get("instanceClass"), "AllocatedStorage": as_int(d.get("allocatedStorage", 20)),
            "MasterUsername": d.get("username", "postgres"),
            # moto needs a password; the real credentials are the sandbox's (see master secret).
            "MasterUserPassword": d.get("password") or secrets.token_urlsafe(16),
            "StorageEncrypted": bool(d.get("storageEncrypted", False)),
            "PubliclyAccessible": bool(d.get("publiclyAccessible", False)),
            "DeletionProtection": bool(d.get("deletionProtection", False)),
            "BackupRetentionPeriod": as_int(d.get("backupRetentionPeriod", 0)),
            "CopyTagsToSnapshot": bool(d.get("copyTagsToSnapshot", False)),
            "MultiAZ": bool(d.get("multiAz", False)), "Tags": d.tag_list(), **self._hardening(d),
        }
        if d.get("enabledCloudwatchLogsExports"):
            args["EnableCloudwatchLogsExports"] = list(d.get("enabledCloudwatchLogsExports"))
        for key, arg in (("engineVersion", "EngineVersion"), ("storageType", "StorageType"), ("dbName", "DBName"),
                         ("kmsKeyId", "KmsKeyId"), ("dbSubnetGroupName", "DBSubnetGroupName")):
            if d.get(key):
                args[arg] = d.get(key)
        if d.get("vpcSecurityGroupIds"):
            args["VpcSecurityGroupIds"] = list(d.get("vpcSecurityGroupIds"))
        ctx.client("rds").create_db_instance(**args)
        return self._ident(d)

    @staticmethod
    def _hardening(d: Desired) -> dict[str, Any]:
        """Settings CreateDBInstance and ModifyDBInstance take alike."""
        args: dict[str, Any] = {
            "EnableIAMDatabaseAuthentication": bool(d.get("iamDatabaseAuthenticationEnabled", False)),
            "MonitoringInterval": as_int(d.get("monitoringInterval", 0)),
            "AutoMinorVersionUpgrade": bool(d.get("autoMinorVersionUpgrade", True)),
        }
        if d.get("monitoringRoleArn"):
            args["MonitoringRoleArn"] = d.get("monitoringRoleArn")
        if d.get("parameterGroupName"):
            args["DBParameterGroupName"] = d.get("parameterGroupName")
        return args

    def configure(self, ctx: Context, rid: str, d: Desired, olds: dict[str, Any] | None) -> dict[str, Any]:
        rds = ctx.client("rds")
        if olds is not None:
            current = rds.describe_db_instances(DBInstanceIdentifier=rid)["DBInstances"][0]
            exports = set(current.get("EnabledCloudwatchLogsExports") or [])
            wanted = set(d.get("enabledCloudwatchLogsExports") or [])
            rds.modify_db_instance(
                DBInstanceIdentifier=rid, ApplyImmediately=True, DBInstanceClass=d.get("instanceClass"),
                AllocatedStorage=as_int(d.get("allocatedStorage", 20)),
                DeletionProtection=bool(d.get("deletionProtection", False)),
                BackupRetentionPeriod=as_int(d.get("backupRetentionPeriod", 0)),
                MultiAZ=bool(d.get("multiAz", False)), **self._hardening(d),
                CloudwatchLogsExportConfiguration={"EnableLogTypes": sorted(wanted - exports),
                                                   "DisableLogTypes": sorted(exports - wanted)})
        instance = rds.describe_db_instances(DBInstanceIdentifier=rid)["DBInstances"][0]
        host, port, main_db, user, password = ctx.pg_endpoint
        db_name = d.get("dbName") or main_db
        self._ensure_database(ctx, db_name, main_db)
        outputs: dict[str, Any] = {"arn": instance["DBInstanceArn"], "address": host, "port": port,
                                   "endpoint": f"{host}:{port}", "dbName": db_name, "resourceId":
                                   instance.get("DbiResourceId", rid), "tagsAll": d.tags()}
        if d.get("manageMasterUserPassword"):
            arn = self._ensure_master_secret(ctx, rid, d, user, password)
            outputs["masterUserSecrets"] = [{"secretArn": arn, "kmsKeyId": d.get("masterUserSecretKmsKeyId", ""),
                                             "secretStatus": "active"}]
        return outputs

    @staticmethod
    def _ensure_database(ctx: Context, db_name: str, main_db: str) -> None:
        """The instance's database (PUBLIC's CONNECT and TEMPORARY on it are
        revoked by the program's DatabaseAcl, as on RDS)."""
        if db_name == main_db:
            return
        from psycopg import sql

        with ctx.pg_connect() as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db_name,)).fetchone() is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db_name)))

    @staticmethod
    def _ensure_master_secret(ctx: Context, rid: str, d: Desired, user: str, password: str) -> str:
        sm = ctx.client("secretsmanager")
        value = json.dumps({"username": user, "password": password})
        arn = find_secret(ctx, master_secret_name(rid))
        if arn is None:
            args: dict[str, Any] = {"Name": master_secret_name(rid), "SecretString": value,
                                    "Description": f"master credentials of {rid} (sandbox PostgreSQL)"}
            if d.get("masterUserSecretKmsKeyId"):
                args["KmsKeyId"] = d.get("masterUserSecretKmsKeyId")
            arn = sm.create_secret(**args)["ARN"]
            # RDS rotates the secrets it manages every 7 days; the schedule is
            # recorded (moto's RotateSecret without a function keeps the value).
            sm.rotate_secret(SecretId=arn, RotationRules={"AutomaticallyAfterDays": MASTER_ROTATION_DAYS},
                             RotateImmediately=False)
            return arn
        sm.put_secret_value(SecretId=arn, SecretString=value)
        return arn

    def remove(self, ctx: Context, rid: str, d: Desired) -> None:
        args: dict[str, Any] = {"DBInstanceIdentifier": rid, "SkipFinalSnapshot": bool(d.get("skipFinalSnapshot"))}
        if not args["SkipFinalSnapshot"]:
            args["FinalDBSnapshotIdentifier"] = d.get("finalSnapshotIdentifier") or f"{rid}-final"
        # RDS refuses while deletion protection is on: the error is the caller's to see.
        ignore_missing(lambda: ctx.client("rds").delete_db_instance(**args), "DBInstanceNotFound")
        host, port, main_db, _, _ = ctx.pg_endpoint
        db_name = d.get("dbName") or main_db
        if db_name != main_db:
            from psycopg import sql

            with ctx.pg_connect() as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db_name)))
        if d.get("manageMasterUserPassword"):
            delete_secret(ctx, master_secret_name(rid), 0)


HANDLERS = (SubnetGroupHandler(), ParameterGroupHandler(), InstanceHandler())
