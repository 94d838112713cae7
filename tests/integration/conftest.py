"""The integration fixture: one real sandbox (moto server + PostgreSQL) per test
session, in a temporary state directory, stopped at the end."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tenantctl.sandbox import Sandbox, SandboxEndpoints

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # A conftest's hook sees the whole session's items: mark only the ones under here.
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxEndpoints]:
    """SandboxEndpoints of a running sandbox. For the session, boto3 (AWS_* env)
    and tenantctl (TENANTCTL_SANDBOX_DIR) point at it; the environment is
    restored afterwards."""
    box = Sandbox(tmp_path_factory.mktemp("sandbox-state"))
    try:
        endpoints = box.up()
        with pytest.MonkeyPatch.context() as mp:
            for name, value in endpoints.aws_env().items():
                mp.setenv(name, value)
            mp.setenv("TENANTCTL_SANDBOX_DIR", str(endpoints.state_dir))
            # Credentials from a profile or a session token would be sent instead of moto's.
            for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
                mp.delenv(name, raising=False)
            yield endpoints
    finally:
        box.down()
