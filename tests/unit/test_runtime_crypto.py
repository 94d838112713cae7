"""Envelope encryption against moto's KMS (in-process): round trip, tampering,
moved ciphertexts, and the data-key cache bounds that keep KMS calls small."""

from __future__ import annotations

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from runtime_fixtures import context

from tenant_runtime.crypto import MAGIC, DataKeyCache, Envelope
from tenant_runtime.errors import DecryptionFailed, KeyUnusable, KmsUnavailable


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


def data_key_calls(env: Envelope) -> int:
    """GenerateDataKey + Decrypt calls (the key-state checks aside)."""
    return env.kms_calls - env.key_checks


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
    key = a.resources.kms_key_arn
    resp = kms.generate_data_key(KeyId=key, KeySpec="AES_256", EncryptionContext=kms_context("beta"))
    with pytest.raises(kms.exceptions.InvalidCiphertextException):
        kms.decrypt(KeyId=key, CiphertextBlob=resp["CiphertextBlob"], EncryptionContext=kms_context("acme"))


def test_data_key_reuse_is_bounded_by_messages_age_and_entries(kms, tenants):
    clock = Clock()
    env = envelope(kms, max_messages=10, max_age=60, max_entries=1, clock=clock)
    a, b = tenants["acme"], tenants["beta"]
    for i in range(25):
        env.encrypt(a, f"c{i % 7}", b"x")  # one data key per tenant, whatever the conversation
    assert data_key_calls(env) == 3  # 10 + 10 + 5 messages
    clock.now = 60
    env.encrypt(a, "c1", b"x")
    assert data_key_calls(env) == 4  # too old: a new key
    env.encrypt(b, "c1", b"x")  # evicts acme's key (LRU, 1 entry)
    env.encrypt(a, "c1", b"x")
    assert data_key_calls(env) == 6


def test_reading_costs_one_kms_decrypt_per_data_key(kms, tenants):
    a = tenants["acme"]
    blobs = [envelope(kms, max_messages=50).encrypt(a, "c1", b"m%d" % i) for i in range(3)]  # 3 writers, 3 keys
    writer = envelope(kms, max_messages=50)
    blobs += [writer.encrypt(a, f"c{i % 10}", b"w%d" % i) for i in range(100)]  # 2 keys, 10 conversations
    reader = envelope(kms)
    convs = ["c1"] * 3 + [f"c{i % 10}" for i in range(100)]
    opened = [reader.decrypt(a, c, b) for c, b in zip(convs, blobs, strict=True)]
    assert opened[:3] == [b"m0", b"m1", b"m2"] and opened[-1] == b"w99"
    assert data_key_calls(reader) == 5 and reader.key_checks == 1  # one key-state check within recheck_after
    assert writer.decrypt(a, "c9", blobs[-1]) == b"w99" and data_key_calls(writer) == 2  # its own keys: no Decrypt


def test_a_blob_moves_to_another_wrapping_of_its_data_key_only_by_sealing_again(kms, tenants):
    """The edk is part of the associated data: swapped alone, the blob fails;
    ``rewrap_blob`` re-seals it (fresh nonce, new edk) and it opens with the
    same data key under the new wrapping."""
    from tenant_runtime.crypto import NONCE, DataKey, blob_edk, kms_context, rewrap_blob

    a = tenants["acme"]
    blob = envelope(kms).encrypt(a, "c1", b"secret")
    edk, key_arn = blob_edk(blob), a.resources.kms_key_arn
    plaintext = kms.decrypt(KeyId=key_arn, CiphertextBlob=edk, EncryptionContext=kms_context("acme"))["Plaintext"]
    new_edk = kms.encrypt(KeyId=key_arn, Plaintext=plaintext, EncryptionContext=kms_context("acme"))["CiphertextBlob"]
    assert new_edk != edk
    swapped = blob.replace(edk, new_edk)
    with pytest.raises(DecryptionFailed, match="authentication"):
        envelope(kms).decrypt(a, "c1", swapped)
    moved = rewrap_blob(DataKey(plaintext, new_edk, 0.0), new_edk, "acme", "c1", blob)
    assert blob_edk(moved) == new_edk
    nonce_at = lambda b, e: b[6 + len(e):6 + len(e) + NONCE]  # noqa: E731
    assert nonce_at(moved, new_edk) != nonce_at(blob, edk)
    assert envelope(kms).decrypt(a, "c1", moved) == b"secret"
    with pytest.raises(DecryptionFailed, match="authentication"):
        rewrap_blob(DataKey(plaintext, new_edk, 0.0), new_edk, "acme", "c2", blob)


# -- KMS failures: throttled, key unusable, integrity -------------------------------------------

def kms_answers(kms, operation: str, code: str) -> None:
    """Every call of ``operation`` on this client fails with ``code`` (what the
    client raises once its own retries are spent)."""
    def fail(**_):
        raise ClientError({"Error": {"Code": code, "Message": f"injected {code}"}}, operation)

    kms.meta.events.register(f"before-call.kms.{operation}", fail)


def sealed(kms, tenants) -> bytes:
    return envelope(kms).encrypt(tenants["acme"], "c1", b"secret")


@pytest.mark.parametrize("code", ["ThrottlingException", "KMSInternalException", "DependencyTimeoutException",
                                  "KeyUnavailableException"])
def test_a_throttled_or_failing_kms_is_a_retryable_503(kms, tenants, code):
    blob = sealed(kms, tenants)
    kms_answers(kms, "Decrypt", code)
    with pytest.raises(KmsUnavailable, match=code) as err:
        envelope(kms).decrypt(tenants["acme"], "c1", blob)
    assert err.value.status_code == 503 and not isinstance(err.value, DecryptionFailed)
    kms_answers(kms, "GenerateDataKey", code)
    with pytest.raises(KmsUnavailable):
        envelope(kms).encrypt(tenants["acme"], "c1", b"x")


@pytest.mark.parametrize("code", ["DisabledException", "KMSInvalidStateException", "NotFoundException"])
def test_an_unusable_key_is_its_own_error(kms, tenants, code):
    blob = sealed(kms, tenants)
    kms_answers(kms, "Decrypt", code)
    with pytest.raises(KeyUnusable, match=code) as err:
        envelope(kms).decrypt(tenants["acme"], "c1", blob)
    assert err.value.status_code == 403 and err.value.code == "key_unusable"
    assert not isinstance(err.value, DecryptionFailed)


def test_only_an_integrity_failure_is_decryption_failed(kms, tenants):
    blob = sealed(kms, tenants)
    kms_answers(kms, "Decrypt", "InvalidCiphertextException")
    with pytest.raises(DecryptionFailed, match="InvalidCiphertextException"):
        envelope(kms).decrypt(tenants["acme"], "c1", blob)


@pytest.mark.parametrize("retire", ["disable", "schedule-deletion"])
def test_a_retired_key_stops_being_used_within_recheck_after(kms, tenants, retire):
    """The bound: a process stops sealing and opening with a key (cached data keys
    included) at most ``recheck_after`` seconds after it last saw it Enabled."""
    clock = Clock()
    env = envelope(kms, clock=clock, recheck_after=60)
    a = tenants["acme"]
    blob = env.encrypt(a, "c1", b"before")  # the key is checked, a data key cached
    key = a.resources.kms_key_arn
    key_id = key.rsplit("/", 1)[-1]  # moto's key-state calls want the bare id
    if retire == "disable":
        kms.disable_key(KeyId=key_id)
    else:
        kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    clock.now = 59.9  # within the bound: the cached data keys still serve (no KMS call at all)
    calls = env.kms_calls
    assert env.decrypt(a, "c1", env.encrypt(a, "c1", b"during")) == b"during" and env.kms_calls == calls
    clock.now = 60
    state = "Disabled" if retire == "disable" else "PendingDeletion"
    for call in (lambda: env.encrypt(a, "c1", b"after"), lambda: env.decrypt(a, "c1", blob)):
        with pytest.raises(KeyUnusable, match=state):
            call()
    assert env.cache.take_sealing_key((key, "acme")) is None  # its data keys are gone from the cache
    if retire == "disable":  # enabled again: served again after the next check
        kms.enable_key(KeyId=key_id)
        assert env.decrypt(a, "c1", blob) == b"before"


@pytest.mark.parametrize("rate, data_keys, checks", [(1, 4, 17), (10, 1, 2), (100, 1, 1)])
def test_kms_calls_at_a_steady_rate_are_the_fewest_the_two_bounds_allow(kms, tenants, rate, data_keys, checks):
    """1,000 messages at ``rate`` per second: one data key per ``max_age`` (300 s)
    and one key-state check per ``recheck_after`` (60 s) of use, nothing more.
    At 10 messages/s that is 3 per 1,000 (100 s: a data key, checks at 0 and 60 s);
    ≤ 1 would need a recheck less often than every 100 s, a weaker bound."""
    clock = Clock()
    env = envelope(kms, clock=clock)  # the runtime's defaults
    for i in range(1000):
        env.encrypt(tenants["acme"], f"c{i // 20}", b"x")
        clock.now += 1 / rate
    assert (data_key_calls(env), env.key_checks) == (data_keys, checks)
