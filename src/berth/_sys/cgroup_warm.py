"""Warm the kernel's cgroup migration lock while the runtime starts.

The first write to a ``cgroup.procs`` after a quiet period waits for an RCU grace
period (``cgroup_threadgroup_rwsem`` leaves its reader-fast mode): ~14 ms on a 2-core VM,
a third of a container start. A later writer that arrives while the lock is in writer
mode pays nothing. So the runtime starts, in a child process, a no-op migration (its own pid
into its own cgroup) the moment it knows it will create or exec, and by the time it puts
the container's init into its cgroup the grace period has passed or is about to.
"""

from __future__ import annotations

import os


def _own_cgroup_procs() -> str | None:
    with open("/proc/self/cgroup", "rb") as f:
        for line in f.read().splitlines():
            if line.startswith(b"0::"):
                path = line[3:].decode()
                base = "/sys/fs/cgroup/unified" if os.path.isdir("/sys/fs/cgroup/unified") else "/sys/fs/cgroup"
                return f"{base}{path.rstrip('/')}/cgroup.procs"
    return None


def _touch() -> None:
    target = _own_cgroup_procs()
    if target:
        fd = os.open(target, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, str(os.getpid()).encode())
        finally:
            os.close(fd)


def warm() -> int:
    """Start the warming write in a forked child (a thread would cost the runtime ~0.3 MiB
    of peak memory); return its pid, for ``reap``. Failures only lose the optimisation."""
    try:
        pid = os.fork()
    except OSError:
        return 0
    if pid == 0:
        try:
            _touch()
        finally:
            os._exit(0)
    return pid


def reap(pid: int) -> None:
    """Collect the child if it is done; if not, whoever inherits it will."""
    if pid:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
