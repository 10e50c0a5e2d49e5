"""One supervised process: the container's init or an exec. Its stdio as the shim holds
it, where its output goes (the log, attached clients), its exit, and who waits for it.

A process is *settled* once its exit is known and its output has ended (or a short grace
period after the exit has passed): waiters are answered then, so a waiter that reads the
log afterwards finds all of it.
"""

from __future__ import annotations

import os

from berth.shim import oom
from berth.shim.logfile import JsonFileLog
from berth.shim.loop import POLLIN
from berth.shim.protocol import rfc3339nano
from berth.shim.stdio import Pipes, Writer

TYPE_CHECKING = False  # not typing's: the shim does not import typing
if TYPE_CHECKING:
    from berth.shim.server import Conn, Shim

EXIT_GRACE = 2.0  # seconds to wait for the output to end once the process has exited
READ_SIZE = 65536
DRAIN_READS = 64


class Process:
    def __init__(self, shim: Shim, exec_id: str | None, tty: bool) -> None:
        self.shim = shim
        self.loop = shim.loop
        self.exec_id = exec_id
        self.tty = tty
        self.pid = 0
        self.started = exec_id is not None
        self.paused = False
        self.exit_code: int | None = None
        self.exited_at: str | None = None
        self.oom_killed = False
        self.oom_file: str | None = None
        self.oom_before: int | None = None
        self.master = -1
        self.stdin: Writer | None = None
        self.log: JsonFileLog | None = None
        self.attaches: list[Conn] = []
        self.waiters: list[Conn] = []
        self.settled = False
        self._readers: dict[int, int] = {}
        self._throttled = False
        self._grace = None

    # --- stdio ---------------------------------------------------------------------------

    def take_pipes(self, pipes: Pipes) -> None:
        if pipes.stdin_w >= 0:
            self.stdin = Writer(self.loop, pipes.stdin_w)
        self._add_reader(pipes.stdout_r, 1)
        self._add_reader(pipes.stderr_r, 2)

    def take_master(self, master: int, stdin: bool) -> None:
        self.master = master
        if stdin:
            self.stdin = Writer(self.loop, os.dup(master))
        self._add_reader(master, 1)

    def _add_reader(self, fd: int, stream: int) -> None:
        os.set_blocking(fd, False)
        self._readers[fd] = stream
        self._watch(fd)

    def _watch(self, fd: int) -> None:
        self.loop.add(fd, POLLIN, lambda _events: self._read(fd))

    def throttle(self) -> None:
        """An attached client is far behind: stop reading the output (the process blocks on
        a full pipe, as it does under Docker) until the client catches up."""
        if not self._throttled:
            self._throttled = True
            for fd in self._readers:
                self.loop.remove(fd)

    def unthrottle(self) -> None:
        if self._throttled and not any(conn.backlogged for conn in self.attaches):
            self._throttled = False
            for fd in self._readers:
                self._watch(fd)

    @property
    def output_open(self) -> bool:
        return bool(self._readers)

    def _read(self, fd: int) -> bool:
        """Read one chunk; True if data came (more may follow)."""
        try:
            data = os.read(fd, READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:  # EIO from a pty master once every slave fd is closed
            data = b""
        stream = self._readers.get(fd)
        if stream is None:
            return False
        if not data:
            self._eof(fd, stream)
            return False
        if self.log is not None:
            self.log.write(stream, data)
        for conn in list(self.attaches):
            conn.output(stream, data)
        return True

    def _eof(self, fd: int, stream: int) -> None:
        del self._readers[fd]
        self.loop.remove(fd)
        if fd != self.master:
            os.close(fd)
        if self.log is not None:
            self.log.flush(stream)
        if not self._readers:
            attaches, self.attaches = self.attaches, []
            for conn in attaches:
                conn.finish()
            if self.exit_code is not None:
                self._settle()
                self._release()

    def close_stdin(self) -> None:
        if self.stdin is not None:
            self.stdin.close()

    # --- exit ----------------------------------------------------------------------------

    def exited(self, status: int) -> None:
        code = os.waitstatus_to_exitcode(status)
        self.exit_code = 128 - code if code < 0 else code
        self.exited_at = rfc3339nano()
        if self.oom_file:
            after = oom.kill_count(self.oom_file)
            self.oom_killed = after is not None and after > (self.oom_before or 0)
        self.shim.process_exited(self)  # exit.json first: a settled exit is always on disk
        if self.stdin is not None:
            self.stdin.abort()
        for fd in list(self._readers):  # what it wrote before it exited (may settle it)
            for _ in range(DRAIN_READS):
                if not self._read(fd):
                    break
        if not self._readers:
            self._settle()
        else:
            self._grace = self.loop.call_later(EXIT_GRACE, self._settle)

    def _settle(self) -> None:
        if self.settled:
            return
        self.settled = True
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None
        info = self.exit_info()
        waiters, self.waiters = self.waiters, []  # a conn that is answered leaves the list
        for conn in waiters:
            conn.reply(info)
        if not self._readers:
            self._release()

    def _release(self) -> None:
        """An exec that has exited and ended its output keeps no descriptor (execs pile up)."""
        if self.exec_id is not None and self.master >= 0:
            os.close(self.master)
            self.master = -1

    def exit_info(self) -> dict:
        return {"exit_code": self.exit_code, "exited_at": self.exited_at, "oom_killed": self.oom_killed}

    @property
    def status(self) -> str:
        if self.exit_code is not None:
            return "stopped"
        if self.paused:
            return "paused"
        return "running" if self.started else "created"

    def state(self) -> dict:
        return {"id": self.shim.opts.id, "exec_id": self.exec_id, "status": self.status, "pid": self.pid,
                "tty": self.tty, **self.exit_info()}

    def close(self) -> None:
        for fd in list(self._readers):
            self.loop.remove(fd)
            if fd != self.master:
                os.close(fd)
        self._readers.clear()
        if self.master >= 0:
            os.close(self.master)
            self.master = -1
        if self.log is not None:
            self.log.close()
            self.log = None
