"""The list of command modules, in --help order."""

from tenantctl.cli import sandbox_cmd, tenant_cmd

MODULES = [tenant_cmd, sandbox_cmd]
