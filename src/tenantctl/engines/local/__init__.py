"""The LocalEngine: the infra/ program materialised on the local sandbox."""

from tenantctl.engines.local.engine import LocalEngine
from tenantctl.engines.local.faults import FAULT_AFTER_ENV, FAULT_EXIT_CODE, FAULT_POINT_ENV

__all__ = ["FAULT_AFTER_ENV", "FAULT_EXIT_CODE", "FAULT_POINT_ENV", "LocalEngine"]
