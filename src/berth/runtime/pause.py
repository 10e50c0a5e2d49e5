"""``pause`` and ``resume``: freeze and thaw every process of the container through its cgroup."""

from __future__ import annotations

from berth.errors import FailedPrecondition
from berth.runtime.container import Container
from berth.spec import status as st


def pause(container: Container) -> None:
    status = container.status()
    if not st.can_pause(status):
        raise FailedPrecondition(f"container not running or created: {status}")
    container.cgroup().freeze()


def resume(container: Container) -> None:
    status = container.status()
    if not st.can_resume(status):
        raise FailedPrecondition("container not paused")
    container.cgroup().thaw()
