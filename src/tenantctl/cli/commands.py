"""The list of command modules, in --help order."""

from tenantctl.cli import (apply_cmd, drill_cmd, platform_cmd, sandbox_cmd, setup_cmd, target_cmd, tenant_cmd,
                           usage_cmd)
from tenantctl.cli import check_cmd

MODULES = [tenant_cmd, check_cmd, apply_cmd, platform_cmd, sandbox_cmd, usage_cmd, drill_cmd, target_cmd, setup_cmd]
