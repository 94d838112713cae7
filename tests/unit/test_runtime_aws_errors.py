"""S3 and SQS failures reach the application as the runtime's errors (a
status to answer with), never as a raw botocore ClientError (a 500): against
moto's S3 and SQS in process, failures injected where moto cannot make them
(throttling, access denied, an unusable key)."""

from __future__ import annotations

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from moto import mock_aws
from runtime_fixtures import Registry, record

from tenant_runtime.context import from_registry
from tenant_runtime.errors import (
    AccessDenied,
    InvalidRequest,
    KeyUnusable,
    ResourceNotFound,
    ServiceUnavailable,
    TenantRuntimeError,
)
from tenant_runtime.jobs import Job, JobQueue
from tenant_runtime.objects import ObjectAccess


@pytest.fixture
def aws():
    """(s3, sqs, ctx): a context whose bucket and queues exist in moto."""
    with mock_aws():
        s3, sqs = boto3.client("s3", region_name="us-east-1"), boto3.client("sqs", region_name="us-east-1")
        s3.create_bucket(Bucket="acme-bucket")
        queue, dlq = (sqs.create_queue(QueueName=name)["QueueUrl"] for name in ("acme", "acme-dlq"))
        rec = record("acme")
        rec = rec.model_copy(update={"resources": rec.resources.model_copy(
            update={"bucket": "acme-bucket", "queue_url": queue, "dlq_url": dlq})})
        yield s3, sqs, from_registry(Registry(rec), "acme")


def answers(client, operation: str, code: str, status: int = 400) -> None:
    """Every call of ``operation`` on this client fails with ``code`` (what the
    client raises once its own retries are spent)."""
    def fail(**_):
        raise ClientError({"Error": {"Code": code, "Message": f"injected {code}"},
                           "ResponseMetadata": {"HTTPStatusCode": status}}, operation)

    client.meta.events.register(f"before-call.{client.meta.service_model.endpoint_prefix}.{operation}", fail)


def s3_calls(s3, ctx):
    """Each S3 call of the runtime, by the operation it makes."""
    objects = ObjectAccess(lambda c: s3, multipart_threshold=5 << 20, part_size=5 << 20)
    body = objects.put_body(ctx, b"x" * 10)
    upload = objects.presign_upload(ctx, "big.pdf", 6 << 20, "application/pdf")
    return {
        "PutObject": lambda: objects.put_body(ctx, b"body"),
        "GetObject": lambda: objects.read_body(ctx, body, 100),
        "DeleteObject": lambda: objects.delete_body(ctx, body),
        "CreateMultipartUpload": lambda: objects.presign_upload(ctx, "big.pdf", 6 << 20, "application/pdf"),
        "CompleteMultipartUpload": lambda: objects.complete_multipart(ctx, upload.key, upload.upload_id, ['"e"']),
    }


def sqs_calls(sqs, ctx):
    jobs = JobQueue(lambda c: sqs)
    return {
        "SendMessage": lambda: jobs.schedule(ctx, Job(kind="k")),
        "ReceiveMessage": lambda: jobs.work(ctx, lambda job, message: None),
    }


CASES = [("SlowDown", 503, ServiceUnavailable), ("InternalError", 500, ServiceUnavailable),
         ("ServiceUnavailable", 503, ServiceUnavailable), ("AccessDenied", 403, AccessDenied),
         ("KMS.DisabledException", 400, KeyUnusable), ("NoSuchBucket", 404, ResourceNotFound)]


@pytest.mark.parametrize("operation", ["PutObject", "GetObject", "DeleteObject", "CreateMultipartUpload",
                                       "CompleteMultipartUpload"])
@pytest.mark.parametrize(("code", "http", "error"), CASES)
def test_every_s3_call_maps_its_failure(aws, operation, code, http, error):
    s3, _, ctx = aws
    call = s3_calls(s3, ctx)[operation]
    answers(s3, operation, code, http)
    with pytest.raises(error, match=code) as raised:
        call()
    assert raised.value.status_code == {ServiceUnavailable: 503, AccessDenied: 403, KeyUnusable: 403,
                                        ResourceNotFound: 404}[error]
    assert "acme" in str(raised.value)


@pytest.mark.parametrize("operation", ["SendMessage", "ReceiveMessage"])
@pytest.mark.parametrize(("code", "http", "error"), [
    ("RequestThrottled", 400, ServiceUnavailable), ("ThrottlingException", 400, ServiceUnavailable),
    ("KmsThrottled", 400, ServiceUnavailable), ("InternalFailure", 500, ServiceUnavailable),
    ("AccessDenied", 403, AccessDenied), ("KmsDisabled", 400, KeyUnusable),
    ("AWS.SimpleQueueService.NonExistentQueue", 400, ResourceNotFound)])
def test_every_sqs_call_maps_its_failure(aws, operation, code, http, error):
    _, sqs, ctx = aws
    call = sqs_calls(sqs, ctx)[operation]
    answers(sqs, operation, code, http)
    with pytest.raises(error, match=code):
        call()


def test_a_worker_maps_failures_of_its_dead_letter_and_delete_calls(aws):
    _, sqs, ctx = aws
    jobs = JobQueue(lambda c: sqs)
    jobs.schedule(ctx, Job(kind="k"))
    answers(sqs, "DeleteMessage", "RequestThrottled")
    with pytest.raises(ServiceUnavailable, match="delete a job"):
        jobs.work(ctx, lambda job, message: None)
    sqs.send_message(QueueUrl=ctx.resources.queue_url, MessageBody="not a job")
    answers(sqs, "SendMessage", "AccessDenied", 403)
    with pytest.raises(AccessDenied, match="dead-letter"):
        jobs.work(ctx, lambda job, message: None, wait_seconds=0)


def test_what_is_really_missing_is_a_404(aws):
    """No injection: moto's own answers for a missing object and a missing queue."""
    s3, sqs, ctx = aws
    with pytest.raises(ResourceNotFound, match="NoSuchKey") as raised:
        ObjectAccess(lambda c: s3).read_body(ctx, "documents/gone", 100)
    assert raised.value.status_code == 404
    gone = sqs.create_queue(QueueName="gone")["QueueUrl"]
    sqs.delete_queue(QueueUrl=gone)
    moved = from_registry(Registry(record("acme").model_copy(update={"resources": ctx.resources.model_copy(
        update={"queue_url": gone})})), "acme")
    with pytest.raises(ResourceNotFound):
        JobQueue(lambda c: sqs).schedule(moved, Job(kind="k"))


def test_an_unknown_code_is_a_runtime_error_naming_it_and_a_client_mistake_stays_a_400(aws):
    s3, _, ctx = aws
    calls = s3_calls(s3, ctx)
    with pytest.raises(InvalidRequest, match="InvalidPart"):  # moto's own answer: the client's mistake
        calls["CompleteMultipartUpload"]()
    answers(s3, "PutObject", "SomethingNew")
    with pytest.raises(TenantRuntimeError, match="SomethingNew") as raised:
        calls["PutObject"]()
    assert type(raised.value) is TenantRuntimeError and raised.value.status_code == 500


def test_an_unreachable_service_is_a_503(aws):
    _, _, ctx = aws
    closed = boto3.client("sqs", region_name="us-east-1", endpoint_url="http://127.0.0.1:9",
                          config=Config(retries={"max_attempts": 1}, connect_timeout=1))
    with pytest.raises(ServiceUnavailable, match="unreachable"):
        JobQueue(lambda c: closed).schedule(ctx, Job(kind="k"))
