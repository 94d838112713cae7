"""A's token against B's everything, and the S3 / SQS services, on the sandbox."""

from __future__ import annotations

import json

import httpx
import pytest
from psycopg import sql

from tenant_runtime import DecryptionFailed, TenantMismatch, TenantRuntime
from tenant_runtime.jobs import Job, JobMessage, JobQueue
from tenant_runtime.objects import MIN_PART, ObjectAccess

from runtime_tenants import runtime, runtime_env  # noqa: F401  (fixtures)


@pytest.fixture(scope="module")
def ab(runtime, runtime_env):
    a, b = runtime_env.ids["a"], runtime_env.ids["b"]
    return a, b, runtime.resolve(runtime_env.token(a), a), runtime.resolve(runtime_env.token(b), b)


@pytest.mark.parametrize("operation", [
    lambda rt, ctx: rt.store.history(ctx, "c1"),
    lambda rt, ctx: rt.store.append(ctx, "c1", "user", "intrusion"),
    lambda rt, ctx: rt.store.delete_conversation(ctx, "c1"),
    lambda rt, ctx: rt.objects.presign_upload(ctx, "a.pdf", 10, "application/pdf"),
    lambda rt, ctx: rt.jobs.schedule(ctx, Job(kind="k"), 0),
], ids=["read", "append", "delete", "presign", "enqueue"])
def test_a_token_addressing_b_is_refused_before_any_operation(runtime, runtime_env, ab, operation):
    a, b, _, _ = ab
    with pytest.raises(TenantMismatch) as err:
        operation(runtime, runtime.resolve(runtime_env.token(a), b))
    assert err.value.status_code == 403


def test_b_resources_in_a_context_are_refused(runtime, runtime_env, ab):
    a, b, ctx_a, ctx_b = ab
    runtime.store.append(ctx_b, "conv-b", "user", "b only")
    for _ in range(3):
        runtime.store.append(ctx_b, "conv-b", "user", "b more")
    b_cursor = runtime.store.history(ctx_b, "conv-b", limit=1).next_cursor
    with pytest.raises(TenantMismatch):  # B's cursor
        runtime.store.history(ctx_a, "conv-b", cursor=b_cursor)
    store = ctx_b.resources.store
    with runtime_env.admin(store.database) as conn:
        (blob,) = conn.execute(sql.SQL("SELECT content FROM {} WHERE conversation_id = 'conv-b' LIMIT 1").format(
            sql.Identifier(store.schema_name, "messages"))).fetchone()
    fresh = TenantRuntime(runtime.resolver.settings, runtime_env.registry_table,
                          endpoint_url=runtime_env.sandbox.aws_endpoint_url, region=runtime_env.sandbox.region)
    with pytest.raises(DecryptionFailed):  # B's ciphertext under A's key and context
        fresh.envelope.decrypt(ctx_a, "conv-b", bytes(blob))
    assert fresh.envelope.decrypt(ctx_b, "conv-b", bytes(blob)) in (b"b only", b"b more")
    with pytest.raises(TenantMismatch):  # B's objects, and a prefix twin of A
        runtime.objects.presign_download(ctx_a, f"tenants/{b}/uploads/x/a.pdf")
    with pytest.raises(TenantMismatch):
        runtime.objects.presign_download(ctx_a, f"tenants/{a}-corp/a.pdf")
    # A's conversations namespace is A's own: B's conversation is simply not there.
    assert runtime.store.history(ctx_a, "conv-b").messages == []


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


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def drain(queue: JobQueue, ctx, handler):
    totals = {"done": 0, "deferred": 0, "dead_lettered": 0, "failed": 0}
    while True:
        counts = queue.work(ctx, handler)
        for k, v in counts.items():
            totals[k] += v
        if not any(counts.values()):
            return totals


def test_jobs_run_when_due_and_long_delays_are_re_enqueued(runtime, ab):
    _, _, ctx_a, _ = ab
    # max_native_delay=0 makes every re-enqueue visible at once, so the test moves a clock instead of waiting.
    clock = Clock(1_000_000.0)
    queue = JobQueue(lambda ctx: runtime.clients.client(ctx, "sqs"), clock=clock, max_native_delay=0)
    ran: list[str] = []
    queue.schedule(ctx_a, Job(kind="now", payload={"n": 1}), 0)
    queue.schedule(ctx_a, Job(kind="later"), 5000)
    assert drain(queue, ctx_a, lambda job, msg: ran.append(job.kind)) == {
        "done": 1, "deferred": 1, "dead_lettered": 0, "failed": 0}
    clock.now += 2000  # not yet due: re-enqueued again
    assert drain(queue, ctx_a, lambda job, msg: ran.append(job.kind))["deferred"] == 1
    clock.now += 3000
    assert drain(queue, ctx_a, lambda job, msg: ran.append(job.kind))["done"] == 1
    assert ran == ["now", "later"]


def test_native_delay_is_capped_at_900_seconds(runtime, runtime_env, ab):
    _, _, _, ctx_b = ab
    runtime.jobs.schedule(ctx_b, Job(kind="far"), 3600)
    attrs = runtime_env.client("sqs").get_queue_attributes(
        QueueUrl=ctx_b.resources.queue_url, AttributeNames=["ApproximateNumberOfMessagesDelayed"])["Attributes"]
    assert attrs["ApproximateNumberOfMessagesDelayed"] == "1"  # accepted by SQS (DelaySeconds <= 900), hidden


def test_worker_dead_letters_messages_of_another_tenant(runtime, runtime_env, ab):
    a, b, ctx_a, _ = ab
    sqs = runtime_env.client("sqs")
    # A bug (or an attacker) puts a job claiming tenant B on A's queue.
    forged = JobMessage(tenant_id=b, job_id="x", due_at=0, job=Job(kind="steal"))
    sqs.send_message(QueueUrl=ctx_a.resources.queue_url, MessageBody=forged.model_dump_json())
    sqs.send_message(QueueUrl=ctx_a.resources.queue_url, MessageBody="not json")
    ran: list[str] = []
    counts = drain(runtime.jobs, ctx_a, lambda job, msg: ran.append(job.kind))
    assert ran == [] and counts["dead_lettered"] == 2
    dead = sqs.receive_message(QueueUrl=ctx_a.resources.dlq_url, MaxNumberOfMessages=10,
                               MessageAttributeNames=["All"])["Messages"]
    reasons = sorted(m["MessageAttributes"]["reason"]["StringValue"] for m in dead)
    assert reasons == ["malformed job message", f"tenant {b!r} on the queue of {a!r}"]
    assert json.loads(next(m["Body"] for m in dead if m["Body"] != "not json"))["job"]["kind"] == "steal"


def test_scoped_credentials_are_per_tenant_and_cached(runtime_env, ab):
    """Issue 7 item 1, as far as moto goes: AssumeRole per tenant with a session
    tag, cached; moto does not enforce the role's policy (see docs/runtime.md)."""
    from tenant_runtime.credentials import ClientFactory

    _, _, ctx_a, ctx_b = ab
    factory = ClientFactory("assume_role", region=runtime_env.sandbox.region,
                            endpoint_url=runtime_env.sandbox.aws_endpoint_url)
    kms_a, sqs_a, kms_b = factory.client(ctx_a, "kms"), factory.client(ctx_a, "sqs"), factory.client(ctx_b, "kms")
    assert factory.client(ctx_a, "kms") is kms_a and factory.assume_role_calls == 2
    key_a, key_b = (c._request_signer._credentials.access_key for c in (kms_a, kms_b))
    assert key_a != key_b and sqs_a._request_signer._credentials.access_key == key_a
    assert kms_a.describe_key(KeyId=ctx_a.resources.kms_key_arn)["KeyMetadata"]["Arn"] == ctx_a.resources.kms_key_arn
