"""Fault injection for the fault-tolerance tests, outside the shipped package.

The installed ``tenantctl`` reads no fault variable: a test process arms the
faults itself (``arm()``, wrappers around seams tenantctl keeps anyway, see
``faults.seams``), and a CLI run is armed by starting it through the launcher
``tests/faults/launch.py`` (``LAUNCHER``), which arms from the environment and
then runs ``tenantctl.cli.app:main()``:

- ``TENANTCTL_FAULT_AFTER`` / ``TENANTCTL_FAULT_POINT``: kill the run at a
  resource write or a registry step (``faults.kill``);
- ``TENANTCTL_FAULT_SIGINT``: Ctrl-C at a resource registration (``faults.kill``);
- ``TENANTCTL_FAULT_THROTTLE`` / ``TENANTCTL_FAULT_THROTTLE_FILE``: throttle
  AWS calls like AWS does, shared by every process (``faults.throttle``).
"""

from __future__ import annotations

from pathlib import Path

from faults.kill import FAULT_AFTER_ENV, FAULT_EXIT_CODE, FAULT_POINT_ENV, FAULT_SIGINT_ENV, POINTS, STEPS, Faults
from faults.seams import arm
from faults.throttle import (
    FAULT_THROTTLE_ENV,
    FAULT_THROTTLE_FILE_ENV,
    SharedTokenBucket,
    install_throttle,
    parse_throttle,
    throttle_file,
)

LAUNCHER = Path(__file__).resolve().parent / "launch.py"
IMPORT_ROOT = LAUNCHER.parents[1]  # tests/: with it on sys.path, `import faults` works
FAULT_ENVS = (FAULT_AFTER_ENV, FAULT_POINT_ENV, FAULT_SIGINT_ENV, FAULT_THROTTLE_ENV, FAULT_THROTTLE_FILE_ENV)

__all__ = [
    "FAULT_AFTER_ENV", "FAULT_ENVS", "FAULT_EXIT_CODE", "FAULT_POINT_ENV", "FAULT_SIGINT_ENV", "FAULT_THROTTLE_ENV",
    "FAULT_THROTTLE_FILE_ENV", "IMPORT_ROOT", "LAUNCHER", "POINTS", "STEPS", "Faults", "SharedTokenBucket", "arm",
    "install_throttle", "parse_throttle", "throttle_file",
]
