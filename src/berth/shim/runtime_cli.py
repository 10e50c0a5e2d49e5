"""The OCI runtime, driven only through its command line (runc's), as containerd's shim does.

Every call runs ``RUNTIME [--root R] --log STATE/runtime.log --log-format json VERB ...``
and waits for it (with a timeout, through a pidfd, so that no other child is reaped here).
A failure raises a ``berth.errors`` error carrying the runtime's own message: the last
error line it appended to runtime.log, else what it printed, else its exit status.
"""

from __future__ import annotations

import os
import select

import _signal

from berth._sys import jsonfast as json
from berth.errors import BerthError, FailedPrecondition, NotFound
from berth.shim.protocol import RUNTIME_LOG

# dispositions Python changes (SIGPIPE, SIGXFSZ ignored) or the shim does (SIGCHLD):
# the runtime, and the container after it, must start with the defaults
_RESET = (_signal.SIGPIPE, _signal.SIGXFSZ, _signal.SIGCHLD, _signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP)


class RuntimeFailed(FailedPrecondition):
    pass


class RuntimeNotFound(NotFound):
    pass


def error_for(message: str) -> BerthError:
    lower = message.lower()
    if "does not exist" in lower or "not found" in lower or "no such" in lower:
        return RuntimeNotFound(message)
    return RuntimeFailed(message)


class Runtime:
    def __init__(self, binary: str, root: str | None, state_dir: str, container_id: str) -> None:
        self.binary = binary
        self.root = root
        self.state_dir = state_dir
        self.id = container_id
        self.log = os.path.join(state_dir, RUNTIME_LOG)
        self._out = os.path.join(state_dir, ".runtime.out")

    def argv(self, *args: str) -> list[str]:
        head = [self.binary]
        if self.root:
            head += ["--root", self.root]
        return head + ["--log", self.log, "--log-format", "json", *args]

    def spawn(self, args: list[str], stdio: tuple[int, int, int]) -> int:
        """Start the runtime with ``stdio`` as its fds 0, 1 and 2; return its pid."""
        actions = [(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(stdio)]
        try:
            return os.posix_spawn(self.binary, self.argv(*args), os.environ, file_actions=actions,
                                  setsigdef=_RESET, setsigmask=())
        except OSError as exc:
            raise RuntimeFailed(f"cannot run runtime {self.binary}: {exc.strerror}") from None

    def log_offset(self) -> int:
        try:
            return os.stat(self.log).st_size
        except OSError:
            return 0

    def call(self, *args: str, stdio: tuple[int, int, int] | None = None, timeout: float = 60.0,
             while_waiting=None) -> bytes:  # noqa: ANN001 - callable(): polled while it runs
        """Run one command to its end; return its stdout (when ``stdio`` is not given).

        ``while_waiting``, if given, is called every few milliseconds while the runtime
        runs (the console socket is served that way)."""
        offset = self.log_offset()
        devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        out = -1
        try:
            if stdio is None:
                out = os.open(self._out, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
                stdio = (devnull, out, out)
            pid = self.spawn(list(args), stdio)
            status = wait_child(pid, timeout, while_waiting)
            captured = b""
            if out >= 0:
                os.lseek(out, 0, os.SEEK_SET)
                captured = _read_all(out)
        finally:
            os.close(devnull)
            if out >= 0:
                os.close(out)
                _unlink(self._out)
        if status is None:
            raise RuntimeFailed(f"runtime {' '.join(args[:1])} timed out after {timeout:g}s")
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            raise error_for(self.error_since(offset) or _last_line(captured)
                            or f"runtime {args[0]} exited with status {code}")
        return captured

    def error_since(self, offset: int) -> str:
        """The last error the runtime logged after ``offset`` in its json log."""
        try:
            with open(self.log, "rb") as f:
                f.seek(offset)
                lines = f.read().splitlines()
        except OSError:
            return ""
        message = ""
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("level") in ("error", "fatal") and entry.get("msg"):
                message = str(entry["msg"])
        return message


def wait_child(pid: int, timeout: float, while_waiting=None) -> int | None:  # noqa: ANN001
    """Wait for our child ``pid`` only; kill it after ``timeout`` seconds (then None)."""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        return os.waitpid(pid, 0)[1]
    timed_out = False
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        step = 20 if while_waiting else int(timeout * 1000)
        waited = 0
        while not poller.poll(step):
            if while_waiting:
                while_waiting()
            waited += step
            if waited >= timeout * 1000:
                os.kill(pid, _signal.SIGKILL)
                timed_out = True
                break
    finally:
        os.close(pidfd)
    status = os.waitpid(pid, 0)[1]
    return None if timed_out else status


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _last_line(data: bytes) -> str:
    for line in reversed(data.decode(errors="replace").splitlines()):
        if line.strip():
            return line.strip()
    return ""


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def read_pid_file(path: str) -> int:
    with open(path, "rb") as f:
        return int(f.read().strip() or b"0")
