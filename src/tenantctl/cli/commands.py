"""The list of command modules, in --help order."""

from tenantctl.cli import apply_cmd, sandbox_cmd, tenant_cmd

MODULES = [tenant_cmd, apply_cmd, sandbox_cmd]
