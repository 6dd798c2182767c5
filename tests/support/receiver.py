"""A webhook receiver on 127.0.0.1 that keeps the JSON it was sent (the alert tests' notifier target)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer


class Receiver:
    """POSTs to any path are answered 204 and kept in `received` (parsed JSON), their paths in `paths`."""

    def __init__(self) -> None:
        received, paths = self.received, self.paths = [], []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                received.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
                paths.append(self.path)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_port
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.apprise_url = f"json://127.0.0.1:{self.port}/alerts"  # apprise's JSON webhook to this receiver
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
