"""Port choice for a sandbox restart: a server killed a moment ago leaves its
side of its connections in TIME_WAIT; the restart must still get its old port."""

from __future__ import annotations

import socket

from tenantctl.sandbox.process import LOOPBACK, free_port, port_is_free


def _listener() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as werkzeug and PostgreSQL do
    sock.bind((LOOPBACK, 0))
    sock.listen()
    return sock


def test_a_port_with_connections_in_time_wait_is_still_free():
    server = _listener()
    port = server.getsockname()[1]
    client = socket.create_connection((LOOPBACK, port))
    accepted, _ = server.accept()
    accepted.close()  # the server closes first, as a killed one does: its side goes to TIME_WAIT
    client.recv(1)
    client.close()
    server.close()

    assert port_is_free(port)
    assert free_port(preferred=port) == port


def test_a_port_someone_listens_on_is_not_free():
    server = _listener()
    port = server.getsockname()[1]
    try:
        assert not port_is_free(port)
        assert free_port(preferred=port) != port
    finally:
        server.close()
