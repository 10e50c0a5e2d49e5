"""A fault-injecting HTTP proxy in front of a real registry (127.0.0.1 only).

    proxy = FaultProxy("127.0.0.1:5000"); proxy.start()
    proxy.drop_blob_after = 1000        # first blob GET: send 1000 bytes, then hang up
    proxy.corrupt_blobs = True          # flip one byte of every blob body
    proxy.content_type = {"manifests/v1": "application/vnd.docker.distribution.manifest.v2+json"}
    proxy.huge_manifest = True          # answer manifest GETs with a 5 MiB body
    proxy.ignore_range = True           # answer Range requests with the whole blob (200)
    proxy.require_basic = ("user", "pw")# 401 + WWW-Authenticate: Basic without them
    proxy.redirect_blobs = True         # 307 blob GETs to http://localhost:<port>/... (another host)
    proxy.fail_next = 2                 # the next 2 requests get 503
    proxy.requests                      # (method, path, headers) of every request seen
"""

from __future__ import annotations

import base64
import http.client
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class QuietServer(ThreadingHTTPServer):
    """A threading HTTP server that keeps handler errors (a client hanging up on
    purpose, as the client under test does on a too-large body) in ``errors``
    instead of printing tracebacks."""

    daemon_threads = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.errors: list[str] = []

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        self.errors.append(repr(sys.exc_info()[1]))


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.drop_blob_after: int | None = None
        self.corrupt_blobs = False
        self.content_type: dict[str, str] = {}
        self.huge_manifest = False
        self.ignore_range = False
        self.require_basic: tuple[str, str] | None = None
        self.redirect_blobs = False
        self.fail_next = 0
        self._lock = threading.Lock()
        self._server: QuietServer | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self._server = QuietServer(("127.0.0.1", 0), self._handler())
        threading.Thread(target=self._server.serve_forever, args=(0.05,), name="fault-proxy", daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _take(self, attr: str) -> Any:
        with self._lock:
            value = getattr(self, attr)
            if attr == "drop_blob_after":
                self.drop_blob_after = None
            elif attr == "fail_next" and value:
                self.fail_next -= 1
            return value

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._proxy()

            def do_HEAD(self) -> None:
                self._proxy()

            def do_PUT(self) -> None:
                self._proxy()

            def do_POST(self) -> None:
                self._proxy()

            def do_PATCH(self) -> None:
                self._proxy()

            def do_DELETE(self) -> None:
                self._proxy()

            def _proxy(self) -> None:
                headers = {k: v for k, v in self.headers.items()}
                proxy.requests.append((self.command, self.path, headers))
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                is_blob_get = self.command == "GET" and "/blobs/sha256:" in self.path
                redirected = self.path.startswith("/redirected/")
                path = self.path[len("/redirected"):] if redirected else self.path

                if proxy._take("fail_next"):
                    return self._reply(503, {"Content-Type": "application/json"},
                                       b'{"errors":[{"code":"UNAVAILABLE","message":"injected"}]}')
                if proxy.require_basic and not redirected:
                    user, password = proxy.require_basic
                    want = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
                    if headers.get("Authorization") != want:
                        return self._reply(401, {"WWW-Authenticate": 'Basic realm="test"',
                                                 "Content-Type": "application/json"},
                                           b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}')
                if proxy.redirect_blobs and is_blob_get and not redirected:
                    location = f"http://localhost:{proxy.port}/redirected{path}"
                    return self._reply(307, {"Location": location}, b"")
                if proxy.huge_manifest and self.command == "GET" and "/manifests/" in path:
                    big = b'{"schemaVersion":2,"padding":"' + b"x" * (5 << 20) + b'"}'
                    return self._reply(200, {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}, big)

                up_headers = {k: v for k, v in headers.items() if k.lower() not in ("host", "connection")}
                if proxy.ignore_range:
                    up_headers.pop("Range", None)
                conn = http.client.HTTPConnection(proxy.upstream, timeout=30)
                try:
                    conn.request(self.command, path, body=body, headers=up_headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    out_headers = {k: v for k, v in resp.getheaders()
                                   if k.lower() not in ("content-length", "connection", "transfer-encoding")}
                    status = resp.status
                finally:
                    conn.close()
                if "Location" in out_headers and out_headers["Location"].startswith(f"http://{proxy.upstream}"):
                    out_headers["Location"] = out_headers["Location"].replace(proxy.upstream, proxy.host, 1)
                for needle, ctype in proxy.content_type.items():
                    if needle in path:
                        out_headers["Content-Type"] = ctype
                if is_blob_get and status in (200, 206) and data:
                    if proxy.corrupt_blobs:
                        data = bytes([data[0] ^ 0xFF]) + data[1:]
                    cut = proxy._take("drop_blob_after")
                    if cut is not None:
                        return self._reply_cut(status, out_headers, data, cut)
                self._reply(status, out_headers, data, head=self.command == "HEAD")

            def _reply(self, status: int, headers: dict[str, str], data: bytes, head: bool = False) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                if not head or "Content-Length" not in headers:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if not head:
                    self.wfile.write(data)

            def _reply_cut(self, status: int, headers: dict[str, str], data: bytes, cut: int) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[:cut])
                self.wfile.flush()
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        return Handler
