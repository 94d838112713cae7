"""Envelope encryption against moto's KMS (in-process): round trip, tampering,
moved ciphertexts, and the data-key cache bounds that keep KMS calls small."""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from tenant_runtime.crypto import MAGIC, DataKeyCache, Envelope
from tenant_runtime.errors import DecryptionFailed

from runtime_fixtures import context


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
    # The writer's cache holds the opened key for (acme, c1) only: the AAD check refuses.
    with pytest.raises(DecryptionFailed):
        writer.decrypt(tenants["acme"], "c2", blob)
    # A fresh reader has to ask KMS, which refuses the other context / other key.
    reader = envelope(kms)
    with pytest.raises(DecryptionFailed, match="KMS refused"):
        reader.decrypt(tenants["acme"], "c2", blob)
    with pytest.raises(DecryptionFailed, match="KMS refused"):
        reader.decrypt(tenants["beta"], "c1", blob)
    assert reader.decrypt(tenants["acme"], "c1", blob) == b"secret"


def test_data_key_reuse_is_bounded_by_messages_age_and_entries(kms, tenants):
    clock = Clock()
    env = envelope(kms, max_messages=10, max_age=60, max_entries=2, clock=clock)
    a = tenants["acme"]
    for _ in range(25):
        env.encrypt(a, "c1", b"x")
    assert env.kms_calls == 3  # 10 + 10 + 5 messages
    clock.now = 60
    env.encrypt(a, "c1", b"x")
    assert env.kms_calls == 4  # too old: a new key
    env.encrypt(a, "c2", b"x")
    env.encrypt(a, "c3", b"x")  # evicts c1's key (LRU, 2 entries)
    env.encrypt(a, "c1", b"x")
    assert env.kms_calls == 7


def test_reading_costs_one_kms_decrypt_per_data_key(kms, tenants):
    a = tenants["acme"]
    blobs = [envelope(kms, max_messages=50).encrypt(a, "c1", b"m%d" % i) for i in range(3)]  # 3 writers, 3 keys
    writer = envelope(kms, max_messages=50)
    blobs += [writer.encrypt(a, "c1", b"w%d" % i) for i in range(100)]  # 2 keys
    reader = envelope(kms)
    assert [reader.decrypt(a, "c1", b) for b in blobs][:3] == [b"m0", b"m1", b"m2"]
    assert reader.kms_calls == 5
    assert writer.decrypt(a, "c1", blobs[-1]) == b"w99" and writer.kms_calls == 2  # its own keys: no Decrypt
