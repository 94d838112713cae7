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
  derived key, other associated data);
* a workspace context seals under the workspace's own key with ``tenant_id``
  set to its key ``<id>/<ws>`` in both contexts, so moved to its tenant or a
  sibling workspace a ciphertext fails the same two ways.

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

The whole header, ``edk`` included, is AES-GCM associated data. So moving a
blob to another KMS key (a move to another account or region) cannot just
swap ``edk`` for the data key wrapped under the new key: ``rewrap_blob``
opens the content with the (unchanged) data key and seals it again with the
new header and a fresh nonce. That is local AES work; KMS is asked once per
data key (tenantctl's ``rewrap``), not once per blob.
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
from functools import lru_cache
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tenant_runtime.blocking import may_block
from tenant_runtime.context import TenantContext, verified
from tenant_runtime.errors import DecryptionFailed, KeyUnusable, KmsUnavailable, TenantRuntimeError

MAGIC = b"TRE2"
_LEN = struct.Struct(">H")
NONCE = 12
PURPOSE = "tenant_runtime/context-store"
MAX_DERIVED = 1_024  # per-conversation keys kept per data key
# KMS error codes, by what they mean for the caller.
UNUSABLE = frozenset({"DisabledException", "KMSInvalidStateException", "NotFoundException"})
RETRYABLE = frozenset({"ThrottlingException", "KMSInternalException", "DependencyTimeoutException",
                       "KeyUnavailableException"})
# The ciphertext is not this tenant's under this key and context (moto answers a
# foreign key with AccessDeniedException where KMS says IncorrectKeyException).
FOREIGN = frozenset({"InvalidCiphertextException", "IncorrectKeyException", "AccessDeniedException"})


def encryption_context(tenant_id: str, conversation_id: str) -> dict[str, str]:
    """What a message is bound to (key derivation and AES-GCM associated data)."""
    return {"tenant_id": tenant_id, "conversation_id": conversation_id}


def kms_context(tenant_id: str) -> dict[str, str]:
    """What a data key is bound to in KMS (CloudTrail shows it on every call)."""
    return {"tenant_id": tenant_id, "purpose": PURPOSE}


def _canonical(context: dict[str, str]) -> bytes:
    return json.dumps(context, sort_keys=True, separators=(",", ":")).encode()


@lru_cache(maxsize=MAX_DERIVED)
def _info(tenant_id: str, conversation_id: str) -> bytes:
    """The canonical encryption context of a conversation (derivation info and associated data)."""
    return _canonical(encryption_context(tenant_id, conversation_id))


def _derive(data_key: bytes, info: bytes) -> bytes:
    """The conversation's key: HKDF-SHA256 of the data key, info = version + canonical context."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=MAGIC + info).derive(data_key)


@dataclass
class DataKey:
    """An opened data key: its plaintext, its KMS-encrypted form (``edk``)."""

    plaintext: bytes
    encrypted: bytes
    created: float
    uses: int = 0
    # Per-conversation keys derived from this one, ready to use; they live and die with it.
    derived: dict[bytes, AESGCM] = field(default_factory=dict, repr=False)
    # What every blob sealed with it starts with (magic, edk length, edk): made once, not per message.
    header: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.header = _header_prefix(self.encrypted)

    def aead(self, info: bytes) -> AESGCM:
        key = self.derived.get(info)
        if key is None:
            key = AESGCM(_derive(self.plaintext, info))
            if len(self.derived) >= MAX_DERIVED:
                self.derived.clear()
            self.derived[info] = key
        return key


class DataKeyCache:
    """Bounded caches of data keys for sealing (age + message bounds) and of
    opened keys for reading (age bound), both LRU within max_entries; each key
    carries its derived per-conversation keys (at most MAX_DERIVED).

    ``recheck_after``: how long the tenant key's state (DescribeKey: Enabled)
    is trusted. A key disabled or scheduled for deletion is no longer used by
    this process, cached data keys included, ``recheck_after`` seconds after
    its last check at the latest."""

    def __init__(self, max_age: float = 300.0, max_messages: int = 10_000, max_entries: int = 1_000,
                 clock: Callable[[], float] = time.monotonic, recheck_after: float = 60.0) -> None:
        if max_age <= 0 or max_messages < 1 or max_entries < 1 or recheck_after <= 0:
            raise ValueError("max_age, max_messages, max_entries and recheck_after must be positive")
        self.max_age, self.max_messages, self.max_entries, self.clock = max_age, max_messages, max_entries, clock
        self.recheck_after = recheck_after
        self._seal: OrderedDict[tuple, DataKey] = OrderedDict()
        self._open: OrderedDict[tuple, DataKey] = OrderedDict()
        self._checked: OrderedDict[str, float] = OrderedDict()  # KMS key ARN -> when its state was Enabled
        self._lock = threading.Lock()

    def key_checked(self, key_arn: str) -> bool:
        """True while the KMS key's last check is fresher than ``recheck_after``."""
        with self._lock:
            return self._fresh_check(key_arn, self.clock())

    def _fresh_check(self, key_arn: str, now: float) -> bool:
        when = self._checked.get(key_arn)
        return when is not None and now - when < self.recheck_after

    def mark_checked(self, key_arn: str) -> None:
        with self._lock:
            self._checked[key_arn] = self.clock()
            self._checked.move_to_end(key_arn)
            self._bound(self._checked)

    def forget_key(self, key_arn: str) -> None:
        """Drop every data key made under the KMS key ``key_arn`` (it became unusable)."""
        with self._lock:
            self._checked.pop(key_arn, None)
            for table in (self._seal, self._open):
                for slot in [s for s in table if s[0] == key_arn]:
                    del table[slot]

    def _bound(self, table: OrderedDict) -> None:
        while len(table) > self.max_entries:
            table.popitem(last=False)

    def take_sealing_key(self, slot: tuple) -> DataKey | None:
        """A usable key for ``slot``, its use counted; None when a new one is due."""
        return self.checked_sealing_key(slot)[1]

    def checked_sealing_key(self, slot: tuple) -> tuple[bool, DataKey | None]:
        """(``key_checked(slot[0])``, a usable key for ``slot``, its use counted, or
        None when a new one is due) under one lock: what every seal asks, one
        acquisition, one clock reading and one call."""
        with self._lock:
            now = self.clock()
            key = self._seal.get(slot)
            if key is None or now - key.created >= self.max_age or key.uses >= self.max_messages:
                self._seal.pop(slot, None)
                key = None
            else:
                key.uses += 1
                self._seal.move_to_end(slot)
            return self._fresh_check(slot[0], now), key

    def put_sealing_key(self, slot: tuple, plaintext: bytes, encrypted: bytes) -> DataKey:
        with self._lock:
            key = DataKey(plaintext, encrypted, self.clock(), uses=1)
            self._seal[slot] = key
            self._seal.move_to_end(slot)
            self._bound(self._seal)
            # The writer already knows what its encrypted key opens to.
            self._open[slot + (encrypted,)] = key
            self._bound(self._open)
            return key

    def opened_key(self, slot: tuple, encrypted: bytes) -> DataKey | None:
        with self._lock:
            key = self._open.get(slot + (encrypted,))
            if key is None or self.clock() - key.created >= self.max_age:
                self._open.pop(slot + (encrypted,), None)
                return None
            self._open.move_to_end(slot + (encrypted,))
            return key

    def put_opened_key(self, slot: tuple, encrypted: bytes, plaintext: bytes) -> DataKey:
        with self._lock:
            key = DataKey(plaintext, encrypted, self.clock())
            self._open[slot + (encrypted,)] = key
            self._bound(self._open)
            return key


class Envelope:
    """Seal/open message content for a tenant context. ``kms_for(ctx)`` returns
    the KMS client to use for that tenant (scoped credentials when configured).

    ``seal`` / ``open`` name the tenant key explicitly, for operator tools that
    re-key stored data (tenantctl's restore after deprovision); requests go
    through ``encrypt`` / ``decrypt``, which take a resolved context only."""

    def __init__(self, kms_for: Callable[[TenantContext], Any], cache: DataKeyCache | None = None) -> None:
        self.kms_for = kms_for
        self.cache = cache or DataKeyCache()
        self.kms_calls = 0  # every KMS call, key-state checks included
        self.key_checks = 0  # of which DescribeKey (the key-state check)
        self._count = threading.Lock()

    def _counted(self, check: bool = False) -> None:
        with self._count:
            self.kms_calls += 1
            self.key_checks += check

    def encrypt(self, ctx: TenantContext, conversation_id: str, plaintext: bytes) -> bytes:
        return self.seal_for(verified(ctx), conversation_id, plaintext)

    def seal_for(self, ctx: TenantContext, conversation_id: str, plaintext: bytes) -> bytes:
        """``encrypt`` for a context its caller has just passed through ``verified``
        (the store's sync append: one check per operation, not one per step)."""
        tenant_id, key_arn = ctx.key, ctx.resources.kms_key_arn
        checked, key = self.cache.checked_sealing_key((key_arn, tenant_id))
        if not checked or key is None:  # KMS is needed: only then a client (and a closure to make it)
            key = self._sealing_key(lambda: self.kms_for(ctx), tenant_id, key_arn, checked, key)
        return _seal_content(key, key.header, _info(tenant_id, conversation_id), plaintext)

    def decrypt(self, ctx: TenantContext, conversation_id: str, blob: bytes) -> bytes:
        return self.decrypt_many(ctx, conversation_id, [blob])[0]

    def decrypt_many(self, ctx: TenantContext, conversation_id: str, blobs: list[bytes]) -> list[bytes]:
        """Open several messages of one conversation (one context, keys looked up once each)."""
        ctx = verified(ctx)
        return self.open(lambda: self.kms_for(ctx), ctx.key, ctx.resources.kms_key_arn, conversation_id,
                         blobs)

    def _kms(self, kms: Callable[[], Any], tenant_id: str, key_arn: str, action: str, call: str,
             **params: Any) -> dict[str, Any]:
        """One KMS call for the tenant key, its failure mapped: throttling or an
        unreachable KMS -> KmsUnavailable (503, retry); a disabled, pending-deletion
        or missing key -> KeyUnusable (its cached data keys dropped); a ciphertext
        KMS will not open under this key and context -> DecryptionFailed."""
        from botocore.exceptions import BotoCoreError, ClientError

        may_block()
        self._counted(check=call == "describe_key")
        try:
            return getattr(kms(), call)(KeyId=key_arn, **params)
        except ClientError as exc:
            code = exc.response["Error"]["Code"]
            if code in UNUSABLE:
                self.cache.forget_key(key_arn)
                raise KeyUnusable(tenant_id, key_arn, f"{code}: {exc.response['Error'].get('Message', '')}") from None
            if code in RETRYABLE:
                raise KmsUnavailable(f"KMS could not {action} for tenant {tenant_id!r} ({code}): retry later") from None
            if code in FOREIGN and call == "decrypt":
                raise DecryptionFailed(f"KMS refused the data key ({code}): sealed for another tenant, or "
                                       "tampered with") from None
            raise TenantRuntimeError(f"KMS refused to {action} for tenant {tenant_id!r}: {code}") from None
        except BotoCoreError as exc:
            raise KmsUnavailable(f"KMS unreachable for tenant {tenant_id!r}: {exc}") from None

    def _require_enabled(self, kms: Callable[[], Any], tenant_id: str, key_arn: str) -> None:
        """The tenant key is Enabled, as checked within the cache's ``recheck_after``;
        else its cached data keys are dropped and KeyUnusable is raised."""
        if self.cache.key_checked(key_arn):
            return
        meta = self._kms(kms, tenant_id, key_arn, "describe the key", "describe_key")["KeyMetadata"]
        state = meta.get("KeyState", "Unknown")
        if state != "Enabled":
            self.cache.forget_key(key_arn)
            when = meta.get("DeletionDate")
            raise KeyUnusable(tenant_id, key_arn, state + (f", deleted on {when:%Y-%m-%d}" if when else ""))
        self.cache.mark_checked(key_arn)

    def seal(self, kms: Callable[[], Any], tenant_id: str, key_arn: str, conversation_id: str,
             plaintext: bytes) -> bytes:
        """Seal under ``tenant_id``'s key ``key_arn``; ``kms()`` gives the client (called only when needed).
        The control side's (no context, so no context checks): applications use ``encrypt``."""
        checked, key = self.cache.checked_sealing_key((key_arn, tenant_id))
        key = self._sealing_key(kms, tenant_id, key_arn, checked, key)
        return _seal_content(key, key.header, _info(tenant_id, conversation_id), plaintext)

    def _sealing_key(self, kms: Callable[[], Any], tenant_id: str, key_arn: str, checked: bool,
                     key: DataKey | None) -> DataKey:
        """The data key to seal with, from what ``checked_sealing_key`` gave: the tenant
        key's state checked when due, a data key generated when none was usable."""
        if not checked:  # the key's state first (KeyUnusable drops the key just taken with the rest)
            self._require_enabled(kms, tenant_id, key_arn)
        if key is None:
            resp = self._kms(kms, tenant_id, key_arn, "generate a data key", "generate_data_key",
                             KeySpec="AES_256", EncryptionContext=kms_context(tenant_id))
            key = self.cache.put_sealing_key((key_arn, tenant_id), resp["Plaintext"], resp["CiphertextBlob"])
        return key

    def open(self, kms: Callable[[], Any], tenant_id: str, key_arn: str, conversation_id: str,
             blobs: list[bytes]) -> list[bytes]:
        """Open blobs of one conversation sealed under ``tenant_id``'s key ``key_arn``.
        The control side's (no context, so no context checks): applications use ``decrypt``."""
        self._require_enabled(kms, tenant_id, key_arn)
        info = _info(tenant_id, conversation_id)
        return [self._open_one(kms, tenant_id, key_arn, info, blob) for blob in blobs]

    def _open_one(self, kms: Callable[[], Any], tenant_id: str, key_arn: str, info: bytes, blob: bytes) -> bytes:
        slot = (key_arn, tenant_id)
        size = _header_length(blob)
        edk = blob[6:size - NONCE]
        key = self.cache.opened_key(slot, edk)
        if key is None:
            key = self.cache.put_opened_key(slot, edk, self._open_key(kms, tenant_id, key_arn, edk))
        return _open_content(key, info, blob, size)

    def _open_key(self, kms: Callable[[], Any], tenant_id: str, key_arn: str, edk: bytes) -> bytes:
        return self._kms(kms, tenant_id, key_arn, "decrypt a data key", "decrypt", CiphertextBlob=edk,
                         EncryptionContext=kms_context(tenant_id))["Plaintext"]


def _header_length(blob: bytes) -> int:
    """Length of a v2 blob's header (magic, edk length, edk, nonce); DecryptionFailed when it has none."""
    try:
        if blob[:4] != MAGIC:
            raise ValueError("bad header")
        (n,) = _LEN.unpack_from(blob, 4)
        if n == 0 or len(blob) < 6 + n + NONCE:
            raise ValueError("truncated")
    except (ValueError, struct.error):
        raise DecryptionFailed("not a tenant_runtime ciphertext (bad or truncated header)") from None
    return 6 + n + NONCE


def blob_edk(blob: bytes) -> bytes:
    """The encrypted data key a blob names (the KMS ciphertext of its data key)."""
    return blob[6:_header_length(blob) - NONCE]


def _open_content(key: DataKey, info: bytes, blob: bytes, size: int) -> bytes:
    """The content of ``blob``, whose header is ``size`` bytes long (``_header_length``)."""
    header = blob[:size]
    try:
        return key.aead(info).decrypt(header[-NONCE:], blob[size:], header + info)
    except InvalidTag:
        raise DecryptionFailed("ciphertext failed authentication (tampered with, or sealed for "
                               "another tenant or conversation)") from None


def _header_prefix(edk: bytes) -> bytes:
    """A blob's header up to its nonce (magic, edk length, edk)."""
    return MAGIC + _LEN.pack(len(edk)) + edk


def _seal_content(key: DataKey, prefix: bytes, info: bytes, plaintext: bytes) -> bytes:
    """``plaintext`` sealed with ``key``'s key for ``info``, under a header of ``prefix`` and a fresh nonce."""
    nonce = os.urandom(NONCE)
    header = prefix + nonce
    aead = key.derived.get(info) or key.aead(info)  # a dictionary hit, usually: no method call
    return header + aead.encrypt(nonce, plaintext, header + info)


def rewrap_blob(key: DataKey, new_edk: bytes, tenant_id: str, conversation_id: str, blob: bytes) -> bytes:
    """``blob`` (sealed with ``key`` for ``tenant_id``'s ``conversation_id``) with
    ``new_edk`` -- the same data key wrapped under another KMS key -- in its
    header. The content is authenticated first (a tampered blob, or one of
    another tenant or conversation, raises DecryptionFailed) and sealed again
    under a fresh nonce: the old blob may outlive the move (rollback window),
    and one nonce under one derived key with two associated data would give
    the GHASH key away."""
    if not new_edk or len(new_edk) > 0xFFFF:
        raise ValueError("an encrypted data key is 1..65535 bytes")
    info = _info(tenant_id, conversation_id)
    return _seal_content(key, _header_prefix(new_edk), info, _open_content(key, info, blob, _header_length(blob)))
