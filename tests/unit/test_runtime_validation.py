"""Input validation of the routed services, before any AWS or SQL call."""

from __future__ import annotations

import pytest
from runtime_fixtures import context

from tenant_runtime.errors import InvalidRequest, TenantMismatch
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
    from runtime_fixtures import record

    from tenant_runtime.context import TenantContext

    rec = record("acme")
    rec = rec.model_copy(update={"resources": rec.resources.model_copy(
        update={"lifecycle_classes": {"tmp": "tmp-7d", "archive": "archive-30d-365d"}})})
    s3 = boto3.client("s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    signing = ObjectAccess(lambda ctx: s3)
    for retention, folder, tag in (("tmp", "uploads/tmp/", "tmp-7d"), ("archive", "archive/", "archive-30d-365d")):
        up = signing.presign_upload(TenantContext(tenant_id="acme", record=rec), "a.pdf", 10, "application/pdf",
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
    (lambda: store.history(context("acme"), "c1", limit=0), "limit"),
    (lambda: store.history(context("acme"), "c1", limit=501), "limit"),
    (lambda: store.delete_conversation(context("acme"), ""), "conversation_id"),
    (lambda: store.list_conversations(context("acme"), limit=0), "limit"),
    (lambda: store.list_conversations(context("acme"), cursor="!!!"), "cursor"),
])
def test_store_input_is_validated(call, match):
    with pytest.raises(InvalidRequest, match=match):
        call()


def test_a_context_holding_another_tenants_record_is_refused():
    from runtime_fixtures import record

    from tenant_runtime.context import TenantContext

    with pytest.raises(TenantMismatch, match="registry record"):
        TenantContext(tenant_id="acme", record=record("beta"))
    beta = record("beta")
    forged = beta.model_copy(update={"tenant_id": "acme"})  # resources still beta's
    with pytest.raises(TenantMismatch, match="registry record"):
        TenantContext(tenant_id="acme", record=forged)
