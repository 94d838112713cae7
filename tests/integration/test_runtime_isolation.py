"""A's token against B's everything, and the S3 / SQS services, on the sandbox,
with tenants provisioned by the real operation (see runtime_tenants.py)."""

from __future__ import annotations

import json

import httpx
import psycopg
import pytest
from psycopg import sql
from runtime_tenants import WS_TENANT, jwt_settings, runtime, runtime_env, ws_tenant  # noqa: F401  (fixtures)

from tenant_runtime import (
    DecryptionFailed,
    TenantContext,
    TenantMismatch,
    TenantRuntime,
    UntrustedContext,
    WorkspaceForbidden,
)
from tenant_runtime.jobs import Job, JobMessage, JobQueue
from tenant_runtime.objects import MIN_PART, ObjectAccess


@pytest.fixture(scope="module")
def ab(runtime, runtime_env):
    a, b = runtime_env.ids["a"], runtime_env.ids["b"]
    return a, b, runtime.resolve(runtime_env.token(a), a), runtime.resolve(runtime_env.token(b), b)


def queue_depth(env, url: str) -> tuple[int, int]:
    attrs = env.client("sqs").get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesDelayed"])
    found = attrs["Attributes"]
    return int(found["ApproximateNumberOfMessages"]), int(found["ApproximateNumberOfMessagesDelayed"])


# -- the runtime check: A's token addressing B -------------------------------------

OPERATIONS = {
    "read": lambda rt, ctx: rt.store.history(ctx, "conv-b"),
    "append": lambda rt, ctx: rt.store.append(ctx, "conv-b", "user", "intrusion"),
    "list": lambda rt, ctx: rt.store.list_conversations(ctx),
    "delete": lambda rt, ctx: rt.store.delete_conversation(ctx, "conv-b"),
    "decrypt": lambda rt, ctx: rt.envelope.decrypt(ctx, "conv-b", b"TRE1\x00\x00" + bytes(28)),
    "presign-upload": lambda rt, ctx: rt.objects.presign_upload(ctx, "a.pdf", 10, "application/pdf"),
    "presign-download": lambda rt, ctx: rt.objects.presign_download(ctx, f"{ctx.resources.prefix}x.pdf"),
    "enqueue": lambda rt, ctx: rt.jobs.schedule(ctx, Job(kind="k"), 0),
}


@pytest.mark.parametrize("operation", OPERATIONS.values(), ids=OPERATIONS.keys())
def test_a_token_addressing_b_is_refused_before_any_operation(runtime, runtime_env, ab, operation):
    a, b, _, ctx_b = ab
    runtime.store.append(ctx_b, "conv-b", "user", "b's own")
    before = runtime.store.history(ctx_b, "conv-b", limit=500).messages
    depth = queue_depth(runtime_env, ctx_b.resources.queue_url)
    with pytest.raises(TenantMismatch) as err:
        operation(runtime, runtime.resolve(runtime_env.token(a), b))
    assert err.value.status_code == 403 and (err.value.caller, err.value.addressed) == (a, b)
    # Nothing of B's changed.
    assert runtime.store.history(ctx_b, "conv-b", limit=500).messages == before
    assert queue_depth(runtime_env, ctx_b.resources.queue_url) == depth


def test_a_context_can_never_hold_b_record(runtime, ab):
    a, _, _, ctx_b = ab
    with pytest.raises(UntrustedContext):
        TenantContext(tenant_id=a, record=ctx_b.record)


def test_only_a_resolved_context_reaches_b(runtime, runtime_env, ab):
    """A duck-typed object with A's id and B's record, or A's real context with
    B's record slipped in, is refused by every service before any call: no URL
    for B's object, nothing on B's queue, none of B's history."""
    from types import SimpleNamespace

    a, b, ctx_a, ctx_b = ab
    runtime.store.append(ctx_b, "conv-b-duck", "user", "b's own")
    key = f"{ctx_b.resources.prefix}uploads/secret.pdf"
    runtime_env.client("s3").put_object(Bucket=ctx_b.resources.bucket, Key=key, Body=b"b's document")
    depth = queue_depth(runtime_env, ctx_b.resources.queue_url)
    duck = SimpleNamespace(tenant_id=a, record=ctx_b.record, resources=ctx_b.resources, subject="x", claims={})
    slipped = runtime.resolve(runtime_env.token(a), a)
    object.__setattr__(slipped, "record", ctx_b.record.model_copy(update={"tenant_id": a}))
    for forged in (duck, slipped):
        with pytest.raises(UntrustedContext):
            runtime.objects.presign_download(forged, key)
        with pytest.raises(UntrustedContext):
            runtime.jobs.schedule(forged, Job(kind="steal"), 0)
        with pytest.raises(UntrustedContext):
            runtime.store.history(forged, "conv-b-duck")
    assert queue_depth(runtime_env, ctx_b.resources.queue_url) == depth
    # A job worker gets its context from the registry too, without a token.
    worker = runtime.context(a)
    assert worker.tenant_id == a and worker.resources == ctx_a.resources and worker.subject == "service"


def test_http_requests_map_to_statuses(runtime, runtime_env, ab):
    """The ASGI middleware over the real runtime: 200 for A's own, 403 for B's,
    and errors raised inside the app (B's cursor) answered with their status."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from tenant_runtime import TenantRuntimeError
    from tenant_runtime.asgi import TenantMiddleware, error_handler

    a, b, ctx_a, ctx_b = ab
    runtime.store.append(ctx_a, "conv-http", "user", "a via http")
    for i in range(3):
        runtime.store.append(ctx_b, "conv-http", "user", f"b via http {i}")

    async def history(request: Request):
        ctx = request.state.tenant
        page = runtime.store.history(ctx, request.path_params["conv"], limit=2,
                                     cursor=request.query_params.get("cursor"))
        return JSONResponse({"messages": [m.content for m in page.messages], "next": page.next_cursor})

    app = Starlette(routes=[Route("/tenants/{tenant_id}/conversations/{conv}", history)])
    app.add_exception_handler(TenantRuntimeError, error_handler)
    client = TestClient(TenantMiddleware(app, runtime.resolver))
    auth = {"Authorization": f"Bearer {runtime_env.token(a)}"}
    own = client.get(f"/tenants/{a}/conversations/conv-http", headers=auth)
    assert own.status_code == 200 and own.json()["messages"] == ["a via http"]
    foreign = client.get(f"/tenants/{b}/conversations/conv-http", headers=auth)
    assert foreign.status_code == 403 and foreign.json()["code"] == "tenant_mismatch"
    b_cursor = runtime.store.history(ctx_b, "conv-http", limit=1).next_cursor
    smuggled = client.get(f"/tenants/{a}/conversations/conv-http", params={"cursor": b_cursor}, headers=auth)
    assert smuggled.status_code == 403 and smuggled.json()["code"] == "tenant_mismatch"
    assert client.get(f"/tenants/{a}/conversations/conv-http").status_code == 401


# -- B's things handed to A's context ------------------------------------------------

def test_b_cursors_ciphertexts_and_objects_in_a_context_are_refused(runtime, runtime_env, ab):
    a, b, ctx_a, ctx_b = ab
    for i in range(4):
        runtime.store.append(ctx_b, "conv-secret", "user", f"b secret {i}")
    b_cursor = runtime.store.history(ctx_b, "conv-secret", limit=1).next_cursor
    with pytest.raises(TenantMismatch):  # B's history cursor
        runtime.store.history(ctx_a, "conv-secret", cursor=b_cursor)
    runtime.store.append(ctx_b, "conv-secret-2", "user", "another")
    b_list_cursor = runtime.store.list_conversations(ctx_b, limit=1).next_cursor
    with pytest.raises(TenantMismatch):  # B's list cursor
        runtime.store.list_conversations(ctx_a, cursor=b_list_cursor)
    # A's namespace is A's own: B's conversations are not there (not filtered: absent).
    assert runtime.store.history(ctx_a, "conv-secret").messages == []
    assert not {"conv-secret", "conv-secret-2"} & {
        c.conversation_id for c in runtime.store.list_conversations(ctx_a, limit=500).conversations}

    # B's ciphertext (read as the admin) decrypts for B only.
    store = ctx_b.resources.store
    with runtime_env.admin(store.database) as conn:
        (blob,) = conn.execute(sql.SQL("SELECT content FROM {} WHERE conversation_id = 'conv-secret' "
                                       "ORDER BY seq DESC LIMIT 1")
                               .format(sql.Identifier(store.schema_name, "messages"))).fetchone()
    fresh = TenantRuntime(jwt_settings(), runtime_env.registry_table, endpoint_url=runtime_env.sandbox.aws_endpoint_url,
                          region=runtime_env.sandbox.region)  # empty key cache: KMS itself must refuse
    with pytest.raises(DecryptionFailed, match="KMS refused"):  # A's key and context: KMS itself refuses
        fresh.envelope.decrypt(ctx_a, "conv-secret", bytes(blob))
    with pytest.raises(DecryptionFailed, match="authentication"):  # B's, but another conversation: AES-GCM refuses
        fresh.envelope.decrypt(ctx_b, "conv-secret-2", bytes(blob))
    assert fresh.envelope.decrypt(ctx_b, "conv-secret", bytes(blob)).startswith(b"b secret ")

    with pytest.raises(TenantMismatch):  # B's objects
        runtime.objects.presign_download(ctx_a, f"{ctx_b.resources.prefix}uploads/x/a.pdf")
    with pytest.raises(TenantMismatch):
        runtime.objects.complete_multipart(ctx_a, f"{ctx_b.resources.prefix}uploads/x/a.pdf", "upload-id", ["etag"])
    for sneaky in (f"{ctx_a.resources.prefix}../{b}/a.pdf", f"{ctx_a.resources.prefix}/../{b}/a.pdf"):
        with pytest.raises(TenantMismatch):
            runtime.objects.presign_download(ctx_a, sneaky)


def test_prefix_twins_cannot_reach_each_other(runtime, runtime_env, ab):
    """rt-a and rt-a-corp: `tenants/rt-a` is a string prefix of `tenants/rt-a-corp/`."""
    a, _, ctx_a, _ = ab
    twin = runtime_env.ids["twin"]
    ctx_twin = runtime.resolve(runtime_env.token(twin), twin)
    assert ctx_twin.resources.prefix.startswith(ctx_a.resources.prefix.rstrip("/"))
    up = runtime.objects.presign_upload(ctx_twin, "twin.txt", 4, "text/plain")
    assert httpx.put(up.url, content=b"twin", headers=up.headers).status_code == 200
    with pytest.raises(TenantMismatch):
        runtime.objects.presign_download(ctx_a, up.key)
    mine = runtime.objects.presign_upload(ctx_a, "mine.txt", 4, "text/plain")
    with pytest.raises(TenantMismatch):
        runtime.objects.presign_download(ctx_twin, mine.key)
    assert httpx.get(runtime.objects.presign_download(ctx_twin, up.key)).content == b"twin"


# -- S3 ------------------------------------------------------------------------------

def test_presigned_put_lands_under_the_prefix_with_the_tenant_key(runtime, runtime_env, ab):
    _, _, ctx_a, _ = ab
    s3 = runtime_env.client("s3")
    body = b"%PDF-1.4 test document"
    up = runtime.objects.presign_upload(ctx_a, "report.pdf", len(body), "application/pdf")
    assert up.key.startswith(ctx_a.resources.prefix) and up.url and up.upload_id is None
    assert httpx.put(up.url, content=body, headers=up.headers).status_code == 200
    head = s3.head_object(Bucket=ctx_a.resources.bucket, Key=up.key)
    assert head["ServerSideEncryption"] == "aws:kms" and head["SSEKMSKeyId"].endswith(
        ctx_a.resources.kms_key_arn.rsplit("/", 1)[-1])
    assert httpx.get(runtime.objects.presign_download(ctx_a, up.key)).content == body


def test_multipart_upload_for_large_files(runtime, runtime_env, ab):
    _, _, ctx_a, _ = ab
    objects = ObjectAccess(lambda ctx: runtime.clients.client(ctx, "s3"), multipart_threshold=MIN_PART,
                           part_size=MIN_PART)
    body = bytes(range(256)) * (MIN_PART // 256) + b"tail"
    up = objects.presign_upload(ctx_a, "big.pdf", len(body), "application/pdf")
    assert up.upload_id and len(up.part_urls) == 2 and up.part_size == MIN_PART
    etags = [httpx.put(url, content=body[i * MIN_PART:(i + 1) * MIN_PART]).headers["ETag"]
             for i, url in enumerate(up.part_urls)]
    objects.complete_multipart(ctx_a, up.key, up.upload_id, etags)
    head = runtime_env.client("s3").head_object(Bucket=ctx_a.resources.bucket, Key=up.key)
    assert head["ContentLength"] == len(body) and head["ServerSideEncryption"] == "aws:kms"
    assert httpx.get(objects.presign_download(ctx_a, up.key)).content == body


# -- SQS -------------------------------------------------------------------------------

class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def drain(queue: JobQueue, ctx, handler) -> dict[str, int]:
    """Work the queue until a batch runs nothing (what is left is not due)."""
    totals = {"done": 0, "deferred": 0, "dead_lettered": 0, "failed": 0}
    while True:
        counts = queue.work(ctx, handler)
        for k, v in counts.items():
            totals[k] += v
        if not (counts["done"] or counts["dead_lettered"] or counts["failed"]):
            return totals


def test_delays_up_to_900_seconds_are_native(runtime, runtime_env, ab):
    _, _, ctx_a, _ = ab
    before = queue_depth(runtime_env, ctx_a.resources.queue_url)
    job_id = runtime.jobs.schedule(ctx_a, Job(kind="soon", payload={"n": 1}), 900)
    assert queue_depth(runtime_env, ctx_a.resources.queue_url) == (before[0], before[1] + 1)  # held by SQS
    ran: list[str] = []
    runtime.jobs.work(ctx_a, lambda job, msg: ran.append(job.kind))
    assert "soon" not in ran and job_id


def test_longer_delays_are_re_enqueued_until_due(runtime, runtime_env, ab):
    _, b, _, ctx_b = ab
    # DelaySeconds is capped at 900: SQS accepts the message and hides it.
    before = queue_depth(runtime_env, ctx_b.resources.queue_url)
    runtime.jobs.schedule(ctx_b, Job(kind="far"), 3600)
    assert queue_depth(runtime_env, ctx_b.resources.queue_url) == (before[0], before[1] + 1)
    # The re-enqueue loop, with max_native_delay=0 so every re-enqueue is visible
    # at once: the test moves a clock instead of waiting.
    twin = runtime_env.ids["twin"]
    ctx = runtime.resolve(runtime_env.token(twin), twin)
    clock = Clock(1_000_000.0)
    queue = JobQueue(lambda c: runtime.clients.client(c, "sqs"), clock=clock, max_native_delay=0)
    ran: list[str] = []
    queue.schedule(ctx, Job(kind="now", payload={"n": 1}), 0)
    queue.schedule(ctx, Job(kind="later"), 5000)
    first = drain(queue, ctx, lambda job, msg: ran.append(job.kind))
    assert ran == ["now"] and first["done"] == 1 and first["deferred"] >= 1
    assert queue_depth(runtime_env, ctx.resources.queue_url)[0] == 1  # `later`, back on the queue
    clock.now += 2000  # still not due: re-enqueued again
    assert drain(queue, ctx, lambda job, msg: ran.append(job.kind))["done"] == 0 and ran == ["now"]
    clock.now += 3000
    assert drain(queue, ctx, lambda job, msg: ran.append(job.kind))["done"] == 1
    assert ran == ["now", "later"] and queue_depth(runtime_env, ctx.resources.queue_url)[0] == 0


def test_a_context_enqueues_only_on_a_queue(runtime, runtime_env, ab):
    a, b, ctx_a, ctx_b = ab
    depth_b = queue_depth(runtime_env, ctx_b.resources.queue_url)
    sqs = runtime_env.client("sqs")
    runtime.jobs.schedule(ctx_a, Job(kind="mine", payload={"marker": "enqueue-check"}), 0)
    assert queue_depth(runtime_env, ctx_b.resources.queue_url) == depth_b
    got = sqs.receive_message(QueueUrl=ctx_a.resources.queue_url, MaxNumberOfMessages=10)["Messages"]
    mine = [m for m in got if json.loads(m["Body"])["job"]["payload"].get("marker") == "enqueue-check"]
    assert len(mine) == 1 and json.loads(mine[0]["Body"])["tenant_id"] == a
    for m in got:
        sqs.delete_message(QueueUrl=ctx_a.resources.queue_url, ReceiptHandle=m["ReceiptHandle"])


def test_worker_dead_letters_messages_of_another_tenant(runtime, runtime_env, ab):
    a, b, ctx_a, _ = ab
    sqs = runtime_env.client("sqs")
    # A bug (or an attacker) puts a job claiming tenant B on A's queue.
    forged = JobMessage(tenant_id=b, job_id="x", due_at=0, job=Job(kind="steal"))
    sqs.send_message(QueueUrl=ctx_a.resources.queue_url, MessageBody=forged.model_dump_json())
    sqs.send_message(QueueUrl=ctx_a.resources.queue_url, MessageBody="not json")
    ran: list[str] = []
    counts = drain(runtime.jobs, ctx_a, lambda job, msg: ran.append(job.kind))
    assert "steal" not in ran and counts["dead_lettered"] == 2
    dead = sqs.receive_message(QueueUrl=ctx_a.resources.dlq_url, MaxNumberOfMessages=10,
                               MessageAttributeNames=["All"])["Messages"]
    reasons = sorted(m["MessageAttributes"]["reason"]["StringValue"] for m in dead)
    assert reasons == ["malformed job message", f"tenant {b!r} on the queue of {a!r}"]
    assert json.loads(next(m["Body"] for m in dead if m["Body"] != "not json"))["job"]["kind"] == "steal"


def test_scoped_credentials_are_per_tenant_and_cached(runtime_env, ab):
    """AssumeRole of each tenant's provisioned role with a session tag, cached;
    moto does not enforce the role's policy (see docs/runtime.md)."""
    from tenant_runtime.credentials import ClientFactory

    _, _, ctx_a, ctx_b = ab
    factory = ClientFactory("assume_role", region=runtime_env.sandbox.region,
                            endpoint_url=runtime_env.sandbox.aws_endpoint_url)
    kms_a, sqs_a, kms_b = factory.client(ctx_a, "kms"), factory.client(ctx_a, "sqs"), factory.client(ctx_b, "kms")
    assert factory.client(ctx_a, "kms") is kms_a and factory.assume_role_calls == 2
    key_a, key_b = (c._request_signer._credentials.access_key for c in (kms_a, kms_b))
    assert key_a != key_b and sqs_a._request_signer._credentials.access_key == key_a
    assert kms_a.describe_key(KeyId=ctx_a.resources.kms_key_arn)["KeyMetadata"]["Arn"] == ctx_a.resources.kms_key_arn


# -- two workspaces of one tenant: the same ids and words, nothing crosses ----------------

@pytest.fixture(scope="module")
def workspaces(runtime, runtime_env, ws_tenant):
    """The tenant-level context and one per workspace, each from a token listing only its own."""
    contexts = {ws: runtime.resolve(runtime_env.token(WS_TENANT, workspaces=[ws]), WS_TENANT, workspace=ws)
                for ws in ("finance", "legal")}
    return runtime.resolve(runtime_env.token(WS_TENANT), WS_TENANT), contexts["finance"], contexts["legal"]


def test_workspaces_of_one_tenant_share_no_history_search_object_or_job(runtime, runtime_env, workspaces):
    tenant, finance, legal = workspaces
    everyone = {"tenant": tenant, "finance": finance, "legal": legal}
    for name, ctx in everyone.items():  # the same conversation and document ids, the same words
        runtime.store.append(ctx, "conv-1", "user", f"quarterly budget of {name}")
        runtime.store.put_document(ctx, "doc-1", f"{name} memo", f"quarterly budget memo kept by {name}")
    for name, ctx in everyone.items():
        assert [m.content for m in runtime.store.history(ctx, "conv-1").messages] == [f"quarterly budget of {name}"]
        hits = runtime.store.search(ctx, "quarterly budget").hits
        assert [(h.doc_id, h.title) for h in hits] == [("doc-1", f"{name} memo")]
    # Cursors carry the workspace key: finance's are refused in legal's context.
    runtime.store.append(finance, "conv-1", "assistant", "second")
    cursor = runtime.store.history(finance, "conv-1", limit=1).next_cursor
    with pytest.raises(TenantMismatch):
        runtime.store.history(legal, "conv-1", cursor=cursor)

    # Objects: each under its own prefix; another workspace's key (or the tenant's) is refused.
    upload = runtime.objects.presign_upload(finance, "a.pdf", 10, "application/pdf")
    assert upload.key.startswith(f"tenants/{WS_TENANT}--finance/uploads/")
    assert upload.headers["x-amz-server-side-encryption-aws-kms-key-id"] == finance.resources.kms_key_arn
    for other in (legal, tenant):
        with pytest.raises(TenantMismatch):
            runtime.objects.presign_download(other, upload.key)
    with pytest.raises(TenantMismatch):  # legal's prefix is not under finance's, nor the tenant's under either
        runtime.objects.presign_download(finance, f"{tenant.resources.prefix}uploads/x/a.pdf")

    # Jobs: each workspace its own queue; a finance job put on legal's queue is dead-lettered there.
    runtime.jobs.schedule(finance, Job(kind="finance-job"), 0)
    ran: list[str] = []
    assert drain(runtime.jobs, legal, lambda job, msg: ran.append(job.kind))["done"] == 0
    assert drain(runtime.jobs, tenant, lambda job, msg: ran.append(job.kind))["done"] == 0
    assert drain(runtime.jobs, finance, lambda job, msg: ran.append(job.kind))["done"] == 1 and ran == ["finance-job"]
    forged = JobMessage(tenant_id=finance.key, job_id="x", due_at=0, job=Job(kind="steal"))
    runtime_env.client("sqs").send_message(QueueUrl=legal.resources.queue_url, MessageBody=forged.model_dump_json())
    assert drain(runtime.jobs, legal, lambda job, msg: ran.append(job.kind))["dead_lettered"] == 1
    assert "steal" not in ran


def test_a_workspace_role_sees_nothing_of_its_sibling_and_its_key_opens_none_of_its_ciphertexts(
        runtime, runtime_env, workspaces):
    tenant, finance, legal = workspaces
    runtime.store.append(finance, "conv-sql", "user", "finance only")
    runtime.store.append(legal, "conv-sql", "user", "legal only")
    fin, leg = finance.resources.store, legal.resources.store
    assert len({fin.schema_name, leg.schema_name, tenant.resources.store.schema_name}) == 3
    with runtime_env.connect_as(WS_TENANT, workspace="legal", autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(fin.schema_name, "messages")))
        own = sql.SQL("SELECT count(*) FROM {} WHERE conversation_id = 'conv-sql'").format(
            sql.Identifier(leg.schema_name, "messages"))
        for key, seen in ((finance.key, 0), (WS_TENANT, 0), (legal.key, 1)):  # FORCE RLS on `<id>/<ws>`
            with conn.transaction():
                conn.execute("SELECT set_config('app.tenant_id', %s, true)", (key,))
                assert conn.execute(own).fetchone() == (seen,)

    with runtime_env.admin(fin.database) as conn:
        (blob,) = conn.execute(sql.SQL("SELECT content FROM {} WHERE conversation_id = 'conv-sql'")
                               .format(sql.Identifier(fin.schema_name, "messages"))).fetchone()
    fresh = TenantRuntime(jwt_settings(), runtime_env.registry_table, endpoint_url=runtime_env.sandbox.aws_endpoint_url,
                          region=runtime_env.sandbox.region)  # empty key cache: KMS itself must refuse
    try:
        for other in (fresh.context(WS_TENANT, "legal"), fresh.context(WS_TENANT)):
            with pytest.raises(DecryptionFailed, match="KMS refused"):
                fresh.envelope.decrypt(other, "conv-sql", bytes(blob))
        assert fresh.envelope.decrypt(fresh.context(WS_TENANT, "finance"), "conv-sql", bytes(blob)) == b"finance only"
    finally:
        fresh.close()


def test_a_token_listing_only_finance_is_refused_on_legal(runtime, runtime_env, workspaces):
    with pytest.raises(WorkspaceForbidden):
        runtime.resolve(runtime_env.token(WS_TENANT, workspaces=["finance"]), WS_TENANT, workspace="legal")
    with pytest.raises(WorkspaceForbidden):  # another tenant's token naming this tenant's workspace
        runtime.resolve(runtime_env.token(runtime_env.ids["a"], workspaces=["legal"]), workspace="legal")
