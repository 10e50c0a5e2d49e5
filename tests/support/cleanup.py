"""Cleanup after tests, also after failed ones: processes by recorded pid, mounts, cgroups.

Nothing here kills by name or pattern: a process is killed only if its pid is recorded in
a state.json under a test's state root (and its start time still matches, when recorded),
or if it sits in this session's own cgroup parent, which only the tests create.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import time
from collections.abc import Iterable, Iterator

PID_KEYS = ("init_process_pid", "pid", "init_pid")
START_KEYS = ("pid_start", "init_process_start", "start_time", "pid_start_time", "init_process_start_time", "started")

_MNT_DETACH = 2
_libc = ctypes.CDLL(None, use_errno=True)
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


# --- processes ----------------------------------------------------------------

def start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (clock ticks since boot), or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return int(raw[raw.rindex(b")") + 2:].split()[19])


def _protected() -> set[int]:
    """This process and its ancestors: never ours to kill."""
    pids = {0, 1}
    pid = os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                raw = f.read()
            pid = int(raw[raw.rindex(b")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def _walk_pids(node: object) -> Iterator[tuple[int, int | None]]:
    if isinstance(node, dict):
        for key in PID_KEYS:
            pid = node.get(key)
            if isinstance(pid, int) and not isinstance(pid, bool) and pid > 1:
                started = None
                for skey in START_KEYS:
                    value = node.get(skey)
                    if isinstance(value, int) and not isinstance(value, bool):
                        started = value
                        break
                    if isinstance(value, str) and value.isdigit():
                        started = int(value)
                        break
                yield pid, started
        for value in node.values():
            if isinstance(value, (dict, list)):
                yield from _walk_pids(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk_pids(value)


def recorded_pids(state_root: str) -> list[tuple[int, int | None]]:
    """(pid, start time or None) of every process recorded in a state.json under ``state_root``."""
    found: list[tuple[int, int | None]] = []
    for dirpath, _dirs, files in os.walk(state_root):
        if "state.json" not in files:
            continue
        try:
            with open(os.path.join(dirpath, "state.json")) as f:
                data = json.load(f)
        except (OSError, ValueError):
            continue
        for item in _walk_pids(data):
            if item not in found:
                found.append(item)
    return found


def kill_recorded(pids: Iterable[tuple[int, int | None]], wait: float = 2.0) -> list[int]:
    """SIGKILL each recorded process still alive with its recorded start time; return those killed."""
    protected = _protected()
    killed: list[int] = []
    for pid, started in pids:
        if pid in protected:
            continue
        now = start_time(pid)
        if now is None or (started is not None and now != started):
            continue
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except ProcessLookupError:
            pass
    _wait_gone(killed, wait)
    return killed


def _wait_gone(pids: list[int], wait: float) -> None:
    deadline = time.monotonic() + wait
    while pids and time.monotonic() < deadline:
        if all(gone(p) for p in pids):
            return
        time.sleep(0.02)


def gone(pid: int) -> bool:
    """True once the process has exited (a zombie not yet reaped counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return True
    return raw[raw.rindex(b")") + 2:].split()[0] in (b"Z", b"X")


# --- mounts -------------------------------------------------------------------

def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    out, i = [], 0
    while i < len(field):
        octal = field[i + 1:i + 4]
        if field[i] == "\\" and len(octal) == 3 and octal.isdigit():
            out.append(chr(int(octal, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[tuple[str, str]]:
    """(mount point, filesystem type) for each line of a /proc/PID/mountinfo text."""
    result = []
    for line in text.splitlines():
        fields = line.split(" ")
        if len(fields) < 7 or "-" not in fields:
            continue
        sep = fields.index("-", 6)
        result.append((_unescape(fields[4]), fields[sep + 1]))
    return result


def mounts_under(paths: Iterable[str], mountinfo: str | None = None) -> list[str]:
    """Mount points at or below any of ``paths``, deepest first."""
    if mountinfo is None:
        with open("/proc/self/mountinfo") as f:
            mountinfo = f.read()
    prefixes = [os.path.realpath(p).rstrip("/") for p in paths]
    hits = []
    for target, _fstype in parse_mountinfo(mountinfo):
        if any(target == p or target.startswith(p + "/") for p in prefixes) and target not in hits:
            hits.append(target)
    hits.sort(key=lambda t: (t.count("/"), len(t)), reverse=True)
    return hits


def unmount_under(paths: Iterable[str]) -> list[str]:
    """Lazily unmount (MNT_DETACH) everything mounted at or below ``paths``; stacked mounts too."""
    paths = list(paths)
    done: list[str] = []
    for _ in range(20):  # a mount point can hold several stacked mounts
        targets = mounts_under(paths)
        if not targets:
            break
        progress = False
        for target in targets:
            if _libc.umount2(os.fsencode(target), _MNT_DETACH) == 0:
                done.append(target)
                progress = True
        if not progress:
            break
    return done


# --- cgroups ------------------------------------------------------------------

def cgroup_mountpoints() -> list[str]:
    """Every mounted cgroup (v1) and cgroup2 hierarchy."""
    with open("/proc/self/mountinfo") as f:
        text = f.read()
    return [target for target, fstype in parse_mountinfo(text) if fstype in ("cgroup", "cgroup2")]


def remove_cgroup_parent(parent: str, wait: float = 3.0) -> list[str]:
    """Remove ``parent`` (e.g. "/berth-test-1a2b") from every hierarchy, deepest first.

    Processes still inside it were made by the tests (the parent is private to this
    session): they are thawed and killed by pid first. Returns the directories that
    could not be removed.
    """
    rel = parent.strip("/")
    if not rel or rel.startswith(".") or "/.." in parent:
        raise ValueError(f"refusing to remove cgroup parent {parent!r}")
    left: list[str] = []
    for mnt in cgroup_mountpoints():
        top = os.path.join(mnt, rel)
        if not os.path.isdir(top):
            continue
        dirs = [d for d, _s, _f in os.walk(top, topdown=False)]
        _thaw(dirs)
        protected = _protected()
        victims: list[int] = []
        for d in dirs:
            for pid in _cgroup_procs(d):
                if pid not in protected:
                    try:
                        os.kill(pid, signal.SIGKILL)
                        victims.append(pid)
                    except ProcessLookupError:
                        pass
        _wait_gone(victims, wait)
        for d in dirs:  # bottom-up
            if not _rmdir_retry(d, wait):
                left.append(d)
    return left


def _cgroup_procs(d: str) -> list[int]:
    try:
        with open(os.path.join(d, "cgroup.procs")) as f:
            return [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        return []


def _thaw(dirs: list[str]) -> None:
    for d in reversed(dirs):  # top-down
        for name, value in (("freezer.state", "THAWED"), ("cgroup.freeze", "0")):
            path = os.path.join(d, name)
            if os.path.exists(path):
                try:
                    with open(path, "w") as f:
                        f.write(value)
                except OSError:
                    pass


def _rmdir_retry(d: str, wait: float) -> bool:
    deadline = time.monotonic() + wait
    while True:
        try:
            os.rmdir(d)
            return True
        except FileNotFoundError:
            return True
        except OSError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
