"""Property diffs (previews, drift): what counts as a change, how it is named,
that secrets never show, and which steps lose data."""

from __future__ import annotations

import json

import pytest

from tenantctl.engines.base import Op, PropertyDiff, ResourceChange
from tenantctl.engines.diffs import SECRET, UNKNOWN_TEXT, describe, like, property_diffs, same
from tenantctl.policy import UNKNOWN


def paths(diffs: list[PropertyDiff]) -> dict[str, tuple]:
    return {d.path: (d.old, d.new) for d in diffs}


def test_one_changed_field_is_exactly_one_diff():
    old = {"name": "q", "delaySeconds": 0.0, "tags": {"owner": "a", "tenant": "acme"}}
    new = {"name": "q", "delaySeconds": 30.0, "tags": {"owner": "a", "tenant": "acme"}}
    assert paths(property_diffs(old, new)) == {"delaySeconds": (0, 30)}


def test_nested_keys_and_list_items_are_named_by_path():
    old = {"tags": {"owner": "a"}, "rules": [{"Days": 7}, {"Days": 1}]}
    new = {"tags": {"owner": "b", "cost-centre": "x"}, "rules": [{"Days": 7}, {"Days": 2}]}
    assert paths(property_diffs(old, new)) == {"tags.owner": ("a", "b"), "tags.cost-centre": (None, "x"),
                                               "rules[1].Days": (1, 2)}


def test_json_documents_compare_parsed_and_diff_inside():
    doc = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Resource": "arn:x/tenants/acme/*"}]}
    wide = json.loads(json.dumps(doc))
    wide["Statement"][0]["Resource"] = "arn:x/tenants/acme*"
    # Spelled differently (a string vs the dict IAM returns, other spacing): not a change.
    assert property_diffs({"policy": json.dumps(doc)}, {"policy": json.loads(json.dumps(doc))}) == []
    assert property_diffs({"policy": json.dumps(doc, indent=2)}, {"policy": json.dumps(doc)}) == []
    assert paths(property_diffs({"policy": json.dumps(doc)}, {"policy": wide})) == {
        "policy.Statement[0].Resource": ("arn:x/tenants/acme/*", "arn:x/tenants/acme*")}


def test_a_statement_added_to_a_policy_is_that_statement_alone():
    allow = {"Sid": "Wake", "Effect": "Allow", "Action": ["rds:StartDBInstance"], "Resource": "arn:db:tenantctl-*"}
    deny = {"Sid": "NeverShared", "Effect": "Deny", "Action": ["rds:StartDBInstance"], "Resource": "arn:db:tenantctl-p"}
    read = {"Sid": "Read", "Effect": "Allow", "Action": ["dynamodb:GetItem"], "Resource": "arn:table/t"}
    before = {"Version": "2012-10-17", "Statement": [read, allow]}
    assert paths(property_diffs({"policy": json.dumps(before)},
                                {"policy": json.dumps({**before, "Statement": [read, allow, deny]})})) == {
        "policy.Statement[2]": (None, deny)}
    # Removed from the middle: named at its old place; the others are where they were.
    assert paths(property_diffs({"policy": json.dumps({**before, "Statement": [read, deny, allow]})},
                                {"policy": json.dumps(before)})) == {"policy.Statement[1]": (deny, None)}
    # One changed in place while another is added: the change inside it, the addition on its own.
    narrowed = {**read, "Resource": "arn:table/u"}
    assert paths(property_diffs({"rules": [read, allow]}, {"rules": [narrowed, allow, deny]})) == {
        "rules[0].Resource": ("arn:table/t", "arn:table/u"), "rules[2]": (None, deny)}
    assert paths(property_diffs({"ids": []}, {"ids": ["sg-1"]})) == {"ids[0]": (None, "sg-1")}


@pytest.mark.parametrize("old, new", [(0.0, "0"), (30, "30.0"), (True, "true"), ("", None), (None, "")])
def test_same_value_spelled_differently_is_not_drift(old, new):
    assert same(old, new)


@pytest.mark.parametrize("old, new", [(0, "600"), (True, "false"), ("arn:k", None), ("a", "b")])
def test_different_values_are(old, new):
    assert not same(old, new)


def test_live_values_take_the_recorded_spelling():
    assert like(0.0, "600") == 600 and like(True, "false") is False and like("x", "600") == "600"


def test_secrets_are_never_carried():
    diffs = property_diffs({"password": "old-pw", "masterPassword": "a", "user": "u"},
                           {"password": "new-pw", "masterPassword": "b", "user": "v"})
    assert paths(diffs) == {"password": (SECRET, SECRET), "masterPassword": (SECRET, SECRET), "user": ("u", "v")}
    assert "old-pw" not in str(diffs) and "new-pw" not in str(diffs)
    nested = property_diffs({"settings": {"password": "x"}}, {"settings": {"password": "y"}})
    assert paths(nested) == {"settings.password": (SECRET, SECRET)}


def test_unknowns_read_as_known_after_apply_and_keys_can_be_limited():
    assert paths(property_diffs({"arn": "a", "x": 1}, {"arn": UNKNOWN, "x": 2}, keys={"arn"})) == {
        "arn": ("a", UNKNOWN_TEXT)}
    assert describe(PropertyDiff(path="enableKeyRotation", old=True, new=False)) == "enableKeyRotation: true → false"
    assert describe(PropertyDiff(path="kmsMasterKeyId", old="arn:k", new=None)) == "kmsMasterKeyId: arn:k → (none)"


@pytest.mark.parametrize("typ, urn, op, loses", [
    ("aws:kms/key:Key", "", Op.replace, True),
    ("aws:rds/instance:Instance", "", Op.delete, True),
    ("aws:secretsmanager/secret:Secret", "", Op.update, False),
    ("aws:sqs/queue:Queue", "", Op.replace, False),
    ("pulumi-python:dynamic:Resource",
     "urn:pulumi:a::p::tenantctl:database:TenantDatabase$pulumi-python:dynamic:Resource::a-schema", Op.replace, True),
    ("pulumi-python:dynamic:Resource", "urn:pulumi:a::p::tenantctl:index:Tenant$tenantctl:workspace:TenantWorkspace"
     "$pulumi-python:dynamic:Resource::a-legal-schema", Op.delete, True),
    ("aws:kms/key:Key", "urn:pulumi:a::p::tenantctl:index:Tenant$tenantctl:workspace:TenantWorkspace"
     "$tenantctl:kms:TenantKey$aws:kms/key:Key::a-legal-key", Op.update, False),
    ("pulumi-python:dynamic:Resource",
     "urn:pulumi:a::p::tenantctl:s3:TenantStorage$pulumi-python:dynamic:Resource::a-lifecycle", Op.replace, False),
])
def test_data_bearing_replaces_and_deletes_are_called_out(typ, urn, op, loses):
    assert ResourceChange(op=op, type=typ, name="n", urn=urn).loses_data is loses
