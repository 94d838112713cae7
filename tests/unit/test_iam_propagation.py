"""IAM eventual consistency in the LocalEngine's handlers: a key policy or a
trust policy naming a principal created moments before is refused as invalid
until IAM has propagated it; the handlers retry that, bounded, and nothing
else. The errors are injected into real boto3 clients with botocore's Stubber."""

from __future__ import annotations

from datetime import datetime

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from tenantctl.engines.local.handlers import base
from tenantctl.engines.local.handlers.base import Context, Desired
from tenantctl.engines.local.handlers.iam import RoleHandler
from tenantctl.engines.local.handlers.kms import KeyHandler

KMS_UNKNOWN = ("MalformedPolicyDocumentException",
               "Policy contains a statement with one or more invalid principals.")
IAM_UNKNOWN = ("MalformedPolicyDocument",
               'Invalid principal in policy: "AWS":"arn:aws:iam::123456789012:role/tenantctl-runtime"')
POLICY = '{"Version": "2012-10-17", "Statement": []}'


@pytest.fixture
def waits(monkeypatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr(base.time, "sleep", slept.append)
    return slept


def stubbed(service: str):
    client = boto3.client(service, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    return client, Stubber(client)


def context(client) -> Context:
    return Context(region="us-east-1", client=lambda _service: client, pg_connect=None,
                   pg_endpoint=("127.0.0.1", 5432, "postgres", "u", "p"), stack_outputs=lambda _name: {})


def refuse(stub: Stubber, operation: str, error: tuple[str, str], times: int) -> None:
    for _ in range(times):
        stub.add_client_error(operation, service_error_code=error[0], service_message=error[1], http_status_code=400)


KEY = Desired(urn="urn:pulumi:acme::tenantctl::aws:kms/key:Key::acme-key", type="aws:kms/key:Key", name="acme-key",
              inputs={"policy": POLICY, "tags": {"tenant": "acme"}})
ROLE = Desired(urn="urn:pulumi:acme::tenantctl::aws:iam/role:Role::acme-role", type="aws:iam/role:Role",
               name="acme-role", inputs={"name": "tenantctl-acme-app", "assumeRolePolicy": POLICY})
ROLE_CREATED = {"Role": {"Path": "/", "RoleName": "tenantctl-acme-app", "RoleId": "AROA1234567890EXAMPLE",
                         "Arn": "arn:aws:iam::123456789012:role/tenantctl-acme-app",
                         "CreateDate": datetime(2026, 1, 1)}}


def test_a_key_policy_naming_a_new_role_is_retried_until_iam_knows_it(waits):
    kms, stub = stubbed("kms")
    refuse(stub, "create_key", KMS_UNKNOWN, 2)
    stub.add_response("create_key", {"KeyMetadata": {"KeyId": "key-1",
                                                     "Arn": "arn:aws:kms:us-east-1:123456789012:key/key-1"}})
    with stub:
        assert KeyHandler().make(context(kms), KEY) == "key-1"
        stub.assert_no_pending_responses()
    assert waits == [1.0, 2.0]


def test_a_trust_policy_naming_a_new_role_is_retried_until_iam_knows_it(waits):
    iam, stub = stubbed("iam")
    refuse(stub, "create_role", IAM_UNKNOWN, 1)
    stub.add_response("create_role", ROLE_CREATED)
    with stub:
        assert RoleHandler().make(context(iam), ROLE) == "tenantctl-acme-app"
        stub.assert_no_pending_responses()
    assert waits == [1.0]


def test_the_retry_is_bounded(waits):
    kms, stub = stubbed("kms")
    refuse(stub, "create_key", KMS_UNKNOWN, len(base.PROPAGATION_WAITS) + 1)
    with stub, pytest.raises(ClientError, match="invalid principals"):
        KeyHandler().make(context(kms), KEY)
    assert waits == list(base.PROPAGATION_WAITS) and sum(waits) <= 30


def test_any_other_malformed_policy_fails_at_once(waits):
    kms, stub = stubbed("kms")
    refuse(stub, "create_key", ("MalformedPolicyDocumentException", "Policy contains an invalid action."), 1)
    with stub, pytest.raises(ClientError, match="invalid action"):
        KeyHandler().make(context(kms), KEY)
    assert waits == []
