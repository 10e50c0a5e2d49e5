"""``run``: create and start in one go; in the foreground, forward signals, hold the pty,
wait for the container's process and exit with its status."""

from __future__ import annotations

import os
import _signal as signal  # the C module: ``signal`` imports enum (~3 ms)

from berth.runtime.container import Container
from berth.runtime.create import CreateOptions, create
from berth.runtime.delete import destroy
from berth.runtime.start import start

_NOT_FORWARDED = (signal.SIGCHLD, signal.SIGKILL, signal.SIGSTOP, signal.SIGURG, signal.SIGWINCH, signal.SIGPIPE)
FORWARDED = tuple(s for s in range(1, signal.NSIG) if s not in _NOT_FORWARDED and not 32 <= s < 34)


def run(opts: CreateOptions, detach: bool, keep: bool) -> int:
    opts.foreground = not detach
    container, master = create(opts)
    try:
        start(container)
    except BaseException:
        if container.record.get("pid") and os.path.isdir(container.dir):
            destroy(container, force=True)
        raise
    if detach:
        return 0
    return wait_foreground(container, master, keep)


def forward_signals(pid: int, master: int = -1) -> None:
    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for sig in FORWARDED:
        try:
            signal.signal(sig, forward)
        except (OSError, ValueError):
            pass
    if master >= 0:
        from berth.runtime.linux.tty import _copy_winsize

        signal.signal(signal.SIGWINCH, lambda *_: _copy_winsize(0, master))


def wait_child(pid: int) -> int:
    """Reap children (we are their subreaper) until ``pid`` exits; return its exit code."""
    while True:
        try:
            reaped, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 255
        if reaped == pid:
            code = os.waitstatus_to_exitcode(status)
            return code if code >= 0 else 128 - code


def wait_foreground(container: Container, master: int, keep: bool) -> int:
    forward_signals(container.pid, master)
    if master >= 0:
        from berth.runtime.linux.tty import proxy

        proxy(master, container.alive)
    code = wait_child(container.waiter)
    if master >= 0:
        os.close(master)
    if not keep:
        destroy(container, force=True)
    return code
