"""Envelope encryption of context-store content with the tenant's KMS key.

One data key (KMS GenerateDataKey, AES-256) seals many messages of one
conversation; its encryption context ``{tenant_id, conversation_id}`` is bound
twice: by KMS (the encrypted data key opens only with that context, under that
tenant's key) and by AES-GCM as associated data. A ciphertext moved to another
conversation or tenant therefore fails to decrypt, in KMS or in AES-GCM.

Data keys are cached within bounds: a key seals at most ``max_messages``
messages and lives at most ``max_age`` seconds; at most ``max_entries`` keys are
held (LRU). Opened keys are cached by (key, context, encrypted key), so reading
a conversation costs one KMS Decrypt per data key, not per message.

Why this and not aws-encryption-sdk: measured in bench/runtime.py's notes and
docs/runtime.md — the SDK's default suite signs every message (ECDSA P-384:
~100 bytes more per message and a signature per append) and its caching CMM
gives the same KMS-call bound; this module is ~150 lines over `cryptography`.

Blob layout (v1)::

    b"TRE1" | u16 len(edk) | edk | nonce(12) | AES-GCM(ciphertext || tag)
"""

from __future__ import annotations

import json
import os
import struct
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tenant_runtime.context import TenantContext
from tenant_runtime.errors import DecryptionFailed, TenantRuntimeError

MAGIC = b"TRE1"
_LEN = struct.Struct(">H")
NONCE = 12


def encryption_context(tenant_id: str, conversation_id: str) -> dict[str, str]:
    return {"tenant_id": tenant_id, "conversation_id": conversation_id}


def _aad(context: dict[str, str], header: bytes) -> bytes:
    return header + json.dumps(context, sort_keys=True, separators=(",", ":")).encode()


@dataclass
class _DataKey:
    plaintext: bytes
    encrypted: bytes
    created: float
    uses: int = 0


class DataKeyCache:
    """Bounded caches of data keys for sealing (age + message bounds) and of
    opened keys for reading (age bound), both LRU within max_entries."""

    def __init__(self, max_age: float = 300.0, max_messages: int = 10_000, max_entries: int = 1_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_age, self.max_messages, self.max_entries, self.clock = max_age, max_messages, max_entries, clock
        self._seal: OrderedDict[tuple, _DataKey] = OrderedDict()
        self._open: OrderedDict[tuple, tuple[float, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def _bound(self, table: OrderedDict) -> None:
        while len(table) > self.max_entries:
            table.popitem(last=False)

    def take_sealing_key(self, slot: tuple) -> _DataKey | None:
        """A usable key for ``slot``, its use counted; None when a new one is due."""
        with self._lock:
            key = self._seal.get(slot)
            if key is None or self.clock() - key.created >= self.max_age or key.uses >= self.max_messages:
                self._seal.pop(slot, None)
                return None
            key.uses += 1
            self._seal.move_to_end(slot)
            return key

    def put_sealing_key(self, slot: tuple, plaintext: bytes, encrypted: bytes) -> None:
        with self._lock:
            self._seal[slot] = _DataKey(plaintext, encrypted, self.clock(), uses=1)
            self._seal.move_to_end(slot)
            self._bound(self._seal)
            # The writer already knows what its encrypted key opens to.
            self._open[slot + (encrypted,)] = (self.clock(), plaintext)
            self._bound(self._open)

    def opened_key(self, slot: tuple, encrypted: bytes) -> bytes | None:
        with self._lock:
            entry = self._open.get(slot + (encrypted,))
            if entry is None or self.clock() - entry[0] >= self.max_age:
                self._open.pop(slot + (encrypted,), None)
                return None
            self._open.move_to_end(slot + (encrypted,))
            return entry[1]

    def put_opened_key(self, slot: tuple, encrypted: bytes, plaintext: bytes) -> None:
        with self._lock:
            self._open[slot + (encrypted,)] = (self.clock(), plaintext)
            self._bound(self._open)


class Envelope:
    """Seal/open message content for a tenant context. ``kms_for(ctx)`` returns
    the KMS client to use for that tenant (scoped credentials when configured)."""

    def __init__(self, kms_for: Callable[[TenantContext], Any], cache: DataKeyCache | None = None) -> None:
        self.kms_for = kms_for
        self.cache = cache or DataKeyCache()
        self.kms_calls = 0
        self._count = threading.Lock()

    def _counted(self) -> None:
        with self._count:
            self.kms_calls += 1

    def encrypt(self, ctx: TenantContext, conversation_id: str, plaintext: bytes) -> bytes:
        key_arn = ctx.resources.kms_key_arn
        context = encryption_context(ctx.tenant_id, conversation_id)
        slot = (key_arn, ctx.tenant_id, conversation_id)
        key = self.cache.take_sealing_key(slot)
        if key is None:
            from botocore.exceptions import ClientError

            self._counted()
            try:
                resp = self.kms_for(ctx).generate_data_key(KeyId=key_arn, KeySpec="AES_256", EncryptionContext=context)
            except ClientError as exc:
                raise TenantRuntimeError(f"KMS refused a data key for tenant {ctx.tenant_id!r}: "
                                         f"{exc.response['Error']['Code']}") from None
            self.cache.put_sealing_key(slot, resp["Plaintext"], resp["CiphertextBlob"])
            plain_key, edk = resp["Plaintext"], resp["CiphertextBlob"]
        else:
            plain_key, edk = key.plaintext, key.encrypted
        header = MAGIC + _LEN.pack(len(edk)) + edk + os.urandom(NONCE)
        return header + AESGCM(plain_key).encrypt(header[-NONCE:], plaintext, _aad(context, header))

    def decrypt(self, ctx: TenantContext, conversation_id: str, blob: bytes) -> bytes:
        key_arn = ctx.resources.kms_key_arn
        context = encryption_context(ctx.tenant_id, conversation_id)
        slot = (key_arn, ctx.tenant_id, conversation_id)
        try:
            if blob[:4] != MAGIC:
                raise ValueError("bad header")
            (n,) = _LEN.unpack_from(blob, 4)
            edk = blob[6:6 + n]
            header = blob[:6 + n + NONCE]
            if len(edk) != n or len(header) != 6 + n + NONCE:
                raise ValueError("truncated")
        except (ValueError, struct.error):
            raise DecryptionFailed("not a tenant_runtime ciphertext (bad or truncated header)") from None
        plain_key = self.cache.opened_key(slot, edk)
        if plain_key is None:
            plain_key = self._open_key(ctx, key_arn, edk, context)
            self.cache.put_opened_key(slot, edk, plain_key)
        try:
            return AESGCM(plain_key).decrypt(header[-NONCE:], blob[len(header):], _aad(context, header))
        except InvalidTag:
            raise DecryptionFailed("ciphertext failed authentication (tampered with, or sealed for "
                                   "another tenant or conversation)") from None

    def _open_key(self, ctx: TenantContext, key_arn: str, edk: bytes, context: dict[str, str]) -> bytes:
        from botocore.exceptions import ClientError

        self._counted()
        try:
            return self.kms_for(ctx).decrypt(KeyId=key_arn, CiphertextBlob=edk, EncryptionContext=context)["Plaintext"]
        except ClientError as exc:
            raise DecryptionFailed(f"KMS refused the data key ({exc.response['Error']['Code']}): sealed for "
                                   "another tenant or conversation, or tampered with") from None
