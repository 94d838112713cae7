"""The installed package has no fault-injection path: the fault variables the
test launcher (tests/faults/launch.py) reads mean nothing to the real
`python -m tenantctl`. (The source scan is tests/unit/test_faults.py.)"""

from __future__ import annotations

import pytest
from fault_tools import Cli, registry_record, run_id
from faults import FAULT_AFTER_ENV, FAULT_SIGINT_ENV, FAULT_THROTTLE_ENV, FAULT_THROTTLE_FILE_ENV

pytestmark = pytest.mark.integration


def test_the_real_cli_ignores_the_fault_variables(sandbox, workspace, tmp_path):
    workspace.platform_outputs()
    cli = Cli.create(sandbox, tmp_path / "project")
    tenant_id = f"ft-free{run_id()}"
    throttle = tmp_path / "throttle.json"
    # Armed, this run would die at its first resource write (or be interrupted at its first
    # registration), and its KMS and DynamoDB calls would wait ~100 s per token after the first.
    env = {FAULT_AFTER_ENV: "1", FAULT_SIGINT_ENV: "1", FAULT_THROTTLE_ENV: "kms.*=0.01,dynamodb.*=0.01",
           FAULT_THROTTLE_FILE_ENV: str(throttle)}

    run = cli("provision", tenant_id, "--json", env=env, launcher=False, timeout=300)
    assert run.returncode == 0, run
    assert "injected fault" not in run.stderr
    assert run.json()["record"]["status"] == "active"
    record = registry_record(sandbox, tenant_id)
    assert record["status"] == "active" and record["lock"] is None
    assert not throttle.exists()  # no token was ever drawn
