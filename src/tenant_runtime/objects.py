"""Pre-signed S3 URLs confined to the tenant's prefix (``tenants/<id>/``).

Uploads are keyed ``<prefix>uploads/<random>/<filename>`` by the runtime (the
caller never chooses the key), signed with SSE-KMS under the tenant's key as
signed headers, so the upload fails unless it is encrypted with that key.
With a ``retention`` class, ``tmp`` (``<prefix>uploads/tmp/...``) or
``archive`` (``<prefix>archive/...``), the upload also carries the object tag
``tenantctl-class=<the tenant's class>`` as a signed header: the cell's
lifecycle rule for that class expires (and archives) it. Untagged objects are
kept.
Files above ``multipart_threshold`` get a multipart upload: one pre-signed URL
per part, completed through ``complete_multipart``. Downloads are signed only
for keys under the caller's prefix; another tenant's key is a TenantMismatch.

Large document bodies (``tenant_runtime.documents``) are objects too:
``<prefix>documents/<random>`` written by ``put_body``, or a plain upload
(``upload_key``), read back only if SSE-KMS under the tenant's key.
"""

from __future__ import annotations

import math
import posixpath
import re
import uuid
from collections.abc import Callable
from typing import Any, Literal

from botocore.exceptions import ClientError
from pydantic import BaseModel

from tenant_runtime.aws_errors import aws_errors
from tenant_runtime.blocking import may_block
from tenant_runtime.context import TenantContext, verified
from tenant_runtime.errors import InvalidRequest, TenantMismatch
from tenant_runtime.models import WORKSPACE_SEP

_FILENAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ -]{0,199}$")
DEFAULT_TYPES = frozenset({
    "application/pdf", "application/json", "text/plain", "text/markdown", "text/csv",
    "image/png", "image/jpeg", "image/webp", "audio/mpeg", "audio/wav",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
})
MIN_PART = 5 << 20  # S3's minimum part size (all parts but the last)
MAX_PARTS = 10_000
CLASS_TAG = "tenantctl-class"  # what the cell's lifecycle rules match (tenantctl.bucket_lifecycle)
RETENTION_FOLDERS = {"tmp": "uploads/tmp/", "archive": "archive/"}
BODIES = "documents/"  # large document bodies (put_body)
Retention = Literal["tmp", "archive"]


# S3's answers to a completion the client got wrong (its upload id, parts or ETags).
CLIENT_MULTIPART_ERRORS = frozenset({"NoSuchUpload", "InvalidPart", "InvalidPartOrder", "EntityTooSmall"})


class PresignedUpload(BaseModel):
    key: str
    method: str = "PUT"
    url: str | None = None  # single PUT
    headers: dict[str, str]  # send exactly these with the PUT (they are signed)
    upload_id: str | None = None  # multipart
    part_size: int | None = None
    part_urls: list[str] = []


class ObjectAccess:
    def __init__(self, s3_for: Callable[[TenantContext], Any], max_size: int = 5 << 30,
                 multipart_threshold: int = 100 << 20, part_size: int = 64 << 20,
                 content_types: frozenset[str] = DEFAULT_TYPES, expires_in: int = 900) -> None:
        if part_size < MIN_PART:
            raise ValueError(f"part_size must be >= {MIN_PART}")
        self.s3_for, self.max_size, self.multipart_threshold = s3_for, max_size, multipart_threshold
        self.part_size, self.content_types, self.expires_in = part_size, content_types, expires_in

    def validate(self, filename: str, size: int, content_type: str) -> None:
        if not isinstance(filename, str) or not _FILENAME.match(filename) or ".." in filename:
            raise InvalidRequest("filename must be 1..200 of letters, digits, '.', '_', '-', ' ' "
                                 "starting with a letter or digit, no '..' and no '/'")
        if type(size) is not int or not 1 <= size <= self.max_size:
            raise InvalidRequest(f"size must be between 1 and {self.max_size} bytes")
        if content_type not in self.content_types:
            raise InvalidRequest(f"content type {content_type!r} is not accepted")

    def _sse(self, ctx: TenantContext) -> dict[str, str]:
        return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": ctx.resources.kms_key_arn}

    def _tagging(self, ctx: TenantContext, retention: Retention | None) -> dict[str, str]:
        if retention is None:
            return {}
        if retention not in RETENTION_FOLDERS:
            raise InvalidRequest(f"retention must be one of {', '.join(RETENTION_FOLDERS)}")
        value = ctx.resources.lifecycle_classes.get(retention)
        if not value:  # a tenant applied before retention classes: re-apply it first
            raise InvalidRequest(f"tenant {ctx.tenant_id!r} has no {retention!r} retention class recorded")
        return {"Tagging": f"{CLASS_TAG}={value}"}

    def presign_upload(self, ctx: TenantContext, filename: str, size: int, content_type: str,
                       retention: Retention | None = None) -> PresignedUpload:
        ctx = verified(ctx)
        self.validate(filename, size, content_type)
        tagging = self._tagging(ctx, retention)
        res = ctx.resources
        folder = RETENTION_FOLDERS[retention] if retention else "uploads/"
        key = f"{res.prefix}{folder}{uuid.uuid4().hex}/{filename}"
        s3 = self.s3_for(ctx)
        headers = {"Content-Type": content_type, "x-amz-server-side-encryption": "aws:kms",
                   "x-amz-server-side-encryption-aws-kms-key-id": res.kms_key_arn}
        if tagging:
            headers["x-amz-tagging"] = tagging["Tagging"]
        if size <= self.multipart_threshold:
            url = s3.generate_presigned_url("put_object", ExpiresIn=self.expires_in, Params={
                "Bucket": res.bucket, "Key": key, "ContentType": content_type, "ContentLength": size,
                **self._sse(ctx), **tagging})
            return PresignedUpload(key=key, url=url, headers={**headers, "Content-Length": str(size)})
        part_size = max(self.part_size, math.ceil(size / MAX_PARTS))
        with aws_errors(ctx, "S3", "start a multipart upload"):
            upload_id = s3.create_multipart_upload(Bucket=res.bucket, Key=key, ContentType=content_type,
                                                   **self._sse(ctx), **tagging)["UploadId"]
        urls = [s3.generate_presigned_url("upload_part", ExpiresIn=self.expires_in, Params={
                    "Bucket": res.bucket, "Key": key, "UploadId": upload_id, "PartNumber": n})
                for n in range(1, math.ceil(size / part_size) + 1)]
        return PresignedUpload(key=key, headers={}, upload_id=upload_id, part_size=part_size, part_urls=urls)

    def complete_multipart(self, ctx: TenantContext, key: str, upload_id: str, etags: list[str]) -> None:
        """Complete the client's multipart upload: ``etags`` of its parts, in order.
        What the client got wrong (no such upload, parts not uploaded or out of
        order, a part too small) is an InvalidRequest naming S3's reason."""
        ctx = verified(ctx)
        confine(ctx, key)
        if not isinstance(etags, list) or not etags or not all(isinstance(e, str) and e for e in etags):
            raise InvalidRequest("etags must be the ETag of every part, in order (a non-empty list of strings)")
        if not isinstance(upload_id, str) or not upload_id:
            raise InvalidRequest("upload_id must be the one presign_upload returned")
        with aws_errors(ctx, "S3", "complete a multipart upload"):
            try:
                self.s3_for(ctx).complete_multipart_upload(
                    Bucket=ctx.resources.bucket, Key=key, UploadId=upload_id,
                    MultipartUpload={"Parts": [{"ETag": e, "PartNumber": n} for n, e in enumerate(etags, 1)]})
            except ClientError as exc:  # the client's mistakes; the rest is mapped like any S3 failure
                error = exc.response.get("Error", {})
                if error.get("Code") not in CLIENT_MULTIPART_ERRORS:
                    raise
                raise InvalidRequest(f"the multipart upload cannot be completed: {error['Code']}: "
                                     f"{error.get('Message', '')}".rstrip(": ")) from None

    def presign_download(self, ctx: TenantContext, key: str) -> str:
        ctx = verified(ctx)
        confine(ctx, key)
        return self.s3_for(ctx).generate_presigned_url(
            "get_object", ExpiresIn=self.expires_in, Params={"Bucket": ctx.resources.bucket, "Key": key})

    # -- document bodies (tenant_runtime.documents): keys relative to the prefix --------

    def put_body(self, ctx: TenantContext, data: bytes) -> str:
        """Store a large document body under ``<prefix>documents/``, SSE-KMS
        with the tenant's key; its key relative to the prefix. A fresh key per
        write: the row committed before a replace keeps pointing at a whole body."""
        may_block()
        rel = f"{BODIES}{uuid.uuid4().hex}"
        with aws_errors(ctx, "S3", "store a document body"):
            self.s3_for(ctx).put_object(Bucket=ctx.resources.bucket, Key=ctx.resources.prefix + rel, Body=data,
                                        ContentType="text/plain; charset=utf-8", **self._sse(ctx))
        return rel

    def read_body(self, ctx: TenantContext, rel: str, limit: int) -> bytes:
        """The object at ``rel``, refused unless it is SSE-KMS under the
        tenant's key (what ``put_body`` and ``presign_upload`` make) and at
        most ``limit`` bytes."""
        may_block()
        res = ctx.resources
        with aws_errors(ctx, "S3", f"read {res.prefix + rel!r}"):  # the read of the stream may fail too
            obj = self.s3_for(ctx).get_object(Bucket=res.bucket, Key=res.prefix + rel)
            with obj["Body"] as body:
                if obj.get("ServerSideEncryption") != "aws:kms" or obj.get("SSEKMSKeyId") != res.kms_key_arn:
                    raise InvalidRequest(f"object {res.prefix + rel!r} is not encrypted with the tenant's key")
                if obj["ContentLength"] > limit:
                    raise InvalidRequest(f"object {res.prefix + rel!r} is {obj['ContentLength']} bytes; "
                                         f"the limit is {limit}")
                return body.read()

    def delete_body(self, ctx: TenantContext, rel: str) -> None:
        may_block()
        with aws_errors(ctx, "S3", "delete a document body"):
            self.s3_for(ctx).delete_object(Bucket=ctx.resources.bucket, Key=ctx.resources.prefix + rel)

    @staticmethod
    def upload_key(ctx: TenantContext, key: str) -> str:
        """``key`` (as ``presign_upload`` returned it) relative to the tenant's
        prefix; another tenant's key is a TenantMismatch. Only plain uploads:
        the retention classes' objects expire or are archived by lifecycle."""
        confine(ctx, key)
        rel = key[len(ctx.resources.prefix):]
        if not rel.startswith("uploads/") or rel.startswith(RETENTION_FOLDERS["tmp"]):
            raise InvalidRequest(f"{key!r} is not an upload made without a retention class")
        return rel


def confine(ctx: TenantContext, key: str) -> None:
    """Refuse a key outside the tenant's prefix (TenantMismatch, naming its owner when it has one)."""
    prefix = ctx.resources.prefix
    if not prefix.endswith("/"):  # `acme` must never match `acme-corp`
        raise InvalidRequest(f"tenant prefix {prefix!r} lacks its trailing '/'")
    normal = posixpath.normpath(key) == key.rstrip("/") and "//" not in key
    if not normal or not key.startswith(prefix):
        # Named as the runtime keys them (a workspace "<id>/<ws>"); a key that is not
        # normalised names no owner, whatever its first segment seems to say.
        named = key.split("/")[1] if normal and key.startswith("tenants/") and key.count("/") >= 2 else ""
        raise TenantMismatch(ctx.key, named.replace(WORKSPACE_SEP, "/", 1) or "unknown", f"object {key!r}")
