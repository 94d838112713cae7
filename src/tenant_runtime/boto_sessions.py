"""boto3 sessions that read botocore's data files through one loader per process.

A botocore session parses the data files (service models, endpoint rules,
partitions) through its own loader, so a process that makes several sessions
parses them once per session: the runtime makes one per tenant role it
assumes, tenantctl one per target, per engine and per assumed account. In a
fresh ``tenantctl provision`` that was ~150 ms of its ~1.4 s (the same
clients made in three sessions: ~410 ms with a loader each, ~265 ms with one),
and a long-lived runtime kept a parsed copy of each model per tenant session.

Sharing is safe: the loader only reads the installed data files, which are
the same for every session here (no session sets its own ``data_path``), and
caches them by file and API version; botocore already shares each parsed model
between the clients of one session, read-only. Two threads loading the same
file at once both parse it and one copy is kept.
"""

from __future__ import annotations

import threading
from typing import Any

_loader: Any = None
_lock = threading.Lock()


def share_loader(session: Any) -> Any:
    """``session`` (a boto3 Session) with the process's one data loader; returned for chaining.

    Registered after boto3 has set the session up: boto3 appends its own data
    path to the session's loader then, and would append it to a shared loader
    once per session."""
    global _loader
    core = session._session  # the botocore session: boto3 exposes no other handle on its components
    with _lock:
        if _loader is None:
            _loader = core.get_component("data_loader")
        elif core.get_component("data_loader") is not _loader:
            core.register_component("data_loader", _loader)
            session._loader = _loader  # boto3's resource models are read through it too
    return session


def new_session(**kwargs: Any) -> Any:
    """``boto3.session.Session(**kwargs)`` sharing the process's data loader."""
    import boto3

    return share_loader(boto3.session.Session(**kwargs))


def default_session() -> Any:
    """boto3's default session (what ``boto3.client`` uses), sharing the process's data loader."""
    import boto3

    if boto3.DEFAULT_SESSION is None:
        boto3.setup_default_session()
    return share_loader(boto3.DEFAULT_SESSION)
