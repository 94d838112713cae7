"""The list of command modules, in --help order."""

from tenantctl.cli import setup_cmd, target_cmd, apply_cmd, sandbox_cmd, tenant_cmd
from tenantctl.cli import usage_cmd
from tenantctl.cli import drill_cmd

MODULES = [tenant_cmd, apply_cmd, sandbox_cmd, usage_cmd, target_cmd, setup_cmd, drill_cmd]
