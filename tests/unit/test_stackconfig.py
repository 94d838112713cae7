"""stacks/Pulumi.<id>.yaml round-trips and refuses bad files clearly."""

import os
import stat

import pytest

from tenantctl.errors import InvalidInput
from tenantctl.models import TenantSpec, Tier
from tenantctl.stackconfig import read_tenant, stack_file, tenant_stack_files, tenant_stacks, write_tenant


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


def test_an_edit_keeps_comments_order_and_keys_it_does_not_own(tmp_path):
    write_tenant(tmp_path, TenantSpec(id="acme", tier=Tier.dedicated, owner="team-a"))
    path = stack_file(tmp_path, "acme")
    text = path.read_text()
    # A reviewer's comments, a reordered block, and what `pulumi stack init` records at the top level.
    text = text.replace("    owner: team-a\n", "    owner: team-a  # on call: #team-a\n")
    text = text.replace("  tenantctl:tenant:\n", "  # sized for the Q3 launch\n  tenantctl:tenant:\n")
    text = text.replace("      multi_az: false\n      deletion_protection: true\n",
                        "      deletion_protection: true\n      multi_az: false\n")
    text += "secretsprovider: awskms://alias/tenantctl\nencryptedkey: abc==\n"
    path.write_text(text)

    spec = TenantSpec(id="acme", tier=Tier.dedicated, owner="team-b", dedicated={"storage_gb": 50})
    assert write_tenant(tmp_path, spec) is True
    edited = path.read_text()
    assert edited == (text.replace("owner: team-a  # on call", "owner: team-b  # on call")
                      .replace("storage_gb: 20", "storage_gb: 50"))
    assert read_tenant(path) == spec
    assert write_tenant(tmp_path, spec) is False and path.read_text() == edited


def test_an_edit_drops_spec_keys_the_spec_no_longer_has(tmp_path):
    write_tenant(tmp_path, TenantSpec(id="acme", cost_centre="cc-1"))
    path = stack_file(tmp_path, "acme")
    path.write_text(path.read_text() + "# end of file\n")
    write_tenant(tmp_path, TenantSpec(id="acme"))
    assert "cost_centre" not in path.read_text() and "# end of file" in path.read_text()
    assert read_tenant(path) == TenantSpec(id="acme")


def test_a_second_stack_of_another_key_generation_is_the_same_tenants(tmp_path):
    old, new = TenantSpec(id="acme"), TenantSpec(id="acme", region="eu-west-1")
    write_tenant(tmp_path, old)
    write_tenant(tmp_path, new, stack="acme.k1")
    write_tenant(tmp_path, TenantSpec(id="acme-k1"))  # a valid id of another tenant: no relation
    assert read_tenant(stack_file(tmp_path, "acme.k1")) == new
    assert tenant_stacks(tmp_path) == {"acme": {"acme": stack_file(tmp_path, "acme"),
                                                "acme.k1": stack_file(tmp_path, "acme.k1")},
                                       "acme-k1": {"acme-k1": stack_file(tmp_path, "acme-k1")}}
    # Without a record: the lowest generation; with one, the stack it names.
    assert tenant_stack_files(tmp_path)["acme"] == stack_file(tmp_path, "acme")
    assert tenant_stack_files(tmp_path, {"acme": "acme.k1"})["acme"] == stack_file(tmp_path, "acme.k1")
    # After a finalized move only the second stack is left: still tenant `acme`.
    stack_file(tmp_path, "acme").unlink()
    assert tenant_stack_files(tmp_path) == {"acme": stack_file(tmp_path, "acme.k1"),
                                            "acme-k1": stack_file(tmp_path, "acme-k1")}
    with pytest.raises(InvalidInput, match="not one of tenant 'beta'"):
        write_tenant(tmp_path, TenantSpec(id="beta"), stack="acme.k1")
    stack_file(tmp_path, "acme.k1").rename(tmp_path / "Pulumi.beta.k2.yaml")
    with pytest.raises(InvalidInput, match="does not match the file name"):
        read_tenant(tmp_path / "Pulumi.beta.k2.yaml")


@pytest.mark.parametrize("old, new, refused", [
    ("aws:region: eu-west-1", "aws:region: us-east-1", "aws:region 'us-east-1' is not the tenant's region 'eu-west-1'"),
    ("  aws:region: eu-west-1\n", "", "no aws:region (the tenant's region is 'eu-west-1')"),
    ("config:\n", "config:\n  tenantctl:bogus: 1\n", "config key(s) `tenantctl:bogus`"),
    ("config:\n", "config:\n  tenant: {id: acme}\n", "config key(s) `tenant`"),  # the project's namespace too
    ("config:\n", "config:\n  aws:profile: prod\n  aws:assumeRoles: []\n", "`aws:assumeRoles`, `aws:profile`"),
    ("config:\n", "environment:\n  - prod-creds\nconfig:\n", "top-level key(s) `environment`"),
    ("config:\n", "config: 3\nx:\n", "not a stack file"),
])
def test_a_file_saying_more_than_its_spec_is_refused(tmp_path, old, new, refused):
    """The spec is the fingerprint: any config the program would read besides
    it, or a region other than its own, is refused rather than ignored."""
    write_tenant(tmp_path, TenantSpec(id="acme", region="eu-west-1"))
    path = stack_file(tmp_path, "acme")
    assert old in path.read_text()
    path.write_text(path.read_text().replace(old, new, 1))
    with pytest.raises(InvalidInput) as err:
        read_tenant(path)
    assert refused in str(err.value) and str(path) in str(err.value)


def test_comments_and_what_pulumi_records_are_no_change(tmp_path):
    spec = TenantSpec(id="acme")
    write_tenant(tmp_path, spec)
    path = stack_file(tmp_path, "acme")
    path.write_text("# owned by team-a\n" + path.read_text().replace("config:\n", "config:  # reviewed\n")
                    + "secretsprovider: awskms://alias/tenantctl\nencryptedkey: abc==\nencryptionsalt: v1:x\n")
    assert read_tenant(path) == spec


def test_a_stack_file_is_written_readable_as_the_umask_says_and_an_edit_keeps_its_mode(tmp_path):
    old = os.umask(0o022)
    try:
        write_tenant(tmp_path, TenantSpec(id="acme"))
        path = stack_file(tmp_path, "acme")
        assert stat.S_IMODE(path.stat().st_mode) == 0o644  # not a temporary file's 0600
        path.chmod(0o640)
        assert write_tenant(tmp_path, TenantSpec(id="acme", owner="team-b")) is True
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
    finally:
        os.umask(old)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_a_cells_file_is_parsed_once_until_its_text_changes(tmp_path, monkeypatch):
    from tenantctl import stackconfig
    from tenantctl.models import CellSpec

    stackconfig.write_cell(tmp_path, CellSpec(name="eu", region="eu-west-1", max_pooled_tenants=10))
    parsed = []
    load = stackconfig.load_yaml
    monkeypatch.setattr(stackconfig, "load_yaml", lambda text: parsed.append(text) or load(text))
    first = [stackconfig.read_cell(tmp_path, "eu") for _ in range(3)]
    assert len(parsed) == 1 and first[0].max_pooled_tenants == 10 and first[0] == first[2]
    stackconfig.write_cell(tmp_path, CellSpec(name="eu", region="eu-west-1", max_pooled_tenants=20))
    parsed.clear()
    assert stackconfig.read_cell(tmp_path, "eu").max_pooled_tenants == 20
    assert stackconfig.read_cell(tmp_path, "eu").max_pooled_tenants == 20 and len(parsed) == 1
    assert stackconfig.read_cell(tmp_path, "us") is None
