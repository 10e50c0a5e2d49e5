"""File helpers for cgroupfs: one write per value, errors mapped to Berth's taxonomy.

Every write goes through :func:`write` (the setters call it as ``_fs.write`` so that
tests can record the order of writes). A failed write raises
``InvalidArgument`` (EINVAL, ERANGE, EOVERFLOW: the kernel refused the value) or
``FailedPrecondition`` (anything else: busy, missing file, permission) with one line:

    cgroup: write /sys/fs/cgroup/memory/c1/memory.limit_in_bytes=4096: Device or resource busy
"""

from __future__ import annotations

import errno
import os
import time

from berth.errors import BerthError, FailedPrecondition, InvalidArgument

_INVALID_VALUE = (errno.EINVAL, errno.ERANGE, errno.EOVERFLOW)
MAX_UINT64 = (1 << 64) - 1


def write_error(directory: str, name: str, value: str, err: OSError, hint: str = "") -> BerthError:
    cls = InvalidArgument if err.errno in _INVALID_VALUE else FailedPrecondition
    shown = value.replace("\n", "\\n")
    reason = os.strerror(err.errno) if err.errno else str(err)
    msg = f"cgroup: write {directory}/{name}={shown}: {reason}"
    if hint:
        msg += f" ({hint})"
    exc = cls(msg)
    setattr(exc, "errno", err.errno)  # lets callers tell EBUSY from EINVAL
    return exc


def write(directory: str, name: str, value: str) -> None:
    """Write ``value`` to ``directory/name`` in one write(2), as the kernel expects."""
    path = directory + "/" + name
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
    except OSError as err:
        raise write_error(directory, name, value, err) from None
    try:
        os.write(fd, value.encode())
    except OSError as err:
        raise write_error(directory, name, value, err) from None
    finally:
        os.close(fd)


def exists(directory: str, name: str) -> bool:
    return os.path.exists(directory + "/" + name)


def read(directory: str, name: str) -> str:
    """The file's text; OSError (FileNotFoundError, ...) propagates to the caller."""
    with open(directory + "/" + name, encoding="ascii", errors="replace") as f:
        return f.read()


def read_or_none(directory: str, name: str) -> str | None:
    try:
        return read(directory, name)
    except (FileNotFoundError, NotADirectoryError):
        return None


def parse_uint(text: str) -> int:
    """runc's ParseUint: "max" is MaxUint64, negative numbers are 0."""
    text = text.strip()
    if text == "max":
        return MAX_UINT64
    value = int(text)
    return value if value > 0 else 0


def read_uint(directory: str, name: str, default: int | None = None) -> int:
    text = read_or_none(directory, name)
    if text is None:
        if default is None:
            raise FailedPrecondition(f"cgroup: {directory}/{name} does not exist")
        return default
    try:
        return parse_uint(text)
    except ValueError:
        raise FailedPrecondition(f"cgroup: cannot parse {directory}/{name}: {text.strip()!r}") from None


def parse_flat_keyed(text: str) -> dict[str, int]:
    """Lines of "key value" (memory.stat, cpu.stat, memory.events...) as a dict."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = parse_uint(parts[1])
            except ValueError:
                continue
    return out


def read_flat_keyed(directory: str, name: str) -> dict[str, int] | None:
    text = read_or_none(directory, name)
    return None if text is None else parse_flat_keyed(text)


# --- directories ---------------------------------------------------------------------


def make_dirs(path: str) -> list[str]:
    """mkdir -p ``path``; returns the directories it created, top-down.

    Retries when a parent disappears under us (another container's destroy removing an
    empty parent between our existence check and our mkdir).
    """
    for _ in range(5):
        missing: list[str] = []
        cur = path
        while not os.path.isdir(cur):
            missing.append(cur)
            parent = os.path.dirname(cur)
            if parent == cur:
                break
            cur = parent
        created: list[str] = []
        try:
            for d in reversed(missing):
                try:
                    os.mkdir(d, 0o755)
                    created.append(d)
                except FileExistsError:
                    if not os.path.isdir(d):
                        raise
        except FileNotFoundError:
            continue
        except OSError as err:
            raise FailedPrecondition(f"cgroup: mkdir {d}: {err.strerror or err}") from None
        return created
    raise FailedPrecondition(f"cgroup: mkdir {path}: parent keeps disappearing")


def rmdir(path: str, retry: bool = True) -> None:
    """rmdir, ignoring ENOENT and retrying EBUSY (processes on their way out) for ~1 s."""
    delay = 0.001
    tries = 11 if retry else 1
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except InterruptedError:
            continue
        except OSError as err:
            tries -= 1
            if err.errno != errno.EBUSY or tries <= 0:
                raise
        time.sleep(delay)
        delay *= 2


def remove_tree(path: str, retry: bool = True) -> None:
    """Remove a cgroup and its sub-cgroups (deepest first), like runc's RemovePath."""
    try:
        rmdir(path, retry=False)
        return
    except OSError:
        pass
    try:
        entries = list(os.scandir(path))
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            remove_tree(entry.path, retry)
    rmdir(path, retry)


def remove_created_parents(leaves: list[str], created: list[str]) -> None:
    """rmdir the parents create() made, from each leaf up to the topmost one it made;
    stop at the first that is not empty (another container lives there)."""
    for top in created:
        for leaf in leaves:
            if not leaf.startswith(top + "/"):
                continue
            cur = os.path.dirname(leaf)
            while len(cur) >= len(top):
                try:
                    os.rmdir(cur)
                except FileNotFoundError:
                    pass
                except OSError:
                    break
                cur = os.path.dirname(cur)


# --- processes -----------------------------------------------------------------------


def read_procs(directory: str) -> list[int]:
    try:
        text = read(directory, "cgroup.procs")
    except FileNotFoundError:
        return []
    except OSError as err:
        if err.errno != errno.EOPNOTSUPP:
            raise
        text = read(directory, "cgroup.threads")  # a threaded cgroup
    return [int(x) for x in text.split()]


def walk_pids(directory: str) -> list[int]:
    """Every pid in ``directory`` and its sub-cgroups, each once, in walk order."""
    seen: set[int] = set()
    out: list[int] = []
    for dirpath, _dirs, _files in os.walk(directory):
        try:
            pids = read_procs(dirpath)
        except FileNotFoundError:
            continue
        for pid in pids:
            if pid not in seen:
                seen.add(pid)
                out.append(pid)
    return out


def write_pid(directory: str, pid: int) -> None:
    """Write a pid to cgroup.procs, retrying EINVAL (a task still in TASK_NEW) like runc."""
    value = str(pid)
    path = directory + "/cgroup.procs"
    for attempt in range(5):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as err:
            raise write_error(directory, "cgroup.procs", value, err) from None
        try:
            os.write(fd, value.encode())
            return
        except OSError as err:
            if err.errno == errno.EINVAL and attempt < 4:
                time.sleep(0.03)
                continue
            raise write_error(directory, "cgroup.procs", value, err) from None
        finally:
            os.close(fd)
