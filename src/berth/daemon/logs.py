"""Container logs in Docker's json-file format: sizes for rotation options, and reading
with tail/since/until/timestamps/follow (the shim writes them).

    parse_size("10m") -> bytes                  log-opt sizes
    LogReader(path, stdout=, stderr=, since=, until=, tail=, timestamps=)
        .entries(follow, done) -> async (stream, payload)...   rotated files included
    parse_since("1700000000.5") -> ns | None    the API's since/until values
"""

from __future__ import annotations

import asyncio
import calendar
import json
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Callable

from berth.errors import InvalidArgument

_UNITS = {"b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3}


def parse_size(text: str) -> int:
    """Docker's log-opt sizes: ``10m`` is 10,000,000 bytes (decimal units, as docker's units.FromHumanSize)."""
    raw = text.strip().lower()
    digits = raw.rstrip("kmgb")
    unit = raw[len(digits):] or "b"
    try:
        return int(float(digits) * _UNITS[unit])
    except (ValueError, KeyError):
        raise InvalidArgument(f"invalid size: {text!r}") from None


# --- reading (docker logs, attach with logs=1) ---------------------------------------------

STREAMS = {"stdout": 1, "stderr": 2}
FOLLOW_POLL = 0.05


def parse_time_ns(text: str) -> int:
    """RFC 3339 with up to nanoseconds (the log's ``time``) as nanoseconds since the epoch."""
    main, _, frac = text.rstrip("Z").partition(".")
    offset = 0
    for sign in ("+", "-"):
        if sign in frac:
            frac, _, tz = frac.partition(sign)
            hours, _, minutes = tz.partition(":")
            offset = (int(hours) * 3600 + int(minutes or 0) * 60) * (1 if sign == "+" else -1)
    seconds = calendar.timegm(time.strptime(main, "%Y-%m-%dT%H:%M:%S")) - offset
    return seconds * 1_000_000_000 + int((frac + "000000000")[:9] or 0)


def parse_since(raw: str) -> int | None:
    """Docker's ``since``/``until`` query values: unix seconds with an optional fraction
    (``1700000000.123456789``); 0 or empty: none."""
    if not raw:
        return None
    whole, _, frac = raw.partition(".")
    try:
        ns = int(whole) * 1_000_000_000 + int((frac + "000000000")[:9] or 0)
    except ValueError:
        try:
            return parse_time_ns(raw)
        except ValueError:
            raise InvalidArgument(f"invalid timestamp {raw!r}") from None
    return ns or None


def log_files(path: str) -> list[str]:
    """The log and its rotated files, oldest first."""
    rotated = []
    i = 1
    while os.path.exists(f"{path}.{i}"):
        rotated.append(f"{path}.{i}")
        i += 1
    return [*reversed(rotated), path] if os.path.exists(path) else list(reversed(rotated))


class LogEntry:
    __slots__ = ("stream", "data", "time", "ns")

    def __init__(self, stream: int, data: bytes, time: str, ns: int) -> None:
        self.stream = stream
        self.data = data
        self.time = time
        self.ns = ns


def _parse_line(line: bytes) -> LogEntry | None:
    try:
        doc = json.loads(line)
        stream = STREAMS.get(doc.get("stream"), 1)
        time_text = doc.get("time") or ""
        return LogEntry(stream, str(doc.get("log", "")).encode("utf-8", "replace"), time_text,
                        parse_time_ns(time_text) if time_text else 0)
    except (ValueError, AttributeError, TypeError):
        return None


class LogReader:
    """``docker logs`` over a json-file log: filters, tail, and follow until ``done()``."""

    def __init__(self, path: str, *, stdout: bool = True, stderr: bool = True, since: int | None = None,
                 until: int | None = None, tail: int | None = None, timestamps: bool = False) -> None:
        self.path = path
        self.streams = {s for s, wanted in ((1, stdout), (2, stderr)) if wanted}
        self.since = since
        self.until = until
        self.tail = tail
        self.timestamps = timestamps

    def _wanted(self, entry: LogEntry) -> bool:
        if entry.stream not in self.streams:
            return False
        if self.since is not None and entry.ns < self.since:
            return False
        return not (self.until is not None and entry.ns > self.until)

    def _payload(self, entry: LogEntry) -> bytes:
        return (entry.time.encode() + b" " + entry.data) if self.timestamps else entry.data

    async def entries(self, follow: bool = False,
                      done: Callable[[], bool] = lambda: True) -> AsyncIterator[tuple[int, bytes]]:
        """(stream, payload) pairs: what is logged now, then (``follow``) what comes until
        ``done()`` says the container stopped and everything it wrote has been read."""
        files = log_files(self.path)
        current = None
        inode = None
        if self.tail == 0 and not follow:
            return
        if self.tail is not None and self.tail >= 0:
            last: deque[LogEntry] = deque(maxlen=self.tail) if self.tail > 0 else deque(maxlen=0)
            for name in files:
                try:
                    with open(name, "rb") as f:
                        for line in f:
                            entry = _parse_line(line)
                            if entry is not None and self._wanted(entry):
                                last.append(entry)
                except FileNotFoundError:
                    continue
            for entry in last:
                yield entry.stream, self._payload(entry)
            if not follow:
                return
            try:
                current = open(self.path, "rb")  # noqa: SIM115 - kept open while following
                current.seek(0, os.SEEK_END)
                inode = os.fstat(current.fileno()).st_ino
            except FileNotFoundError:
                current = None
        else:
            for name in files[:-1]:
                try:
                    with open(name, "rb") as f:
                        for line in f:
                            entry = _parse_line(line)
                            if entry is not None and self._wanted(entry):
                                yield entry.stream, self._payload(entry)
                except FileNotFoundError:
                    continue
            try:
                current = open(self.path, "rb")  # noqa: SIM115
                inode = os.fstat(current.fileno()).st_ino
            except FileNotFoundError:
                current = None
        pending = b""
        try:
            while True:
                if current is not None:
                    chunk = current.read()
                    if chunk:
                        pending += chunk
                        lines = pending.split(b"\n")
                        pending = lines.pop()
                        for line in lines:
                            entry = _parse_line(line)
                            if entry is None:
                                continue
                            if self.until is not None and entry.ns > self.until:
                                return
                            if self._wanted(entry):
                                yield entry.stream, self._payload(entry)
                        continue
                if not follow:
                    return
                try:
                    st = os.stat(self.path)
                except FileNotFoundError:
                    st = None
                if st is not None and st.st_ino != inode:  # rotated: finish the old file, go on with the new
                    if current is not None:
                        rest = current.read()
                        if rest:
                            pending += rest
                            continue
                        current.close()
                    current = open(self.path, "rb")  # noqa: SIM115
                    inode = os.fstat(current.fileno()).st_ino
                    pending = b""
                    continue
                if done():
                    if current is not None:
                        rest = current.read()
                        if rest:
                            pending += rest
                            continue
                    return
                await asyncio.sleep(FOLLOW_POLL)
                if current is None:
                    try:
                        current = open(self.path, "rb")  # noqa: SIM115
                        inode = os.fstat(current.fileno()).st_ino
                    except FileNotFoundError:
                        pass
        finally:
            if current is not None:
                current.close()
