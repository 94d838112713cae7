"""Every model that crosses a boundary on the provisioning side.

TenantSpec is the desired state (stacks/Pulumi.<id>.yaml, CLI flags); registry
models come from tenant_runtime so both sides share one definition.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tenant_runtime.models import (
    Hibernation,
    StoreConnection,
    TenantLock,
    TenantRecord,
    TenantResources,
    TenantStatus,
    Tier,
    utcnow,
)
from tenantctl import naming

__all__ = [
    "BackupSpec", "DedicatedSpec", "Hibernation", "LifecycleSpec", "PlatformSpec", "QueueSpec",
    "StoreConnection", "TenantLock", "TenantRecord", "TenantResources", "TenantSpec",
    "TenantStatus", "Tier", "describe_validation_error", "utcnow",
]

_STRICT = ConfigDict(extra="forbid", frozen=True)

TagValue = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[\w .:/=+\-@]*$")]
# A principal of its own (role or user), never an account (root ARN, bare id) or '*'.
_PRINCIPAL = re.compile(r"arn:aws[\w-]*:iam::\d{12}:(role|user)/[\w+=,.@/-]+")
_SERVICE = re.compile(r"[a-z0-9.-]+\.amazonaws\.com")


class LifecycleSpec(BaseModel):
    """Lifecycle of objects under the tenant prefix."""

    model_config = _STRICT

    temp_upload_days: int = Field(7, ge=1, le=365, description="uploads/tmp/ objects expire after N days")
    archive_transition_days: int = Field(30, ge=1, le=3650, description="archive/ moves to Glacier after N days")
    archive_expiry_days: int = Field(365, ge=2, le=36500, description="archive/ expires after N days")
    abort_multipart_days: int = Field(1, ge=1, le=30, description="incomplete multipart uploads aborted after N days")

    @model_validator(mode="after")
    def _expiry_after_transition(self) -> LifecycleSpec:
        if self.archive_expiry_days <= self.archive_transition_days:
            raise ValueError("archive_expiry_days must be greater than archive_transition_days")
        return self


class QueueSpec(BaseModel):
    model_config = _STRICT

    delay_seconds: int = Field(0, ge=0, le=900, description="default delivery delay (SQS allows 0..900)")
    max_receive_count: int = Field(5, ge=1, le=1000, description="receives before a message moves to the DLQ")
    retention_seconds: int = Field(345600, ge=60, le=1209600)


class BackupSpec(BaseModel):
    model_config = _STRICT

    retention_days: int = Field(14, ge=1, le=35, description="days backups (and RDS snapshots) are kept")


class DedicatedSpec(BaseModel):
    model_config = _STRICT

    vpc_cidr: str = "10.42.0.0/16"
    instance_class: str = Field("db.t4g.micro", pattern=r"^db\.[a-z0-9]+\.[a-z0-9]+$")
    storage_gb: int = Field(20, ge=20, le=65536)
    # Multi-AZ as the shared database is: a dedicated tenant does not get a less
    # available store than a pooled one unless it asks (`--single-az`).
    multi_az: bool = True
    deletion_protection: bool = True

    @field_validator("vpc_cidr")
    @classmethod
    def _cidr(cls, v: str) -> str:
        net = ipaddress.ip_network(v, strict=True)
        if not net.is_private or net.version != 4 or not 16 <= net.prefixlen <= 24:
            raise ValueError("vpc_cidr must be a private IPv4 network between /16 and /24")
        return str(net)


class TenantSpec(BaseModel):
    """Desired state of one tenant."""

    model_config = _STRICT

    id: str = Field(description="tenant id: it names every resource of the tenant")
    tier: Tier = Tier.pooled
    region: str = Field("us-east-1", pattern=r"^[a-z]{2}(-gov)?-[a-z]+-\d$")
    owner: TagValue = "unknown"
    cost_centre: TagValue | None = None
    lifecycle: LifecycleSpec = LifecycleSpec()
    queue: QueueSpec = QueueSpec()
    backup: BackupSpec = BackupSpec()
    dedicated: DedicatedSpec | None = None
    # Suspended (`tenantctl suspend`): the registry says so (the runtime refuses
    # the tenant) and the role's trust policy denies every AssumeRole, so no
    # role session is renewed. Written to the stack file only when true.
    suspended: bool = False

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        rule = naming.broken_rule(v)
        if rule is not None:
            raise ValueError(f"tenant id {v!r} breaks the {rule.name} rule: {rule.explain}")
        return v

    @model_validator(mode="after")
    def _tier_options(self) -> TenantSpec:
        if self.tier is Tier.pooled and self.dedicated is not None:
            raise ValueError("dedicated options (vpc_cidr, instance class, storage, multi-AZ) need tier=dedicated")
        if self.tier is Tier.dedicated and self.dedicated is None:
            object.__setattr__(self, "dedicated", DedicatedSpec())
        return self

    def tags(self) -> dict[str, str]:
        tags = {"tenant": self.id, "tier": self.tier.value, "owner": self.owner, "managed-by": "tenantctl"}
        if self.cost_centre:
            tags["cost-centre"] = self.cost_centre
        return tags

    def desired(self) -> dict:
        """The spec as the stack file holds it: every option, defaults included,
        except ``suspended`` while false (files written before it existed stay as they were)."""
        return self.model_dump(mode="json", exclude_none=True, exclude=set() if self.suspended else {"suspended"})

    def content_hash(self) -> str:
        """Stable hash of the desired state (used to skip unchanged tenants)."""
        body = json.dumps(self.model_dump(mode="json", exclude=set() if self.suspended else {"suspended"}),
                          sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()


class PlatformSpec(BaseModel):
    """What tenants share: one per account/region."""

    model_config = _STRICT

    region: str = Field("us-east-1", pattern=r"^[a-z]{2}(-gov)?-[a-z]+-\d$")
    owner: TagValue = "platform"
    vpc_cidr: str = "10.0.0.0/16"
    az_count: int = Field(2, ge=2, le=6)
    db_instance_class: str = Field("db.t4g.medium", pattern=r"^db\.[a-z0-9]+\.[a-z0-9]+$")
    db_storage_gb: int = Field(50, ge=20, le=65536)
    db_multi_az: bool = Field(True, description="the shared database in two AZs: every pooled tenant depends on it "
                                                "(false is refused by the policy gate)")
    admin_role_arn: str | None = Field(None, description="role allowed to administer every tenant key")
    runtime_principal_arn: str | None = Field(
        None, description="an existing role (or user) the tenant runtime runs as: the only principal tenant roles "
                          "trust; default: the platform creates the role tenantctl-runtime")
    runtime_trusted: list[str] = Field(
        default_factory=lambda: ["ecs-tasks.amazonaws.com"], min_length=1,
        description="who may run as the created runtime role: service principals (*.amazonaws.com) or role/user ARNs")

    @field_validator("runtime_principal_arn")
    @classmethod
    def _runtime_principal(cls, v: str | None) -> str | None:
        if v is not None and not _PRINCIPAL.fullmatch(v):
            raise ValueError("runtime_principal_arn must name the runtime's own IAM role or user "
                             "(arn:aws:iam::<account>:role/...), never an account root, an account id or '*': "
                             "tenant roles trust exactly this principal")
        return v

    @field_validator("runtime_trusted")
    @classmethod
    def _trusted(cls, v: list[str]) -> list[str]:
        bad = [p for p in v if not (_SERVICE.fullmatch(p) or _PRINCIPAL.fullmatch(p))]
        if bad:
            raise ValueError(f"runtime_trusted: {', '.join(map(repr, bad))} is neither a service principal "
                             "(<name>.amazonaws.com) nor a role/user ARN (account roots and '*' are refused)")
        return v

    def tags(self) -> dict[str, str]:
        return {"tenant": "platform", "tier": "platform", "owner": self.owner, "managed-by": "tenantctl"}


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem, naming the field and the rule, never a traceback."""
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "spec"
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {msg}")
    return "; ".join(lines)
