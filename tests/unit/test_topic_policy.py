"""Whom a topic policy lets in from outside its account (``topic_outsiders``): what `check`'s
topic-access fails and `refresh` names as an unmanaged topic policy."""

from __future__ import annotations

import json

import pytest

from tenantctl.checks.aws_posture import topic_outsiders
from tenantctl.checks.reads import default_topic_policy

ACCOUNT = "111122223333"
TOPIC = f"arn:aws:sns:eu-west-1:{ACCOUNT}:tenantctl-acme-alarms"


def _policy(*statements: dict) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def _allow(principal, **condition) -> dict:
    return {"Effect": "Allow", "Principal": principal, "Action": "SNS:Subscribe", "Resource": TOPIC,
            **({"Condition": condition} if condition else {})}


@pytest.mark.parametrize("policy, outsiders", [
    (None, []),
    (default_topic_policy(TOPIC), []),  # AWS's own: anyone, pinned to the topic's account
    (_policy(_allow({"AWS": f"arn:aws:iam::{ACCOUNT}:role/ops"}), _allow({"AWS": ACCOUNT})), []),
    (_policy(_allow({"Service": "events.amazonaws.com"}, StringEquals={"aws:SourceAccount": ACCOUNT})), []),
    (_policy(_allow("*")), ["*"]),
    (_policy(_allow({"AWS": "*"}, StringEquals={"AWS:SourceOwner": "999999999999"})), ["*"]),
    (_policy(_allow({"AWS": ["arn:aws:iam::999999999999:root", f"arn:aws:iam::{ACCOUNT}:root"]})),
     ["arn:aws:iam::999999999999:root"]),
    (_policy(_allow({"Service": "events.amazonaws.com"})), ["events.amazonaws.com"]),  # any account's rule
    (_policy({**_allow("*"), "Effect": "Deny"}), []),
    (json.dumps({"Statement": _allow({"AWS": "222233334444"})}), ["222233334444"]),  # one statement, no list
])
def test_a_topic_policy_lets_in_only_its_own_account(policy, outsiders) -> None:
    assert topic_outsiders(policy, ACCOUNT) == outsiders
