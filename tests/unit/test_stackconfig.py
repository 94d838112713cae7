"""stacks/Pulumi.<id>.yaml round-trips and refuses bad files clearly."""

import pytest

from tenantctl.errors import InvalidInput
from tenantctl.models import TenantSpec, Tier
from tenantctl.stackconfig import read_tenant, stack_file, tenant_stack_files, write_tenant


def test_round_trip_and_idempotent_write(tmp_path):
    spec = TenantSpec(id="acme", tier=Tier.dedicated, owner="team-a", queue={"delay_seconds": 30})
    assert write_tenant(tmp_path, spec) is True
    assert write_tenant(tmp_path, spec) is False
    assert read_tenant(stack_file(tmp_path, "acme")) == spec
    assert list(tenant_stack_files(tmp_path)) == ["acme"]


def test_file_name_must_match_id(tmp_path):
    write_tenant(tmp_path, TenantSpec(id="acme"))
    stack_file(tmp_path, "acme").rename(tmp_path / "Pulumi.other.yaml")
    with pytest.raises(InvalidInput, match="does not match the file name"):
        read_tenant(tmp_path / "Pulumi.other.yaml")


def test_bad_yaml_and_bad_values_are_one_line(tmp_path):
    path = tmp_path / "Pulumi.acme.yaml"
    path.write_text("config:\n  tenantctl:tenant: {id: acme, queue: {delay_seconds: 5000}}\n")
    with pytest.raises(InvalidInput, match="queue.delay_seconds"):
        read_tenant(path)
    path.write_text("config: [unclosed\n")
    with pytest.raises(InvalidInput, match="not valid YAML"):
        read_tenant(path)
