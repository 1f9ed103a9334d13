"""The sandbox's HTTP servers stay quiet when a peer hangs up mid-request, and still report real errors."""

from __future__ import annotations

import http.server
import socket
import struct
import threading

import pytest

from vigil_sandbox import httpserve

#: Set once a request line was read: the server then reads the headers from the client.
reading_headers = threading.Event()


class _Handler(http.server.BaseHTTPRequestHandler):
    def parse_request(self) -> bool:
        reading_headers.set()
        return super().parse_request()

    def do_GET(self) -> None:
        raise ValueError("a bug in the handler")

    def log_message(self, format: str, *args: object) -> None:
        pass


def _serve() -> tuple[httpserve.Server, threading.Thread]:
    server = httpserve.Server(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


def _stop(server: httpserve.Server, thread: threading.Thread) -> None:
    server.shutdown()
    server.server_close()  # joins the request threads: their output is written by now
    thread.join(10)


def test_a_peer_that_resets_mid_request_prints_nothing(capfd: pytest.CaptureFixture[str]) -> None:
    server, thread = _serve()
    try:
        client = socket.create_connection(server.server_address[:2])
        reading_headers.clear()
        client.sendall(b"GET /metrics HTTP/1.1\r\nHost: x")  # no end of line: the server is reading
        assert reading_headers.wait(10)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()  # RST: the server's read fails with ConnectionResetError
    finally:
        _stop(server, thread)
    assert "Traceback" not in capfd.readouterr().err


def test_any_other_error_is_still_printed(capfd: pytest.CaptureFixture[str]) -> None:
    server, thread = _serve()
    try:
        with socket.create_connection(server.server_address[:2]) as client:
            client.sendall(b"GET / HTTP/1.0\r\n\r\n")
            client.recv(1024)
    finally:
        _stop(server, thread)
    err = capfd.readouterr().err
    assert "ValueError: a bug in the handler" in err
