"""S3 and SQS failures as runtime errors, in one place for every service that
calls them (``objects``, ``jobs``, the documents' S3 bodies through
``objects``): the application sees a status to answer with, never a raw
botocore ``ClientError`` (a 500).

- throttled (past the client's own retries), failing or unreachable ->
  ``ServiceUnavailable`` (503, retry);
- the tenant's role refused -> ``AccessDenied`` (403);
- the bucket, object, upload or queue missing -> ``ResourceNotFound`` (404);
- the tenant's KMS key unusable for the SSE-KMS object or the encrypted queue
  -> ``KeyUnusable`` (403), as KMS's own answer is (``tenant_runtime.crypto``);
- anything else -> ``TenantRuntimeError`` (500) naming the service's code.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from tenant_runtime.context import TenantContext
from tenant_runtime.errors import (
    AccessDenied,
    KeyUnusable,
    ResourceNotFound,
    ServiceUnavailable,
    TenantRuntimeError,
)

RETRYABLE = frozenset({"SlowDown", "ServiceUnavailable", "InternalError", "InternalFailure", "RequestTimeout",
                       "Throttling", "ThrottlingException", "RequestThrottled", "RequestLimitExceeded",
                       "TooManyRequestsException", "KmsThrottled", "503", "500"})
DENIED = frozenset({"AccessDenied", "AccessDeniedException", "AllAccessDisabled", "InvalidAccessKeyId",
                    "InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredToken", "KmsAccessDenied", "403"})
NOT_FOUND = frozenset({"NoSuchKey", "NoSuchBucket", "NoSuchUpload", "NotFound", "404", "QueueDoesNotExist",
                       "AWS.SimpleQueueService.NonExistentQueue"})
# SQS names the encrypted queue's KMS failures itself; S3 prefixes KMS's codes with "KMS.".
SQS_KEY_UNUSABLE = frozenset({"KmsDisabled", "KmsNotFound", "KmsInvalidState"})


@contextmanager
def aws_errors(ctx: TenantContext, service: str, action: str) -> Iterator[None]:
    """Run S3 or SQS calls for ``ctx`` (``service`` names it, ``action`` says
    what for), their failures raised as the runtime's errors."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        raise mapped(ctx, service, action, exc) from None
    except BotoCoreError as exc:  # unreachable, timed out, connection closed
        raise ServiceUnavailable(f"{service} unreachable to {action} for tenant {ctx.key!r}: {exc}") from None


def mapped(ctx: TenantContext, service: str, action: str, exc: object) -> TenantRuntimeError:
    """The runtime error for a botocore ``ClientError`` of ``service``."""
    # KMS's own codes, by meaning; imported on failure only (cryptography: not for the infra program).
    from tenant_runtime.crypto import RETRYABLE as KMS_RETRYABLE
    from tenant_runtime.crypto import UNUSABLE as KMS_UNUSABLE

    response = getattr(exc, "response", {})
    error = response.get("Error", {})
    code = str(error.get("Code", ""))
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    what = f"{service} could not {action} for tenant {ctx.key!r} ({code}: {error.get('Message', '')})"
    kms_code = code.removeprefix("KMS.")
    if code in SQS_KEY_UNUSABLE or (code.startswith("KMS.") and kms_code in KMS_UNUSABLE):
        return KeyUnusable(ctx.key, ctx.resources.kms_key_arn, f"{service}: {code}")
    if code in RETRYABLE or (code.startswith("KMS.") and kms_code in KMS_RETRYABLE) or \
            status == 429 or (isinstance(status, int) and status >= 500):
        return ServiceUnavailable(f"{what}: retry later")
    if code in DENIED or status == 403:
        return AccessDenied(what)
    if code in NOT_FOUND or status == 404:
        return ResourceNotFound(what)
    return TenantRuntimeError(what)
