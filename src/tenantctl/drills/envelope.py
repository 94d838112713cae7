"""Streamed envelope encryption with the tenant's KMS key.

KMS GenerateDataKey (encryption context ``{tenant_id, purpose: backup,
backup_id}``) gives a 256-bit data key; the stream is cut into chunks, each
sealed with AES-GCM. Every chunk's nonce is the stream's random 8-byte prefix +
the chunk index, and its associated data binds tenant, backup, index and a
final-chunk flag, so chunks cannot be swapped between backups or tenants,
reordered, or the stream truncated without the decryption failing.

Frame layout: ``MAGIC`` once, then per chunk ``u32 length | ciphertext+tag``.

The backup's manifest is sealed the same way, as a stream of its own, under a
key derived from the backup's data key (HKDF-SHA256, info ``MANIFEST_INFO``)
with its own random nonce prefix: one KMS data key per backup, and neither
stream can pass for the other.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from botocore.exceptions import ClientError
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tenant_runtime.crypto import RETRYABLE
from tenantctl.drills.layout import BACKUP_PURPOSE
from tenantctl.errors import BackupCorrupt, KeyUnusable, TargetUnavailable, TenantctlError

MAGIC = b"TCDRILL1"
CHUNK = 1 << 20  # 1 MiB of plaintext per AES-GCM seal
_LEN = struct.Struct(">I")


def encryption_context(tenant_id: str, backup_id: str, workspace: str | None = None) -> dict[str, str]:
    """A workspace's backups also name the workspace: one can't be opened as the tenant's or another's."""
    context = {"tenant_id": tenant_id, "purpose": BACKUP_PURPOSE, "backup_id": backup_id}
    return {**context, "workspace": workspace} if workspace else context


@dataclass(frozen=True)
class DataKey:
    plaintext: bytes
    encrypted_b64: str
    nonce_prefix: bytes


def _kms_error(exc: ClientError, key_arn: str, action: str) -> TenantctlError:
    code = exc.response["Error"]["Code"]
    message = exc.response["Error"].get("Message", "")
    if code in RETRYABLE:  # throttled past the client's retries, or KMS failing: not the key's fault
        return TargetUnavailable(f"KMS could not {action} with key {key_arn} ({code}): retry later")
    if code == "DisabledException":
        return KeyUnusable(f"KMS key {key_arn} cannot {action}: it is disabled")
    if code == "KMSInvalidStateException":
        return KeyUnusable(f"KMS key {key_arn} cannot {action}: {message or 'key is pending deletion or disabled'} "
                           "(a deprovisioned tenant: `tenantctl drill restore ID --target in-place --yes` "
                           "cancels the key's deletion first)")
    if code in ("InvalidCiphertextException", "IncorrectKeyException", "AccessDeniedException"):
        return KeyUnusable(f"KMS refused to {action} with key {key_arn} ({code}): the backup was not made "
                           "for this tenant, or its data key was tampered with")
    return KeyUnusable(f"KMS {action} with key {key_arn} failed: {code}: {message}")


def new_data_key(kms: Any, key_arn: str, context: dict[str, str]) -> DataKey:
    import os

    try:
        resp = kms.generate_data_key(KeyId=key_arn, KeySpec="AES_256", EncryptionContext=context)
    except ClientError as exc:
        raise _kms_error(exc, key_arn, "generate a data key") from None
    return DataKey(resp["Plaintext"], base64.b64encode(resp["CiphertextBlob"]).decode(), os.urandom(8))


def open_data_key(kms: Any, key_arn: str, encrypted_b64: str, context: dict[str, str]) -> bytes:
    try:
        return kms.decrypt(KeyId=key_arn, CiphertextBlob=base64.b64decode(encrypted_b64),
                           EncryptionContext=context)["Plaintext"]
    except ClientError as exc:
        raise _kms_error(exc, key_arn, "decrypt the backup's data key") from None


MANIFEST_INFO = b"tenantctl/backup-manifest"


def _manifest_key(data_key: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=MANIFEST_INFO).derive(data_key)


def seal_document(key: DataKey, context: dict[str, str], body: bytes) -> tuple[bytes, bytes]:
    """(sealed bytes, nonce prefix) of a small document under the backup's key."""
    import io
    import os

    derived = DataKey(_manifest_key(key.plaintext), key.encrypted_b64, os.urandom(8))
    return b"".join(encrypt_stream(io.BytesIO(body), derived, context)), derived.nonce_prefix


def open_document(data_key: bytes, nonce_prefix: bytes, context: dict[str, str], sealed: bytes, where: str) -> bytes:
    """The document ``seal_document`` sealed; BackupCorrupt when it does not authenticate."""
    import io

    return b"".join(decrypt_stream(io.BytesIO(sealed), _manifest_key(data_key), nonce_prefix, context, where))


def _aad(context: dict[str, str], index: int, final: bool) -> bytes:
    return f"{context['tenant_id']}|{context['backup_id']}|{index}|{int(final)}".encode()


def _nonce(prefix: bytes, index: int) -> bytes:
    return prefix + struct.pack(">I", index)


def encrypt_stream(source: BinaryIO, key: DataKey, context: dict[str, str],
                   on_plain: Callable[[bytes], None] | None = None) -> Iterator[bytes]:
    """Yield the framed ciphertext of ``source``, reading one chunk ahead so the
    last chunk is known (and flagged) without buffering the stream."""
    aes = AESGCM(key.plaintext)
    yield MAGIC
    index = 0
    current = source.read(CHUNK)
    while True:
        following = source.read(CHUNK) if current else b""
        final = not following
        if on_plain is not None:
            on_plain(current)
        sealed = aes.encrypt(_nonce(key.nonce_prefix, index), current, _aad(context, index, final))
        yield _LEN.pack(len(sealed)) + sealed
        if final:
            return
        current, index = following, index + 1


def read_exact(source: BinaryIO, n: int) -> bytes:
    """``n`` bytes of ``source``, fewer only at its end (a read may return fewer before it)."""
    buf = bytearray()
    while len(buf) < n:
        piece = source.read(n - len(buf))
        if not piece:
            break
        buf += piece
    return bytes(buf)


def decrypt_stream(source: BinaryIO, key: bytes, nonce_prefix: bytes, context: dict[str, str],
                   where: str) -> Iterator[bytes]:
    """Yield plaintext chunks; raise BackupCorrupt on any tampering or truncation."""
    aes = AESGCM(key)
    if read_exact(source, len(MAGIC)) != MAGIC:
        raise BackupCorrupt(f"{where}: not a tenantctl backup stream (bad header)")
    index = 0
    while True:
        header = read_exact(source, _LEN.size)
        if len(header) < _LEN.size:
            raise BackupCorrupt(f"{where}: truncated after chunk {index - 1} (no final chunk)")
        (length,) = _LEN.unpack(header)
        if length > CHUNK + 16:
            raise BackupCorrupt(f"{where}: chunk {index} has an impossible length {length}")
        sealed = read_exact(source, length)
        if len(sealed) < length:
            raise BackupCorrupt(f"{where}: chunk {index} is truncated")
        nonce = _nonce(nonce_prefix, index)
        for final in (False, True):
            try:
                plain = aes.decrypt(nonce, sealed, _aad(context, index, final))
                break
            except InvalidTag:
                continue
        else:
            raise BackupCorrupt(f"{where}: chunk {index} failed AES-GCM authentication "
                                "(corrupted, tampered with, or sealed for another tenant/backup)")
        yield plain
        if final:
            if source.read(1):
                raise BackupCorrupt(f"{where}: data after the final chunk")
            return
        index += 1
