"""A process's stdio as the shim holds it: pipes, or a pty master received on a console socket.

    Pipes(stdin=..., uid=..., gid=...)   the shim's ends (stdin writer, stdout/stderr readers)
                                         and the container's ends (``for_runtime``)
    ConsoleSocket(dir)                   listens for the runtime's pty master (runc's
                                         protocol: one SCM_RIGHTS message)
    Writer                               non-blocking writes with a buffer (stdin)
"""

from __future__ import annotations

import os
import sys

import _socket

from berth.errors import FailedPrecondition
from berth.shim.loop import POLLOUT, Loop
from berth.shim.protocol import SUN_PATH_MAX

MSG_CMSG_CLOEXEC = 0x40000000
STDIN_HIGH_WATER = 256 * 1024


class Pipes:
    """stdout and stderr pipes, and a stdin pipe if asked (else the container reads /dev/null).

    The container's ends are chowned to the process's (host) uid/gid, so that a non-root
    process can reopen /dev/stdout, as containerd does."""

    def __init__(self, stdin: bool, uid: int = 0, gid: int = 0) -> None:
        self.stdin_w = -1
        self._theirs: list[int] = []
        try:
            if stdin:
                r, self.stdin_w = os.pipe()
                self._theirs.append(r)
            else:
                self._theirs.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
            self.stdout_r, w = os.pipe()
            self._theirs.append(w)
            self.stderr_r, w = os.pipe()
            self._theirs.append(w)
            if uid or gid:
                for fd in self._theirs[0 if stdin else 1:]:
                    os.fchown(fd, uid, gid)
        except BaseException:
            self.close_all()
            raise

    def for_runtime(self) -> tuple[int, int, int]:
        return self._theirs[0], self._theirs[1], self._theirs[2]

    def close_theirs(self) -> None:
        for fd in self._theirs:
            os.close(fd)
        self._theirs = []

    def close_all(self) -> None:
        self.close_theirs()
        for name in ("stdin_w", "stdout_r", "stderr_r"):
            fd = getattr(self, name, -1)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)


class ConsoleSocket:
    """A listening unix socket for ``--console-socket``; ``receive()`` returns the pty master.

    The path is ``DIR/NAME`` when short enough for sockaddr_un (the runtime dials it by
    path), otherwise a short one under /tmp."""

    def __init__(self, directory: str, name: str = "console.sock") -> None:
        path = os.path.join(directory, name)
        if len(os.fsencode(path)) > SUN_PATH_MAX - 8:
            path = f"/tmp/berth-console-{os.urandom(6).hex()}.sock"
        self.path = path
        self.master = -1
        _unlink(path)
        self._sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            self._sock.bind(path)
        finally:
            os.umask(old)
        self._sock.listen(4)
        self._sock.setblocking(False)

    def poll(self) -> None:
        """Take the master if the runtime has sent it (called while the runtime runs)."""
        if self.master >= 0:
            return
        try:
            fd, _ = self._sock._accept()
        except (BlockingIOError, InterruptedError):
            return
        conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM, 0, fd)
        try:
            conn.settimeout(5.0)
            _msg, ancdata, _flags, _addr = conn.recvmsg(4096, _socket.CMSG_SPACE(16), MSG_CMSG_CLOEXEC)
        except OSError:
            ancdata = []
        finally:
            conn.close()
        fds: list[int] = []
        for level, kind, data in ancdata:
            if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                fds += [int.from_bytes(data[i:i + 4], sys.byteorder, signed=True)
                        for i in range(0, len(data) - len(data) % 4, 4)]
        if fds:
            self.master = fds[0]
            for extra in fds[1:]:
                os.close(extra)

    def receive(self) -> int:
        self.poll()
        if self.master < 0:
            raise FailedPrecondition("the runtime sent no pty master on the console socket")
        master, self.master = self.master, -1
        return master

    def close(self) -> None:
        self._sock.close()
        _unlink(self.path)
        if self.master >= 0:
            os.close(self.master)
            self.master = -1


class Writer:
    """Non-blocking writes to a process's stdin, buffered; ``close()`` after the buffer drains.

    While more than STDIN_HIGH_WATER bytes wait, ``full`` is true and readers should pause;
    ``on_drain`` callbacks run when it empties."""

    def __init__(self, loop: Loop, fd: int) -> None:
        self.loop = loop
        self.fd = fd
        os.set_blocking(fd, False)
        self._buf = bytearray()
        self._closing = False
        self._registered = False
        self.waiting: list = []  # callables to run once the buffer drains

    @property
    def closed(self) -> bool:
        return self.fd < 0

    @property
    def full(self) -> bool:
        return len(self._buf) > STDIN_HIGH_WATER

    def write(self, data: bytes) -> None:
        if self.fd < 0 or self._closing:
            return
        self._buf += data
        self._flush()

    def close(self) -> None:
        self._closing = True
        if not self._buf:
            self._close_now()

    def abort(self) -> None:
        """Close now, dropping what waits (the process is gone)."""
        self._buf.clear()
        self._close_now()

    def _flush(self) -> None:
        while self._buf:
            try:
                n = os.write(self.fd, self._buf)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # EPIPE: the process closed its stdin; drop what is left
                self._buf.clear()
                self._close_now()
                return
            del self._buf[:n]
        if self._buf and not self._registered:
            self.loop.add(self.fd, POLLOUT, self._on_event)
            self._registered = True
        elif not self._buf:
            if self._registered:
                self.loop.remove(self.fd)
                self._registered = False
            if self._closing:
                self._close_now()
            self._drained()

    def _on_event(self, _events: int) -> None:
        self._flush()

    def _drained(self) -> None:
        waiting, self.waiting = self.waiting, []
        for callback in waiting:
            callback()

    def _close_now(self) -> None:
        if self.fd >= 0:
            if self._registered:
                self.loop.remove(self.fd)
                self._registered = False
            os.close(self.fd)
            self.fd = -1
        self._drained()


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
