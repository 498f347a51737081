"""An HTTP proxy that can hold writes: put in front of a store (moto's S3 in the end-to-end
suite), it forwards every request as it is, except that while `hold(containing)` is on,
each PUT whose path contains `containing` waits before it is forwarded until `release()`.
A test so stops a service exactly at "writing the object", with no transaction open.

It runs in threads of its own (one per connection), so it keeps serving whatever the
test's event loop is doing."""

from __future__ import annotations

import http.client
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Not forwarded: they describe one hop (the proxy answers `Expect: 100-continue` itself and
# every answer with a Content-Length).
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "expect",
}


class HoldingProxy:
    def __init__(self, upstream: str) -> None:
        target = urllib.parse.urlsplit(upstream)
        self._upstream = (target.hostname or "127.0.0.1", target.port or 80)
        self._lock = threading.Lock()
        self._holding: str | None = None
        self._released = threading.Event()
        self._held = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def held(self) -> int:
        """How many PUTs are waiting now."""
        with self._lock:
            return self._held

    def start(self) -> HoldingProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()

    def hold(self, containing: str) -> None:
        """From now on, PUTs whose path contains `containing` wait for `release()`."""
        with self._lock:
            self._released = threading.Event()
            self._holding = containing

    def release(self) -> None:
        """Forwards every held PUT and stops holding."""
        with self._lock:
            self._holding = None
            self._released.set()

    def _wait_if_held(self, method: str, path: str) -> None:
        with self._lock:
            holding, released = self._holding, self._released
            if method != "PUT" or holding is None or holding not in path:
                return
            self._held += 1
        try:
            released.wait()
        finally:
            with self._lock:
                self._held -= 1

    def _forward(
        self, method: str, path: str, headers: list[tuple[str, str]], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        connection = http.client.HTTPConnection(*self._upstream, timeout=60)
        try:
            connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for name, value in headers:
                if name.lower() not in HOP_BY_HOP:
                    connection.putheader(name, value)
            connection.endheaders(body or None)
            response = connection.getresponse()
            data = response.read()
            kept = [(n, v) for n, v in response.getheaders() if n.lower() not in HOP_BY_HOP]
            return response.status, kept, data
        finally:
            connection.close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                proxy._wait_if_held(self.command, self.path)
                status, headers, data = proxy._forward(
                    self.command, self.path, list(self.headers.items()), body
                )
                self.send_response_only(status)
                for name, value in headers:
                    # A HEAD answer keeps the object's length; others say what they carry.
                    if self.command == "HEAD" or name.lower() != "content-length":
                        self.send_header(name, value)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

            def log_message(self, format: str, *args: object) -> None:
                return  # quiet: the services log what matters

        return Handler
