"""``delete``: remove a stopped (or, with --force, any) container and everything it made."""

from __future__ import annotations

import os
import _signal as signal  # the C module: ``signal`` imports enum (~3 ms)
import sys
import time

from berth.errors import FailedPrecondition
from berth.runtime.container import Container
from berth.spec import status as st


def delete(container: Container, force: bool = False) -> None:
    status = container.status()
    if status in (st.RUNNING, st.PAUSED) and not force:
        raise FailedPrecondition(f"cannot delete container {container.id} that is not stopped: {status}")
    destroy(container, force=True)


def destroy(container: Container, force: bool) -> None:
    """Kill what is left, remove the cgroup and state, then run poststop hooks."""
    cgroup = container.cgroup() if container.record.get("cgroup") else None
    if container.alive():
        if cgroup is not None and cgroup.frozen():
            _kill_all(container, cgroup)
            cgroup.thaw()
        os.kill(container.pid, signal.SIGKILL)
        wait_exit(container.pid, container.record.get("pid_start"))
    if cgroup is not None:
        if "pid" not in _namespaces(container):
            _kill_all(container, cgroup)
        cgroup.destroy()
    state = container.hook_state(st.STOPPED)
    container.remove_dir()
    poststop = (container.config.get("hooks") or {}).get("poststop")
    if poststop:
        from berth.runtime.linux.hooks import run_hooks

        try:
            run_hooks(poststop, state, "poststop")
        except Exception as exc:  # noqa: BLE001 - runtime-spec: log and go on
            sys.stderr.write(f"warning: {exc}\n")


def _namespaces(container: Container) -> set[str]:
    return {ns.get("type") for ns in (container.config.get("linux") or {}).get("namespaces") or []}


def _kill_all(container: Container, cgroup) -> None:  # noqa: ANN001
    for pid in cgroup.pids():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5
    while cgroup.pids() and time.monotonic() < deadline:
        time.sleep(0.005)


def wait_exit(pid: int, started: int | None, timeout: float = 10.0) -> bool:
    from berth._sys.proc import is_alive

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        if not is_alive(pid, started):
            return True
        time.sleep(0.002)
    return False
