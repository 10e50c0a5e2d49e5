"""berth.image._http: keep-alive reuse, and a stale idle connection replaced transparently."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from berth.errors import InvalidArgument
from berth.image._http import HttpClient


class RawServer:
    """Answers each request with a fixed 200; with ``close_after_reply`` it closes the
    connection right after answering although it promised keep-alive (a stale socket)."""

    def __init__(self, close_after_reply: bool = False, body: bytes = b"hello") -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.close_after_reply = close_after_reply
        self.body = body
        self.connections = 0
        self.requests = 0
        self._stop = False
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            self._answer(conn)
        except OSError:
            pass  # the client hung up (an unread body closes the connection)
        finally:
            conn.close()

    def _answer(self, conn: socket.socket) -> None:
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
            _, buf = buf.split(b"\r\n\r\n", 1)
            self.requests += 1
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(self.body), self.body))
            if self.close_after_reply:
                return

    def close(self) -> None:
        self._stop = True
        self.sock.close()


@pytest.fixture
def server() -> Iterator[RawServer]:
    s = RawServer()
    yield s
    s.close()


def test_connection_is_reused(server: RawServer) -> None:
    client = HttpClient(timeout=5)
    for _ in range(3):
        with client.request("GET", server.url + "/x") as resp:
            assert resp.status == 200 and resp.read() == b"hello"
    assert (server.connections, server.requests) == (1, 3)
    client.close()


def test_unread_body_is_not_reused(server: RawServer) -> None:
    client = HttpClient(timeout=5)
    server.body = b"x" * 100_000
    with client.request("GET", server.url) as resp:
        resp.read(10)
    with client.request("GET", server.url) as resp:
        assert len(resp.read()) == 100_000
    assert server.connections == 2


def test_stale_connection_is_replaced() -> None:
    server = RawServer(close_after_reply=True)
    try:
        client = HttpClient(timeout=5)
        for _ in range(3):
            with client.request("GET", server.url) as resp:
                assert resp.read() == b"hello"
        assert server.requests == 3 and server.connections == 3
    finally:
        server.close()


def test_read_all_limit(server: RawServer) -> None:
    with HttpClient(timeout=5).request("GET", server.url) as resp:
        with pytest.raises(InvalidArgument, match="larger than 3 bytes"):
            resp.read_all(3)


def test_bad_url() -> None:
    with pytest.raises(InvalidArgument):
        HttpClient().request("GET", "ftp://x/")
