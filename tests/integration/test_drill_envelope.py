"""The backup stream format on its own, sealed with the KMS keys of really
provisioned tenants (moto's KMS), no database."""

from __future__ import annotations

import io
import os

import boto3
import pytest

from tenantctl.drills import envelope
from tenantctl.errors import BackupCorrupt, KeyUnusable, TargetUnavailable

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def kms(sandbox):
    return boto3.client("kms", endpoint_url=sandbox.aws_endpoint_url, region_name=sandbox.region)


@pytest.fixture(scope="module")
def keys(provision_tenant) -> dict[str, str]:
    """tenant id -> its KMS key ARN, for two tenants."""
    return {t: provision_tenant(t).resources.kms_key_arn for t in ("dr-env-a", "dr-env-b")}


def seal(kms, key_arn: str, plaintext: bytes, tenant: str = "dr-env-a", backup: str = "b1"):
    context = envelope.encryption_context(tenant, backup)
    key = envelope.new_data_key(kms, key_arn, context)
    blob = b"".join(envelope.encrypt_stream(io.BytesIO(plaintext), key, context))
    return key, context, blob


def opened(kms, key_arn, key, context, blob) -> bytes:
    data_key = envelope.open_data_key(kms, key_arn, key.encrypted_b64, context)
    return b"".join(envelope.decrypt_stream(io.BytesIO(blob), data_key, key.nonce_prefix, context, "test"))


@pytest.mark.parametrize("size", [0, 1, envelope.CHUNK, envelope.CHUNK * 2 + 7])
def test_round_trip_across_chunk_boundaries(kms, keys, size):
    plaintext = os.urandom(size)
    key_arn = keys["dr-env-a"]
    key, context, blob = seal(kms, key_arn, plaintext)
    assert opened(kms, key_arn, key, context, blob) == plaintext


def test_truncation_reordering_and_foreign_context_are_refused(kms, keys):
    plaintext = os.urandom(envelope.CHUNK * 2 + 100)
    key_arn = keys["dr-env-a"]
    key, context, blob = seal(kms, key_arn, plaintext)
    frame = 4 + envelope.CHUNK + 16
    header = len(envelope.MAGIC)
    first, second = blob[header:header + frame], blob[header + frame:header + 2 * frame]
    with pytest.raises(BackupCorrupt, match="no final chunk"):  # cut after a whole chunk
        opened(kms, key_arn, key, context, blob[:header + frame])
    with pytest.raises(BackupCorrupt, match="chunk 0 failed AES-GCM"):  # chunks swapped
        opened(kms, key_arn, key, context, envelope.MAGIC + second + first + blob[header + 2 * frame:])
    with pytest.raises(BackupCorrupt, match="after the final chunk"):
        opened(kms, key_arn, key, context, blob + b"x")
    # Another backup id in the context: KMS will not open the data key.
    with pytest.raises(KeyUnusable, match="KMS refused"):
        opened(kms, key_arn, key, envelope.encryption_context("dr-env-a", "other"), blob)


def test_another_tenants_key_or_context_cannot_open_a_backup(kms, keys):
    key, context, blob = seal(kms, keys["dr-env-a"], b"tenant a's rows")
    with pytest.raises(KeyUnusable, match="KMS refused"):  # B's key, A's context
        opened(kms, keys["dr-env-b"], key, context, blob)
    with pytest.raises(KeyUnusable, match="KMS refused"):  # A's key, B's context
        opened(kms, keys["dr-env-a"], key, envelope.encryption_context("dr-env-b", "b1"), blob)
    assert opened(kms, keys["dr-env-a"], key, context, blob) == b"tenant a's rows"


@pytest.mark.parametrize("code, error", [("ThrottlingException", TargetUnavailable),
                                         ("KMSInternalException", TargetUnavailable),
                                         ("DisabledException", KeyUnusable)])
def test_kms_failures_keep_their_meaning(sandbox, keys, code, error):
    """A throttled KMS (past the client's retries) is the target being unavailable
    (exit 7), not an unusable key (exit 10)."""
    from botocore.exceptions import ClientError

    kms = boto3.client("kms", endpoint_url=sandbox.aws_endpoint_url, region_name=sandbox.region)
    key, context, blob = seal(kms, keys["dr-env-a"], b"rows")

    def fail(**_):
        raise ClientError({"Error": {"Code": code, "Message": "injected"}}, "Decrypt")

    kms.meta.events.register("before-call.kms.Decrypt", fail)
    with pytest.raises(error, match=code if error is TargetUnavailable else "disabled"):
        opened(kms, keys["dr-env-a"], key, context, blob)
