"""The PulumiEngine: the infra/ program on real AWS through Pulumi's Automation API.

``engine`` (the Engine), ``workspace`` (the LocalWorkspace it drives, which
never changes the project's current stack), ``plan`` (the planned resources
the policy gate judges, read from a preview's events), ``events`` (engine
events to changes and progress), ``errors`` (CLI failures to tenantctl
errors), ``cli`` (finding, installing and interrupting the Pulumi CLI).
Nothing here imports pulumi at load time (``workspace`` is imported on first
use): constructing the engine needs neither the SDK's heavy parts nor the CLI.
"""

from tenantctl.engines.pulumi.engine import PulumiEngine

__all__ = ["PulumiEngine"]
