"""50 pooled tenants provisioned in parallel under injected throttling all
succeed, then are deprovisioned in parallel under the same throttling.

The sandbox throttles like AWS does: ``TENANTCTL_FAULT_THROTTLE``, read by the
faults launcher (tests/faults/launch.py) the CLI runs through, gives every
client the process makes a ``before-send`` hook that draws from token buckets
shared by all processes (one file under flock, like one account's quota); a
call over the rate gets AWS's own throttling response
(KMS: HTTP 400 ``ThrottlingException``), which botocore parses and retries
with exponential backoff and jitter. KMS CreateKey is held to 1 call/s (AWS
allows 5), every other KMS, IAM, S3, SQS, Secrets Manager and DynamoDB
operation to a shared per-service rate, so the registry, the handlers, the
dynamic providers, the preflight and the cell slot reservations are throttled too.

Parallelism: WORKERS `tenantctl` processes at a time (2 cores)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest
from fault_tools import (
    POOLED,
    Cli,
    alias_target,
    cell_count,
    inventory,
    live_tenant_keys,
    platform_outputs,
    registry_record,
    run_id,
    tenant_rule_ids,
)
from faults import FAULT_THROTTLE_ENV, FAULT_THROTTLE_FILE_ENV, SharedTokenBucket, arm

from tenantctl import aws

pytestmark = pytest.mark.integration

RUN = run_id()
TENANTS = 50
WORKERS = 6
# KMS CreateKey far below AWS's 5/s; the rest near what 6 parallel runs ask
# for, so the registry (DynamoDB), the lifecycle writer and preflight (S3), the
# handlers (SQS, Secrets Manager) are throttled now and then as well; STS at
# 1/s (burst 1, one call a provision) is throttled even when a loaded machine
# runs the six slowly enough to stay under the other rates (IAM slower than
# 8/s would double the test's time in backoffs).
THROTTLE = ("kms.CreateKey=1,kms.*=20,iam.*=8,s3.*=8,sqs.*=10,secretsmanager.*=8,dynamodb.*=6,"
            "sts.*=1,ec2.*=10")


@pytest.fixture(scope="module")
def cli(sandbox, workspace, tmp_path_factory) -> Cli:
    workspace.ensure_platform()
    return Cli.create(sandbox, tmp_path_factory.mktemp("throttle-cli"))


def parallel(cli: Cli, env: dict[str, str], args_for, tenants: list[str]):
    with ThreadPoolExecutor(WORKERS) as pool:
        return list(pool.map(lambda t: cli(*args_for(t), env=env, timeout=900), tenants))


def test_fifty_parallel_provisions_under_throttling_all_succeed(cli: Cli, sandbox, tmp_path, capsys):
    tenants = [f"ft-thr{RUN}-{i:02d}" for i in range(TENANTS)]
    state = tmp_path / "throttle.json"
    env = {FAULT_THROTTLE_ENV: THROTTLE, FAULT_THROTTLE_FILE_ENV: str(state)}

    # Six runs on two cores can reach CreateKey further apart than its rate: found spent
    # on arrival, the first is throttled however slow the machine.
    SharedTokenBucket(state).spend("kms.CreateKey", 2)
    placed = cell_count(sandbox)
    started = time.monotonic()
    runs = parallel(cli, env, lambda t: ("provision", t, "--json"), tenants)
    provisioned_in = time.monotonic() - started
    failed = [str(r) for r in runs if r.returncode != 0]
    assert failed == [], "\n".join(failed)

    counts = SharedTokenBucket(state).counts()
    create_key = counts["kms.CreateKey"]
    assert create_key["throttled"] > 0, counts  # the throttling did happen...
    assert create_key["allowed"] == TENANTS  # ...and no retry made a second key
    assert sum(v["throttled"] for k, v in counts.items() if k != "kms.CreateKey") > 0  # other paths too

    bucket = platform_outputs(sandbox)["bucket"]
    for tenant_id in tenants:
        record = registry_record(sandbox, tenant_id)
        assert record["status"] == "active" and record["lock"] is None
        keys = live_tenant_keys(sandbox, tenant_id)
        assert len(keys) == 1 and alias_target(sandbox, tenant_id) == keys[0] == record["resources"]["kms_key_arn"]
        assert not tenant_rule_ids(sandbox, bucket, tenant_id)  # no lifecycle rule of its own
    assert inventory(sandbox, tenants[0]) == POOLED and inventory(sandbox, tenants[-1]) == POOLED
    assert cell_count(sandbox) == placed + TENANTS  # every slot reservation counted once, none lost

    started = time.monotonic()
    gone = parallel(cli, env, lambda t: ("deprovision", t, "--yes", "--no-final-backup", "--json"), tenants)
    deprovisioned_in = time.monotonic() - started
    failed = [str(r) for r in gone if r.returncode != 0]
    assert failed == [], "\n".join(failed)
    for tenant_id in tenants:
        assert inventory(sandbox, tenant_id) == {}
        assert registry_record(sandbox, tenant_id)["status"] == "deprovisioned"
    assert cell_count(sandbox) == placed  # every slot given back
    after = SharedTokenBucket(state).counts()
    with capsys.disabled():
        print(f"\n{TENANTS} pooled tenants, {WORKERS} processes: provisioned in {provisioned_in:.0f} s, "
              f"deprovisioned in {deprovisioned_in:.0f} s; throttled calls: "
              + ", ".join(f"{k} {v['throttled']}/{v['allowed'] + v['throttled']}" for k, v in sorted(after.items())))


@pytest.mark.parametrize(("service", "operation", "code", "status"), [
    ("kms", "list_keys", "ThrottlingException", 400),           # JSON protocol
    ("dynamodb", "list_tables", "ThrottlingException", 400),
    ("sqs", "list_queues", "ThrottlingException", 400),         # JSON, query-compatible
    ("iam", "list_roles", "Throttling", 400),                   # query protocol
    ("ec2", "describe_vpcs", "RequestLimitExceeded", 503),      # EC2 protocol
    ("s3", "list_buckets", "SlowDown", 503),                    # REST-XML
])
def test_injected_throttling_is_parsed_and_retried_as_aws_throttling(sandbox, tmp_path, monkeypatch, request,
                                                                      service: str, operation: str, code: str,
                                                                      status: int):
    state = tmp_path / "throttle.json"
    disarm = arm({FAULT_THROTTLE_ENV: f"{service}.*=2", FAULT_THROTTLE_FILE_ENV: str(state)})
    request.addfinalizer(disarm)
    # An explicit session: a new client through the shared helper (its
    # default-session clients are cached, made before the throttle was armed).
    client = aws.client(service, session=boto3.Session())
    for _ in range(6):  # a burst over 2 calls/s: some are throttled, every one succeeds after backoff
        getattr(client, operation)()
    counts = SharedTokenBucket(state).counts()[f"{service}.*"]
    assert counts["allowed"] == 6 and counts["throttled"] > 0

    # With a single attempt the throttling surfaces as AWS's own error, which
    # botocore's retry handler classifies as throttling.
    from botocore.exceptions import ClientError

    monkeypatch.setenv("TENANTCTL_AWS_THROTTLE_ATTEMPTS", "1")
    once = aws.client(service, session=boto3.Session())
    with pytest.raises(ClientError) as raised:
        for _ in range(5):
            getattr(once, operation)()
    error = raised.value.response
    assert (error["Error"]["Code"], error["ResponseMetadata"]["HTTPStatusCode"]) == (code, status)
    assert error["ResponseMetadata"]["MaxAttemptsReached"] is True
