"""Fixtures several unit test modules share; unit tests run without the sandbox."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _no_sandbox_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    # The integration suite's session sandbox points AWS_ENDPOINT_URL* at moto
    # server for the whole session; moto's in-process mock only intercepts
    # AWS's own endpoints, so a unit test running after it would reach the
    # shared server instead of its private mock.
    for name in [n for n in os.environ if n.startswith("AWS_ENDPOINT_URL")]:
        monkeypatch.delenv(name)


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
