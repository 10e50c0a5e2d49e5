"""Docker's json-file log: one JSON object per line, rotated at a maximum size.

    {"log":"text\\n","stream":"stdout","time":"2026-11-29T02:00:00.123456789Z"}

Output is split at newlines; a line without one is held until its newline comes, the
stream ends, or it reaches 16 KiB (then it is written as a partial message, without the
newline), as Docker's copier does. Before a message would take the file past
``max_size`` the file is rotated: FILE.(N-2) -> FILE.(N-1), ..., FILE -> FILE.1, and a
new FILE is started (with ``max_files`` 1 the file is truncated instead).
"""

from __future__ import annotations

import os

import _json

from berth.shim.protocol import STREAM_NAMES, rfc3339nano

PARTIAL_MAX = 16 * 1024
WRITE_BATCH = 64 * 1024

_encode = _json.encode_basestring


class JsonFileLog:
    def __init__(self, path: str, max_size: int = 0, max_files: int = 1) -> None:
        self.path = path
        self.max_size = max(0, max_size)
        self.max_files = max(1, max_files)
        self._pending: dict[int, bytes] = {1: b"", 2: b""}
        self._out = bytearray()
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        self._fd = self._open(truncate=False)
        self.size = os.fstat(self._fd).st_size

    def _open(self, truncate: bool) -> int:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | (os.O_TRUNC if truncate else 0)
        return os.open(self.path, flags, 0o640)

    def write(self, stream: int, data: bytes) -> None:
        """Log a chunk of output: its complete lines now, the rest when it is complete."""
        pending = self._pending[stream]
        buf = pending + data if pending else data
        tail = self._tail(stream)
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            while nl + 1 - start > PARTIAL_MAX:  # a long line: 16 KiB partial messages first
                self._add(buf[start:start + PARTIAL_MAX], tail)
                start += PARTIAL_MAX
            self._add(buf[start:nl + 1], tail)
            start = nl + 1
        while len(buf) - start >= PARTIAL_MAX:
            self._add(buf[start:start + PARTIAL_MAX], tail)
            start += PARTIAL_MAX
        self._pending[stream] = buf[start:]
        self._write()

    def flush(self, stream: int) -> None:
        """The stream ended: write what is held back as a partial message."""
        rest = self._pending[stream]
        if rest:
            self._pending[stream] = b""
            self._add(rest, self._tail(stream))
            self._write()

    @staticmethod
    def _tail(stream: int) -> str:
        return ',"stream":"' + STREAM_NAMES[stream] + '","time":"' + rfc3339nano() + '"}\n'

    def _add(self, message: bytes, tail: str) -> None:
        line = ('{"log":' + _encode(message.decode("utf-8", "replace")) + tail).encode()
        if self.max_size and self.size and self.size + len(line) > self.max_size:
            self._write()
            self._rotate()
        self._out += line
        self.size += len(line)
        if len(self._out) >= WRITE_BATCH:
            self._write()

    def _write(self) -> None:
        if not self._out:
            return
        data, self._out = self._out, bytearray()
        done = 0
        try:
            while done < len(data):
                done += os.write(self._fd, data[done:] if done else data)
        except OSError:
            pass  # a full disk loses log lines, never the container

    def _rotate(self) -> None:
        os.close(self._fd)
        if self.max_files > 1:
            for i in range(self.max_files - 1, 1, -1):
                try:
                    os.rename(f"{self.path}.{i - 1}", f"{self.path}.{i}")
                except FileNotFoundError:
                    pass
            try:
                os.rename(self.path, f"{self.path}.1")
            except FileNotFoundError:
                pass
        self._fd = self._open(truncate=True)
        self.size = 0

    def close(self) -> None:
        for stream in (1, 2):
            self.flush(stream)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
