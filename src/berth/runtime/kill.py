"""``kill``: send a signal to the container's init, or with --all to every process in it."""

from __future__ import annotations

import os

from berth.errors import FailedPrecondition, NotFound
from berth.runtime.container import Container
from berth.spec import status as st


def kill(container: Container, signal_number: int, all_processes: bool = False) -> None:
    status = container.status()
    if all_processes and status == st.STOPPED and container.record.get("cgroup"):
        # as runc: after init exits (e.g. sharing the host pid namespace), --all still
        # signals what is left in the cgroup; the shim calls it to kill init's children
        try:
            pids = container.cgroup().pids()
        except NotFound:
            pids = []
        for pid in pids:
            try:
                os.kill(pid, signal_number)
            except ProcessLookupError:
                pass
        return
    if not st.can_kill(status):
        raise FailedPrecondition("container not running")
    if all_processes and container.record.get("cgroup"):
        for pid in container.cgroup().pids():
            try:
                os.kill(pid, signal_number)
            except ProcessLookupError:
                pass
    else:
        try:
            os.kill(container.pid, signal_number)
        except ProcessLookupError:
            raise FailedPrecondition("container not running") from None
    if status == st.PAUSED and signal_number == 9:
        container.cgroup().thaw()  # a frozen process dies only once thawed
