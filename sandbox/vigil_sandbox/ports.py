"""Loopback ports for the sandbox's peers (Prometheus, moto, the API emulator, ``vigil run``).

A peer that cannot be told "bind port 0 and report it" needs a port chosen before it starts.
Asking the kernel for port 0 and releasing it is the usual trick, but that port comes from the
ephemeral range, the same range every *outgoing* connection draws its local port from: on a busy
machine a client socket can take it between the release and the peer's bind. So ports are drawn
from below the ephemeral range (which the kernel never hands out on its own), never twice in one
process, and checked to be bindable right now. Callers that can retry on a clash still should.

Several processes drawing at once (pytest-xdist workers, each with its own peers) would still meet:
``VIGIL_PORT_RANGE=low-high`` gives each its own slice (tests/conftest.py sets it per worker, and the
processes a worker starts inherit it).
"""

from __future__ import annotations

import os
import pathlib
import random
import socket
import threading

#: Lowest port we hand out: above the registered ports most daemons use by default.
FLOOR = 20000
_given: set[int] = set()
_lock = threading.Lock()


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range for outgoing connections' local ports (Linux default 32768-60999)."""
    try:
        low, high = pathlib.Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def span() -> tuple[int, int]:
    """The ports this process draws from: ``VIGIL_PORT_RANGE`` if set, else FLOOR up to the ephemeral range
    (or up to 65535, skipping that range, when it starts too low to leave room below it)."""
    given = os.environ.get("VIGIL_PORT_RANGE", "")
    if given:
        try:
            low, high = (int(part) for part in given.split("-", 1))
        except ValueError:
            raise RuntimeError(f"VIGIL_PORT_RANGE must be LOW-HIGH, not {given!r}") from None
        if not 1024 <= low < high <= 65535:
            raise RuntimeError(f"VIGIL_PORT_RANGE {given!r} is not within 1024-65535")
        return low, high
    low, _ = ephemeral_range()
    return FLOOR, (low - 1 if low - 1 > FLOOR + 1000 else 65535)


def free_port(host: str = "127.0.0.1") -> int:
    """A port on ``host`` nothing listens on, outside the ephemeral range, not handed out before here."""
    low, _ = ephemeral_range()
    floor, ceiling = span()
    rng = random.Random()
    with _lock:
        for _ in range(1000):
            port = rng.randint(floor, ceiling)
            if port in _given or (ceiling == 65535 and port >= low):
                continue
            with socket.socket() as s:
                try:
                    s.bind((host, port))
                except OSError:
                    continue
            _given.add(port)
            return port
    raise RuntimeError(f"no free port on {host} between {floor} and {ceiling}")
