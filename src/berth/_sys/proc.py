"""Process liveness by pid plus start time, so that a reused pid is never taken for ours."""

from __future__ import annotations


def _stat_fields(pid: int) -> list[bytes] | None:
    """Fields of /proc/PID/stat from the state on (the command name, which may hold spaces
    and parentheses, is skipped by splitting after the last ')'), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return raw[raw.rindex(b")") + 2:].split()


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), or None."""
    fields = _stat_fields(pid)
    return None if fields is None else int(fields[19])


def state_letter(pid: int) -> str | None:
    fields = _stat_fields(pid)
    return None if fields is None else fields[0].decode()


def is_alive(pid: int, started: int | None) -> bool:
    """True while the process exists, is not a zombie, and started when we recorded it."""
    if pid <= 0:
        return False
    fields = _stat_fields(pid)
    if fields is None or (started is not None and int(fields[19]) != started):
        return False
    return fields[0] not in (b"Z", b"X")
