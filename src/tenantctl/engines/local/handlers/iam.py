"""IAM roles and their inline policies, found by name."""

from __future__ import annotations

from typing import Any

from tenantctl.engines.local.handlers.base import (
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


class RoleHandler(Handler):
    type = "aws:iam/role:Role"
    replace_on = ("name", "namePrefix", "path")
    read_defaults = {"maxSessionDuration": 3600, "description": ""}
    taken_codes = ("EntityAlreadyExists",)

    def find(self, ctx: Context, d: Desired) -> str | None:
        name = d.physical_name()
        return name if exists(lambda: ctx.client("iam").get_role(RoleName=name)) else None

    def make(self, ctx: Context, d: Desired) -> str:
        name = d.physical_name()
        # The trust policy names the runtime role, perhaps created moments before.
        role = once_principals_exist(lambda: ctx.client("iam").create_role(
            RoleName=name, Path=d.get("path", "/"), AssumeRolePolicyDocument=d.get("assumeRolePolicy"),
            MaxSessionDuration=as_int(d.get("maxSessionDuration", 3600)), Description=d.get("description", ""),
            Tags=d.tag_list()))["Role"]
        d.known.update(Arn=role["Arn"], RoleId=role["RoleId"])
        return name

    def read(self, ctx: Context, rid: str | None, d: Desired) -> dict[str, Any] | None:
        got = read_or_none(lambda: ctx.client("iam").get_role(RoleName=rid or d.physical_name()))
        if got is None:
            return None
        role = got["Role"]
        return {"assumeRolePolicy": role.get("AssumeRolePolicyDocument"), "description": role.get("Description", ""),
                "maxSessionDuration": role.get("MaxSessionDuration"),
                "tags": managed_tags(d, {t["Key"]: t["Value"] for t in role.get("Tags", [])})}

    def configure(self, ctx: Context, rid: str, d: Desired, olds: dict[str, Any] | None) -> dict[str, Any]:
        iam = ctx.client("iam")
        if olds is not None:
            once_principals_exist(lambda: iam.update_assume_role_policy(RoleName=rid,
                                                                        PolicyDocument=d.get("assumeRolePolicy")))
            iam.update_role(RoleName=rid, MaxSessionDuration=as_int(d.get("maxSessionDuration", 3600)),
                            Description=d.get("description", ""))
            if d.tags():
                iam.tag_role(RoleName=rid, Tags=d.tag_list())
        role = d.known if olds is None and d.known else iam.get_role(RoleName=rid)["Role"]
        return {"arn": role["Arn"], "name": rid, "uniqueId": role["RoleId"], "tagsAll": d.tags()}

    def planned_outputs(self, ctx: Context, d: Desired) -> dict[str, Any]:
        # Not ``uniqueId``: IAM gives a role made again a new one.
        name = d.physical_name()
        return {"arn": ctx.arn("iam", f"role{d.get('path', '/')}{name}"), "name": name}

    def remove(self, ctx: Context, rid: str, d: Desired) -> None:
        iam = ctx.client("iam")
        if not exists(lambda: iam.get_role(RoleName=rid)):
            return
        for name in iam.list_role_policies(RoleName=rid)["PolicyNames"]:
            iam.delete_role_policy(RoleName=rid, PolicyName=name)
        for attached in iam.list_attached_role_policies(RoleName=rid)["AttachedPolicies"]:
            iam.detach_role_policy(RoleName=rid, PolicyArn=attached["PolicyArn"])
        ignore_missing(lambda: iam.delete_role(RoleName=rid))


class RolePolicyHandler(Handler):
    """Inline policy: id `<role>:<policy>`; PutRolePolicy is idempotent."""

    type = "aws:iam/rolePolicy:RolePolicy"
    replace_on = ("role", "name", "namePrefix")

    def find(self, ctx: Context, d: Desired) -> str | None:
        return f"{d.get('role')}:{d.physical_name()}"

    make = find

    def read(self, ctx: Context, rid: str | None, d: Desired) -> dict[str, Any] | None:
        role, name = (rid or self.find(ctx, d)).split(":", 1)
        got = read_or_none(lambda: ctx.client("iam").get_role_policy(RoleName=role, PolicyName=name))
        return None if got is None else {"policy": got["PolicyDocument"]}

    def configure(self, ctx: Context, rid: str, d: Desired, olds: dict[str, Any] | None) -> dict[str, Any]:
        role, name = rid.split(":", 1)
        ctx.client("iam").put_role_policy(RoleName=role, PolicyName=name, PolicyDocument=d.get("policy"))
        return {"name": name}

    def remove(self, ctx: Context, rid: str, d: Desired) -> None:
        role, name = rid.split(":", 1)
        ignore_missing(lambda: ctx.client("iam").delete_role_policy(RoleName=role, PolicyName=name))


HANDLERS = (RoleHandler(), RolePolicyHandler())
