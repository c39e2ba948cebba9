"""A throwaway HTTP server on a free loopback port, for tests that need an odd Atlassian.

The simulator is the Atlassian stand-in; these serve the answers it would never give (a
hostile redirect, a cut connection, a token answer of the wrong shape).
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from typing_extensions import override


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that keeps the test output clean (no access log on stderr)."""

    @override
    def log_message(self, *args: object) -> None:
        pass


class LoopbackServer:
    """Serves ``handler`` on 127.0.0.1 at a free port from a thread of its own."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)
