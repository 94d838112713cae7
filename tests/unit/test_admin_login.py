"""The PostgreSQL providers' admin login: the secret read once per process,
read again when the login it holds is refused (rotated since)."""

from __future__ import annotations

import psycopg
import pytest

from infra.providers import _postgres

PROPS = {"region": "us-east-1", "host": "db", "port": 5432, "database": "tenants",
         "admin_secret_arn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:admin"}


class Login(dict):
    """What the stand-in connect returns: the keyword arguments, and the notice handlers added."""

    def add_notice_handler(self, handler) -> None:
        self.handlers = [*getattr(self, "handlers", []), handler]


@pytest.fixture
def sandbox(monkeypatch):
    secret = {"username": "admin", "password": "one"}
    reads, logins = [], []

    def read(region, arn, role_arn=None):
        reads.append(arn)
        return dict(secret)

    def connect(**kwargs):
        logins.append(kwargs["password"])
        if kwargs["password"] != secret["password"]:
            raise psycopg.OperationalError("password authentication failed")
        return Login(kwargs)

    monkeypatch.setattr(_postgres, "secret_json", read)
    monkeypatch.setattr(psycopg, "connect", connect)
    monkeypatch.setattr(_postgres, "_ADMINS", {})
    return secret, reads, logins


def test_the_admin_secret_is_read_once_and_again_after_a_rotation(sandbox) -> None:
    secret, reads, logins = sandbox
    login = _postgres.admin_connect(PROPS)
    assert login["user"] == "admin" and len(login.handlers) == 1  # the ACL lock's ended sessions are reported
    assert _postgres.admin_connect(PROPS, "other")["dbname"] == "other"
    assert len(reads) == 1 and logins == ["one", "one"]
    secret["password"] = "two"  # rotated: the held login is refused, the secret read again
    assert _postgres.admin_connect(PROPS)["password"] == "two"
    assert len(reads) == 2 and logins == ["one", "one", "one", "two"]


def test_a_login_refused_with_a_secret_read_just_now_is_an_error(sandbox, monkeypatch) -> None:
    _secret, reads, _logins = sandbox
    monkeypatch.setattr(_postgres, "secret_json", lambda *a: reads.append(a) or {"username": "admin", "password": "x"})
    with pytest.raises(psycopg.OperationalError):
        _postgres.admin_connect(PROPS)
    assert len(reads) == 1  # not read again: nothing was stale
