"""Envelope encryption of context-store content with the tenant's KMS key.

A data key (KMS GenerateDataKey, AES-256) is generated under the tenant's key
with the KMS encryption context ``{tenant_id, purpose}`` and seals many
messages of that tenant. Each message is sealed with a key derived from it for
its conversation (HKDF-SHA256, info = the encryption context
``{tenant_id, conversation_id}``), by AES-256-GCM with that context and the
header as associated data. So the encryption context binds tenant and
conversation twice over:

* moved to another tenant, a ciphertext fails in KMS (another key, another
  KMS context: the encrypted data key opens only for its tenant) and in AES-GCM;
* moved to another conversation of the same tenant, it fails in AES-GCM (other
  derived key, other associated data).

Why the conversation is not in the KMS context: measured (bench/runtime.py),
a data key per conversation costs one GenerateDataKey per conversation and one
Decrypt per conversation a cold process reads: 50 KMS calls per 1,000 messages
for 20-message conversations, and one per message for one-message context
items. A data key per tenant, bounded as below, costs ~1 per 1,000 in both
directions, with the same cryptographic binding (this is how the AWS
Encryption SDK derives its per-message keys, too).

Data keys are cached within bounds (``DataKeyCache``): a data key seals at most
``max_messages`` messages and is used for at most ``max_age`` seconds; at most
``max_entries`` keys are held (LRU). Opened keys are cached by (tenant, key,
encrypted key) for ``max_age``, so reading costs one KMS Decrypt per data key
per process, not one per message or per conversation.

Why not aws-encryption-sdk: its default suite signs every message (ECDSA
P-384: ~100 bytes more per message and a signature per append), its caching
CMM partitions the cache by encryption context (so a conversation id in the
context means a data key per conversation again), and it is a heavy dependency
for an application library; this module is ~240 lines over `cryptography`.

Blob layout (v2)::

    b"TRE2" | u16 len(edk) | edk | nonce(12) | AES-GCM(ciphertext || tag)
"""

from __future__ import annotations

import json
import os
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tenant_runtime.blocking import may_block
from tenant_runtime.context import TenantContext
from tenant_runtime.errors import DecryptionFailed, TenantRuntimeError

MAGIC = b"TRE2"
_LEN = struct.Struct(">H")
NONCE = 12
PURPOSE = "tenant_runtime/context-store"
MAX_DERIVED = 1_024  # per-conversation keys kept per data key


def encryption_context(tenant_id: str, conversation_id: str) -> dict[str, str]:
    """What a message is bound to (key derivation and AES-GCM associated data)."""
    return {"tenant_id": tenant_id, "conversation_id": conversation_id}


def kms_context(tenant_id: str) -> dict[str, str]:
    """What a data key is bound to in KMS (CloudTrail shows it on every call)."""
    return {"tenant_id": tenant_id, "purpose": PURPOSE}


def _canonical(context: dict[str, str]) -> bytes:
    return json.dumps(context, sort_keys=True, separators=(",", ":")).encode()


def _derive(data_key: bytes, info: bytes) -> bytes:
    """The conversation's key: HKDF-SHA256 of the data key, info = version + canonical context."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=MAGIC + info).derive(data_key)


@dataclass
class _DataKey:
    plaintext: bytes
    encrypted: bytes
    created: float
    uses: int = 0
    # Per-conversation keys derived from this one; they live and die with it.
    derived: dict[bytes, bytes] = field(default_factory=dict, repr=False)

    def derive(self, info: bytes) -> bytes:
        key = self.derived.get(info)
        if key is None:
            key = _derive(self.plaintext, info)
            if len(self.derived) >= MAX_DERIVED:
                self.derived.clear()
            self.derived[info] = key
        return key


class DataKeyCache:
    """Bounded caches of data keys for sealing (age + message bounds) and of
    opened keys for reading (age bound), both LRU within max_entries; each key
    carries its derived per-conversation keys (at most MAX_DERIVED)."""

    def __init__(self, max_age: float = 300.0, max_messages: int = 10_000, max_entries: int = 1_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_age <= 0 or max_messages < 1 or max_entries < 1:
            raise ValueError("max_age, max_messages and max_entries must be positive")
        self.max_age, self.max_messages, self.max_entries, self.clock = max_age, max_messages, max_entries, clock
        self._seal: OrderedDict[tuple, _DataKey] = OrderedDict()
        self._open: OrderedDict[tuple, _DataKey] = OrderedDict()
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

    def put_sealing_key(self, slot: tuple, plaintext: bytes, encrypted: bytes) -> _DataKey:
        with self._lock:
            key = _DataKey(plaintext, encrypted, self.clock(), uses=1)
            self._seal[slot] = key
            self._seal.move_to_end(slot)
            self._bound(self._seal)
            # The writer already knows what its encrypted key opens to.
            self._open[slot + (encrypted,)] = key
            self._bound(self._open)
            return key

    def opened_key(self, slot: tuple, encrypted: bytes) -> _DataKey | None:
        with self._lock:
            key = self._open.get(slot + (encrypted,))
            if key is None or self.clock() - key.created >= self.max_age:
                self._open.pop(slot + (encrypted,), None)
                return None
            self._open.move_to_end(slot + (encrypted,))
            return key

    def put_opened_key(self, slot: tuple, encrypted: bytes, plaintext: bytes) -> _DataKey:
        with self._lock:
            key = _DataKey(plaintext, encrypted, self.clock())
            self._open[slot + (encrypted,)] = key
            self._bound(self._open)
            return key


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
        slot = (key_arn, ctx.tenant_id)
        key = self.cache.take_sealing_key(slot)
        if key is None:
            from botocore.exceptions import BotoCoreError, ClientError

            may_block()
            self._counted()
            try:
                resp = self.kms_for(ctx).generate_data_key(KeyId=key_arn, KeySpec="AES_256",
                                                           EncryptionContext=kms_context(ctx.tenant_id))
            except ClientError as exc:
                raise TenantRuntimeError(f"KMS refused a data key for tenant {ctx.tenant_id!r}: "
                                         f"{exc.response['Error']['Code']}") from None
            except BotoCoreError as exc:
                raise TenantRuntimeError(f"KMS unreachable for tenant {ctx.tenant_id!r}: {exc}") from None
            key = self.cache.put_sealing_key(slot, resp["Plaintext"], resp["CiphertextBlob"])
        info = _canonical(encryption_context(ctx.tenant_id, conversation_id))
        header = MAGIC + _LEN.pack(len(key.encrypted)) + key.encrypted + os.urandom(NONCE)
        return header + AESGCM(key.derive(info)).encrypt(header[-NONCE:], plaintext, header + info)

    def decrypt(self, ctx: TenantContext, conversation_id: str, blob: bytes) -> bytes:
        return self.decrypt_many(ctx, conversation_id, [blob])[0]

    def decrypt_many(self, ctx: TenantContext, conversation_id: str, blobs: list[bytes]) -> list[bytes]:
        """Open several messages of one conversation (one context, keys looked up once each)."""
        info = _canonical(encryption_context(ctx.tenant_id, conversation_id))
        return [self._open_one(ctx, info, blob) for blob in blobs]

    def _open_one(self, ctx: TenantContext, info: bytes, blob: bytes) -> bytes:
        key_arn = ctx.resources.kms_key_arn
        slot = (key_arn, ctx.tenant_id)
        try:
            if blob[:4] != MAGIC:
                raise ValueError("bad header")
            (n,) = _LEN.unpack_from(blob, 4)
            edk = blob[6:6 + n]
            header = blob[:6 + n + NONCE]
            if n == 0 or len(edk) != n or len(header) != 6 + n + NONCE:
                raise ValueError("truncated")
        except (ValueError, struct.error):
            raise DecryptionFailed("not a tenant_runtime ciphertext (bad or truncated header)") from None
        key = self.cache.opened_key(slot, edk)
        if key is None:
            key = self.cache.put_opened_key(slot, edk, self._open_key(ctx, key_arn, edk))
        try:
            return AESGCM(key.derive(info)).decrypt(header[-NONCE:], blob[len(header):], header + info)
        except InvalidTag:
            raise DecryptionFailed("ciphertext failed authentication (tampered with, or sealed for "
                                   "another tenant or conversation)") from None

    def _open_key(self, ctx: TenantContext, key_arn: str, edk: bytes) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        may_block()
        self._counted()
        try:
            return self.kms_for(ctx).decrypt(KeyId=key_arn, CiphertextBlob=edk,
                                             EncryptionContext=kms_context(ctx.tenant_id))["Plaintext"]
        except ClientError as exc:
            raise DecryptionFailed(f"KMS refused the data key ({exc.response['Error']['Code']}): sealed for "
                                   "another tenant, or tampered with") from None
        except BotoCoreError as exc:
            raise TenantRuntimeError(f"KMS unreachable for tenant {ctx.tenant_id!r}: {exc}") from None
