"""Time per pooled tenant of `provision` on the LocalEngine against the floor:
the bare sequence of boto3 / SQL calls that create the same resources and the
same two registry writes, measured in the same run on a fresh sandbox.

    python bench/provision.py                 # N = 1, 10, 50
    python bench/provision.py --sizes 1,5     # quick run

The floor makes no read-back, diff, state-file or Pulumi program work: it is
what a hand-written script that already knows every ARN would do. The ratio is
the engine's overhead for idempotence, dependency ordering and the state that
makes re-runs and crash recovery converge.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time


def floor_provision(tenant_id: str, platform: dict, dsn_admin: str) -> None:
    """The resources a pooled tenant stack creates, as direct calls."""
    import boto3
    import psycopg
    from psycopg import sql

    from tenantctl import naming
    from tenantctl.tenant_schema_sql import schema_script

    tags = {"tenant": tenant_id, "managed-by": "tenantctl"}
    kms, sqs, iam = boto3.client("kms"), boto3.client("sqs"), boto3.client("iam")
    sm, cw, sns, ddb = (boto3.client(s) for s in ("secretsmanager", "cloudwatch", "sns", "dynamodb"))
    table = platform["registry_table"]
    ddb.put_item(TableName=table, Item={"tenant_id": {"S": tenant_id}, "status": {"S": "provisioning"}},
                 ConditionExpression="attribute_not_exists(tenant_id)")

    key = kms.create_key(Description=f"tenant {tenant_id}",
                         Tags=[{"TagKey": k, "TagValue": v} for k, v in tags.items()])["KeyMetadata"]["Arn"]
    kms.enable_key_rotation(KeyId=key)
    kms.create_alias(AliasName=naming.kms_alias(tenant_id), TargetKeyId=key)
    secret = sm.create_secret(Name=naming.secret_name(tenant_id), KmsKeyId=key,
                              Tags=[{"Key": k, "Value": v} for k, v in tags.items()])["ARN"]
    encryption = {"KmsMasterKeyId": key, "KmsDataKeyReusePeriodSeconds": "300"}
    dlq_url = sqs.create_queue(QueueName=naming.dlq_name(tenant_id), tags=tags,
                               Attributes={**encryption, "MessageRetentionPeriod": "1209600"})["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sqs.create_queue(QueueName=naming.queue_name(tenant_id), tags=tags, Attributes={
        **encryption, "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 5})})

    # The cell slot (one conditional counter update); no lifecycle rule: the cell's bucket has them.
    ddb.update_item(TableName=table, Key={"tenant_id": {"S": "cell#floor"}}, UpdateExpression="ADD pooled :one",
                    ExpressionAttributeValues={":one": {"N": "1"}})
    prefix = naming.s3_prefix(tenant_id)

    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                     "Principal": {"AWS": platform["runtime_principal_arn"]}}]}
    iam.create_role(RoleName=naming.iam_role_name(tenant_id), AssumeRolePolicyDocument=json.dumps(trust),
                    Tags=[{"Key": k, "Value": v} for k, v in tags.items()])
    access = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"{platform['bucket_arn']}/{prefix}*"}]}
    iam.put_role_policy(RoleName=naming.iam_role_name(tenant_id), PolicyName="access",
                        PolicyDocument=json.dumps(access))
    topic = sns.create_topic(Name=f"tenantctl-{tenant_id}-alarms")["TopicArn"]
    for metric, queue in (("ApproximateNumberOfMessagesVisible", naming.dlq_name(tenant_id)),
                          ("ApproximateAgeOfOldestMessage", naming.queue_name(tenant_id))):
        cw.put_metric_alarm(AlarmName=f"tenantctl-{tenant_id}-{metric}", Namespace="AWS/SQS", MetricName=metric,
                            Dimensions=[{"Name": "QueueName", "Value": queue}], Statistic="Maximum", Period=300,
                            EvaluationPeriods=1, Threshold=0, ComparisonOperator="GreaterThanThreshold",
                            AlarmActions=[topic])

    role, schema, password = naming.db_role_name(tenant_id), naming.schema_name(tenant_id), secrets.token_urlsafe(32)
    with psycopg.connect(dsn_admin, autocommit=True) as conn:
        conn.execute(schema_script(conn, tenant_id=tenant_id, role=role, schema=schema))
        conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))
    sm.put_secret_value(SecretId=secret, SecretString=json.dumps({"username": role, "password": password}))
    ddb.put_item(TableName=table, Item={"tenant_id": {"S": tenant_id}, "status": {"S": "active"}})


def per_tenant(fn, ids: list[str]) -> float:
    start = time.perf_counter()
    for tenant_id in ids:
        fn(tenant_id)
    return (time.perf_counter() - start) / len(ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,10,50", help="comma-separated tenant counts (default 1,10,50)")
    args = parser.parse_args()
    sizes = [int(n) for n in args.sizes.split(",")]

    from common import bench_sandbox

    from tenantctl.models import TenantSpec
    from tenantctl.operations.provision import provision

    with bench_sandbox("provision") as (endpoints, ws, _):
        print("applying the platform stack ...", file=sys.stderr)
        platform = ws.ensure_platform()
        dsn_admin = endpoints.pg_dsn(platform["db_name"])
        print(f"{'N':>4}{'engine s/tenant':>17}{'floor s/tenant':>16}{'ratio':>8}")
        for n in sizes:
            engine = per_tenant(lambda tid: provision(ws, TenantSpec(id=tid)), [f"e{n}-{i}" for i in range(n)])
            floor = per_tenant(lambda tid: floor_provision(tid, platform, dsn_admin), [f"f{n}-{i}" for i in range(n)])
            print(f"{n:>4}{engine:17.3f}{floor:16.3f}{engine / floor:7.1f}x", flush=True)


if __name__ == "__main__":
    main()
