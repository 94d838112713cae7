"""A cell in aws-cn on the sandbox: moto answers cn-north-1 with `arn:aws-cn:` ARNs
(its backends are per partition), so a tenant placed there is built, recorded and
checked in that partition end to end — the program's policies, the LocalEngine's
ARNs and the posture checks' probes — and the cell is retired afterwards."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tenantctl.checks import check_tenant
from tenantctl.confirmation import Confirmation
from tenantctl.models import TenantSpec
from tenantctl.operations import cell as cells
from tenantctl.operations.cell_remove import remove
from tenantctl.operations.deprovision import deprovision
from tenantctl.operations.provision import provision
from tenantctl.workspace import Workspace

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CN = "cn-north-1"


def test_a_pooled_tenant_of_a_cell_in_aws_cn_is_built_and_checked_in_its_partition(sandbox, tmp_path):
    shutil.copy(REPO / "Pulumi.yaml", tmp_path / "Pulumi.yaml")
    (tmp_path / "stacks").mkdir()
    ws = Workspace(project_dir=tmp_path, cwd=tmp_path)
    info, _ = cells.add(ws, "cn1", {"region": CN})
    # moto lets the home's (aws) runtime assume an aws-cn role; AWS would not: said when the cell is added
    assert any("partition aws-cn" in w and "needs a platform" in w for w in info.warnings), info.warnings
    try:
        # the rotation function calls the aws-cn endpoint, and CloudWatch Logs uses the cell key as its aws-cn principal
        outputs, clients = ws.cell_outputs("cn1"), ws.cell_clients("cn1")
        function = clients("lambda").get_function(FunctionName=outputs["rotation_function_arn"])
        assert function["Configuration"]["Environment"]["Variables"]["SECRETS_MANAGER_ENDPOINT"] == (
            f"https://secretsmanager.{CN}.amazonaws.com.cn")
        policy = json.loads(clients("kms").get_key_policy(KeyId=outputs["platform_key_arn"],
                                                          PolicyName="default")["Policy"])
        assert f"logs.{CN}.amazonaws.com.cn" in {s["Principal"].get("Service") for s in policy["Statement"]}
        # provision runs the posture check at its end: it raises on any failing check
        record, _ = provision(ws, TenantSpec(id="pt-cn", region=CN))
        try:
            res = record.resources
            assert record.cell == "cn1"
            assert res.role_arn.startswith("arn:aws-cn:iam::") and res.kms_key_arn.startswith(f"arn:aws-cn:kms:{CN}:")
            assert res.store.secret_arn.startswith(f"arn:aws-cn:secretsmanager:{CN}:")
            report = check_tenant(ws, "pt-cn")
            assert report.ok, report.summary()
            assert {"role-trust", "role-policy-scope", "bucket-policy", "topic-access"} <= {
                c.name for c in report.checks if c.area == "aws"}
        finally:
            deprovision(ws, "pt-cn", final_backup=False)
    finally:
        remove(ws, "cn1", Confirmation(yes=True))
