"""A small blocking HTTP/1.1 client on ``http.client`` with keep-alive connection reuse.

No redirects, no auth, no retries: the registry client decides those. Safe to share
between threads: a connection is used by one request at a time and goes back to the
idle pool only when its response was read to the end.

    client = HttpClient(timeout=30)
    resp = client.request("GET", "https://host/v2/", headers={...})
    resp.status, resp.header("Content-Type"), resp.read(n), resp.read_all(limit)
    resp.close()
"""

from __future__ import annotations

import http.client
import ssl
import threading
from collections.abc import Iterable, Mapping
from typing import IO, Protocol
from urllib.parse import urlsplit

from berth.errors import InvalidArgument

USER_AGENT = "berth/0.1"
_IDLE_PER_HOST = 8
_SEND_BLOCK = 1 << 20



class Readable(Protocol):
    """A request body that http.client reads in blocks (a file, a counting wrapper)."""

    def read(self, amount: int = -1) -> bytes: ...


Body = bytes | IO[bytes] | Readable | Iterable[bytes] | None
_Key = tuple[str, str, int]

# errors that mean "the idle keep-alive connection was closed by the server"
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


class Response:
    """One response; read the body, then close() (which may recycle the connection)."""

    def __init__(self, client: HttpClient, key: _Key, conn: http.client.HTTPConnection,
                 raw: http.client.HTTPResponse, method: str, url: str) -> None:
        self._client = client
        self._key = key
        self._conn: http.client.HTTPConnection | None = conn
        self.raw = raw
        self.method = method
        self.url = url
        self.status = raw.status
        self.reason = raw.reason
        self.headers = raw.headers

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def header_all(self, name: str) -> list[str]:
        return self.headers.get_all(name) or []

    @property
    def length(self) -> int | None:
        """Content-Length, if the server sent a valid one."""
        value = self.headers.get("Content-Length")
        try:
            return int(value) if value is not None else None
        except ValueError:
            return None

    def read(self, amount: int | None = None) -> bytes:
        return self.raw.read(amount)

    def readinto(self, buffer: bytearray | memoryview) -> int:
        return self.raw.readinto(buffer)

    def read_all(self, limit: int) -> bytes:
        """The whole body; InvalidArgument (``body too large``) past ``limit`` bytes."""
        data = self.raw.read(limit + 1)
        if len(data) > limit:
            self.close()
            raise InvalidArgument(f"response body from {self.url} larger than {limit} bytes")
        return data

    def drain(self, limit: int = 64 << 10) -> None:
        """Read a small leftover body so the connection can be reused."""
        try:
            self.raw.read(limit)
        except (OSError, http.client.HTTPException):
            pass

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        reusable = self.raw.isclosed() and not self.raw.will_close
        self.raw.close()
        if reusable:
            self._client._put_idle(self._key, conn)
        else:
            conn.close()

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class HttpClient:
    def __init__(self, *, timeout: float = 30.0, ssl_context: ssl.SSLContext | None = None) -> None:
        self.timeout = timeout
        self._ssl_context = ssl_context
        self._idle: dict[_Key, list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: Body = None,
    ) -> Response:
        """Send one request and return once the status line and headers are in.

        Connection errors (OSError, http.client.HTTPException) propagate; a stale
        keep-alive connection is replaced once, transparently, when the body can be
        sent again (bytes or no body).
        """
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidArgument(f"unsupported URL {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        key: _Key = (parts.scheme, parts.hostname, port)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        all_headers = {"User-Agent": USER_AGENT}
        all_headers.update(headers or {})
        if body is None and method in ("PUT", "POST", "PATCH"):
            all_headers.setdefault("Content-Length", "0")
        replayable = body is None or isinstance(body, (bytes, bytearray))

        conn = self._take_idle(key)
        reused = conn is not None
        while True:
            if conn is None:
                conn = self._connect(key)
            try:
                conn.request(method, target, body=body, headers=all_headers)
                raw = conn.getresponse()
            except _STALE:
                conn.close()
                if reused and replayable:
                    conn, reused = None, False
                    continue
                raise
            except BaseException:
                conn.close()
                raise
            return Response(self, key, conn, raw, method, url)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()

    def _connect(self, key: _Key) -> http.client.HTTPConnection:
        scheme, host, port = key
        if scheme == "https":
            context = self._ssl_context or _default_ssl_context()
            return http.client.HTTPSConnection(
                host, port, timeout=self.timeout, context=context, blocksize=_SEND_BLOCK
            )
        return http.client.HTTPConnection(host, port, timeout=self.timeout, blocksize=_SEND_BLOCK)

    def _take_idle(self, key: _Key) -> http.client.HTTPConnection | None:
        with self._lock:
            conns = self._idle.get(key)
            return conns.pop() if conns else None

    def _put_idle(self, key: _Key, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            conns = self._idle.setdefault(key, [])
            if len(conns) < _IDLE_PER_HOST:
                conns.append(conn)
                return
        conn.close()


_ssl_lock = threading.Lock()
_ssl_default: ssl.SSLContext | None = None


def _default_ssl_context() -> ssl.SSLContext:
    """The system's trust store (honours SSL_CERT_FILE/SSL_CERT_DIR), made once."""
    global _ssl_default
    with _ssl_lock:
        if _ssl_default is None:
            _ssl_default = ssl.create_default_context()
        return _ssl_default
