import socket

import pytest

from tests.conftest import NetworkBlocked


def test_non_loopback_connect_is_refused() -> None:
    with socket.socket() as sock, pytest.raises(NetworkBlocked, match=r"93\.184\.216\.34"):
        sock.connect(("93.184.216.34", 443))


def test_loopback_connect_is_allowed() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.socket() as client:
            client.connect(server.getsockname())
