"""Envelope encryption against moto's KMS (in-process): round trip, tampering,
moved ciphertexts, and the data-key cache bounds that keep KMS calls small."""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws
from runtime_fixtures import context

from tenant_runtime.crypto import MAGIC, DataKeyCache, Envelope
from tenant_runtime.errors import DecryptionFailed


class Clock:
    now = 0.0

    def __call__(self):
        return self.now


@pytest.fixture
def kms():
    with mock_aws():
        yield boto3.client("kms", region_name="us-east-1")


@pytest.fixture
def tenants(kms):
    return {t: context(t, key_arn=kms.create_key()["KeyMetadata"]["Arn"]) for t in ("acme", "beta")}


def envelope(kms, **bounds) -> Envelope:
    return Envelope(lambda ctx: kms, DataKeyCache(**bounds))


def test_round_trip_and_fresh_nonce_per_message(kms, tenants):
    env = envelope(kms)
    a = tenants["acme"]
    one, two = env.encrypt(a, "c1", b"hello"), env.encrypt(a, "c1", b"hello")
    assert one != two and one.startswith(MAGIC) and b"hello" not in one
    assert env.decrypt(a, "c1", one) == env.decrypt(a, "c1", two) == b"hello"


def test_tampered_ciphertext_fails(kms, tenants):
    env = envelope(kms)
    blob = bytearray(env.encrypt(tenants["acme"], "c1", b"secret"))
    blob[-1] ^= 1
    with pytest.raises(DecryptionFailed, match="authentication"):
        env.decrypt(tenants["acme"], "c1", bytes(blob))
    for broken in (b"", b"XXXX" + bytes(blob[4:]), bytes(blob[:10])):
        with pytest.raises(DecryptionFailed, match="header"):
            env.decrypt(tenants["acme"], "c1", broken)


def test_ciphertext_moved_to_another_conversation_or_tenant_fails(kms, tenants):
    writer = envelope(kms)
    blob = writer.encrypt(tenants["acme"], "c1", b"secret")
    # Another conversation of the same tenant: the derived key and the AAD differ.
    with pytest.raises(DecryptionFailed, match="authentication"):
        writer.decrypt(tenants["acme"], "c2", blob)
    reader = envelope(kms)
    with pytest.raises(DecryptionFailed, match="authentication"):
        reader.decrypt(tenants["acme"], "c2", blob)
    # Another tenant: KMS itself refuses (other key, other KMS encryption context).
    with pytest.raises(DecryptionFailed, match="KMS refused"):
        reader.decrypt(tenants["beta"], "c1", blob)
    assert reader.decrypt(tenants["acme"], "c1", blob) == b"secret"


def test_kms_binds_the_data_key_to_its_tenant(kms, tenants):
    """Even under the right key, KMS opens a data key only with its tenant's context."""
    from tenant_runtime.crypto import kms_context

    a = tenants["acme"]
    resp = kms.generate_data_key(KeyId=a.resources.kms_key_arn, KeySpec="AES_256", EncryptionContext=kms_context("beta"))
    with pytest.raises(kms.exceptions.InvalidCiphertextException):
        kms.decrypt(KeyId=a.resources.kms_key_arn, CiphertextBlob=resp["CiphertextBlob"], EncryptionContext=kms_context("acme"))


def test_data_key_reuse_is_bounded_by_messages_age_and_entries(kms, tenants):
    clock = Clock()
    env = envelope(kms, max_messages=10, max_age=60, max_entries=1, clock=clock)
    a, b = tenants["acme"], tenants["beta"]
    for i in range(25):
        env.encrypt(a, f"c{i % 7}", b"x")  # one data key per tenant, whatever the conversation
    assert env.kms_calls == 3  # 10 + 10 + 5 messages
    clock.now = 60
    env.encrypt(a, "c1", b"x")
    assert env.kms_calls == 4  # too old: a new key
    env.encrypt(b, "c1", b"x")  # evicts acme's key (LRU, 1 entry)
    env.encrypt(a, "c1", b"x")
    assert env.kms_calls == 6


def test_reading_costs_one_kms_decrypt_per_data_key(kms, tenants):
    a = tenants["acme"]
    blobs = [envelope(kms, max_messages=50).encrypt(a, "c1", b"m%d" % i) for i in range(3)]  # 3 writers, 3 keys
    writer = envelope(kms, max_messages=50)
    blobs += [writer.encrypt(a, f"c{i % 10}", b"w%d" % i) for i in range(100)]  # 2 keys, 10 conversations
    reader = envelope(kms)
    convs = ["c1"] * 3 + [f"c{i % 10}" for i in range(100)]
    opened = [reader.decrypt(a, c, b) for c, b in zip(convs, blobs)]
    assert opened[:3] == [b"m0", b"m1", b"m2"] and opened[-1] == b"w99"
    assert reader.kms_calls == 5
    assert writer.decrypt(a, "c9", blobs[-1]) == b"w99" and writer.kms_calls == 2  # its own keys: no Decrypt
