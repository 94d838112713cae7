"""Unit tests run without the sandbox."""

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
