"""The daemon's side of a shim: a small blocking client, and finding and starting shims.

    start_shim(id, bundle, state_dir, runtime, ...) -> ShimClient   launch, wait until ready
    find_shims(root) -> [state_dir, ...]                            shims alive under root
    ShimClient(state_dir)
        .start() .state() .kill() .wait() .resize() .attach() .close_stdin() .exec()
        .exec_attached() .delete() .stats() .pids() .pause() .resume() .update() .shutdown()
        .pid() .alive() .exit_status()
    AttachStream                                                    what attach returns

Every call opens its own connection, so one client may be used from several threads. A
shim that is gone raises ``Unavailable``; the shim's errors come back as the
``berth.errors`` class it names. The daemon can wrap the blocking calls in threads (or
connect to ``socket_path`` itself with asyncio, the protocol being one JSON line each way).
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

from berth import errors
from berth._sys.proc import is_alive
from berth.shim.protocol import EXIT_FILE, FRAME_HEADER, PID_FILE, SOCKET, parse_header, short_path

_DEFAULT = object()


def error_from_answer(body: dict) -> errors.BerthError:
    """The ``berth.errors`` exception for a failed answer ``{"ok": false, "error", "kind"}``."""
    cls = getattr(errors, str(body.get("kind")), None)
    if not (isinstance(cls, type) and issubclass(cls, errors.BerthError)):
        cls = errors.BerthError
    return cls(str(body.get("error") or "shim error"))


_error = error_from_answer  # the old private name (berth.daemon.shimio imports it)


class AttachStream:
    """An attached connection: ``send`` stdin, ``close_stdin``, and read the output as
    frames (``frames``, without a tty) or raw bytes (``recv``, with a tty)."""

    def __init__(self, sock: socket.socket, tty: bool, buffered: bytes = b"", info: dict | None = None) -> None:
        self.sock = sock
        self.tty = tty
        self.info = info or {}
        self._buf = bytearray(buffered)

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close_stdin(self) -> None:
        """Half-close: the shim closes the process's stdin if attach asked ``close_stdin``."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def recv(self, size: int = 65536) -> bytes:
        """Raw bytes (b"" at the end)."""
        if self._buf:
            data = bytes(self._buf[:size])
            del self._buf[:size]
            return data
        return self.sock.recv(size)

    def _fill(self, size: int) -> bool:
        while len(self._buf) < size:
            chunk = self.sock.recv(65536)
            if not chunk:
                return False
            self._buf += chunk
        return True

    def read_frame(self) -> tuple[int, bytes] | None:
        """The next (stream, data) frame, or None at the end."""
        if not self._fill(FRAME_HEADER):
            return None
        stream, length = parse_header(bytes(self._buf[:FRAME_HEADER]))
        if not self._fill(FRAME_HEADER + length):
            return None
        data = bytes(self._buf[FRAME_HEADER:FRAME_HEADER + length])
        del self._buf[:FRAME_HEADER + length]
        return stream, data

    def frames(self) -> Iterator[tuple[int, bytes]]:
        while (item := self.read_frame()) is not None:
            yield item

    def read_all(self) -> tuple[bytes, bytes]:
        """Everything until the shim closes: (stdout, stderr); with a tty all is stdout."""
        if self.tty:
            chunks = []
            while chunk := self.recv():
                chunks.append(chunk)
            return b"".join(chunks), b""
        out = {1: bytearray(), 2: bytearray()}
        for stream, data in self.frames():
            out.setdefault(stream, bytearray()).extend(data)
        return bytes(out[1]), bytes(out[2])

    def settimeout(self, timeout: float | None) -> None:
        self.sock.settimeout(timeout)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> AttachStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ShimClient:
    def __init__(self, state_dir: str | os.PathLike[str], timeout: float = 60.0) -> None:
        self.state_dir = os.path.abspath(os.fspath(state_dir))
        self.timeout = timeout
        self.ready: dict = {}  # what the shim reported at start ({pid, init_pid}), via start_shim

    def __repr__(self) -> str:
        return f"ShimClient({self.state_dir!r})"

    @property
    def socket_path(self) -> str:
        return os.path.join(self.state_dir, SOCKET)

    # --- transport -------------------------------------------------------------------------

    def _connect(self, timeout: float | None) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        path, dirfd = -1, -1
        try:
            path, dirfd = short_path(self.socket_path)
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError) as exc:
            sock.close()
            raise errors.Unavailable(f"shim at {self.state_dir} is not running ({exc.strerror})") from None
        except BaseException:
            sock.close()
            raise
        finally:
            if dirfd >= 0:
                os.close(dirfd)
        return sock

    def _request(self, op: str, timeout: Any, fields: dict) -> tuple[dict, socket.socket, bytes]:
        """Send one request; return the answer, the open connection and bytes read past it."""
        timeout = self.timeout if timeout is _DEFAULT else timeout
        body = {"op": op, **{k: v for k, v in fields.items() if v is not None}}
        sock = self._connect(timeout)
        try:
            sock.sendall(json.dumps(body, separators=(",", ":")).encode() + b"\n")
            buf = bytearray()
            while b"\n" not in buf:
                chunk = sock.recv(65536)
                if not chunk:
                    raise errors.Unavailable(f"shim at {self.state_dir} closed the connection during {op}")
                buf += chunk
        except socket.timeout:
            sock.close()
            raise errors.Unavailable(f"shim at {self.state_dir} did not answer {op} in time") from None
        except OSError as exc:
            sock.close()
            raise errors.Unavailable(f"shim at {self.state_dir}: {op}: {exc}") from None
        nl = buf.index(b"\n")
        answer = json.loads(bytes(buf[:nl]))
        if not answer.get("ok"):
            sock.close()
            raise _error(answer)
        return answer, sock, bytes(buf[nl + 1:])

    def call(self, op: str, timeout: Any = _DEFAULT, **fields: Any) -> dict:
        answer, sock, _ = self._request(op, timeout, fields)
        sock.close()
        answer.pop("ok", None)
        return answer

    # --- operations ------------------------------------------------------------------------

    def start(self) -> None:
        self.call("start")

    def state(self, exec_id: str | None = None) -> dict:
        """{id, exec_id, status, pid, tty, exit_code, exited_at, oom_killed}"""
        return self.call("state", exec_id=exec_id)

    def kill(self, signal: int | str = 15, all: bool = False, exec_id: str | None = None) -> None:  # noqa: A002
        self.call("kill", signal=signal, all=all or None, exec_id=exec_id)

    def wait(self, exec_id: str | None = None, timeout: float | None = None) -> dict:
        """Block until the process has exited and its output ended: {exit_code, exited_at, oom_killed}."""
        return self.call("wait", timeout=timeout, exec_id=exec_id)

    def resize(self, width: int, height: int, exec_id: str | None = None) -> None:
        self.call("resize", width=width, height=height, exec_id=exec_id)

    def attach(self, stdin: bool = False, stdout: bool = True, stderr: bool = True, close_stdin: bool = False,
               exec_id: str | None = None, timeout: float | None = None) -> AttachStream:
        answer, sock, rest = self._request("attach", self.timeout, {
            "stdin": stdin, "stdout": stdout, "stderr": stderr, "close_stdin": close_stdin, "exec_id": exec_id})
        sock.settimeout(timeout)
        return AttachStream(sock, bool(answer.get("tty")), rest, answer)

    def close_stdin(self, exec_id: str | None = None) -> None:
        self.call("close_stdin", exec_id=exec_id)

    def exec(self, exec_id: str, process: dict, tty: bool = False, stdin: bool = False) -> int:
        """Start a process in the container (``RUNTIME exec --detach``); returns its pid."""
        return int(self.call("exec", exec_id=exec_id, process=process, tty=tty, stdin=stdin)["pid"])

    def exec_attached(self, exec_id: str, process: dict, tty: bool = False, stdin: bool = False,
                      stdout: bool = True, stderr: bool = True, close_stdin: bool = False,
                      timeout: float | None = None) -> tuple[int, AttachStream]:
        """Start a process already attached, so that none of its output is missed."""
        attach = {"stdin": stdin, "stdout": stdout, "stderr": stderr, "close_stdin": close_stdin}
        answer, sock, rest = self._request("exec", self.timeout, {
            "exec_id": exec_id, "process": process, "tty": tty, "stdin": stdin, "attach": attach})
        sock.settimeout(timeout)
        return int(answer["pid"]), AttachStream(sock, bool(answer.get("tty")), rest, answer)

    def delete(self, force: bool = False) -> None:
        """``RUNTIME delete``; then the shim removes its state directory and exits."""
        recorded = self.pid()
        self.call("delete", force=force or None)
        _wait_gone(recorded)

    def shutdown(self, now: bool = False) -> None:
        """Make the shim exit (refused while the container runs, unless ``now``)."""
        recorded = self.pid()
        self.call("shutdown", now=now or None)
        _wait_gone(recorded)

    def stats(self) -> dict:
        return self.call("stats")["stats"]

    def pids(self) -> list[int]:
        return list(self.call("pids")["pids"])

    def pause(self) -> None:
        self.call("pause")

    def resume(self) -> None:
        self.call("resume")

    def update(self, resources: dict) -> None:
        self.call("update", resources=resources)

    # --- without the socket ----------------------------------------------------------------

    def pid(self) -> tuple[int, int | None] | None:
        """(pid, start time) from shim.pid, or None."""
        return read_pid(self.state_dir)

    def alive(self) -> bool:
        recorded = self.pid()
        return recorded is not None and is_alive(*recorded)

    def exit_status(self) -> dict | None:
        """exit.json ({exit_code, exited_at, oom_killed, pid}), if the init has exited."""
        try:
            with open(os.path.join(self.state_dir, EXIT_FILE), "rb") as f:
                return json.loads(f.read())
        except (OSError, ValueError):
            return None



def _wait_gone(recorded: tuple[int, int | None] | None, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while recorded is not None and is_alive(*recorded) and time.monotonic() < deadline:
        time.sleep(0.005)


def read_pid(state_dir: str) -> tuple[int, int | None] | None:
    try:
        with open(os.path.join(state_dir, PID_FILE), "rb") as f:
            data = json.loads(f.read())
        return int(data["pid"]), data.get("start_time")
    except (OSError, ValueError, KeyError, TypeError):
        return None


def find_shims(root: str | os.PathLike[str]) -> list[str]:
    """State directories under ``root`` whose shim is alive (pid and start time match)."""
    root = os.fspath(root)
    found = []
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except FileNotFoundError:
        return []
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            recorded = read_pid(entry.path)
            if recorded is not None and is_alive(*recorded):
                found.append(entry.path)
    return found


def default_shim_binary() -> str:
    beside = os.path.join(os.path.dirname(sys.executable), "berth-shim")
    if os.access(beside, os.X_OK):
        return beside
    import shutil

    return shutil.which("berth-shim") or "berth-shim"


def start_shim(container_id: str, bundle: str | os.PathLike[str], state_dir: str | os.PathLike[str],
               runtime: str, *, runtime_root: str | os.PathLike[str] | None = None,
               log_path: str | os.PathLike[str] | None = None, log_max_size: int = 0, log_max_file: int = 1,
               tty: bool = False, stdin: bool = False, shim_binary: str | None = None,
               timeout: float = 60.0, env: dict[str, str] | None = None) -> ShimClient:
    """Launch a shim for a bundle and wait until it has created the container.

    Raises the error the shim reports (the runtime's own message for a failed create),
    or ``Unavailable`` if the shim died or did not report within ``timeout``."""
    argv = [shim_binary or default_shim_binary(), "--id", container_id, "--bundle", os.fspath(bundle),
            "--state-dir", os.fspath(state_dir), "--runtime", runtime]
    if runtime_root:
        argv += ["--runtime-root", os.fspath(runtime_root)]
    if log_path:
        argv += ["--log-path", os.fspath(log_path), "--log-max-size", str(log_max_size),
                 "--log-max-file", str(log_max_file)]
    if tty:
        argv.append("--tty")
    if stdin:
        argv.append("--stdin")
    r, w = os.pipe()
    try:
        argv += ["--ready-fd", str(w)]
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, pass_fds=(w,), env=env, start_new_session=True)
        except OSError as exc:
            raise errors.Unavailable(f"cannot run {argv[0]}: {exc.strerror}") from None
        finally:
            os.close(w)
        deadline = time.monotonic() + timeout
        try:
            _, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise errors.Unavailable(f"{argv[0]} did not daemonize within {timeout:g}s") from None
        line = _read_line(r, deadline)
    finally:
        os.close(r)
    if line is None:
        raise errors.Unavailable(f"berth-shim for {container_id} did not report readiness within {timeout:g}s")
    if not line:
        detail = stderr.decode(errors="replace").strip() or f"exit status {proc.returncode}"
        raise errors.Unavailable(f"berth-shim for {container_id} exited before it was ready: {detail}")
    try:
        answer = json.loads(line)
    except ValueError:
        raise errors.Unavailable(f"berth-shim for {container_id} reported nonsense: {line[:200]!r}") from None
    if not answer.get("ok"):
        raise _error(answer)
    client = ShimClient(state_dir)
    client.ready = answer
    return client


def _read_line(fd: int, deadline: float) -> bytes | None:
    """One line from the ready pipe: the line, b"" at EOF without one, None on timeout."""
    buf = b""
    while b"\n" not in buf:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            return None
        chunk = os.read(fd, 65536)
        if not chunk:
            return buf.strip()
        buf += chunk
    return buf.split(b"\n", 1)[0]
