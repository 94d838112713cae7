"""Input validation of the routed services, before any AWS or SQL call."""

from __future__ import annotations

import pytest
from runtime_fixtures import context

from tenant_runtime.context import from_registry, verified
from tenant_runtime.credentials import ClientFactory
from tenant_runtime.crypto import Envelope
from tenant_runtime.errors import InvalidRequest, TenantMismatch, UntrustedContext
from tenant_runtime.jobs import Job, JobQueue
from tenant_runtime.objects import ObjectAccess
from tenant_runtime.store import ContextStore


def unreachable(ctx):
    raise AssertionError("validation must refuse before any client is used")


objects = ObjectAccess(unreachable, max_size=1000)


@pytest.mark.parametrize("filename", ["", "../x.pdf", "a/b.pdf", ".hidden", "a..pdf", "x" * 201, "é.pdf",
                                      "a\nb.pdf", "a\\b.pdf", 7])
def test_bad_filenames(filename):
    with pytest.raises(InvalidRequest, match="filename"):
        objects.presign_upload(context("acme"), filename, 10, "application/pdf")


@pytest.mark.parametrize("size", [0, -1, 1001, 1.5, True, "10"])
def test_bad_sizes(size):
    with pytest.raises(InvalidRequest, match="size"):
        objects.presign_upload(context("acme"), "a.pdf", size, "application/pdf")


@pytest.mark.parametrize("content_type", ["text/html", "application/x-msdownload", "", "image/svg+xml"])
def test_bad_content_types(content_type):
    with pytest.raises(InvalidRequest, match="content type"):
        objects.presign_upload(context("acme"), "a.pdf", 10, content_type)


@pytest.mark.parametrize("retention", ["forever", "TMP", ""])
def test_unknown_retention_classes_are_refused(retention):
    with pytest.raises(InvalidRequest, match="retention"):
        objects.presign_upload(context("acme"), "a.pdf", 10, "application/pdf", retention=retention)


def test_a_tenant_without_retention_classes_cannot_upload_with_one():
    # Applied before retention classes: its record names none (re-applying it records them).
    with pytest.raises(InvalidRequest, match="no 'tmp' retention class"):
        objects.presign_upload(context("acme"), "a.pdf", 10, "application/pdf", retention="tmp")


def test_an_upload_with_a_retention_class_signs_its_tag_and_folder():
    import boto3
    from runtime_fixtures import Registry, record

    rec = record("acme")
    rec = rec.model_copy(update={"resources": rec.resources.model_copy(
        update={"lifecycle_classes": {"tmp": "tmp-7d", "archive": "archive-30d-365d"}})})
    s3 = boto3.client("s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    signing = ObjectAccess(lambda ctx: s3)
    for retention, folder, tag in (("tmp", "uploads/tmp/", "tmp-7d"), ("archive", "archive/", "archive-30d-365d")):
        up = signing.presign_upload(from_registry(Registry(rec), "acme"), "a.pdf", 10, "application/pdf",
                                    retention=retention)
        assert up.key.startswith(f"tenants/acme/{folder}")
        assert up.headers["x-amz-tagging"] == f"tenantctl-class={tag}"
        assert "x-amz-tagging" in up.url  # a signed header: an upload with another tag fails the signature


@pytest.mark.parametrize("key", ["tenants/beta/uploads/x/a.pdf", "tenants/acme-corp/a.pdf", "tenants/acme",
                                 "tenants/acme/../beta/a.pdf", "tenants/acme//a.pdf", "other/acme/a.pdf",
                                 "/tenants/acme/a.pdf"])
def test_downloads_outside_the_prefix_are_mismatches(key):
    with pytest.raises(TenantMismatch):
        objects.presign_download(context("acme"), key)


@pytest.mark.parametrize("workspace, key, message", [
    # The caller and the owner as the runtime scopes them (ctx.key: "<id>/<ws>"), never
    # "tenant 'acme' may not access ... of tenant 'acme'".
    (None, "tenants/beta/uploads/x/a.pdf", "tenant 'acme' may not access object '{key}' of tenant 'beta'"),
    (None, "tenants/acme--legal/a.pdf", "tenant 'acme' may not access object '{key}' of tenant 'acme/legal'"),
    ("legal", "tenants/acme/uploads/x/a.pdf", "tenant 'acme/legal' may not access object '{key}' of tenant 'acme'"),
    # Not normalised: where it leads is not said, whoever it seems to name.
    (None, "tenants/acme/../beta/a.pdf", "tenant 'acme' may not access object '{key}' of tenant 'unknown'"),
    (None, "tenants/acme//a.pdf", "tenant 'acme' may not access object '{key}' of tenant 'unknown'"),
])
def test_an_object_mismatch_names_the_caller_and_the_owner_as_contexts_key_them(workspace, key, message):
    from runtime_fixtures import Registry, record, with_workspaces

    ctx = from_registry(Registry(with_workspaces(record("acme"), "legal")), "acme", workspace=workspace)
    with pytest.raises(TenantMismatch) as err:
        objects.presign_download(ctx, key)
    assert str(err.value) == message.format(key=key)


@pytest.mark.parametrize("key", ["tenants/acme--legal/a.pdf", "tenants/acme--legal/uploads/x/a.pdf"])
def test_a_tenant_level_context_is_refused_its_workspaces_objects(key):
    # A workspace's prefix is beside its tenant's, never under it.
    with pytest.raises(TenantMismatch):
        objects.presign_download(context("acme"), key)


@pytest.mark.parametrize("delay", [-1, 1.5, 366 * 24 * 3600, "5"])
def test_bad_delays(delay):
    with pytest.raises(InvalidRequest, match="delay"):
        JobQueue(unreachable).schedule(context("acme"), Job(kind="k"), delay)


def test_native_delay_cannot_exceed_sqs_limit():
    with pytest.raises(ValueError):
        JobQueue(unreachable, max_native_delay=901)


store = ContextStore(envelope=None, secret_client_for=unreachable)  # type: ignore[arg-type]


@pytest.mark.parametrize("call, match", [
    (lambda: store.append(context("acme"), "", "user", "x"), "conversation_id"),
    (lambda: store.append(context("acme"), "c" * 201, "user", "x"), "conversation_id"),
    (lambda: store.append(context("acme"), "c1", "admin", "x"), "role"),
    (lambda: store.append(context("acme"), "c1", "user", "x" * ((1 << 20) + 1)), "content"),
    (lambda: store.append(context("acme"), "c1", "user", "x", {"k": object()}), "JSON"),
    (lambda: store.append(context("acme"), "c1", "user", "x", {"k": "v" * (64 << 10)}), "metadata"),
    # Not an object: once stored, every page of the conversation failed to load.
    (lambda: store.append(context("acme"), "c1", "user", "x", [1, 2]), "metadata must be a JSON object"),
    (lambda: store.append(context("acme"), "c1", "user", "x", "m"), "metadata must be a JSON object"),
    (lambda: store.append(context("acme"), "c1", "user", "x", 3), "metadata must be a JSON object"),
    (lambda: store.append(context("acme"), "c1", "user", "x", {1: "a"}), "metadata must be a JSON object"),
    (lambda: store.append(context("acme"), "c1", "user", 123), "content must be a string"),
    (lambda: store.append(context("acme"), "c1", ["user"], "x"), "role"),
    (lambda: store.history(context("acme"), "c1", limit=0), "limit"),
    (lambda: store.history(context("acme"), "c1", limit=501), "limit"),
    (lambda: store.delete_conversation(context("acme"), ""), "conversation_id"),
    (lambda: store.list_conversations(context("acme"), limit=0), "limit"),
    (lambda: store.list_conversations(context("acme"), cursor="!!!"), "cursor"),
])
def test_store_input_is_validated(call, match):
    with pytest.raises(InvalidRequest, match=match):
        call()


# -- only a context the resolution made is served ------------------------------------------------

def test_a_context_holding_another_tenants_record_is_never_resolved():
    from runtime_fixtures import Registry, record

    beta = record("beta")
    registry = Registry(beta)
    registry.records["acme"] = beta  # the registry answers acme's id with beta's record
    with pytest.raises(TenantMismatch, match="registry record"):
        from_registry(registry, "acme")
    registry.records["acme"] = beta.model_copy(update={"tenant_id": "acme"})  # resources still beta's
    with pytest.raises(TenantMismatch, match="registry record"):
        from_registry(registry, "acme")
    twin = record("acme")
    registry.records["acme"] = twin.model_copy(update={"resources": twin.resources.model_copy(
        update={"prefix": "tenants/acme-corp/"})})
    with pytest.raises(TenantMismatch, match="prefix"):
        from_registry(registry, "acme")


def _duck(tenant_id: str, of: str):
    """What a buggy application might pass: A's id with B's record and resources."""
    from types import SimpleNamespace

    from runtime_fixtures import record

    theirs = record(of)
    return SimpleNamespace(tenant_id=tenant_id, record=theirs, resources=theirs.resources, subject=None, claims={},
                           require=lambda *a, **k: None)


def _forgeries():
    """Objects carrying acme's id that the resolution did not issue, or altered since."""
    import copy
    import dataclasses

    from runtime_fixtures import record

    yield "duck-typed", _duck("acme", "beta")
    genuine = context("acme")
    assert copy.copy(genuine) is genuine and copy.deepcopy(genuine) is genuine
    with pytest.raises(TypeError):
        dataclasses.replace(genuine, record=record("beta"))
    with pytest.raises(AttributeError):
        genuine.record = record("beta")
    swapped = context("acme")
    object.__setattr__(swapped, "record", record("acme", key_arn="arn:aws:kms:us-east-1:123456789012:key/beta"))
    yield "record swapped", swapped
    mutated = context("acme")
    mutated.record.resources = record("acme", key_arn="arn:aws:kms:us-east-1:123456789012:key/beta").resources
    yield "resources swapped", mutated


SERVICES = {
    "store.history": lambda ctx: store.history(ctx, "c1"),
    "store.append": lambda ctx: store.append(ctx, "c", "user", "x"),
    "store.list": lambda ctx: store.list_conversations(ctx),
    "store.delete": lambda ctx: store.delete_conversation(ctx, "c"),
    "objects.presign_download": lambda ctx: objects.presign_download(ctx, "tenants/beta/a.pdf"),
    "objects.presign_upload": lambda ctx: objects.presign_upload(ctx, "a.pdf", 10, "application/pdf"),
    "objects.complete_multipart": lambda ctx: objects.complete_multipart(ctx, "tenants/beta/a.pdf", "u", ["e"]),
    "jobs.schedule": lambda ctx: JobQueue(unreachable).schedule(ctx, Job(kind="k")),
    "jobs.work": lambda ctx: JobQueue(unreachable).work(ctx, lambda job, msg: None),
    "envelope.encrypt": lambda ctx: Envelope(unreachable).encrypt(ctx, "c1", b"x"),
    "envelope.decrypt": lambda ctx: Envelope(unreachable).decrypt(ctx, "c1", b"TRE2"),
    "clients": lambda ctx: ClientFactory("ambient", session=object()).client(ctx, "s3"),
}


@pytest.mark.parametrize("service", SERVICES.values(), ids=SERVICES.keys())
def test_services_refuse_any_context_the_resolution_did_not_issue(service):
    forged = dict(_forgeries())
    for what, ctx in forged.items():
        with pytest.raises(UntrustedContext) as err:
            service(ctx)  # `unreachable` clients fail the test if anything gets that far
        assert err.value.status_code == 500, what
    service_ok = context("acme")  # the genuine article passes the check (and then fails later, elsewhere)
    with pytest.raises(Exception) as err:
        service(service_ok)
    assert not isinstance(err.value, UntrustedContext)


def test_a_context_cannot_be_constructed_or_pickled():
    import pickle

    from runtime_fixtures import record

    from tenant_runtime.context import TenantContext

    with pytest.raises(UntrustedContext, match="only by the runtime's resolution"):
        TenantContext("acme", record("acme"))
    with pytest.raises(TypeError, match="pickled"):
        pickle.dumps(context("acme"))


def test_a_context_whose_record_was_renamed_after_resolution_is_refused():
    """Its resources (frozen) passed the owner check when it was issued; the
    record's own id is checked again on every use."""
    from tenant_runtime.context import verified

    renamed = context("acme")
    renamed.record.tenant_id = "beta"
    with pytest.raises(TenantMismatch):
        verified(renamed)


def test_a_reused_context_is_checked_once_per_request_by_the_service():
    """Resolution gives a token's context back while the registry gives the same
    record, without checking it again: it is the immutable object issued, and
    what could still change, its record, is checked by the service it goes to."""
    from runtime_fixtures import Registry, record

    registry = Registry(record("acme"))
    issued = from_registry(registry, "acme")
    assert from_registry(registry, "acme", reuse=issued) is issued
    duck = _duck("acme", "beta")
    duck.record = registry.get("acme")  # matches everything compared, but not issued: a new context instead
    made = from_registry(registry, "acme", reuse=duck)
    assert made is not duck and verified(made) is made
    issued.record.resources = record("acme", key_arn="arn:aws:kms:us-east-1:123456789012:key/beta").resources
    altered = from_registry(registry, "acme", reuse=issued)
    assert altered is issued  # given back: the store call refuses it before any call
    with pytest.raises(UntrustedContext, match="altered"):
        ContextStore(Envelope(unreachable), unreachable).append(altered, "c1", "user", "x")


def test_a_failing_handler_is_logged_with_its_job_and_left_for_the_redrive(caplog):
    """``work`` counts a handler that raises as failed and leaves its message
    for SQS's redrive; the exception is logged (job, kind, tenant, traceback),
    not dropped: before, ``{"failed": 1}`` was all a developer saw."""
    import logging

    import boto3
    from moto import mock_aws
    from runtime_fixtures import Registry, record

    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        queue, dlq = (sqs.create_queue(QueueName=name)["QueueUrl"] for name in ("acme", "acme-dlq"))
        rec = record("acme")
        rec = rec.model_copy(update={"resources": rec.resources.model_copy(
            update={"queue_url": queue, "dlq_url": dlq})})
        ctx = from_registry(Registry(rec), "acme")
        jobs = JobQueue(lambda c: sqs)
        job_id = jobs.schedule(ctx, Job(kind="summarise"))

        def handler(job, message):
            raise RuntimeError("the model timed out")

        with caplog.at_level(logging.ERROR, logger="tenant_runtime.jobs"):
            assert jobs.work(ctx, handler) == {"done": 0, "deferred": 0, "dead_lettered": 0, "failed": 1}
        [logged] = caplog.records
        assert job_id in logged.getMessage() and "summarise" in logged.getMessage() and "acme" in logged.getMessage()
        assert logged.exc_info[0] is RuntimeError
        # Still on the queue (invisible until its visibility timeout ends), never deleted.
        attributes = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
        assert attributes["ApproximateNumberOfMessagesNotVisible"] == "1"


def test_any_message_the_queue_held_can_be_dead_lettered_with_its_reason():
    """SQS counts a message's attributes (name, type and value) toward its
    size limit, with the body. A foreign or malformed message goes to the DLQ
    with a ``reason`` attribute: the largest job ``schedule`` accepts leaves
    room for it, and a reason is cut to what room a message the runtime did
    not write leaves, so the DLQ never refuses a message the queue held.
    Before: a job at the limit failed to dead-letter (the worker's whole batch
    with it). moto checks the body alone: the size is counted here as SQS does."""
    import boto3
    from moto import mock_aws
    from runtime_fixtures import Registry, record

    limit = 4096

    def sqs_size(message):
        return len(message["Body"].encode()) + sum(
            len(name.encode()) + len(attr["DataType"].encode()) + len(attr["StringValue"].encode())
            for name, attr in message.get("MessageAttributes", {}).items())

    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        queue, dlq = (sqs.create_queue(QueueName=name)["QueueUrl"] for name in ("acme", "acme-dlq"))
        foreign_id = "b" * 50

        def ctx_of(tenant_id):  # both on acme's queue: the other one's jobs are foreign there
            rec = record(tenant_id)
            rec = rec.model_copy(update={"resources": rec.resources.model_copy(
                update={"queue_url": queue, "dlq_url": dlq})})
            return from_registry(Registry(rec), tenant_id)

        acme, foreign = ctx_of("acme"), ctx_of(foreign_id)
        jobs = JobQueue(lambda c: sqs, max_message_bytes=limit)
        for n in range(limit, 0, -1):  # the largest job schedule accepts
            try:
                jobs.schedule(foreign, Job(kind="k", payload={"text": "x" * n}))
                break
            except InvalidRequest:
                continue
        sqs.send_message(QueueUrl=queue, MessageBody="x" * limit)  # not a job, at the queue's limit
        assert jobs.work(acme, lambda job, message: None)["dead_lettered"] == 2
        dead = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, MessageAttributeNames=["All"])["Messages"]
        assert len(dead) == 2 and all(sqs_size(m) <= limit for m in dead), [sqs_size(m) for m in dead]
        reasons = sorted(m["MessageAttributes"]["reason"]["StringValue"] for m in dead if "MessageAttributes" in m)
        assert reasons[-1] == f"tenant {foreign_id!r} on the queue of 'acme'", reasons


def test_a_multipart_upload_that_cannot_be_completed_is_a_bad_request():
    """Parts the client did not upload (wrong ETags) or none at all: the
    client's mistake, a 400 naming S3's reason, not a raw ClientError (500)."""
    import boto3
    from moto import mock_aws
    from runtime_fixtures import Registry, record

    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        rec = record("acme")
        s3.create_bucket(Bucket=rec.resources.bucket + "-bucket")
        rec = rec.model_copy(update={"resources": rec.resources.model_copy(
            update={"bucket": rec.resources.bucket + "-bucket"})})
        ctx = from_registry(Registry(rec), "acme")
        multipart = ObjectAccess(lambda c: s3, multipart_threshold=5 << 20, part_size=5 << 20)
        up = multipart.presign_upload(ctx, "big.pdf", 6 << 20, "application/pdf")
        with pytest.raises(InvalidRequest, match="InvalidPart"):
            multipart.complete_multipart(ctx, up.key, up.upload_id, ['"not-a-part"', '"nor-this"'])
        for etags in ([], "etag", [1]):
            with pytest.raises(InvalidRequest, match="etags"):
                multipart.complete_multipart(ctx, up.key, up.upload_id, etags)


def test_a_runtime_takes_its_own_content_types_for_uploads_and_the_store_alike():
    """``TenantRuntime(content_types=...)`` (and the async runtime's same
    argument) replaces the allow-list; before, only a hand-built ObjectAccess
    could, which the runtime and its store never used."""
    import asyncio

    from tenant_runtime import AsyncTenantRuntime, JWTSettings, TenantRuntime

    allowed = frozenset({"application/zip"})
    settings = {"region": "us-east-1", "content_types": allowed}
    with TenantRuntime(JWTSettings(key="k" * 32, algorithms=("HS256",)), "registry", **settings) as runtime:
        assert runtime.objects.content_types == allowed and runtime.store.objects is runtime.objects
        runtime.objects.validate("a.zip", 10, "application/zip")
        with pytest.raises(InvalidRequest, match="content type"):
            runtime.objects.validate("a.pdf", 10, "application/pdf")

    async def through_async():
        async with AsyncTenantRuntime(JWTSettings(key="k" * 32, algorithms=("HS256",)), "registry",
                                      **settings) as aruntime:
            return aruntime.sync.objects.content_types

    assert asyncio.run(through_async()) == allowed


def test_a_job_larger_than_sqss_message_limit_is_a_bad_request_before_any_call():
    """SQS refuses a body over 1 MiB of UTF-8 with a raw ClientError (moto
    counts characters and takes this one): the runtime refuses it first,
    naming the limit, and the queue stays empty."""
    import boto3
    from moto import mock_aws
    from runtime_fixtures import Registry, record

    from tenant_runtime.jobs import DEAD_LETTER_ROOM, SQS_MAX_MESSAGE

    assert SQS_MAX_MESSAGE == 1_048_576
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        queue = sqs.create_queue(QueueName="acme")["QueueUrl"]
        rec = record("acme")
        rec = rec.model_copy(update={"resources": rec.resources.model_copy(update={"queue_url": queue})})
        ctx = from_registry(Registry(rec), "acme")
        jobs = JobQueue(lambda c: sqs)
        wide = Job(kind="k", payload={"text": "é" * 600_000})  # 600,000 characters, 1.2 MB of UTF-8
        with pytest.raises(InvalidRequest, match=f"the queue's {SQS_MAX_MESSAGE}"):
            jobs.schedule(ctx, wide)
        assert sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"][
            "ApproximateNumberOfMessages"] == "0"
        fits = Job(kind="k", payload={"text": "e" * (SQS_MAX_MESSAGE - DEAD_LETTER_ROOM - 200)})
        jobs.schedule(ctx, fits)  # a body just under the limit (less the room to dead-letter it) is sent
        small = JobQueue(lambda c: sqs, max_message_bytes=1024)  # a queue whose MaximumMessageSize is lower
        with pytest.raises(InvalidRequest, match="the queue's 1024"):
            small.schedule(ctx, Job(kind="k", payload={"text": "x" * 1024}))
        assert sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"][
            "ApproximateNumberOfMessages"] == "1"
    for outside in (1023, SQS_MAX_MESSAGE + 1):  # SQS's bounds of MaximumMessageSize
        with pytest.raises(ValueError, match="max_message_bytes"):
            JobQueue(unreachable, max_message_bytes=outside)
    from tenant_runtime import JWTSettings, TenantRuntime

    with TenantRuntime(JWTSettings(key="k" * 32, algorithms=("HS256",)), "registry", region="us-east-1",
                       job_max_bytes=4096) as runtime:
        assert runtime.jobs.max_message_bytes == 4096
