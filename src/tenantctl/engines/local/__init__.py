"""The LocalEngine: the infra/ program materialised on the local sandbox."""

from tenantctl.engines.local.engine import LocalEngine

__all__ = ["LocalEngine"]
