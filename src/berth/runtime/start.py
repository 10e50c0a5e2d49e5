"""``start``: open the exec fifo so the waiting init execs the user's program."""

from __future__ import annotations

import os
import select

from berth.errors import FailedPrecondition
from berth.runtime.container import Container
from berth.spec import status as st


def start(container: Container) -> None:
    status = container.status()
    if status == st.STOPPED:
        raise FailedPrecondition("cannot start a container that has stopped")
    if status != st.CREATED:
        raise FailedPrecondition("cannot start an already running container")
    fd = os.open(container.fifo_path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while True:
            if poller.poll(100):
                data = os.read(fd, 1)
                if data:
                    break
            if not container.alive():
                raise FailedPrecondition("container init exited before it could start")
    finally:
        os.close(fd)
    os.unlink(container.fifo_path)
    poststart = (container.config.get("hooks") or {}).get("poststart")
    if poststart:
        from berth.runtime.linux.hooks import run_hooks

        try:
            run_hooks(poststart, container.hook_state(st.RUNNING), "poststart")
        except Exception:
            from berth.runtime.delete import destroy

            destroy(container, force=True)
            raise
