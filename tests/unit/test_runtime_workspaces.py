"""Workspace contexts: the token's workspaces claim, the X-Workspace header, the
refusals before any AWS or store call, and the routing of a workspace context
to the workspace's own store, key, prefix, queue and role."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from runtime_fixtures import Registry, record, with_workspaces
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from tenant_runtime import TenantRuntime
from tenant_runtime.asgi import TenantMiddleware
from tenant_runtime.auth import JWTSettings
from tenant_runtime.context import from_registry, verified
from tenant_runtime.credentials import ClientFactory
from tenant_runtime.crypto import PURPOSE, Envelope
from tenant_runtime.errors import DecryptionFailed, WorkspaceForbidden
from tenant_runtime.jobs import Job, JobMessage, JobQueue

SECRET = "w" * 32


def token(tenant: str = "acme", **claims) -> str:
    return jwt.encode({"sub": "u1", "tenant_id": tenant, "exp": time.time() + 3600, **claims}, SECRET, "HS256")


class CountingSession:
    """A boto3 session whose clients record every call they are asked to make."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def client(self, service: str, **_: object) -> object:
        session = self

        class Client:
            def __getattr__(self, name: str):
                def call(*args, **kwargs):
                    session.calls.append((service, name))
                    raise AssertionError(f"{service}.{name} called")
                return call
        return Client()


@pytest.fixture
def runtime():
    session = CountingSession()
    rt = TenantRuntime(JWTSettings(key=SECRET, algorithms=("HS256",)), "registry", session=session,
                       region="us-east-1")
    rt.resolver.registry = rt.registry = Registry(with_workspaces(record("acme"), "finance", "legal"), record("beta"))
    rt.session_calls = session.calls
    yield rt
    rt.close()


def test_a_token_listing_only_finance_is_refused_on_legal_before_any_call(runtime):
    finance_only = token(workspaces=["finance"])
    with pytest.raises(WorkspaceForbidden, match="'legal'") as refused:
        runtime.resolve(finance_only, "acme", workspace="legal")
    assert refused.value.status_code == 403 and refused.value.code == "workspace_forbidden"
    # Refused on the token alone: not even the registry was read, and no client called.
    assert runtime.registry.asked == [] and runtime.session_calls == []
    for no_list in (token(), token(workspaces="legal-x"), token(workspaces={"legal": True})):
        with pytest.raises(WorkspaceForbidden):
            runtime.resolve(no_list, workspace="legal")
    # A workspace the token lists but the tenant lacks: refused from the record, still before any client call.
    with pytest.raises(WorkspaceForbidden, match="no such workspace"):
        runtime.resolve(token(workspaces=["finance", "hr"]), workspace="hr")
    with pytest.raises(WorkspaceForbidden):  # another tenant's workspace: beta has none
        runtime.resolve(token("beta", workspaces=["finance"]), workspace="finance")
    ctx = runtime.resolve(finance_only, "acme", workspace="finance")
    assert (ctx.workspace, ctx.key) == ("finance", "acme/finance")
    assert runtime.session_calls == []


def test_a_workspace_context_routes_to_the_workspaces_resources_only(runtime):
    tenant = runtime.resolve(token(workspaces=["finance"]))
    finance = runtime.resolve(token(workspaces=["finance"]), workspace="finance")
    ws = finance.record.workspaces["finance"]
    assert (tenant.workspace, tenant.key, tenant.resources) == (None, "acme", tenant.record.resources)
    res = finance.resources
    assert (res.store, res.kms_key_arn, res.prefix, res.queue_url, res.dlq_url, res.role_arn) == (
        ws.store, ws.kms_key_arn, "tenants/acme--finance/", ws.queue_url, ws.dlq_url, ws.role_arn)
    assert (res.bucket, res.region, res.workspaces) == (tenant.resources.bucket, "us-east-1", {})
    assert verified(finance) is finance and runtime.context("acme", "legal").key == "acme/legal"
    # One token, a context per addressed workspace (the resolver's cache keeps them apart).
    assert runtime.resolve(token(workspaces=["finance", "legal"]), workspace="legal").workspace == "legal"


def test_jobs_of_a_workspace_name_its_key_and_go_to_its_queue():
    sent = []

    class Sqs:
        def send_message(self, **kwargs):
            sent.append(kwargs)

    legal = from_registry(Registry(with_workspaces(record("acme"), "legal")), "acme", workspace="legal")
    JobQueue(lambda c: Sqs()).schedule(legal, Job(kind="k"))
    assert sent[0]["QueueUrl"] == "https://sqs/acme--legal"
    assert JobMessage.model_validate_json(sent[0]["MessageBody"]).tenant_id == "acme/legal"


def test_a_workspace_context_assumes_the_workspaces_role_with_its_tag():
    assumed = []

    class Sts:
        def assume_role(self, **kwargs):
            assumed.append(kwargs)
            return {"Credentials": {"AccessKeyId": "AK", "SecretAccessKey": "SK", "SessionToken": "T",
                                    "Expiration": datetime.now(UTC) + timedelta(hours=1)}}

    class Session:
        def client(self, service, **_):
            return Sts()

    registry = Registry(with_workspaces(record("acme"), "legal"))
    factory = ClientFactory("assume_role", session=Session(), region="us-east-1")
    factory.client(from_registry(registry, "acme", workspace="legal"), "s3")
    factory.client(from_registry(registry, "acme"), "s3")  # the tenant's own, cached apart
    assert [(a["RoleArn"].rsplit("/", 1)[1], a["RoleSessionName"], a["Tags"]) for a in assumed] == [
        ("tenantctl-acme--legal-app", "tenant-acme--legal", [{"Key": "tenant_id", "Value": "acme/legal"}]),
        ("tenantctl-acme-app", "tenant-acme", [{"Key": "tenant_id", "Value": "acme"}])]


async def whoami(request: Request):
    ctx = request.state.tenant
    return JSONResponse({"workspace": ctx.workspace, "prefix": ctx.resources.prefix})


def test_the_middleware_addresses_a_workspace_by_the_x_workspace_header(runtime):
    client = TestClient(TenantMiddleware(Starlette(routes=[Route("/me", whoami)]), runtime.resolver))
    auth = {"Authorization": "Bearer " + token(workspaces=["finance"])}
    assert client.get("/me", headers=auth).json() == {"workspace": None, "prefix": "tenants/acme/"}
    assert client.get("/me", headers={**auth, "X-Workspace": "finance"}).json() == {
        "workspace": "finance", "prefix": "tenants/acme--finance/"}
    refused = client.get("/me", headers={**auth, "X-Workspace": "legal"})
    assert refused.status_code == 403 and refused.json()["code"] == "workspace_forbidden"
    twice = client.get("/me", headers=[*auth.items(), ("X-Workspace", "finance"), ("X-Workspace", "legal")])
    assert twice.status_code == 400
    assert runtime.session_calls == []


def test_a_workspace_seals_under_its_key_with_the_workspace_in_the_encryption_context():
    asked = []

    class Kms:
        def describe_key(self, KeyId):
            return {"KeyMetadata": {"KeyState": "Enabled"}}

        def generate_data_key(self, **kwargs):
            asked.append((kwargs["KeyId"], kwargs["EncryptionContext"]))
            return {"Plaintext": b"k" * 32, "CiphertextBlob": b"edk"}

    registry = Registry(with_workspaces(record("acme"), "legal"))
    envelope = Envelope(lambda ctx: Kms())
    legal, tenant = from_registry(registry, "acme", workspace="legal"), from_registry(registry, "acme")
    sealed = envelope.encrypt(legal, "conv-1", b"privileged")
    envelope.encrypt(tenant, "conv-1", b"tenant's")
    assert asked == [(legal.resources.kms_key_arn, {"tenant_id": "acme/legal", "purpose": PURPOSE}),
                     (tenant.resources.kms_key_arn, {"tenant_id": "acme", "purpose": PURPOSE})]
    # This fake hands both the same data key: the AES-GCM context (`acme/legal`, not `acme`) still refuses.
    with pytest.raises(DecryptionFailed):
        envelope.decrypt(tenant, "conv-1", sealed)
    assert envelope.decrypt(legal, "conv-1", sealed) == b"privileged"
