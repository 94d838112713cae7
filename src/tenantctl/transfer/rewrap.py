"""Re-wrapping a tenant's sealed content from its KMS key to a new one of
another account or region (a move there: the key is per account and region,
so the target has its own), without a KMS call per blob.

Every blob names its data key by ``edk``, the data key encrypted by KMS under
the tenant key with the context ``{tenant_id, purpose}``; the content is
sealed under keys derived from the plaintext data key. So a data key is
opened once under the old key (KMS Decrypt, in the old account/region) and
wrapped once under the new key (KMS Encrypt, in the new one, same context),
and every blob of that data key is then re-sealed locally with the new
``edk`` in its header (``tenant_runtime.crypto.rewrap_blob``): two KMS calls
per data key, i.e. about two per 1,000 messages, however many rows there are.
A backup's data key (``rewrap_edk``) is carried the same way, but its
chunks do not bind it: the new encrypted key replaces the old in the
backup's index and no chunk is touched.

Refused, not re-wrapped (``RewrapRefused``, nothing of it returned): a blob
KMS will not open under the old key with this tenant's context (another
tenant's, or sealed under another key), one that fails authentication for the
conversation it is stored under, and one that is not a tenant_runtime blob.
Plaintext data keys live in this process only, for the run (bounded LRU).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from tenant_runtime.crypto import FOREIGN, RETRYABLE, UNUSABLE, DataKey, blob_edk, kms_context, rewrap_blob
from tenant_runtime.errors import DecryptionFailed
from tenant_runtime.tables import SEALED_BY_TABLE
from tenantctl.errors import DrillFailed, KeyUnusable, TargetUnavailable, TenantctlError

MAX_KEYS = 100_000  # opened data keys held (32 bytes each, plus their derived keys)


class RewrapRefused(DrillFailed):
    """A blob cannot be carried to the new key: not this tenant's under the old
    key, tampered with, or not a sealed blob (the move's copy fails, exit 9)."""


@dataclass(frozen=True)
class KmsKey:
    """A tenant key and the KMS client of its account and region."""

    kms: Any
    key_arn: str


class Rewrapper:
    """Re-wraps ``tenant_id``'s blobs from ``old`` to ``new``; ``kms_calls``
    counts every KMS call (two per distinct data key). One per thread: its
    cache is not locked (two threads meeting a new data key would each wrap
    it, giving its blobs two new edks -- valid, but twice the KMS calls)."""

    def __init__(self, tenant_id: str, old: KmsKey, new: KmsKey, max_keys: int = MAX_KEYS) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be positive")
        self.tenant_id, self.old, self.new, self.max_keys = tenant_id, old, new, max_keys
        self.kms_calls = 0
        self.blobs = 0
        # old edk -> the data key, its ``encrypted`` being the new edk
        self._keys: OrderedDict[bytes, DataKey] = OrderedDict()

    def rewrap(self, conversation_id: str, blob: bytes) -> bytes:
        """``blob`` (sealed for ``conversation_id``: a row's envelope scope) under the new key."""
        try:
            edk = blob_edk(blob)
            key = self._key(edk)
            out = rewrap_blob(key, key.encrypted, self.tenant_id, conversation_id, blob)
        except DecryptionFailed as exc:
            raise RewrapRefused(f"tenant {self.tenant_id!r}: a blob of {conversation_id!r} is not re-wrapped: "
                                f"{exc}") from None
        self.blobs += 1
        return out

    def rewrap_column(self, table: str, key: tuple, blob: bytes) -> bytes:
        """The sealed column of ``table``'s row ``key`` (its key columns' values,
        in ``tenant_runtime.tables.SEALED`` order) under the new key: the scope
        is the row's, as the runtime sealed it."""
        sealed = SEALED_BY_TABLE.get(table)
        if sealed is None:
            raise ValueError(f"{table!r} has no sealed column")
        return self.rewrap(sealed.scope_of(key), blob)

    def rewrap_many(self, items: Iterable[tuple[str, bytes]]) -> Iterator[bytes]:
        """Each (conversation_id, blob) re-wrapped, in order."""
        for conversation_id, blob in items:
            yield self.rewrap(conversation_id, blob)

    @property
    def data_keys(self) -> int:
        """Distinct data keys held (re-wrapped so far, within ``max_keys``)."""
        return len(self._keys)

    def rewrap_edk(self, edk: bytes, context: dict[str, str]) -> bytes:
        """A data key KMS encrypted under the old key with ``context`` (a
        backup's: its chunks do not bind it), encrypted under the new one."""
        return self._rewrapped(edk, context)[1]

    def open_and_rewrap(self, edk: bytes, context: dict[str, str]) -> tuple[bytes, bytes]:
        """(plaintext, new edk) of a backup's data key: its manifest, sealed with
        it, names the edk too and is sealed again with the new one."""
        return self._rewrapped(edk, context)

    def _rewrapped(self, edk: bytes, context: dict[str, str]) -> tuple[bytes, bytes]:
        """(plaintext, new edk) of ``edk``: Decrypt under the old key, Encrypt under the new."""
        if context.get("tenant_id") != self.tenant_id:
            raise RewrapRefused(f"tenant {self.tenant_id!r}: a data key of context {context} is not its own")
        plaintext = self._call(self.old, "decrypt", CiphertextBlob=edk, EncryptionContext=context)["Plaintext"]
        return plaintext, self._call(self.new, "encrypt", Plaintext=plaintext,
                                     EncryptionContext=context)["CiphertextBlob"]

    def _key(self, edk: bytes) -> DataKey:
        key = self._keys.get(edk)
        if key is not None:
            self._keys.move_to_end(edk)
            return key
        key = self._keys[edk] = DataKey(*self._rewrapped(edk, kms_context(self.tenant_id)), 0.0)
        while len(self._keys) > self.max_keys:
            self._keys.popitem(last=False)
        return key

    def _call(self, key: KmsKey, call: str, **params: Any) -> dict[str, Any]:
        """One KMS call on ``key``, its failure mapped: a data key KMS will not
        open with this tenant's context -> RewrapRefused; an unusable key ->
        KeyUnusable; throttling or an unreachable KMS -> TargetUnavailable."""
        from botocore.exceptions import BotoCoreError, ClientError

        self.kms_calls += 1
        try:
            return getattr(key.kms, call)(KeyId=key.key_arn, **params)
        except ClientError as exc:
            code = exc.response["Error"]["Code"]
            if code in FOREIGN and call == "decrypt":
                raise RewrapRefused(f"tenant {self.tenant_id!r}: KMS will not open a data key under "
                                    f"{key.key_arn} with the tenant's context ({code}): sealed for another "
                                    "tenant or key, or tampered with") from None
            if code in UNUSABLE:
                raise KeyUnusable(f"tenant {self.tenant_id!r}: KMS key {key.key_arn} is unusable ({code})") from None
            if code in RETRYABLE:
                raise TargetUnavailable(f"KMS could not {call} for tenant {self.tenant_id!r} ({code}): "
                                        "retry later") from None
            raise TenantctlError(f"KMS refused to {call} for tenant {self.tenant_id!r} under "
                                 f"{key.key_arn}: {code}") from None
        except BotoCoreError as exc:
            raise TargetUnavailable(f"KMS unreachable for tenant {self.tenant_id!r}: {exc}") from None
