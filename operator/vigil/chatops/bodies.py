"""Reading a whole HTTP body within a byte budget.

``StreamReader.read(n)`` returns what has arrived so far, up to ``n`` bytes: a body that comes in
several TCP segments (a list of actions from the API server, a large interaction) would be cut
short, parse as garbage, and read as "nothing there". :func:`read_bounded` reads to the end, and
stops as soon as the budget is passed.
"""

from __future__ import annotations

import aiohttp

#: Bytes asked for per read: the reader hands over what it has, at most this.
CHUNK = 64 << 10


async def read_bounded(stream: aiohttp.StreamReader, limit: int) -> bytes | None:
    """The whole body, or None once it is larger than ``limit`` bytes (the rest is left unread)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await stream.read(min(CHUNK, limit + 1 - size))
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
