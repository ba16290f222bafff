"""keeper/auth.py: who listens on a port, asked over sock_diag, against the kernel's
other account of it, /proc/net/tcp{,6}. (A listener of another user refused the
local token: tests/test_security.py.)"""

from __future__ import annotations

import os
import socket

from keeper.auth import diag_listener_owners, listener_owners, proc_listener_owners


def test_sock_diag_names_the_owners_that_proc_net_tcp_names() -> None:
    with (
        socket.socket(socket.AF_INET) as v4,
        socket.socket(socket.AF_INET6) as v6,
        socket.socket(socket.AF_INET) as bound_only,
    ):
        v4.bind(("127.0.0.1", 0))
        v6.bind(("::1", 0))
        bound_only.bind(("127.0.0.1", 0))
        v4.listen()
        v6.listen()
        ports = [sock.getsockname()[1] for sock in (v4, v6, bound_only)]
        for port in ports:
            assert diag_listener_owners(port) == proc_listener_owners(port), port
        assert listener_owners(ports[0]) == listener_owners(ports[1]) == {os.getuid()}
        assert listener_owners(ports[2]) == set()  # bound, not listening
