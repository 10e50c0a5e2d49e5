"""Process liveness by pid plus start time, so that a reused pid is never taken for ours."""

from __future__ import annotations


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # the command name may hold spaces and parentheses: split after the last ')'
    fields = raw[raw.rindex(b")") + 2:].split()
    return int(fields[19])


def state_letter(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return raw[raw.rindex(b")") + 2:].split()[0].decode()


def is_alive(pid: int, started: int | None) -> bool:
    """True while the process exists, is not a zombie, and started when we recorded it."""
    if pid <= 0:
        return False
    now = start_time(pid)
    if now is None or (started is not None and now != started):
        return False
    return state_letter(pid) not in ("Z", "X", None)
