"""TenantSpec and the naming rules every tenant id must satisfy."""

import re

import pytest
from pydantic import ValidationError

from tenantctl import naming
from tenantctl.models import TenantSpec, Tier, describe_validation_error


def refusal(**data) -> str:
    with pytest.raises(ValidationError) as exc:
        TenantSpec(**data)
    return describe_validation_error(exc.value)


@pytest.mark.parametrize(
    ("tenant_id", "rule"),
    [
        ("Acme", "charset"),
        ("9lives", "charset"),
        ("acme_corp", "charset"),
        ("", "charset"),
        ("acme--corp", "rds-identifier"),
        ("acme-", "rds-identifier"),
        ("platform", "reserved"),
        ("admin", "reserved"),
        ("public", "reserved"),
        ("pg-stats", "reserved"),
        ("pgsql", "reserved"),
        ("aws-foo", "reserved"),
        ("a" * (naming.max_id_length() + 1), "iam-role-name"),
    ],
)
def test_bad_ids_are_refused_naming_the_rule(tenant_id, rule):
    message = refusal(id=tenant_id)
    assert f"breaks the {rule} rule" in message
    assert "Traceback" not in message


def test_longest_valid_id_fits_every_derived_name():
    longest = "a" * naming.max_id_length()
    TenantSpec(id=longest)
    assert len(naming.iam_role_name(longest)) <= 64
    assert len(naming.rds_identifier(longest)) <= 63
    assert len(naming.db_role_name(longest).encode()) <= 63
    assert len(naming.dlq_name(longest)) <= 80


def test_prefix_has_trailing_slash_so_twins_do_not_overlap():
    assert not naming.s3_prefix("acme-corp").startswith(naming.s3_prefix("acme"))


def test_dedicated_defaults_and_pooled_refuses_dedicated_options():
    assert TenantSpec(id="acme", tier=Tier.dedicated).dedicated is not None
    assert "need tier=dedicated" in refusal(id="acme", dedicated={"storage_gb": 50})


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({"queue": {"delay_seconds": 901}}, "queue.delay_seconds"),
        ({"queue": {"max_receive_count": 0}}, "queue.max_receive_count"),
        ({"lifecycle": {"archive_transition_days": 30, "archive_expiry_days": 30}}, "lifecycle"),
        ({"tier": "dedicated", "dedicated": {"vpc_cidr": "8.8.0.0/16"}}, "dedicated.vpc_cidr"),
        ({"region": "mars-1"}, "region"),
        ({"colour": "blue"}, "colour"),
        ({"db_connection_limit": 0}, "db_connection_limit"),
        ({"db_connection_limit": 1001}, "db_connection_limit"),
    ],
)
def test_bad_options_name_the_field(data, where):
    assert refusal(id="acme", **data).startswith(where)


def test_tags_and_content_hash():
    spec = TenantSpec(id="acme", owner="team-a", cost_centre="cc-1")
    assert spec.tags() == {"tenant": "acme", "tier": "pooled", "owner": "team-a",
                           "managed-by": "tenantctl", "cost-centre": "cc-1"}
    assert spec.content_hash() == TenantSpec(id="acme", owner="team-a", cost_centre="cc-1").content_hash()
    assert spec.content_hash() != TenantSpec(id="acme", owner="team-b", cost_centre="cc-1").content_hash()


@pytest.mark.parametrize("field, value", [
    ("runtime_principal_arn", "arn:aws:iam::123456789012:root"),
    ("runtime_principal_arn", "123456789012"),
    ("runtime_principal_arn", "*"),
    ("runtime_trusted", ["arn:aws:iam::123456789012:root"]),
    ("runtime_trusted", ["*"]),
    ("runtime_trusted", []),
])
def test_the_runtime_principal_is_never_an_account(field, value):
    from pydantic import ValidationError

    from tenantctl.models import CellSpec

    with pytest.raises(ValidationError, match=field):
        CellSpec.model_validate({field: value})
    assert CellSpec(runtime_principal_arn="arn:aws:iam::123456789012:role/svc-runtime",
                        runtime_trusted=["lambda.amazonaws.com", "arn:aws:iam::123456789012:role/ci"])


def test_a_connection_limit_is_the_tenants_own_else_its_cells_where_the_server_is_shared():
    from tenantctl.models import DB_CONNECTION_LIMIT_DEFAULT, NO_CONNECTION_LIMIT, CellSpec

    assert CellSpec().db_connection_limit == DB_CONNECTION_LIMIT_DEFAULT == 10
    assert TenantSpec(id="acme").connection_limit(25) == 25
    assert TenantSpec(id="acme").connection_limit(None) == DB_CONNECTION_LIMIT_DEFAULT  # a cell from before
    assert TenantSpec(id="acme", db_connection_limit=3).connection_limit(25) == 3
    assert TenantSpec(id="acme", tier="dedicated").connection_limit(25) == NO_CONNECTION_LIMIT
    moving = TenantSpec(id="acme", tier="dedicated", retiring={"tier": "pooled"})
    assert moving.connection_limit(25) == 25  # bounded until the move leaves the shared server
    # Written to the stack file and hashed only when set: specs without it are as they were.
    assert "db_connection_limit" not in TenantSpec(id="acme").desired()
    with pytest.raises(ValueError, match="db_connection_limit"):
        CellSpec(db_connection_limit=0)


@pytest.mark.parametrize(("sub", "region", "says"), [
    ({"protocol": "email", "endpoint": "ops@example.org"}, "us-east-1", "a person to confirm"),
    ({"protocol": "sms", "endpoint": "+15555550100"}, "us-east-1", "refused"),
    ({"protocol": "http", "endpoint": "http://pager.example/sns"}, "us-east-1", "plain text"),
    ({"protocol": "firehose", "endpoint": "arn:aws:firehose:us-east-1:123456789012:deliverystream/a"}, "us-east-1",
     "subscription role"),
    ({"protocol": "carrier-pigeon", "endpoint": "x"}, "us-east-1", "use sqs, lambda, https"),
    ({"protocol": "sqs", "endpoint": "ops-alarms"}, "us-east-1", "needs a sqs ARN"),
    ({"protocol": "lambda", "endpoint": "arn:aws:sqs:us-east-1:123456789012:q"}, "us-east-1", "needs a lambda ARN"),
    ({"protocol": "sqs", "endpoint": "arn:aws-cn:sqs:us-east-1:123456789012:q"}, "us-east-1", "partition aws,"),
    ({"protocol": "sqs", "endpoint": "arn:aws-cn:sqs:cn-north-1:123456789012:q"}, "us-east-1", "cell's (aws"),
    ({"protocol": "https", "endpoint": "https://"}, "us-east-1", "https:// URL"),
])
def test_an_alarm_subscription_nobody_can_confirm_or_reach_is_refused(sub, region, says):
    from tenantctl.models import CellSpec

    with pytest.raises(ValueError, match=re.escape(says)):
        CellSpec(region=region, alarm_subscriptions=[sub])


def test_alarm_subscriptions_in_any_account_of_the_cells_partition():
    from tenantctl.models import CellSpec

    subs = [{"protocol": "sqs", "endpoint": "arn:aws:sqs:eu-west-1:999999999999:ops"},  # another account, region
            {"protocol": "lambda", "endpoint": "arn:aws:lambda:us-east-1:123456789012:function:page"},
            {"protocol": "https", "endpoint": "https://events.pager.example/v2/sns"}]
    assert [s.protocol for s in CellSpec(alarm_subscriptions=subs).alarm_subscriptions] == ["sqs", "lambda", "https"]
    with pytest.raises(ValueError, match="listed twice"):
        CellSpec(alarm_subscriptions=subs[:1] * 2)
    # Left out of the stack file while empty: cell files written before stay as they were.
    assert "alarm_subscriptions" in CellSpec().unwritten
