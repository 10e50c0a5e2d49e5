"""What the shim and its client share: file names, stream framing, timestamps, socket paths.

Kept free of imports beyond ``os`` and ``time``: the shim process loads it.
"""

from __future__ import annotations

import os
import time

SOCKET = "shim.sock"
PID_FILE = "shim.pid"
EXIT_FILE = "exit.json"
INIT_PID_FILE = "init.pid"
RUNTIME_LOG = "runtime.log"

STDIN, STDOUT, STDERR = 0, 1, 2
STREAM_NAMES = {STDOUT: "stdout", STDERR: "stderr"}
MAX_REQUEST = 1 << 20  # one request line, an exec's process JSON included
FRAME_HEADER = 8


def frame(stream: int, data: bytes) -> bytes:
    """One frame of Docker's multiplexed stream: type, 3 zero bytes, big-endian length, data."""
    return bytes((stream, 0, 0, 0)) + len(data).to_bytes(4, "big") + data


def parse_header(header: bytes) -> tuple[int, int]:
    """(stream, length) from an 8-byte frame header."""
    return header[0], int.from_bytes(header[4:8], "big")


def rfc3339nano(ns: int | None = None) -> str:
    """UTC time with nanoseconds, as Docker writes it: 2026-11-29T02:00:00.123456789Z."""
    if ns is None:
        ns = time.time_ns()
    sec, frac = divmod(ns, 1_000_000_000)
    t = time.gmtime(sec)
    return (f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T"
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.{frac:09d}Z")


SUN_PATH_MAX = 107


def short_path(path: str) -> tuple[str, int]:
    """A path to the unix socket ``path`` short enough for sockaddr_un, and an fd to close
    afterwards (-1 if none): the path itself, or ``/proc/self/fd/N/NAME`` through an
    O_PATH descriptor of its directory when the path is too long."""
    if len(os.fsencode(path)) <= SUN_PATH_MAX - 8:
        return path, -1
    fd = os.open(os.path.dirname(path) or ".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    return f"/proc/self/fd/{fd}/{os.path.basename(path)}", fd
