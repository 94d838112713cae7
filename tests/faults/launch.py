"""``python tests/faults/launch.py ARGS...``: the ``tenantctl`` CLI with the
faults of the environment armed (``faults.arm``), for the tests only. Without
a ``TENANTCTL_FAULT_*`` variable it is plain ``tenantctl ARGS...``."""

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path[0] = str(Path(__file__).resolve().parents[1])  # tests/, for the faults package (not tests/faults/)
    sys.argv[0] = "tenantctl"

    from faults import arm

    arm()

    from tenantctl.cli.app import main

    main()
