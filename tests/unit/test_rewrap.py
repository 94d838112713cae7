"""Re-wrapping sealed blobs from a tenant key in one account and region to a
key in another, against moto's KMS in process (two accounts, two regions):
what opens where, what KMS is asked, what is refused."""

from __future__ import annotations

import base64

import boto3
import pytest
from moto import mock_aws

from tenant_runtime.blind_index import SEARCH_KEY_SCOPE, document_scope, summary_scope
from tenant_runtime.crypto import DataKeyCache, Envelope, blob_edk
from tenant_runtime.errors import DecryptionFailed
from tenant_runtime.tables import DOCUMENTS, MESSAGES, SEALED, SEARCH_KEYS, SUMMARIES
from tenantctl.errors import KeyUnusable
from tenantctl.transfer.rewrap import KmsKey, Rewrapper, RewrapRefused

OTHER_ACCOUNT = "222222222222"


@pytest.fixture
def keys():
    """acme's and beta's keys in the old account (us-east-1), acme's new key in another account (eu-west-1)."""
    with mock_aws():
        old = boto3.client("kms", region_name="us-east-1")
        creds = boto3.client("sts", region_name="us-east-1").assume_role(
            RoleArn=f"arn:aws:iam::{OTHER_ACCOUNT}:role/tenantctl-cell", RoleSessionName="move")["Credentials"]
        new = boto3.client("kms", region_name="eu-west-1", aws_access_key_id=creds["AccessKeyId"],
                           aws_secret_access_key=creds["SecretAccessKey"], aws_session_token=creds["SessionToken"])
        arn = lambda kms: kms.create_key()["KeyMetadata"]["Arn"]  # noqa: E731
        yield {"acme": KmsKey(old, arn(old)), "beta": KmsKey(old, arn(old)), "new": KmsKey(new, arn(new))}


def seal(key: KmsKey, tenant_id: str, items: list[tuple[str, bytes]], **bounds) -> list[bytes]:
    env = Envelope(lambda _ctx: key.kms, DataKeyCache(**bounds))
    return [env.seal(lambda: key.kms, tenant_id, key.key_arn, conv, plain) for conv, plain in items]


def opened(key: KmsKey, tenant_id: str, conversation_id: str, blob: bytes, env: Envelope | None = None) -> bytes:
    env = env or Envelope(lambda _ctx: key.kms)
    return env.open(lambda: key.kms, tenant_id, key.key_arn, conversation_id, [blob])[0]


def test_a_rewrapped_blob_opens_under_the_new_key_and_not_the_old(keys):
    assert f":{OTHER_ACCOUNT}:" in keys["new"].key_arn and ":eu-west-1:" in keys["new"].key_arn
    items = [("c1", b"hello"), ("c2", b"world"), ("c1", b"again")]
    blobs = seal(keys["acme"], "acme", items)
    rewrapper = Rewrapper("acme", keys["acme"], keys["new"])
    moved = list(rewrapper.rewrap_many((conv, blob) for (conv, _), blob in zip(items, blobs, strict=True)))
    for (conv, plain), blob, new in zip(items, blobs, moved, strict=True):
        assert blob_edk(new) != blob_edk(blob)
        assert opened(keys["new"], "acme", conv, new) == plain
        with pytest.raises(DecryptionFailed, match="KMS refused"):
            opened(keys["acme"], "acme", conv, new)
        # Its header (edk, nonce) is new; the original still opens where it was (the rollback window).
        assert new[-len(plain) - 16:] != blob[-len(plain) - 16:]
        assert opened(keys["acme"], "acme", conv, blob) == plain
    assert rewrapper.blobs == 3


def test_kms_is_asked_twice_per_distinct_data_key_and_readers_once(keys):
    """35 messages under 4 data keys (a key seals at most 10): 8 KMS calls to
    re-wrap them all, and a reader of the new blobs still opens 4 data keys."""
    items = [(f"c{i % 3}", f"message {i}".encode()) for i in range(35)]
    blobs = seal(keys["acme"], "acme", items, max_messages=10)
    assert len({blob_edk(b) for b in blobs}) == 4
    rewrapper = Rewrapper("acme", keys["acme"], keys["new"])
    moved = [rewrapper.rewrap(conv, blob) for (conv, _), blob in zip(items, blobs, strict=True)]
    assert (rewrapper.kms_calls, rewrapper.data_keys, len({blob_edk(b) for b in moved})) == (8, 4, 4)
    reader = Envelope(lambda _ctx: keys["new"].kms)
    assert [opened(keys["new"], "acme", conv, b, reader) for (conv, _), b in zip(items, moved, strict=True)] == [
        plain for _, plain in items]
    assert reader.kms_calls - reader.key_checks == 4


def test_each_sealed_column_is_rewrapped_in_its_rows_scope(keys):
    """A row's blob is carried with the scope the runtime sealed it in (from
    the row's key); any other scope is refused."""
    rows = {MESSAGES: (("c1", 7), "c1"), DOCUMENTS: (("d1",), document_scope("d1")),
            SUMMARIES: (("c1",), summary_scope("c1")), SEARCH_KEYS: ((1,), SEARCH_KEY_SCOPE)}
    assert set(rows) == {s.table for s in SEALED}
    rewrapper = Rewrapper("acme", keys["acme"], keys["new"])
    for table, (key, scope) in rows.items():
        [blob] = seal(keys["acme"], "acme", [(scope, table.encode())])
        assert opened(keys["new"], "acme", scope, rewrapper.rewrap_column(table, key, blob)) == table.encode()
        with pytest.raises(RewrapRefused, match="authentication"):
            rewrapper.rewrap_column(DOCUMENTS if table != DOCUMENTS else SUMMARIES, ("x",), blob)
    with pytest.raises(ValueError, match="no sealed column"):
        rewrapper.rewrap_column("search_vocab", ("x",), b"")


def test_an_evicted_data_key_is_opened_again(keys):
    items = [("c1", b"one"), ("c1", b"two")]
    first, second = (seal(keys["acme"], "acme", [item])[0] for item in items)  # two data keys
    rewrapper = Rewrapper("acme", keys["acme"], keys["new"], max_keys=1)
    for blob in (first, second, first):
        rewrapper.rewrap("c1", blob)
    assert (rewrapper.kms_calls, rewrapper.data_keys) == (6, 1)


def test_another_tenants_blob_is_refused_not_rewrapped(keys):
    rewrapper = Rewrapper("acme", keys["acme"], keys["new"])
    # beta's own blob (beta's key and context), and one sealed under acme's key with beta's context.
    foreign = [seal(keys["beta"], "beta", [("c1", b"beta's")])[0],
               seal(keys["acme"], "beta", [("c1", b"beta's")])[0]]
    for blob in foreign:
        with pytest.raises(RewrapRefused, match="another tenant") as refused:
            rewrapper.rewrap("c1", blob)
        assert refused.value.exit_code == 9
    # Only the two Decrypts were made: nothing was wrapped under the new key.
    assert (rewrapper.kms_calls, rewrapper.blobs, rewrapper.data_keys) == (2, 0, 0)


def test_a_corrupted_or_misplaced_blob_is_refused(keys):
    [blob] = seal(keys["acme"], "acme", [("c1", b"secret")])
    rewrapper = Rewrapper("acme", keys["acme"], keys["new"])
    tampered = bytearray(blob)
    tampered[-1] ^= 1
    bad_edk = bytearray(blob)
    bad_edk[10] ^= 1
    cases = {"authentication": [bytes(tampered), ("c2", blob)], "header": [b"", b"XXXX" + blob[4:], blob[:10]],
             "KMS will not open": [bytes(bad_edk)]}
    for reason, blobs in cases.items():
        for case in blobs:
            conv, broken = case if isinstance(case, tuple) else ("c1", case)
            with pytest.raises(RewrapRefused, match=reason):
                rewrapper.rewrap(conv, broken)
    assert rewrapper.blobs == 0
    assert opened(keys["new"], "acme", "c1", rewrapper.rewrap("c1", blob)) == b"secret"


def test_a_missing_new_key_is_exit_10(keys):
    gone = KmsKey(keys["new"].kms, keys["new"].key_arn.rsplit("/", 1)[0] + "/00000000-0000-0000-0000-000000000000")
    [blob] = seal(keys["acme"], "acme", [("c1", b"secret")])
    with pytest.raises(KeyUnusable, match="NotFoundException") as refused:
        Rewrapper("acme", keys["acme"], gone).rewrap("c1", blob)
    assert refused.value.exit_code == 10


def test_a_backups_data_key_is_rewrapped_and_its_chunks_open_unchanged(keys):
    """A backup's chunks do not bind its encrypted data key: re-wrapping the
    key (what its index holds) carries the backup without reading a chunk."""
    import io

    from tenantctl.drills import envelope as backup

    context = backup.encryption_context("acme", "b1")
    key = backup.new_data_key(keys["acme"].kms, keys["acme"].key_arn, context)
    stream = b"".join(backup.encrypt_stream(io.BytesIO(b"x" * (backup.CHUNK + 5)), key, context))
    rewrapper = Rewrapper("acme", keys["acme"], keys["new"])
    new_b64 = base64.b64encode(rewrapper.rewrap_edk(base64.b64decode(key.encrypted_b64), context)).decode()
    plaintext = backup.open_data_key(keys["new"].kms, keys["new"].key_arn, new_b64, context)
    assert b"".join(backup.decrypt_stream(io.BytesIO(stream), plaintext, key.nonce_prefix, context, "b1")) == (
        b"x" * (backup.CHUNK + 5))
    with pytest.raises(KeyUnusable):
        backup.open_data_key(keys["acme"].kms, keys["acme"].key_arn, new_b64, context)
    assert rewrapper.kms_calls == 2
    # Another backup's context, or another tenant's: refused.
    with pytest.raises(RewrapRefused, match="another tenant"):
        rewrapper.rewrap_edk(base64.b64decode(key.encrypted_b64), backup.encryption_context("acme", "b2"))
    with pytest.raises(RewrapRefused, match="not its own"):
        rewrapper.rewrap_edk(base64.b64decode(key.encrypted_b64), backup.encryption_context("beta", "b1"))
