"""A TCP relay that can make the link to a server slow, for the tests of answers that must not wait.

It relays bytes both ways unchanged (TLS passes through untouched, so the client still verifies the real
server's certificate), and while :attr:`SlowLink.delay` is above zero it holds every chunk coming back from
the server for that many seconds: a kube-apiserver far away, as Discord's 3-second answer deadline meets it.
"""

from __future__ import annotations

import asyncio
import threading

from vigil_sandbox.ports import free_port

CHUNK = 64 * 1024


class SlowLink:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.delay = 0.0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="slow-link", daemon=True)
        self._server: asyncio.AbstractServer | None = None

    def __enter__(self) -> SlowLink:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.close()
            return

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, slow: bool) -> None:
            try:
                while chunk := await reader.read(CHUNK):
                    if slow and self.delay > 0:
                        await asyncio.sleep(self.delay)
                    writer.write(chunk)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()

        await asyncio.gather(pipe(client_reader, server_writer, False), pipe(server_reader, client_writer, True))
