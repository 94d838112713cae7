"""Carrying a tenant's backups to its new KMS key at the end of a move to
another account or region (docs/moves.md, "Backups").

A backup's chunks are sealed with its own data key and bind tenant, backup,
chunk index and the final-chunk flag, not the encrypted data key: so the
dump objects, copied to the new prefix by the move's object passes, stay as
they are. What names the old key is the backup's index (``encrypted_data_key``,
``key_arn``) and its manifest (the same, sealed with the data key). Each is
rewritten in the new prefix: the data key opened under the old key and
wrapped under the new one (``Rewrapper``: one Decrypt + one Encrypt per
backup), the manifest sealed again under a fresh nonce, then the index that
completes the backup. Always read from the old prefix, so a killed run
rewrites the same backups again (finalize runs it before the old prefix and
key go).
"""

from __future__ import annotations

import base64

from tenantctl.drills import envelope, store
from tenantctl.drills.models import BackupManifest, ObjectEntry
from tenantctl.models import TenantRecord
from tenantctl.transfer import prefix_sync
from tenantctl.transfer.rewrap import Rewrapper


def carry(source: prefix_sync.Place, old: TenantRecord, target: prefix_sync.Place, new: TenantRecord,
          rewrapper: Rewrapper) -> list[str]:
    """Each complete backup in ``old``'s prefix (``source``: its bucket and
    client), its index and manifest written to ``new``'s (``target``) under
    ``new``'s key, and the object versions it pins carried (the dump objects
    must be there already: the move's passes copied them); returns the backup
    ids carried. A backup of the first index format (no data key of its own)
    is left out."""
    assert new.resources is not None and old.resources is not None
    old_s3 = source.s3(None)
    was, now = prefix_sync.latest(None, source), prefix_sync.latest(None, target)
    pinned: dict[str, str] = {}  # old version id -> its copy's in the new prefix, across backups
    carried = []
    for index in store.list_backups(old_s3, old):
        if index.format == 1:
            continue
        context = envelope.encryption_context(old.tenant_id, index.backup_id, index.workspace)
        plaintext, edk = rewrapper.open_and_rewrap(base64.b64decode(index.encrypted_data_key), context)
        where = store.backup_dir(old, index.backup_id) + store.MANIFEST
        sealed = old_s3.get_object(Bucket=old.resources.bucket, Key=where)["Body"].read()
        manifest = BackupManifest.model_validate_json(envelope.open_document(
            plaintext, bytes.fromhex(index.manifest_nonce), context, sealed, where))
        edk_b64 = base64.b64encode(edk).decode()
        dump = manifest.dump.model_copy(update={"encrypted_data_key": edk_b64}) if manifest.dump else None
        objects = [_carry_version(source, target, entry, was, now, pinned, new.resources.kms_key_arn)
                   for entry in manifest.objects]
        carried_manifest = manifest.model_copy(update={"key_arn": new.resources.kms_key_arn, "dump": dump,
                                                       "objects": objects})
        nonce = bytes.fromhex(manifest.dump.nonce_prefix) if manifest.dump else b""
        store.put_backup(target.s3(None), new, carried_manifest, envelope.DataKey(plaintext, edk_b64, nonce))
        carried.append(index.backup_id)
    return carried


def _carry_version(source: prefix_sync.Place, target: prefix_sync.Place, entry: ObjectEntry,
                   was: dict[str, str | None], now: dict[str, str | None], pinned: dict[str, str],
                   kms_key_arn: str) -> ObjectEntry:
    """The entry naming its version in the new prefix. The move's passes
    copied each key's current object: a version still current in the old
    prefix is that copy; an older one (changed or deleted since the backup)
    is copied on its own, and then whatever was current in the new prefix is
    made current again (or deleted again), so the tenant's objects stay as
    they are."""
    key = source.prefix + entry.key
    if entry.version_id is None:
        return entry
    if was.get(key) == entry.version_id and now.get(key) is not None:
        return entry.model_copy(update={"version_id": now[key]})
    if entry.version_id not in pinned:
        pinned[entry.version_id] = prefix_sync.copy_version(None, source, target, key, entry.version_id,
                                                            kms_key_arn)
        current, dst = now.get(key), target.s3(None)
        if current is None:
            dst.delete_object(Bucket=target.bucket, Key=key)
        else:
            prefix_sync.copy_version(None, prefix_sync.Place(target.bucket, target.prefix, client=dst), target,
                                     key, current, kms_key_arn)
    return entry.model_copy(update={"version_id": pinned[entry.version_id]})


