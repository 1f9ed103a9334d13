"""The sandbox's threaded HTTP servers (replay exporter, chat capture, fault proxy) share one base.

``socketserver`` prints a traceback to stderr for any exception in a request thread, including a
peer that hangs up mid-request (Prometheus stopping during a scrape, boto3 dropping a keep-alive
connection). Those are the peer's business, not an error of the server: they are ignored here, and
everything else is still printed.
"""

from __future__ import annotations

import sys
from http.server import ThreadingHTTPServer
from typing import Any

#: A peer that went away: nothing to report.
HUNG_UP = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


class Server(ThreadingHTTPServer):
    """A threaded HTTP server that ignores peers hanging up (HUNG_UP) and reports any other error."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], HUNG_UP):
            return
        super().handle_error(request, client_address)
