"""Time per pooled tenant of `provision` on the LocalEngine against the floor:
the bare sequence of boto3 / SQL calls that create the same resources with the
same documents and the same registry writes, measured in the same run on a
fresh sandbox.

    python bench/provision.py                              # N = 1, 10, 50; 3 rounds; 3 fresh-process rounds
    python bench/provision.py --sizes 1,5 --rounds 3       # quick run
    python bench/provision.py --sizes 1 --process-rounds 5 # mostly the fresh-process case
    python bench/provision.py --sizes 1 --process-rounds 0 --workspace-sizes 1,5  # mostly `workspace add`

The floor is what a hand-written script that already knows every name and ARN
would do: no read-back, diff, state file, Pulumi program or post-provision
check. It makes its boto3 clients once per run, as the engine does (one
session, tenantctl's retry policy, a client per service kept for the run), and
writes what the tenant stack writes: the role's trust policy, the key policy
(administrator, the tenant role, CloudWatch for the tenant's alarms), key
rotation and alias, the secret (tenant key, description, tags) and its value
and rotation schedule with the rotation function's KMS grant, both queues
with their attributes and redrive, the SNS topic under the tenant key, both
alarms as the stack declares them, the schema script (gateway grant included),
the role's full inline policy (the operator's backup Denies included) and the
two registry writes. A pooled tenant writes no lifecycle rule: its retention
classes are the cell bucket's rules, selected by object tag. After the first
round the documents of an engine tenant and a floor tenant are read back and
compared; the run stops if they differ (the floor no longer does the engine's
work).

In process: a warm-up tenant per side (the first one pays the program's
imports), then ``--rounds`` rounds of N tenants per side, engine and floor
tenants alternating one by one; per round the mean per tenant, reported as
min and median over rounds. Fresh process: `tenantctl provision ID --json` as
its own process against this script's floor for one tenant as its own process
(``--floor-tenant``), alternating, ``--process-rounds`` times. Each line also
gives the client CPU per tenant (median of the rounds): this process's, every
thread, or the child processes' for the process case; the engine's CPU above
the floor's wall says no overlap of its calls can reach that ratio.

`workspace add` (``--workspace-sizes``): per round N fresh pooled tenants per
side (the engine's provisioned, the floor's written by the floor, before the
timer), then one workspace added to each, engine and floor alternating: the
engine runs `workspace add` (stack file, lock, the tenant's whole stack
planned and applied again with the workspace's 13 resources, check, record);
the floor writes the workspace's resources and documents with the same calls
as a tenant's (``floor_owner``: its names, tags, key policy, trust on
``<id>/<ws>``, schema script keyed on it) and the lock and record writes. The
documents of the first engine and floor workspace are compared as for tenants.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OWNER = "unknown"  # TenantSpec's default owner, as the engine side provisions
FLOOR_ENV = "BENCH_PROVISION_FLOOR"  # the platform outputs and sandbox, for a --floor-tenant process


def floor_clients(endpoints: Any) -> Callable[[str], Any]:
    """Clients made once per run and kept, as the LocalEngine keeps its own."""
    import boto3

    from tenantctl import aws

    env = endpoints.aws_env()
    session = boto3.session.Session(aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                                    aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name=endpoints.region)
    made: dict[str, Any] = {}

    def client(service: str) -> Any:
        if service not in made:
            made[service] = aws.client(service, session=session, endpoint_url=endpoints.aws_endpoint_url)
        return made[service]

    return client


def statement(sid: str, principal: dict, actions: Any, **extra: Any) -> dict:
    return {"Sid": sid, "Effect": "Allow", "Principal": principal, "Action": actions, "Resource": "*", **extra}


KEY_ACTIONS = ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey", "kms:GenerateDataKeyWithoutPlaintext",
               "kms:DescribeKey"]
OBJECT_ACTIONS = ["s3:GetObject", "s3:PutObject", "s3:PutObjectTagging", "s3:DeleteObject",
                  "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"]
BACKUP_WRITE_ACTIONS = ["s3:PutObject", "s3:PutObjectTagging", "s3:DeleteObject"]  # denied: backups are the operator's
QUEUE_ACTIONS = ["sqs:SendMessage", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility",
                 "sqs:GetQueueAttributes", "sqs:GetQueueUrl"]


def floor_owner(client: Callable[[str], Any], names: Any, platform: dict, dsn_admin: str, region: str) -> dict:
    """The resources and documents of one owner (a pooled tenant, or one of its
    workspaces: ``names`` is its naming.OwnerNames), as direct calls."""
    import psycopg
    from psycopg import sql

    from tenantctl import naming
    from tenantctl.tenant_schema_sql import schema_script

    tid, ws, account = names.tenant_id, names.workspace, platform["account_id"]
    stem = tid if ws is None else naming.ws_stem(tid, ws)  # `tenantctl-<stem>-<suffix>` names, component names
    owner = f"tenant {tid}" + (f" workspace {ws}" if ws else "")
    tags = {"managed-by": "tenantctl", "owner": OWNER, "tenant": tid, "tier": "pooled",
            **({"workspace": ws} if ws else {})}
    iam_tags = [{"Key": k, "Value": v} for k, v in tags.items()]
    kms, sqs, iam, sm, cw, sns = (client(s) for s in ("kms", "sqs", "iam", "secretsmanager", "cloudwatch", "sns"))

    trust = {"Version": "2012-10-17", "Statement": [{
        "Sid": "RuntimeAssumesWithTenantTag", "Effect": "Allow",
        "Principal": {"AWS": platform["runtime_principal_arn"]},
        "Action": ["sts:AssumeRole", "sts:TagSession"],
        "Condition": {"StringEquals": {"aws:RequestTag/tenant_id": names.key},
                      "ForAllValues:StringEquals": {"aws:TagKeys": ["tenant_id"]}}}]}
    role_arn = iam.create_role(RoleName=names.iam_role, AssumeRolePolicyDocument=json.dumps(trust),
                               MaxSessionDuration=3600, Tags=iam_tags)["Role"]["Arn"]
    alarms = naming.alarm_names(stem, dedicated=False)
    key_policy = {"Version": "2012-10-17", "Statement": [
        statement("Administer", {"AWS": platform["admin_role_arn"]}, "kms:*"),
        statement("TenantUse", {"AWS": [role_arn]}, KEY_ACTIONS),
        statement("CloudWatchAlarms", {"Service": naming.service_principal("cloudwatch", region)},
                  ["kms:Decrypt", "kms:GenerateDataKey"],
                  Condition={"StringEquals": {"aws:SourceAccount": account}, "ArnLike": {"aws:SourceArn": [
                      naming.arn(region, "cloudwatch", account, f"alarm:{a}") for a in alarms]}})]}
    key = kms.create_key(Description=f"tenantctl {owner}", KeyUsage="ENCRYPT_DECRYPT",
                         Policy=json.dumps(key_policy),
                         Tags=[{"TagKey": k, "TagValue": v} for k, v in tags.items()])["KeyMetadata"]["Arn"]
    kms.enable_key_rotation(KeyId=key)
    kms.create_alias(AliasName=names.kms_alias, TargetKeyId=key)

    role, schema = names.db_role, names.schema
    secret = sm.create_secret(Name=names.secret, KmsKeyId=key, Tags=iam_tags,
                              Description=f"PostgreSQL credentials of {owner} (role {role})")["ARN"]
    encryption = {"KmsMasterKeyId": key, "KmsDataKeyReusePeriodSeconds": "300"}
    queue_arn = lambda name: naming.arn(region, "sqs", account, name)  # noqa: E731
    sqs.create_queue(QueueName=names.dlq, tags=tags, Attributes={"MessageRetentionPeriod": "1209600", **encryption})
    sqs.create_queue(QueueName=names.queue, tags=tags, Attributes={
        "DelaySeconds": "0", "MessageRetentionPeriod": "345600", **encryption,
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": queue_arn(names.dlq), "maxReceiveCount": 5})})
    topic = sns.create_topic(Name=naming.resource_name(stem, "alarms"), Attributes={"KmsMasterKeyId": key},
                             Tags=iam_tags)["TopicArn"]
    kms.create_grant(KeyId=key, GranteePrincipal=platform["rotation_role_arn"], Name=f"{stem}-rotation-grant",
                     Operations=["Decrypt", "GenerateDataKey"],
                     Constraints={"EncryptionContextSubset": {"SecretARN": secret}})

    password = secrets.token_urlsafe(32)
    with psycopg.connect(dsn_admin, autocommit=True) as conn:
        conn.execute(schema_script(conn, tenant_id=names.key, role=role, schema=schema,
                                   gateway_role=platform["gateway_role"]))
        conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))
    sm.put_secret_value(SecretId=secret, SecretString=json.dumps({
        "engine": "postgres", "username": role, "password": password, "host": platform["db_endpoint"],
        "port": int(platform["db_port"]), "dbname": platform["db_name"], "schema": schema}))
    for name, metric, queue, threshold in ((alarms[0], "ApproximateNumberOfMessagesVisible", names.dlq, 0),
                                           (alarms[1], "ApproximateAgeOfOldestMessage", names.queue, 1800)):
        cw.put_metric_alarm(AlarmName=name, Namespace="AWS/SQS", MetricName=metric, Statistic="Maximum",
                            Dimensions=[{"Name": "QueueName", "Value": queue}], Period=300, EvaluationPeriods=1,
                            Threshold=threshold, ComparisonOperator="GreaterThanThreshold",
                            TreatMissingData="notBreaching", AlarmActions=[topic], OKActions=[topic], Tags=iam_tags)
    sm.rotate_secret(SecretId=secret, RotationLambdaARN=platform["rotation_function_arn"],
                     RotationRules={"AutomaticallyAfterDays": 30}, RotateImmediately=False)

    bucket, prefix = platform["bucket_arn"], names.s3_prefix
    access = {"Version": "2012-10-17", "Statement": [
        {"Sid": "TenantObjects", "Effect": "Allow", "Action": OBJECT_ACTIONS, "Resource": f"{bucket}/{prefix}*"},
        {"Sid": "ListTenantPrefix", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": bucket,
         "Condition": {"StringLike": {"s3:prefix": [f"{prefix}*"]}}},
        {"Sid": "TenantQueues", "Effect": "Allow", "Action": QUEUE_ACTIONS,
         "Resource": [queue_arn(names.queue), queue_arn(names.dlq)]},
        {"Sid": "TenantKey", "Effect": "Allow", "Action": KEY_ACTIONS, "Resource": key},
        {"Sid": "TenantDbSecret", "Effect": "Allow", "Action": ["secretsmanager:GetSecretValue",
                                                                "secretsmanager:DescribeSecret"],
         "Resource": secret},
        {"Sid": "OperatorBackupObjects", "Effect": "Deny", "Action": BACKUP_WRITE_ACTIONS,
         "Resource": f"{bucket}/{prefix}backups/*"},
        {"Sid": "OperatorBackupKeys", "Effect": "Deny", "Action": KEY_ACTIONS[:-1], "Resource": key,
         "Condition": {"StringEquals": {"kms:EncryptionContext:purpose": "backup"}}}]}
    iam.put_role_policy(RoleName=names.iam_role, PolicyName=f"{stem}-access", PolicyDocument=json.dumps(access))
    return {"kms_key_arn": key, "role_arn": role_arn, "bucket": platform["bucket"], "prefix": prefix,
            "store": {"schema_name": schema, "role": role, "secret_arn": secret}}


def floor_provision(client: Callable[[str], Any], tenant_id: str, platform: dict, dsn_admin: str,
                    region: str) -> None:
    """What a pooled tenant's provision writes: its reservation and cell slot, its resources, its record."""
    from tenantctl.naming import OwnerNames

    tid, table, ddb = tenant_id, platform["registry_table"], client("dynamodb")
    ddb.put_item(TableName=table, Item={"tenant_id": {"S": tid}, "status": {"S": "provisioning"},
                                        "tier": {"S": "pooled"}, "cell": {"S": "default"}, "version": {"N": "1"}},
                 ConditionExpression="attribute_not_exists(tenant_id)")
    # The cell slot: one conditional counter update (a counter of the floor's own).
    ddb.update_item(TableName=table, Key={"tenant_id": {"S": "cell#floor"}}, UpdateExpression="ADD pooled :one",
                    ConditionExpression="attribute_not_exists(pooled) OR pooled < :cap",
                    ExpressionAttributeValues={":one": {"N": "1"}, ":cap": {"N": "100000"}})
    resources = floor_owner(client, OwnerNames(tid), platform, dsn_admin, region)
    record = {"tenant_id": tid, "tier": "pooled", "status": "active", "region": region, "cell": "default",
              "resources": resources}
    ddb.put_item(TableName=table, Item={"tenant_id": {"S": tid}, "status": {"S": "active"}, "tier": {"S": "pooled"},
                                        "cell": {"S": "default"}, "version": {"N": "2"},
                                        "record": {"S": json.dumps(record)}})


def floor_workspace_add(client: Callable[[str], Any], tenant_id: str, workspace: str, platform: dict,
                        dsn_admin: str, region: str) -> None:
    """What `workspace add` writes on an active pooled tenant: the tenant's lock
    (a conditional write), the workspace's resources, the record with them."""
    from tenantctl.naming import OwnerNames

    table, ddb, key = platform["registry_table"], client("dynamodb"), {"tenant_id": {"S": tenant_id}}
    ddb.update_item(TableName=table, Key=key, UpdateExpression="SET #v = :next, locked = :me",
                    ConditionExpression="#v = :at", ExpressionAttributeNames={"#v": "version"},
                    ExpressionAttributeValues={":at": {"N": "2"}, ":next": {"N": "3"}, ":me": {"S": "floor"}})
    made = floor_owner(client, OwnerNames(tenant_id, workspace), platform, dsn_admin, region)
    ddb.update_item(TableName=table, Key=key, UpdateExpression="SET #v = :next, #w = :ws REMOVE locked",
                    ConditionExpression="#v = :at", ExpressionAttributeNames={"#v": "version", "#w": "workspaces"},
                    ExpressionAttributeValues={":at": {"N": "3"}, ":next": {"N": "4"},
                                               ":ws": {"S": json.dumps({workspace: made})}})


def documents(client: Callable[[str], Any], names: Any) -> dict[str, Any]:
    """What both sides wrote for one owner (``names``: a tenant's or a
    workspace's naming.OwnerNames), read back, with the tenant's id, key and
    secret suffix replaced so an engine owner and a floor owner compare equal."""
    from tenantctl import naming

    tid = names.tenant_id
    stem = tid if names.workspace is None else naming.ws_stem(tid, names.workspace)
    kms, iam, sqs, sm, cw = (client(s) for s in ("kms", "iam", "sqs", "secretsmanager", "cloudwatch"))
    key = kms.describe_key(KeyId=names.kms_alias)["KeyMetadata"]
    role = names.iam_role
    secret = sm.describe_secret(SecretId=names.secret)
    queues = {name: sqs.get_queue_attributes(QueueUrl=sqs.get_queue_url(QueueName=name)["QueueUrl"],
                                             AttributeNames=["All"])["Attributes"]
              for name in (names.queue, names.dlq)}
    volatile = ("CreatedTimestamp", "LastModifiedTimestamp", "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed")
    alarms = cw.describe_alarms(AlarmNames=naming.alarm_names(stem, dedicated=False))["MetricAlarms"]
    found = {
        "key policy": json.loads(kms.get_key_policy(KeyId=key["KeyId"], PolicyName="default")["Policy"]),
        "key rotation": kms.get_key_rotation_status(KeyId=key["KeyId"])["KeyRotationEnabled"],
        "trust policy": iam.get_role(RoleName=role)["Role"]["AssumeRolePolicyDocument"],
        "role policy": [iam.get_role_policy(RoleName=role, PolicyName=p)["PolicyDocument"]
                        for p in iam.list_role_policies(RoleName=role)["PolicyNames"]],
        "queues": {n: {k: v for k, v in a.items() if k not in volatile} for n, a in queues.items()},
        "secret": {k: secret.get(k) for k in ("Description", "KmsKeyId", "RotationLambdaARN", "RotationRules")},
        "secret value": sorted(json.loads(sm.get_secret_value(SecretId=secret["ARN"])["SecretString"])),
        "alarms": [{k: a.get(k) for k in ("AlarmName", "Namespace", "MetricName", "Dimensions", "Statistic",
                                          "Period", "EvaluationPeriods", "Threshold", "ComparisonOperator",
                                          "TreatMissingData")} | {"actions": len(a["AlarmActions"] + a["OKActions"])}
                   for a in sorted(alarms, key=lambda a: a["AlarmName"])],
    }
    text = json.dumps(found, sort_keys=True, default=str)
    for value, placeholder in ((key["Arn"], "<key-arn>"), (key["KeyId"], "<key-id>"), (secret["ARN"], "<secret>"),
                               (tid, "<tenant>")):
        text = text.replace(value, placeholder)
    return json.loads(text)


def same_documents(client: Callable[[str], Any], engine_tid: str, floor_tid: str, workspace: str | None = None) -> None:
    from tenantctl.naming import OwnerNames

    engine = documents(client, OwnerNames(engine_tid, workspace))
    floor = documents(client, OwnerNames(floor_tid, workspace))
    differ = [k for k in engine if engine[k] != floor[k]]
    if differ:
        for k in differ:
            print(f"{k}:\n  engine {engine[k]}\n  floor  {floor[k]}", file=sys.stderr)
        sys.exit(f"the floor no longer writes what the engine writes ({', '.join(differ)}): fix floor_provision")
    print(f"documents of {engine_tid} (engine) and {floor_tid} (floor) compared equal: {', '.join(engine)}",
          file=sys.stderr)


@dataclass
class Rounds:
    """Per side, each round's mean seconds per tenant: wall and client CPU (the
    benchmark process's, every thread; or its child processes' for the process case)."""
    wall: dict[str, list[float]]
    cpu: dict[str, list[float]]


def own_cpu() -> float:
    return time.process_time()


def children_cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def interleaved(sides: dict[str, Callable[[str], None]], n: int, rounds: int, tag: str,
                prepare: dict[str, Callable[[str], None]] | None = None,
                cpu_clock: Callable[[], float] = own_cpu) -> Rounds:
    """The sides alternate tenant by tenant. ``prepare``: per side, run on the
    tenant id before the timer starts."""
    from common import in_turn

    out = Rounds({side: [] for side in sides}, {side: [] for side in sides})
    names = list(sides)
    for r in range(rounds):
        wall, cpu = dict.fromkeys(names, 0.0), dict.fromkeys(names, 0.0)
        for i in range(n):
            for side in in_turn(names, r + i):
                tid = f"{side[0]}{tag}-{r}-{i}"
                if prepare is not None:
                    prepare[side](tid)
                start, used = time.perf_counter(), cpu_clock()
                sides[side](tid)
                wall[side] += time.perf_counter() - start
                cpu[side] += cpu_clock() - used
        for side in names:
            out.wall[side].append(wall[side] / n)
            out.cpu[side].append(cpu[side] / n)
    return out


def summary(label: str, rounds: Rounds) -> str:
    e, f = rounds.wall["engine"], rounds.wall["floor"]
    ce, cf = (statistics.median(rounds.cpu[side]) * 1000 for side in ("engine", "floor"))
    return (f"{label:>12}{min(e):9.3f}{statistics.median(e):9.3f}{min(f):9.3f}{statistics.median(f):9.3f}"
            f"{min(e) / min(f):9.2f}x{statistics.median(e) / statistics.median(f):8.2f}x{ce:10.0f}{cf:7.0f}")


def process_case(endpoints: Any, project: Path, platform: dict, dsn_admin: str, rounds: int) -> Rounds:
    """`tenantctl provision` as its own process against the floor as its own process."""
    from common import compile_sources

    print(compile_sources(), file=sys.stderr)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    floor_env = {**env, FLOOR_ENV: json.dumps({"platform": platform, "dsn": dsn_admin, "region": endpoints.region})}

    def run(cmd: list[str], run_env: dict[str, str]) -> None:
        done = subprocess.run(cmd, cwd=project, env=run_env, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"{' '.join(cmd)} exited {done.returncode}: {done.stderr[-2000:]}")

    sides = {"engine": lambda tid: run([sys.executable, "-m", "tenantctl", "provision", tid, "--json"], env),
             "floor": lambda tid: run([sys.executable, __file__, "--floor-tenant", tid], floor_env)}
    return interleaved(sides, 1, rounds, "proc", cpu_clock=children_cpu)


def floor_process(tenant_id: str) -> None:
    """One floor tenant in this process: what the fresh-process case times."""
    from types import SimpleNamespace

    given = json.loads(os.environ[FLOOR_ENV])
    endpoints = SimpleNamespace(region=given["region"], aws_endpoint_url=os.environ["AWS_ENDPOINT_URL"],
                                aws_env=lambda: os.environ)
    floor_provision(floor_clients(endpoints), tenant_id, given["platform"], given["dsn"], given["region"])


def workspace_case(ws: Any, client: Callable[[str], Any], tenants: dict[str, Callable[[str], None]], platform: dict,
                   dsn_admin: str, region: str, sizes: list[int], rounds: int) -> None:
    """`workspace add` on a fresh active pooled tenant against the floor's, the
    tenants provisioned (each side its own way) before the timer starts."""
    from common import timed

    from tenantctl.operations.workspaces import add

    sides = {"engine": lambda tid: add(ws, tid, "legal"),
             "floor": lambda tid: floor_workspace_add(client, tid, "legal", platform, dsn_admin, region)}
    first = {}
    for side, fn in sides.items():
        tenants[side](f"{side[0]}wswarm")
        first[side] = timed(lambda fn=fn, side=side: fn(f"{side[0]}wswarm"))[1]
    same_documents(client, "ewswarm", "fwswarm", "legal")
    print(f"{'workspace add':>12}{'engine s/ws':>18}{'floor s/ws':>18}{'ratio':>18}{'CPU ms/ws':>17}")
    print(f"{'ws first':>12}{first['engine']:9.3f}{'':9}{first['floor']:9.3f}{'':9}"
          f"{first['engine'] / first['floor']:9.2f}x   (the first workspace add in this process)")
    for n in sizes:
        print(summary(f"ws {n}", interleaved(sides, n, rounds, f"w{n}", prepare=tenants)), flush=True)


def counts(parser: argparse.ArgumentParser, option: str, text: str) -> list[int]:
    """Comma-separated counts, each at least 1 (a round of 0 has no time per tenant); '' is none."""
    try:
        found = [int(n) for n in text.split(",") if n.strip()]
    except ValueError:
        parser.error(f"{option}: comma-separated whole numbers, got {text!r}")
    if any(n < 1 for n in found):
        parser.error(f"{option}: every count must be at least 1, got {text!r}")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,10,50", help="comma-separated tenant counts per round (default 1,10,50)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per size (default 3)")
    parser.add_argument("--process-rounds", type=int, default=3,
                        help="fresh-process rounds: one tenant per side each (default 3; 0: skip)")
    parser.add_argument("--workspace-sizes", default="1,10",
                        help="comma-separated workspace adds per round, one per fresh tenant (default 1,10; '' skips)")
    parser.add_argument("--floor-tenant", help=argparse.SUPPRESS)  # the fresh-process floor's child
    args = parser.parse_args()
    if args.floor_tenant:
        floor_process(args.floor_tenant)
        return
    sizes, workspace_sizes = counts(parser, "--sizes", args.sizes), counts(parser, "--workspace-sizes",
                                                                         args.workspace_sizes)

    from common import bench_sandbox, timed

    from tenantctl.models import TenantSpec
    from tenantctl.operations.provision import provision

    with bench_sandbox("provision") as (endpoints, ws, project):
        print("applying the platform stack ...", file=sys.stderr)
        platform = ws.ensure_platform()
        dsn_admin = endpoints.pg_dsn(platform["db_name"])
        client = floor_clients(endpoints)
        sides = {"engine": lambda tid: provision(ws, TenantSpec(id=tid)),
                 "floor": lambda tid: floor_provision(client, tid, platform, dsn_admin, endpoints.region)}
        first = {side: timed(lambda fn=fn, side=side: fn(f"{side[0]}warm"))[1] for side, fn in sides.items()}
        same_documents(client, "ewarm", "fwarm")

        print(f"{'':>12}{'engine s/tenant':>18}{'floor s/tenant':>18}{'ratio':>18}{'CPU ms/tenant':>17}")
        print(f"{'N':>12}{'min':>9}{'median':>9}{'min':>9}{'median':>9}{'min':>10}{'median':>9}"
              f"{'engine':>10}{'floor':>7}")
        print(f"{'first':>12}{first['engine']:9.3f}{'':9}{first['floor']:9.3f}{'':9}"
              f"{first['engine'] / first['floor']:9.2f}x   (the first tenant in this process: imports, clients)")
        for n in sizes:
            print(summary(str(n), interleaved(sides, n, args.rounds, f"n{n}")), flush=True)
        if args.process_rounds:
            print(summary("process", process_case(endpoints, project, platform, dsn_admin, args.process_rounds)))
        if workspace_sizes:
            workspace_case(ws, client, sides, platform, dsn_admin, endpoints.region, workspace_sizes, args.rounds)
        print(f"({args.rounds} rounds per size, engine and floor tenants alternating; 'process': "
              f"`tenantctl provision ID --json` vs the floor as its own process, {args.process_rounds} rounds, "
              f"each importing compiled modules; "
              f"CPU: median of the rounds, this process's (every thread) or the child processes'; "
              f"load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
