"""Fault-injection settings and the shared retry policy (issue 7). The
behaviour against a server is in tests/integration (test_faults_cli,
test_throttling); here: parsing, validation, the retry budgets."""

from __future__ import annotations

import pytest

from tenantctl import aws
from tenantctl.faults import STEPS, Faults, SharedTokenBucket, parse_throttle


def test_fault_after_takes_a_write_count_or_a_named_step():
    assert (Faults({"TENANTCTL_FAULT_AFTER": "3"}).after, Faults({"TENANTCTL_FAULT_AFTER": "3"}).step) == (3, None)
    named = Faults({"TENANTCTL_FAULT_AFTER": "provision:reserved"})
    assert (named.after, named.step) == (None, "provision:reserved")
    assert set(STEPS) == {"provision:reserved", "provision:applied", "deprovision:marked", "deprovision:destroyed"}
    with pytest.raises(ValueError, match="provision:reserved"):
        Faults({"TENANTCTL_FAULT_AFTER": "provision:typo"})
    with pytest.raises(ValueError, match="TENANTCTL_FAULT_POINT"):
        Faults({"TENANTCTL_FAULT_POINT": "sometimes"})
    unset = Faults({})
    unset.reached("provision:applied")  # no fault configured: nothing happens
    unset.applied()
    unset.recorded()


def test_throttle_rules_parse():
    assert parse_throttle("2") == {"kms.CreateKey": 2.0}
    assert parse_throttle("kms.CreateKey=0.5, dynamodb.*=40") == {"kms.CreateKey": 0.5, "dynamodb.*": 40.0}
    with pytest.raises(ValueError, match="service.Operation"):
        parse_throttle("CreateKey=1")
    with pytest.raises(ValueError, match="> 0"):
        parse_throttle("kms.CreateKey=0")


def test_shared_token_bucket_allows_the_burst_then_throttles(tmp_path):
    bucket = SharedTokenBucket(tmp_path / "t.json")
    taken = [bucket.take("kms.CreateKey", 2.0) for _ in range(5)]
    assert taken[:2] == [True, True] and not all(taken)
    counts = bucket.counts()["kms.CreateKey"]
    assert counts["allowed"] + counts["throttled"] == 5 and counts["throttled"] >= 2
    # Another "process" (a second handle on the same file) draws from the same bucket.
    assert SharedTokenBucket(tmp_path / "t.json").counts() == bucket.counts()


def test_retry_budgets_throttling_longest(monkeypatch):
    assert aws.retry_budgets() == (aws.THROTTLE_ATTEMPTS, aws.TRANSIENT_ATTEMPTS)
    assert aws.THROTTLE_ATTEMPTS > aws.TRANSIENT_ATTEMPTS >= 3
    monkeypatch.setenv(aws.THROTTLE_ATTEMPTS_ENV, "2")
    assert aws.retry_budgets() == (2, 2)  # transient never exceeds the throttling budget
    monkeypatch.setenv(aws.THROTTLE_ATTEMPTS_ENV, "0")
    with pytest.raises(ValueError, match="between 1 and 50"):
        aws.retry_budgets()


def test_every_client_gets_the_replaced_retry_handler(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    client = aws.client("kms", region="us-east-1")
    assert client.meta.config.retries == {"mode": "standard", "total_max_attempts": aws.THROTTLE_ATTEMPTS}
    # The needs-retry handler registered under botocore's unique id is ours.
    registered = client.meta.events._emitter._unique_id_handlers  # noqa: SLF001
    handler = registered["retry-config-kms"]["handler"]
    assert type(handler.__self__._retry_policy._retry_checker).__name__ == "_Conditions"  # noqa: SLF001


def test_provisioning_code_makes_clients_only_through_the_shared_helper():
    """LocalEngine handlers, registry writer, operations (deprovision purge),
    preflight and the dynamic providers: every boto3 client comes from
    tenantctl.aws.client, so every one of them has the same bounded backoff."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    paths = [*(root / "src/tenantctl/engines/local").rglob("*.py"), root / "src/tenantctl/registry.py",
             *(root / "src/tenantctl/operations").glob("*.py"), root / "src/tenantctl/preflight.py",
             *(root / "infra").rglob("*.py")]
    direct = re.compile(r"\bboto3\.(client|resource)\(|\bsession\.(client|resource)\(")
    offenders = [f"{p.relative_to(root)}:{n}" for p in paths
                 for n, line in enumerate(p.read_text().splitlines(), 1) if direct.search(line)]
    assert offenders == []
