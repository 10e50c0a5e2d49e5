"""Was the container OOM-killed? The oom_kill count of its memory cgroup, before and after.

The cgroup is found from /proc/PID/cgroup of the init while it lives (paths there are
relative to the shim's cgroup namespace, the host's): on cgroup v1 the ``memory``
hierarchy's ``memory.oom_control``, on v2 the unified hierarchy's ``memory.events``;
both carry an ``oom_kill N`` line.
"""

from __future__ import annotations


def _mounts() -> tuple[str | None, str | None]:
    """(v1 memory mount point, cgroup2 mount point) from /proc/self/mountinfo."""
    v1 = v2 = None
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            lines = f.read().splitlines()
    except OSError:
        return None, None
    for line in lines:
        fields = line.split(b" ")
        try:
            sep = fields.index(b"-", 6)
        except ValueError:
            continue
        fstype = fields[sep + 1]
        target = fields[4].decode()
        if fstype == b"cgroup" and b"memory" in fields[sep + 3].split(b",") and v1 is None:
            v1 = target
        elif fstype == b"cgroup2" and v2 is None:
            v2 = target
    return v1, v2


def counter_file(pid: int) -> str | None:
    """The file that counts OOM kills in the memory cgroup of process ``pid``, if any."""
    try:
        with open(f"/proc/{pid}/cgroup", "rb") as f:
            lines = f.read().decode().splitlines()
    except OSError:
        return None
    v1, v2 = _mounts()
    unified = None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if v1 and "memory" in controllers.split(","):
            return f"{v1.rstrip('/')}{path.rstrip('/')}/memory.oom_control"
        if controllers == "":
            unified = path
    if v2 and unified is not None:
        candidate = f"{v2.rstrip('/')}{unified.rstrip('/')}/memory.events"
        try:
            with open(candidate, "rb"):
                return candidate
        except OSError:
            return None
    return None


def kill_count(path: str | None) -> int | None:
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            for line in f.read().splitlines():
                key, _, value = line.partition(b" ")
                if key == b"oom_kill":
                    return int(value)
    except (OSError, ValueError):
        return None
    return None
