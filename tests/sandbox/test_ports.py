"""Ports for the sandbox's peers: never from the ephemeral range outgoing connections draw from."""

from __future__ import annotations

import socket

from vigil_sandbox import ports


def test_ports_are_free_distinct_and_below_the_ephemeral_range() -> None:
    low, _ = ports.ephemeral_range()
    given = [ports.free_port() for _ in range(200)]
    assert len(set(given)) == len(given)
    assert all(ports.FLOOR <= port < low for port in given)
    for port in given[:20]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # still free: nothing was left bound


def test_a_port_in_use_is_never_handed_out() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", ports.free_port()))
        taken = busy.getsockname()[1]
        assert taken not in {ports.free_port() for _ in range(300)}
