"""Session-wide test settings."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

_OWN_BASETEMP = "_tenantctl_own_basetemp"


def pytest_configure(config: pytest.Config) -> None:
    # pytest's default base (/tmp/pytest-of-<user>) is shared by every session
    # of the user, and each new session chmods it to 0700: that cuts the
    # sandbox PostgreSQL (a system user, reaching its data directory through
    # o+x on the parents) off from its files under a session still running.
    # A base of our own per session keeps concurrent sessions apart.
    if config.option.basetemp is None and not hasattr(config, "workerinput"):
        base = Path(tempfile.mkdtemp(prefix="tenantctl-tests-"))
        config.option.basetemp = str(base / "t")
        setattr(config, _OWN_BASETEMP, base)


def pytest_unconfigure(config: pytest.Config) -> None:
    base = getattr(config, _OWN_BASETEMP, None)
    if base is not None:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def ctrl_c_handled():
    """Python's KeyboardInterrupt handler for the test, as a process started from a terminal has:
    a run started in the background by a script (`pytest ... &`) inherits SIGINT ignored, and then
    ``_thread.interrupt_main()`` and a SIGINT to this process do nothing."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture(autouse=True)
def _lock_renewals_end_with_the_test():
    """A test's locks stop being renewed when it ends, as a CLI run's do when its process exits: a
    lock a test left held (its registry table deleted) would otherwise be renewed, and warned about,
    in the middle of later tests of this process."""
    yield
    from tenantctl.lock_lease import KEEPER

    for tenant_id in KEEPER.holding():
        KEEPER.forget(tenant_id)
