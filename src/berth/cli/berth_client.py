"""The Docker Engine API client that ``berth`` uses: http.client over a unix socket.

    api = Client("unix:///run/berth/berth.sock")
    api.get("/containers/json", all=1)              # parsed JSON; APIError on >= 400
    resp = api.call("POST", "/images/create", query={...}, stream=True)
    for message in iter_json(resp): ...             # progress, events
    conn = api.hijack("POST", "/containers/ID/attach", query={...})
    conn.sock, conn.leftover, conn.multiplexed      # the raw stream after the head

Errors: ``APIError`` (the daemon answered >= 400: its message, its status) and
``ConnectionFailed`` (nothing listens on the socket).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import urllib.parse
from collections.abc import Iterator
from typing import Any

API_VERSION = "1.43"
DEFAULT_HOST = "unix:///run/berth/berth.sock"


class APIError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ConnectionFailed(Exception):
    pass


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None = None) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if self.timeout is not None:
            sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class Hijacked:
    """A connection taken over after the response head: ``sock`` plus the bytes already read."""

    def __init__(self, sock: socket.socket, leftover: bytes, content_type: str) -> None:
        self.sock = sock
        self.leftover = leftover
        self.multiplexed = "multiplexed" in content_type

    def recv(self, size: int = 65536) -> bytes:
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
    return "?" + urllib.parse.urlencode(pairs) if pairs else ""


class Client:
    def __init__(self, host: str | None = None) -> None:
        self.host = host or os.environ.get("BERTH_HOST") or DEFAULT_HOST
        self.path = host_path(self.host)

    def _url(self, path: str, query: dict[str, Any] | None) -> str:
        return f"/v{API_VERSION}{path}{_query(query)}"

    def _connection(self, timeout: float | None = None) -> _UnixConnection:
        return _UnixConnection(self.path, timeout)

    def _unreachable(self, exc: OSError) -> ConnectionFailed:
        return ConnectionFailed(f"Cannot connect to the Berth daemon at {self.host}. Is the berth daemon running?"
                                + (f" ({exc.strerror})" if getattr(exc, "strerror", None) else ""))

    def call(self, method: str, path: str, *, query: dict[str, Any] | None = None, body: Any = None,
             headers: dict[str, str] | None = None, stream: bool = False,
             timeout: float | None = None) -> http.client.HTTPResponse:
        """Send a request; the response (its body unread) when the status is < 400."""
        conn = self._connection(timeout)
        hdrs = dict(headers or {})
        data: Any = None
        if isinstance(body, (dict, list)):
            data = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        elif body is not None:  # bytes, a file or an iterator of bytes: sent as they are
            data = body
            hdrs.setdefault("Content-Type", "application/x-tar")
        try:
            encode = data is not None and not isinstance(data, (bytes, bytearray))
            conn.request(method, self._url(path, query), body=data, headers=hdrs, encode_chunked=encode)
            resp = conn.getresponse()
        except (ConnectionRefusedError, FileNotFoundError) as e:
            raise self._unreachable(e) from None
        except PermissionError as e:
            raise ConnectionFailed(f"permission denied while trying to connect to the Berth daemon socket at "
                                   f"{self.host}: {e.strerror}") from None
        if resp.status >= 400:
            raw = resp.read()
            conn.close()
            raise APIError(resp.status, _message(raw, resp.status))
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
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self.path)
        except (ConnectionRefusedError, FileNotFoundError) as e:
            sock.close()
            raise self._unreachable(e) from None
        data = json.dumps(body).encode() if body is not None else b""
        head = (f"{method} {self._url(path, query)} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: berth\r\n"
                "Connection: Upgrade\r\nUpgrade: tcp\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\n\r\n").encode()
        sock.sendall(head + data)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                sock.close()
                raise APIError(500, "the daemon closed the connection")
            buf += chunk
        raw_head, _, rest = buf.partition(b"\r\n\r\n")
        lines = raw_head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        if status >= 400:
            length = int(headers.get("content-length") or 0)
            while len(rest) < length:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                rest += chunk
            sock.close()
            raise APIError(status, _message(rest, status))
        return Hijacked(sock, rest, headers.get("content-type", ""))


def _message(raw: bytes, status: int) -> str:
    try:
        data = json.loads(raw)
        if isinstance(data, dict) and "message" in data:
            return str(data["message"])
    except ValueError:
        pass
    text = raw.decode(errors="replace").strip()
    return text or f"{status} {http.client.responses.get(status, '')}".strip()


def iter_json(resp: http.client.HTTPResponse) -> Iterator[dict]:
    """The JSON messages of a streamed response (one per line)."""
    decoder = json.JSONDecoder()
    buf = ""
    while True:
        chunk = resp.read1(65536) if hasattr(resp, "read1") else resp.read(65536)
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
