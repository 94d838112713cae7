"""`tenantctl --help` loads typer and the command modules only: not the models (nor
pydantic), not rich's console. It is the command people run most to find the others;
`bench/light.py` measures it against a bare Typer app declaring the same commands. A
group's help (`tenantctl cell --help`) runs the group, for which typer itself loads
pydantic (its parameter coercion), still without the models."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBE = """
import json, sys
from tenantctl.cli.app import main
sys.argv = ["tenantctl", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
sys.stderr.write(json.dumps(sorted(m for m in sys.modules if m in ("pydantic", "rich.console", "tenantctl.models"))))
"""


@pytest.mark.parametrize("args, loaded", [(["--help"], []), (["cell", "--help"], ["pydantic"]),
                                          (["drill", "--help"], ["pydantic"])])
def test_help_loads_neither_the_models_nor_richs_console(args, loaded):
    probe = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=60)
    assert "Usage: tenantctl" in probe.stdout, probe.stderr
    assert json.loads(probe.stderr.strip().splitlines()[-1]) == loaded
