"""The local sandbox: a moto server and PostgreSQL on 127.0.0.1, run in the
background under one state directory."""

from tenantctl.sandbox.endpoints import SandboxEndpoints, resolve_state_dir
from tenantctl.sandbox.manager import Sandbox, SandboxStatus, ServiceStatus, ensure_running

__all__ = ["Sandbox", "SandboxEndpoints", "SandboxStatus", "ServiceStatus", "ensure_running", "resolve_state_dir"]
