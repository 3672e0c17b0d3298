"""The test-wide network guard in tests/conftest.py: loopback and Unix sockets work, anything else raises."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.conftest import NetworkBlocked


def test_non_loopback_connect_is_refused() -> None:
    with socket.socket() as sock, pytest.raises(NetworkBlocked, match=r"93\.184\.216\.34"):
        sock.connect(("93.184.216.34", 443))


@pytest.mark.parametrize(("family", "host"), [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_loopback_connect_is_allowed_and_carries_data(family: socket.AddressFamily, host: str) -> None:
    with socket.socket(family) as server:
        try:
            server.bind((host, 0))
        except OSError:
            pytest.skip(f"{host} is not configured on this machine")
        server.listen(1)
        with socket.socket(family) as client:
            client.connect(server.getsockname())
            accepted, _ = server.accept()
            with accepted:
                client.sendall(b"ping")
                assert accepted.recv(4) == b"ping"
        with socket.socket(family) as client:
            assert client.connect_ex(server.getsockname()) == 0


def test_connect_ex_to_the_network_is_refused_too() -> None:
    with socket.socket() as sock, pytest.raises(NetworkBlocked, match=r"93\.184\.216\.34"):
        sock.connect_ex(("93.184.216.34", 443))


def test_unix_sockets_are_allowed(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
        server.listen(1)
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(path)
            accepted, _ = server.accept()
            with accepted:
                accepted.sendall(b"pong")
                assert client.recv(4) == b"pong"
