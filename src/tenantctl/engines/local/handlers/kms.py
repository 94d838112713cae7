"""KMS: keys (no names: found by the urn tag, among the keys made since the
create's intent), aliases, and grants (found by their name on their key)."""

from __future__ import annotations

from typing import Any

from tenantctl.engines.local.handlers.base import (
    URN_TAG,
    Context,
    Desired,
    Handler,
    as_int,
    exists,
    ignore_missing,
    managed_tags,
    once_principals_exist,
    read_or_none,
)

# Key states a refresh reads as ``isEnabled: false``: the key exists but cannot be used.
UNUSABLE = ("Disabled", "PendingDeletion", "PendingReplicaDeletion", "Unavailable")


class KeyHandler(Handler):
    type = "aws:kms/key:Key"
    replace_on = ("keyUsage", "customerMasterKeySpec", "keySpec", "multiRegion")
    find_when_recovering = True
    read_defaults = {"isEnabled": True, "enableKeyRotation": False, "description": ""}

    def find(self, ctx: Context, d: Desired) -> str | None:
        kms = ctx.client("kms")
        for page in kms.get_paginator("list_keys").paginate():
            for key in page["Keys"]:
                meta = kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]
                if meta.get("KeyState") == "PendingDeletion" or meta.get("KeyManager") == "AWS":
                    continue
                if d.not_before is not None and meta["CreationDate"] < d.not_before:
                    continue  # older than the create's intent: another incarnation's (a revived tenant's old key)
                tags = kms.list_resource_tags(KeyId=key["KeyId"]).get("Tags", [])
                if {"TagKey": URN_TAG, "TagValue": d.urn_tag} in tags:
                    return key["KeyId"]
        return None

    def make(self, ctx: Context, d: Desired) -> str:
        args: dict[str, Any] = {"Description": d.get("description", ""),
                                "KeyUsage": d.get("keyUsage", "ENCRYPT_DECRYPT"),
                                "Tags": d.tag_list(with_urn=True, key="TagKey", value="TagValue")}
        if d.get("policy"):
            args["Policy"] = d.get("policy")
        # The policy names the tenant role, created moments before.
        meta = once_principals_exist(lambda: ctx.client("kms").create_key(**args))["KeyMetadata"]
        d.known.update(Arn=meta["Arn"], KeyId=meta["KeyId"])
        return meta["KeyId"]

    def read(self, ctx: Context, rid: str | None, d: Desired) -> dict[str, Any] | None:
        kms = ctx.client("kms")
        described = rid and read_or_none(lambda: kms.describe_key(KeyId=rid))
        if not described:
            return None
        meta = described["KeyMetadata"]
        tags = {t["TagKey"]: t["TagValue"] for t in kms.list_resource_tags(KeyId=rid).get("Tags", [])}
        return {"isEnabled": meta.get("KeyState") not in UNUSABLE, "description": meta.get("Description", ""),
                "enableKeyRotation": kms.get_key_rotation_status(KeyId=rid)["KeyRotationEnabled"],
                "policy": kms.get_key_policy(KeyId=rid, PolicyName="default")["Policy"],
                "tags": managed_tags(d, tags)}

    def configure(self, ctx: Context, rid: str, d: Desired, olds: dict[str, Any] | None) -> dict[str, Any]:
        kms = ctx.client("kms")
        if olds is not None and d.get("isEnabled", True):
            # A key disabled or scheduled for deletion out of band is the tenant's
            # data key: bring it back rather than replace it (its data would be lost).
            state = kms.describe_key(KeyId=rid)["KeyMetadata"].get("KeyState")
            if state == "PendingDeletion":
                kms.cancel_key_deletion(KeyId=rid)  # leaves it Disabled
            if state in ("PendingDeletion", "Disabled"):
                kms.enable_key(KeyId=rid)
        if d.get("enableKeyRotation"):
            kms.enable_key_rotation(KeyId=rid)
        else:
            kms.disable_key_rotation(KeyId=rid)
        if olds is not None:  # create already set these
            if d.get("policy"):
                policy = d.get("policy")
                once_principals_exist(lambda: kms.put_key_policy(KeyId=rid, PolicyName="default", Policy=policy))
            kms.update_key_description(KeyId=rid, Description=d.get("description", ""))
            kms.tag_resource(KeyId=rid, Tags=d.tag_list(with_urn=True, key="TagKey", value="TagValue"))
        meta = d.known if olds is None and d.known else kms.describe_key(KeyId=rid)["KeyMetadata"]
        return {"arn": meta["Arn"], "keyId": meta["KeyId"], "tagsAll": d.tags()}

    def remove(self, ctx: Context, rid: str, d: Desired) -> None:
        # Scheduled, never deleted at once: the waiting period is the undo window.
        ignore_missing(lambda: ctx.client("kms").schedule_key_deletion(
            KeyId=rid, PendingWindowInDays=as_int(d.get("deletionWindowInDays", 30))), "KMSInvalidStateException")


class AliasHandler(Handler):
    type = "aws:kms/alias:Alias"
    replace_on = ("name",)
    taken_codes = ("AlreadyExistsException",)

    def find(self, ctx: Context, d: Desired) -> str | None:
        # DescribeKey resolves the alias itself: one call, not a listing of every
        # alias in the account (which grew each tenant's create with the fleet).
        name = d.physical_name()
        return name if exists(lambda: ctx.client("kms").describe_key(KeyId=name)) else None

    def make(self, ctx: Context, d: Desired) -> str:
        name = d.physical_name()
        ctx.client("kms").create_alias(AliasName=name, TargetKeyId=d.get("targetKeyId"))
        return name

    def read(self, ctx: Context, rid: str | None, d: Desired) -> dict[str, Any] | None:
        name, target = rid or d.physical_name(), str(d.get("targetKeyId", ""))
        kms = ctx.client("kms")
        key_id = target.rsplit("/", 1)[-1]
        # The recorded key's aliases first (one call); the whole list only when it moved elsewhere.
        first = key_id and read_or_none(lambda: kms.list_aliases(KeyId=key_id))
        alias = next((a for a in (first or {}).get("Aliases", []) if a["AliasName"] == name), None)
        if alias is None:
            alias = next((a for page in kms.get_paginator("list_aliases").paginate()
                          for a in page["Aliases"] if a["AliasName"] == name), None)
        if alias is None:
            return None
        live = alias.get("TargetKeyId", "")
        return {"targetKeyId": target if live and target.endswith(live) else live}

    def configure(self, ctx: Context, rid: str, d: Desired, olds: dict[str, Any] | None) -> dict[str, Any]:
        target = d.get("targetKeyId")
        if olds is not None:
            ctx.client("kms").update_alias(AliasName=rid, TargetKeyId=target)
        return self.planned_outputs(ctx, d, rid)

    def planned_outputs(self, ctx: Context, d: Desired, rid: str | None = None) -> dict[str, Any]:
        # Both from the inputs: the ARN is the alias's name, the key's ARN the one it is given.
        return {"arn": ctx.arn("kms", rid or d.physical_name()),
                "targetKeyArn": d.get("targetKeyId")}

    def remove(self, ctx: Context, rid: str, d: Desired) -> None:
        ignore_missing(lambda: ctx.client("kms").delete_alias(AliasName=rid))


_CONSTRAINTS = {"encryptionContextSubset": "EncryptionContextSubset",
                "encryptionContextEquals": "EncryptionContextEquals"}


def grant_constraints(constraints: list[dict[str, Any]] | None) -> dict[str, Any]:
    """A Grant resource's ``constraints`` input as KMS's API spells them (``Constraints``)."""
    return {_CONSTRAINTS[k]: v for c in constraints or [] for k, v in c.items() if k in _CONSTRAINTS}


class GrantHandler(Handler):
    """A grant on a key (id ``<key id>:<grant id>``, as Pulumi's); immutable, so
    any change replaces it. Named after its resource so a re-run finds it."""

    type = "aws:kms/grant:Grant"
    replace_on = ("keyId", "granteePrincipal", "operations", "constraints", "name", "retiringPrincipal")
    # Found by listing the key's grants: only worth it after a crash (the intent
    # says when), as for a tag scan.
    find_when_recovering = True

    def find(self, ctx: Context, d: Desired) -> str | None:
        kms, name = ctx.client("kms"), d.physical_name()
        for page in kms.get_paginator("list_grants").paginate(KeyId=d.get("keyId")):
            for grant in page["Grants"]:
                if grant.get("Name") == name:
                    return f"{grant['KeyId']}:{grant['GrantId']}"
        return None

    def make(self, ctx: Context, d: Desired) -> str:
        args: dict[str, Any] = {"KeyId": d.get("keyId"), "GranteePrincipal": d.get("granteePrincipal"),
                                "Operations": list(d.get("operations")), "Name": d.physical_name()}
        constraints = grant_constraints(d.get("constraints"))
        if constraints:
            args["Constraints"] = constraints
        if d.get("retiringPrincipal"):
            args["RetiringPrincipal"] = d.get("retiringPrincipal")
        kms = ctx.client("kms")
        grant_id = kms.create_grant(**args)["GrantId"]
        key = str(d.get("keyId"))
        if ":key/" in key:  # a key ARN names its id
            return f"{key.rsplit('/', 1)[-1]}:{grant_id}"
        return f"{kms.describe_key(KeyId=key)['KeyMetadata']['KeyId']}:{grant_id}"

    def configure(self, ctx: Context, rid: str, d: Desired, olds: dict[str, Any] | None) -> dict[str, Any]:
        return {"grantId": rid.split(":", 1)[1]}

    def remove(self, ctx: Context, rid: str, d: Desired) -> None:
        key_id, grant_id = rid.split(":", 1)
        ignore_missing(lambda: ctx.client("kms").revoke_grant(KeyId=key_id, GrantId=grant_id),
                       "KMSInvalidStateException")  # the key is already pending deletion


HANDLERS = (KeyHandler(), AliasHandler(), GrantHandler())
