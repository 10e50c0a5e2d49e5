"""The terminal side of attach and exec: copy a hijacked connection to stdout/stderr
(demultiplexing Docker's 8-byte frames when the stream is not a tty), stdin to the
connection (raw mode on a terminal, the detach keys intercepted), window sizes to the
daemon on SIGWINCH, and signals to the container (``--sig-proxy``)."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import struct
import sys
from collections.abc import Callable, Iterator

from berth.cli.berth_client import Hijacked
from berth.cli.berth_common import UsageError

DEFAULT_DETACH_KEYS = b"\x10\x11"  # ctrl-p ctrl-q


def parse_detach_keys(text: str) -> bytes:
    """Docker's ``--detach-keys``: ``ctrl-p,ctrl-q``, ``a,ctrl-@``..."""
    if not text:
        return DEFAULT_DETACH_KEYS
    out = bytearray()
    for key in text.split(","):
        key = key.strip().lower()
        if len(key) == 1:
            out.append(ord(key))
        elif key.startswith("ctrl-") and len(key) == 6:
            ch = key[5]
            if "a" <= ch <= "z":
                out.append(ord(ch) - ord("a") + 1)
            elif ch in "@[\\]^_":
                out.append({"@": 0, "[": 27, "\\": 28, "]": 29, "^": 30, "_": 31}[ch])
            else:
                raise UsageError(f"Unknown character: '{key}'")
        else:
            raise UsageError(f"Unknown character: '{key}'")
    return bytes(out)


class Demux:
    """Docker's multiplexed stream: [stream, 0, 0, 0, size (big endian u32)] + payload."""

    def __init__(self, stdout: Callable[[bytes], None], stderr: Callable[[bytes], None]) -> None:
        self._out = {0: stdout, 1: stdout, 2: stderr}
        self._buf = b""

    def feed(self, data: bytes) -> None:
        self._buf += data
        while len(self._buf) >= 8:
            kind, size = self._buf[0], struct.unpack(">I", self._buf[4:8])[0]
            if len(self._buf) < 8 + size:
                return
            payload, self._buf = self._buf[8:8 + size], self._buf[8 + size:]
            self._out.get(kind, self._out[1])(payload)


def _writer(stream: object) -> Callable[[bytes], None]:
    buffer = getattr(stream, "buffer", stream)

    def write(data: bytes) -> None:
        buffer.write(data)  # type: ignore[attr-defined]
        buffer.flush()  # type: ignore[attr-defined]

    return write


@contextlib.contextmanager
def raw_terminal(fd: int, enabled: bool) -> Iterator[None]:
    """The terminal in raw mode while the block runs (restored even on errors)."""
    if not enabled or not os.isatty(fd):
        yield
        return
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd, termios.TCSANOW)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def terminal_size(fd: int = 1) -> tuple[int, int] | None:
    for candidate in (fd, 0, 2):
        try:
            size = os.get_terminal_size(candidate)
            return size.lines, size.columns
        except OSError:
            continue
    return None


@contextlib.contextmanager
def resize_on_winch(resize: Callable[[int, int], None] | None) -> Iterator[None]:
    """Send the window size now and on every SIGWINCH."""
    if resize is None:
        yield
        return

    def send(*_: object) -> None:
        size = terminal_size()
        if size:
            try:
                resize(*size)
            except Exception:  # noqa: BLE001 - the container may be gone
                pass

    send()
    previous = signal.signal(signal.SIGWINCH, send)
    try:
        yield
    finally:
        signal.signal(signal.SIGWINCH, previous)


PROXIED = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")


@contextlib.contextmanager
def proxy_signals(kill: Callable[[str], None] | None) -> Iterator[None]:
    """Forward the usual signals to the container (``--sig-proxy``, not with a tty)."""
    if kill is None:
        yield
        return
    saved = {}

    def forward(signum: int, _frame: object) -> None:
        try:
            kill(signal.Signals(signum).name)
        except Exception:  # noqa: BLE001
            pass

    for name in PROXIED:
        saved[name] = signal.signal(getattr(signal, name), forward)
    try:
        yield
    finally:
        for name, handler in saved.items():
            signal.signal(getattr(signal, name), handler)


def pump(conn: Hijacked, *, tty: bool, stdin: bool, detach_keys: bytes = DEFAULT_DETACH_KEYS) -> str:
    """Copy until the container's output ends ("eof") or the detach keys are typed ("detached")."""
    out, err = _writer(sys.stdout), _writer(sys.stderr)
    demux = None if (tty and not conn.multiplexed) else Demux(out, err)
    sink = out if demux is None else demux.feed
    if conn.leftover:
        sink(conn.leftover)
        conn.leftover = b""
    sock = conn.sock
    in_fd = sys.stdin.fileno() if stdin else -1
    scan = detach_keys if (stdin and os.isatty(in_fd) and tty) else b""
    pending = b""
    reading = stdin
    while True:
        watch = [sock] + ([in_fd] if reading else [])
        try:
            ready, _, _ = select.select(watch, [], [])
        except InterruptedError:
            continue
        if sock in ready:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if not data:
                return "eof"
            sink(data)
        if reading and in_fd in ready:
            try:
                data = os.read(in_fd, 65536)
            except OSError:
                data = b""
            if not data:
                reading = False
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_WR)
                continue
            if scan:
                send = bytearray()
                for byte in data:
                    if byte == scan[len(pending)]:
                        pending += bytes([byte])
                        if pending == scan:
                            return "detached"
                    else:
                        send += pending + bytes([byte])
                        pending = b""
                data = bytes(send)
            if data:
                try:
                    sock.sendall(data)
                except (BrokenPipeError, ConnectionResetError):
                    reading = False
