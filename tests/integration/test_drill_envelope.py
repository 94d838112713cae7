"""The backup stream format on its own: KMS on the moto server, no database."""

from __future__ import annotations

import io
import os

import boto3
import pytest

from tenantctl.drills import envelope
from tenantctl.drills.errors import BackupCorrupt, KeyUnusable

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def kms(sandbox):
    return boto3.client("kms", endpoint_url=sandbox.aws_endpoint_url, region_name=sandbox.region)


def seal(kms, plaintext: bytes, tenant: str = "t1", backup: str = "b1"):
    key_arn = kms.create_key()["KeyMetadata"]["Arn"]
    context = envelope.encryption_context(tenant, backup)
    key = envelope.new_data_key(kms, key_arn, context)
    blob = b"".join(envelope.encrypt_stream(io.BytesIO(plaintext), key, context))
    return key_arn, key, context, blob


def opened(kms, key_arn, key, context, blob) -> bytes:
    data_key = envelope.open_data_key(kms, key_arn, key.encrypted_b64, context)
    return b"".join(envelope.decrypt_stream(io.BytesIO(blob), data_key, key.nonce_prefix, context, "test"))


@pytest.mark.parametrize("size", [0, 1, envelope.CHUNK, envelope.CHUNK * 2 + 7])
def test_round_trip_across_chunk_boundaries(kms, size):
    plaintext = os.urandom(size)
    key_arn, key, context, blob = seal(kms, plaintext)
    assert opened(kms, key_arn, key, context, blob) == plaintext


def test_truncation_reordering_and_foreign_context_are_refused(kms):
    plaintext = os.urandom(envelope.CHUNK * 2 + 100)
    key_arn, key, context, blob = seal(kms, plaintext)
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
        opened(kms, key_arn, key, envelope.encryption_context("t1", "other"), blob)
