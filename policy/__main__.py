"""The CrossGuard policy pack: tenantctl's isolation rules, enforced by the
Pulumi CLI on each resource right before it is created or updated.

The rules live in tenantctl (``tenantctl.policy``; ``tenantctl.crossguard``
turns them into policies), so this pack runs with an interpreter that has
``tenantctl[cli]`` installed: the one tenantctl runs (it sets
``PULUMI_PYTHON_CMD``), or see docs/aws.md for a pipeline of your own.
"""

from pulumi_policy import EnforcementLevel, PolicyPack

from tenantctl.crossguard import PACK_NAME, policies

PolicyPack(name=PACK_NAME, enforcement_level=EnforcementLevel.MANDATORY, policies=policies())
