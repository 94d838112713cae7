"""Fixtures several unit test modules share."""

from __future__ import annotations

import pytest


@pytest.fixture
def moto_account(monkeypatch):
    """An in-process moto account (no sandbox): boto3's default credentials and
    region point at it for the test."""
    from moto import mock_aws

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        yield
