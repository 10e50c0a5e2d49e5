"""The shim's one event loop: ``select.poll`` over file descriptors, a few timers, and
SIGCHLD delivered through a wakeup pipe so that children are reaped in the loop."""

from __future__ import annotations

import os
import select
import time

import _signal

TYPE_CHECKING = False  # the shim imports neither typing nor collections.abc
if TYPE_CHECKING:
    from collections.abc import Callable

POLLIN = select.POLLIN
POLLOUT = select.POLLOUT
POLLERR = select.POLLERR
POLLHUP = select.POLLHUP


def _ignore(_signum: int, _frame: object) -> None:
    """A Python-level handler, so that the wakeup fd gets a byte; the work is in the loop."""


class Timer:
    __slots__ = ("deadline", "callback", "cancelled")

    def __init__(self, deadline: float, callback: Callable[[], None]) -> None:
        self.deadline = deadline
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Loop:
    def __init__(self, on_child: Callable[[int, int], None]) -> None:
        self._poll = select.poll()
        self._handlers: dict[int, Callable[[int], None]] = {}
        self._timers: list[Timer] = []
        self._on_child = on_child
        self.running = True
        r, w = os.pipe()
        os.set_blocking(r, False)
        os.set_blocking(w, False)
        self._wake = r
        self._wake_w = w
        _signal.signal(_signal.SIGCHLD, _ignore)
        _signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        self.add(r, POLLIN, self._on_wakeup)

    def add(self, fd: int, events: int, handler: Callable[[int], None]) -> None:
        self._handlers[fd] = handler
        self._poll.register(fd, events)

    def modify(self, fd: int, events: int) -> None:
        if fd in self._handlers:
            self._poll.modify(fd, events)

    def remove(self, fd: int) -> None:
        if self._handlers.pop(fd, None) is not None:
            self._poll.unregister(fd)

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(time.monotonic() + delay, callback)
        self._timers.append(timer)
        return timer

    def stop(self) -> None:
        self.running = False

    def _on_wakeup(self, _events: int) -> None:
        try:
            while os.read(self._wake, 512):
                pass
        except BlockingIOError:
            pass
        self.reap()

    def reap(self) -> None:
        """Collect every exited child (ours, and orphans we adopted as subreaper)."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._on_child(pid, status)

    def _timeout(self) -> int | None:
        if not self._timers:
            return None
        self._timers = [t for t in self._timers if not t.cancelled]
        if not self._timers:
            return None
        soonest = min(t.deadline for t in self._timers)
        return max(0, int((soonest - time.monotonic()) * 1000) + 1)

    def _run_timers(self) -> None:
        now = time.monotonic()
        due = [t for t in self._timers if t.deadline <= now and not t.cancelled]
        if due:
            self._timers = [t for t in self._timers if t not in due and not t.cancelled]
            for timer in due:
                timer.callback()

    def run(self) -> None:
        self.reap()  # children that exited before the handler was in place
        while self.running:
            for fd, events in self._poll.poll(self._timeout()):
                handler = self._handlers.get(fd)
                if handler is not None:
                    handler(events)
                if not self.running:
                    return
            self._run_timers()
