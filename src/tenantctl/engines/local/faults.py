"""Fault injection for the crash-convergence tests (issue 7): the LocalEngine's
resource-write counter and the named registry steps live in
``tenantctl.faults`` (documented there), importable without the engine."""

from tenantctl.faults import (
    FAULT_AFTER_ENV,
    FAULT_EXIT_CODE,
    FAULT_POINT_ENV,
    FAULT_THROTTLE_ENV,
    FAULT_THROTTLE_FILE_ENV,
    FAULTS,
    POINTS,
    STEPS,
    Faults,
    install_throttle,
)

__all__ = ["FAULT_AFTER_ENV", "FAULT_EXIT_CODE", "FAULT_POINT_ENV", "FAULT_THROTTLE_ENV", "FAULT_THROTTLE_FILE_ENV",
           "FAULTS", "POINTS", "STEPS", "Faults", "install_throttle"]
