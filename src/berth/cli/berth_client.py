"""The Docker Engine API client that ``berth`` uses: HTTP/1.1 over a unix socket.

    api = Client("unix:///run/berth/berth.sock")
    api.get("/containers/json", all=1)              # parsed JSON; APIError on >= 400
    resp = api.call("POST", "/images/create", query={...})
    for message in iter_json(resp): ...             # progress, events
    conn = api.hijack("POST", "/containers/ID/attach", query={...})
    conn.sock, conn.leftover, conn.multiplexed      # the raw stream after the head

HTTP is spoken here directly (a request, a head, a body by Content-Length or chunks)
rather than through ``http.client``, whose imports (email, ssl) cost more than the rest
of a ``berth run``'s client side together.

Errors: ``APIError`` (the daemon answered >= 400: its message, its status) and
``ConnectionFailed`` (nothing listens on the socket).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator

TYPE_CHECKING = False  # not typing's: importing typing would cost every berth command ~4 ms
if TYPE_CHECKING:
    from typing import Any

API_VERSION = "1.43"
DEFAULT_HOST = "unix:///run/berth/berth.sock"
_CHUNK = 65536


class APIError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ConnectionFailed(Exception):
    pass


class _Reader:
    """Buffered reads from a socket: lines, exact counts, whatever is there."""

    def __init__(self, sock: socket.socket, data: bytes = b"") -> None:
        self.sock = sock
        self.buf = bytearray(data)

    def fill(self) -> bool:
        data = self.sock.recv(_CHUNK)
        self.buf += data
        return bool(data)

    def readline(self) -> bytes:
        while b"\n" not in self.buf:
            if not self.fill():
                line = bytes(self.buf)
                self.buf.clear()
                return line
        end = self.buf.index(b"\n") + 1
        line = bytes(self.buf[:end])
        del self.buf[:end]
        return line

    def take(self, n: int) -> bytes:
        """Up to ``n`` bytes, waiting for at least one (b"" at the end of the stream)."""
        if not self.buf and not self.fill():
            return b""
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data


class Response:
    """A response head and its body, read as it comes (``read``, ``read1``)."""

    def __init__(self, sock: socket.socket, reader: _Reader, status: int, headers: dict[str, str],
                 has_body: bool) -> None:
        self.sock = sock
        self._reader = reader
        self.status = status
        self.headers = headers
        self._chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        length = headers.get("content-length")
        self._left = int(length) if length is not None and not self._chunked else -1
        self._chunk_left = 0
        self._done = not has_body or self._left == 0

    def getheader(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)

    def read1(self, n: int = _CHUNK) -> bytes:
        if self._done:
            return b""
        if self._chunked:
            if self._chunk_left == 0:
                size = int(self._reader.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self._reader.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    self._done = True
                    return b""
                self._chunk_left = size
            data = self._reader.take(min(n, self._chunk_left))
            self._chunk_left -= len(data)
            if self._chunk_left == 0:
                self._reader.readline()  # the CRLF after the chunk
        elif self._left >= 0:
            data = self._reader.take(min(n, self._left))
            self._left -= len(data)
            if self._left == 0:
                self._done = True
        else:
            data = self._reader.take(n)
        if not data:
            self._done = True
        return data

    def read(self, n: int = -1) -> bytes:
        out = bytearray()
        while n < 0 or len(out) < n:
            data = self.read1(_CHUNK if n < 0 else n - len(out))
            if not data:
                break
            out += data
        return bytes(out)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class Hijacked:
    """A connection taken over after the response head: ``sock`` plus the bytes already read."""

    def __init__(self, sock: socket.socket, leftover: bytes, content_type: str) -> None:
        self.sock = sock
        self.leftover = leftover
        self.multiplexed = "multiplexed" in content_type

    def recv(self, size: int = _CHUNK) -> bytes:
        if self.leftover:
            data, self.leftover = self.leftover, b""
            return data
        return self.sock.recv(size)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def host_path(host: str) -> str:
    if host.startswith("unix://"):
        return host[len("unix://"):]
    if host.startswith("/"):
        return host
    raise ConnectionFailed(f"unsupported host {host!r}: only unix:// sockets are supported")


# urllib.parse's quote and urlencode, without importing urllib.parse (~2 ms of every command)
_ALWAYS_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")
_PATH_SAFE = _ALWAYS_SAFE | frozenset(b"/:@!$&'()*+,;=")
_FORM_SAFE = _ALWAYS_SAFE | frozenset(b" ")


def quote(text: str, safe: frozenset[int] = _PATH_SAFE) -> str:
    """Percent-encode the UTF-8 bytes of ``text`` that are not in ``safe`` (as ``urllib.parse.quote``)."""
    raw = text.encode("utf-8")
    if all(b in safe for b in raw):
        return text
    return "".join(chr(b) if b in safe else f"%{b:02X}" for b in raw)


def urlencode(pairs: list[tuple[str, str]]) -> str:
    """``urllib.parse.urlencode`` of string pairs: ``quote_plus`` of each key and value."""
    return "&".join(quote(k, _FORM_SAFE).replace(" ", "+") + "=" + quote(v, _FORM_SAFE).replace(" ", "+")
                    for k, v in pairs)


def _query(query: dict[str, Any] | None) -> str:
    if not query:
        return ""
    pairs: list[tuple[str, str]] = []
    for key, value in query.items():
        if value is None:
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if isinstance(v, bool):
                v = "1" if v else "0"
            elif isinstance(v, dict):
                v = json.dumps(v)
            pairs.append((key, str(v)))
    return "?" + urlencode(pairs) if pairs else ""


def _read_head(reader: _Reader) -> tuple[int, dict[str, str]]:
    line = reader.readline()
    if not line:
        raise APIError(500, "the daemon closed the connection without answering")
    parts = line.decode("latin-1").split(" ", 2)
    try:
        status = int(parts[1])
    except (IndexError, ValueError):
        raise APIError(500, f"malformed answer from the daemon: {line[:80]!r}") from None
    headers: dict[str, str] = {}
    while True:
        line = reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        key, _, value = line.decode("latin-1").partition(":")
        headers[key.strip().lower()] = value.strip()
    return status, headers


class Client:
    def __init__(self, host: str | None = None) -> None:
        self.host = host or os.environ.get("BERTH_HOST") or DEFAULT_HOST
        self.path = host_path(self.host)

    def _url(self, path: str, query: dict[str, Any] | None) -> str:
        return quote(f"/v{API_VERSION}{path}") + _query(query)

    def _connect(self, timeout: float | None) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(self.path)
        except (ConnectionRefusedError, FileNotFoundError) as e:
            sock.close()
            raise ConnectionFailed(f"Cannot connect to the Berth daemon at {self.host}. Is the berth daemon "
                                   f"running? ({e.strerror})") from None
        except PermissionError as e:
            sock.close()
            raise ConnectionFailed(f"permission denied while trying to connect to the Berth daemon socket at "
                                   f"{self.host}: {e.strerror}") from None
        return sock

    def _send(self, sock: socket.socket, method: str, target: str, headers: dict[str, str], body: Any) -> None:
        hdrs = {"Host": "localhost", "User-Agent": "berth"}
        hdrs.update(headers)
        data = b""
        stream = None
        if isinstance(body, (dict, list)):
            data = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        elif isinstance(body, (bytes, bytearray)):
            data = bytes(body)
            hdrs.setdefault("Content-Type", "application/x-tar")
        elif body is not None:  # a file or an iterator of bytes: chunked
            stream = iter(lambda: body.read(1 << 20), b"") if hasattr(body, "read") else body
            hdrs.setdefault("Content-Type", "application/x-tar")
            hdrs["Transfer-Encoding"] = "chunked"
        if stream is None and (body is not None or method in ("POST", "PUT")):
            hdrs["Content-Length"] = str(len(data))
        head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
        try:
            sock.sendall(head.encode("latin-1") + data)
            if stream is not None:
                for chunk in stream:
                    if chunk:
                        sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the daemon answered early (an error): its answer is read next

    def call(self, method: str, path: str, *, query: dict[str, Any] | None = None, body: Any = None,
             headers: dict[str, str] | None = None, timeout: float | None = None) -> Response:
        """Send a request; the response (its body unread) when the status is < 400."""
        sock = self._connect(timeout)
        try:
            self._send(sock, method, self._url(path, query), dict(headers or {}), body)
            reader = _Reader(sock)
            status, hdrs = _read_head(reader)
        except BaseException:
            sock.close()
            raise
        resp = Response(sock, reader, status, hdrs, has_body=method != "HEAD" and status not in (204, 304))
        if status >= 400:
            raw = resp.read()
            resp.close()
            raise APIError(status, _message(raw, status))
        return resp

    def request(self, method: str, path: str, *, query: dict[str, Any] | None = None, body: Any = None,
                headers: dict[str, str] | None = None, timeout: float | None = None) -> Any:
        """A request whose answer is JSON (or empty: None)."""
        resp = self.call(method, path, query=query, body=body, headers=headers, timeout=timeout)
        raw = resp.read()
        resp.close()
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode(errors="replace")

    def get(self, path: str, **query: Any) -> Any:
        return self.request("GET", path, query=query)

    def post(self, path: str, body: Any = None, **query: Any) -> Any:
        return self.request("POST", path, query=query, body=body)

    def delete(self, path: str, **query: Any) -> Any:
        return self.request("DELETE", path, query=query)

    def hijack(self, method: str, path: str, *, query: dict[str, Any] | None = None, body: Any = None) -> Hijacked:
        """Send a request that upgrades the connection (attach, exec start)."""
        sock = self._connect(None)
        headers = {"Connection": "Upgrade", "Upgrade": "tcp", "Content-Type": "application/json"}
        try:
            self._send(sock, method, self._url(path, query), headers, body if body is not None else b"")
            reader = _Reader(sock)
            status, hdrs = _read_head(reader)
        except BaseException:
            sock.close()
            raise
        if status >= 400:
            resp = Response(sock, reader, status, hdrs, has_body=True)
            raw = resp.read()
            resp.close()
            raise APIError(status, _message(raw, status))
        return Hijacked(sock, bytes(reader.buf), hdrs.get("content-type", ""))


def _message(raw: bytes, status: int) -> str:
    try:
        data = json.loads(raw)
        if isinstance(data, dict) and "message" in data:
            return str(data["message"])
    except ValueError:
        pass
    text = raw.decode(errors="replace").strip()
    return text or f"the daemon answered {status}"


def iter_json(resp: Response) -> Iterator[dict]:
    """The JSON messages of a streamed response (one after another, whitespace between)."""
    decoder = json.JSONDecoder()
    buf = ""
    while True:
        chunk = resp.read1(_CHUNK)
        if not chunk:
            break
        buf += chunk.decode(errors="replace")
        while True:
            buf = buf.lstrip()
            if not buf:
                break
            try:
                obj, end = decoder.raw_decode(buf)
            except ValueError:
                break
            buf = buf[end:]
            yield obj
    resp.close()


def registry_auth(reference: str) -> str:
    """The X-Registry-Auth header for a reference, from Docker's config.json (base64url)."""
    import base64

    try:
        from berth.image.auth import DockerConfigCredentials
        from berth.image.reference import parse_reference

        domain = parse_reference(reference).domain
        creds = DockerConfigCredentials().get(domain)
    except Exception:  # noqa: BLE001 - no usable credentials: anonymous
        creds, domain = None, ""
    doc: dict[str, str] = {}
    if creds is not None:
        doc = {"username": creds.username, "password": creds.password, "serveraddress": domain}
        if creds.identity_token:
            doc["identitytoken"] = creds.identity_token
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode()
