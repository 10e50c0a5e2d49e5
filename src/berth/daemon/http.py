"""A small HTTP/1.1 server on asyncio streams, with what the Docker Engine API needs and
generic frameworks make awkward: chunked streaming responses (logs, events, pull
progress), and connection hijacking for attach and exec (``101 UPGRADED`` or a plain
200 followed by a raw bidirectional stream).

    Request ──handler──▶ Response | StreamResponse | Hijack
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable

from berth.errors import BerthError

MAX_HEADER_BYTES = 64 * 1024
REASONS = {
    101: "UPGRADED", 200: "OK", 201: "Created", 204: "No Content", 304: "Not Modified",
    400: "Bad Request", 403: "Forbidden", 404: "Not Found", 409: "Conflict",
    500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable",
}


class HTTPError(Exception):
    """An error answered as Docker does: ``{"message": ...}`` with a status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Request:
    def __init__(self, method: str, target: str, headers: dict[str, str], reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.method = method
        parsed = urllib.parse.urlsplit(target)
        self.path = urllib.parse.unquote(parsed.path)
        self.query = urllib.parse.parse_qs(parsed.query, keep_blank_values=True)
        self.headers = headers
        self.reader = reader
        self.writer = writer
        self.params: dict[str, str] = {}
        self.api_version = ""
        self._body: bytes | None = None

    def arg(self, name: str, default: str = "") -> str:
        values = self.query.get(name)
        return values[-1] if values else default

    def flag(self, name: str, default: bool = False) -> bool:
        if name not in self.query:
            return default
        return self.arg(name).lower() not in ("0", "false", "no", "")

    def int_arg(self, name: str, default: int = 0) -> int:
        raw = self.arg(name)
        if raw == "":
            return default
        try:
            return int(raw)
        except ValueError:
            raise HTTPError(400, f"invalid value for {name}: {raw!r}") from None

    def json_arg(self, name: str, default: object = None) -> object:
        raw = self.arg(name)
        if not raw:
            return default
        try:
            return json.loads(raw)
        except ValueError:
            raise HTTPError(400, f"invalid JSON in parameter {name}") from None

    def filters(self) -> dict[str, list[str]]:
        """Docker's ``filters`` parameter: ``{"key": ["v"]}`` or the old ``{"key": {"v": true}}``."""
        raw = self.json_arg("filters", {}) or {}
        if not isinstance(raw, dict):
            raise HTTPError(400, "invalid filter: filters must be a JSON object")
        out: dict[str, list[str]] = {}
        for key, value in raw.items():
            if isinstance(value, dict):
                out[key] = [k for k, v in value.items() if v]
            elif isinstance(value, list):
                out[key] = [str(v) for v in value]
            else:
                out[key] = [str(value)]
        return out

    async def body(self) -> bytes:
        if self._body is None:
            if self.headers.get("transfer-encoding", "").lower() == "chunked":
                self._body = b"".join([chunk async for chunk in self.iter_body()])
            else:
                length = int(self.headers.get("content-length") or 0)
                self._body = await self.reader.readexactly(length) if length else b""
        return self._body

    async def iter_body(self, size: int = 65536) -> AsyncIterator[bytes]:
        """The request body as it arrives (for image loads and imports)."""
        if self._body is not None:
            yield self._body
            return
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                line = await self.reader.readline()
                length = int(line.split(b";")[0].strip() or b"0", 16)
                if length == 0:
                    while (await self.reader.readline()) not in (b"\r\n", b"\n", b""):
                        pass
                    return
                yield await self.reader.readexactly(length)
                await self.reader.readline()
        else:
            left = int(self.headers.get("content-length") or 0)
            while left > 0:
                chunk = await self.reader.read(min(size, left))
                if not chunk:
                    return
                left -= len(chunk)
                yield chunk

    async def json(self) -> dict:
        raw = await self.body()
        if not raw.strip():
            return {}
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise HTTPError(400, f"invalid JSON: {exc}") from None
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise HTTPError(400, "invalid JSON: expected an object")
        return data


class Response:
    def __init__(self, status: int = 200, body: bytes = b"", content_type: str = "application/json",
                 headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.body = body
        self.headers = {"Content-Type": content_type} if body or status != 204 else {}
        self.headers.update(headers or {})


def json_response(data: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(status, (json.dumps(data) + "\n").encode(), headers=headers)


class StreamResponse:
    """A chunked body produced by an async iterator of bytes."""

    def __init__(self, chunks: AsyncIterator[bytes], content_type: str = "application/json", status: int = 200,
                 headers: dict[str, str] | None = None) -> None:
        self.chunks = chunks
        self.status = status
        self.headers = {"Content-Type": content_type, "Transfer-Encoding": "chunked"}
        self.headers.update(headers or {})


class Hijack:
    """Take over the connection: ``run(reader, writer)`` owns it after the response head."""

    def __init__(self, run: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
                 content_type: str = "application/vnd.docker.raw-stream") -> None:
        self.run = run
        self.content_type = content_type


Handler = Callable[[Request], Awaitable["Response | StreamResponse | Hijack"]]


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str]] | None:
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    except asyncio.LimitOverrunError:
        raise HTTPError(400, "request header too large") from None
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise HTTPError(400, "malformed request line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
    return parts[0], parts[1], headers


def _head(status: int, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def error_response(status: int, message: str) -> Response:
    return json_response({"message": message}, status)


def status_of(exc: BaseException) -> int:
    if isinstance(exc, HTTPError):
        return exc.status
    if isinstance(exc, BerthError):
        return exc.http_status
    return 500


async def serve_connection(handler: Handler, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                           server_headers: dict[str, str], on_error: Callable[[BaseException], None]) -> None:
    """Answer requests on one connection until it closes (keep-alive) or is hijacked."""
    try:
        while True:
            try:
                head = await _read_head(reader)
            except HTTPError as exc:
                writer.write(_encode(error_response(exc.status, exc.message), server_headers, keep_alive=False))
                break
            if head is None:
                break
            method, target, headers = head
            request = Request(method, target, headers, reader, writer)
            try:
                response = await handler(request)
            except Exception as exc:  # noqa: BLE001 - every error becomes Docker's JSON
                if status_of(exc) == 500 and not isinstance(exc, BerthError):
                    on_error(exc)
                response = error_response(status_of(exc), getattr(exc, "message", None) or str(exc))
            if isinstance(response, Hijack):
                upgrade = headers.get("upgrade", "").lower() == "tcp"
                hdrs = dict(server_headers, **{"Content-Type": response.content_type})
                if upgrade:
                    hdrs.update({"Connection": "Upgrade", "Upgrade": "tcp"})
                writer.write(_head(101 if upgrade else 200, hdrs))
                await writer.drain()
                await response.run(reader, writer)
                return
            if isinstance(response, StreamResponse):
                writer.write(_head(response.status, dict(server_headers, **response.headers)))
                await writer.drain()
                try:
                    async for chunk in response.chunks:
                        if chunk:
                            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                            await writer.drain()
                except (ConnectionError, asyncio.CancelledError):
                    return
                writer.write(b"0\r\n\r\n")
                await writer.drain()
                continue
            keep_alive = headers.get("connection", "").lower() != "close"
            writer.write(_encode(response, server_headers, keep_alive))
            await writer.drain()
            if not keep_alive:
                break
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        try:
            writer.close()
        except Exception:  # noqa: BLE001
            pass


def _encode(response: Response, server_headers: dict[str, str], keep_alive: bool) -> bytes:
    headers = dict(server_headers, **response.headers)
    headers["Content-Length"] = str(len(response.body))
    if not keep_alive:
        headers["Connection"] = "close"
    return _head(response.status, headers) + response.body
