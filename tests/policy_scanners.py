"""parliament and cloudsplaining, run the way the tests use them on the policy
documents tenantctl generates (unit: the program under mocks) and deploys
(integration: read back from the sandbox).

What each reads, and the documented exceptions:

- **identity policies** (a role's inline policies): parliament with its
  community auditors, and cloudsplaining's risk categories (privilege
  escalation, data exfiltration, resource exposure, infrastructure
  modification, credentials exposure, service wildcard). Exception:
  CREDENTIALS_EXPOSURE on the runtime role's ``AssumeTenantRoles`` and
  ``AssumeDatabaseWakers`` statements only (assuming a tenant's role, tagged,
  and a cell's waker role in another account is what the runtime role is for;
  their Resources are those roles' ARN patterns).
- **trust policies**: parliament, with ``Resource`` set to the role's ARN
  (parliament requires a Resource, and a trust policy governs assuming that
  one role); cloudsplaining has no trust-policy risk categories. Exception:
  CREDENTIALS_EXPOSURE (``sts:AssumeRole`` is what a trust policy allows; who
  may call it is its Principal and conditions, which parliament still checks).
- **key policies**: parliament. Exceptions: RESOURCE_STAR (in a key policy
  ``"Resource": "*"`` is the key itself) and PERMISSIONS_MANAGEMENT_ACTIONS on
  the ``Administer`` statement only (the admin's ``kms:*``: AWS's default key
  policy; without it a key cannot be managed or even deleted).
- **bucket policies**: parliament. No exception.
- **VPC endpoint policies**: parliament. Exceptions on interface endpoints
  only: RESOURCE_STAR and PERMISSIONS_MANAGEMENT_ACTIONS (``<service>:*`` on
  ``*``): an endpoint policy does not grant anything, it bounds what may pass the
  endpoint, and it is confined to this account's principals and resources by
  ``aws:PrincipalAccount``/``aws:ResourceAccount``; operators provisioning from
  inside the VPC need CreateKey and the like, which have no resource.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# (kind, parliament issue) -> why it is accepted; ``sids`` narrow it to those statements.
EXCEPTIONS: dict[tuple[str, str], tuple[tuple[str, ...] | None, str]] = {
    ("trust", "CREDENTIALS_EXPOSURE"): (None, "sts:AssumeRole is what a trust policy allows; its Principal says who"),
    ("identity", "CREDENTIALS_EXPOSURE"): (
        ("AssumeTenantRoles", "AssumeDatabaseWakers"),
        "the runtime role exists to assume tenant roles (tagged sessions) and cells' waker roles, bounded by ARN"),
    ("key", "RESOURCE_STAR"): (None, 'in a key policy "Resource": "*" is the key itself'),
    ("key", "PERMISSIONS_MANAGEMENT_ACTIONS"): (
        ("Administer",), "the admin's kms:* on its key: AWS's default key policy (else the key is unmanageable)"),
    ("interface-endpoint", "RESOURCE_STAR"): (
        None, "an endpoint policy bounds, it grants nothing; confined to this account by condition"),
    ("interface-endpoint", "PERMISSIONS_MANAGEMENT_ACTIONS"): (
        None, "<service>:* through the endpoint for this account's principals (provisioning from the VPC)"),
}
CLOUDSPLAINING_RISKS = ("allows_privilege_escalation", "allows_data_exfiltration_actions",
                        "permissions_management_without_constraints", "write_actions_without_constraints",
                        "infrastructure_modification", "credentials_exposure", "service_wildcard")


@dataclass(frozen=True)
class Document:
    kind: str  # identity | trust | key | bucket | gateway-endpoint | interface-endpoint
    name: str  # where it comes from
    policy: dict[str, Any]
    resource_arn: str | None = None  # trust policies: the role they govern


def _as_resource_policy(doc: Document) -> dict[str, Any]:
    """Statements as a list; a trust policy's get the role as their Resource."""
    statements = doc.policy.get("Statement", [])
    statements = [statements] if isinstance(statements, dict) else statements
    if doc.kind == "trust" and doc.resource_arn:
        statements = [{**s, "Resource": doc.resource_arn} for s in statements]
    return {**doc.policy, "Statement": statements}


def _parliament(policy: dict[str, Any]) -> list[tuple[str, str]]:
    from parliament import analyze_policy_string

    result = analyze_policy_string(json.dumps(policy), include_community_auditors=True)
    return [(f.issue, str(f.detail or "")) for f in result.findings]


def _accepted(doc: Document, policy: dict[str, Any], issue: str) -> bool:
    """An exception covers the finding: for any statement, or only when the
    named statements alone raise it (parliament without them does not)."""
    if (doc.kind, issue) not in EXCEPTIONS:
        return False
    sids = EXCEPTIONS[(doc.kind, issue)][0]
    if sids is None:
        return True
    rest = {**policy, "Statement": [s for s in policy["Statement"] if s.get("Sid") not in sids]}
    return issue not in {i for i, _ in _parliament(rest)}


def findings(doc: Document) -> list[str]:
    """Every finding of parliament (and cloudsplaining, for identity policies)
    not covered by ``EXCEPTIONS``, one line each."""
    policy = _as_resource_policy(doc)
    found = [f"{doc.kind} {doc.name}: parliament {issue} {detail}".strip()
             for issue, detail in _parliament(policy) if not _accepted(doc, policy, issue)]
    if doc.kind == "identity":
        from cloudsplaining.scan.policy_document import PolicyDocument

        scanned = PolicyDocument(doc.policy)
        found += [f"{doc.kind} {doc.name}: cloudsplaining {risk} {value}"
                  for risk in CLOUDSPLAINING_RISKS if (value := getattr(scanned, risk))]
    return found


def endpoint_kind(service_name: str) -> str:
    return "gateway-endpoint" if service_name.endswith(".s3") else "interface-endpoint"
