"""The shim itself: its state directory, the container's creation, the control socket and
the operations it serves (see the package docstring for the protocol)."""

from __future__ import annotations

import os
import sys

import _socket

from berth._sys import jsonfast as json
from berth._sys.files import atomic_write
from berth._sys.proc import is_alive, start_time
from berth.errors import AlreadyExists, BerthError, FailedPrecondition, InvalidArgument, NotFound
from berth.shim import oom
from berth.shim.conn import Conn
from berth.shim.logfile import JsonFileLog
from berth.shim.loop import POLLIN, Loop
from berth.shim.process import Process
from berth.shim.protocol import EXIT_FILE, INIT_PID_FILE, PID_FILE, SOCKET, short_path
from berth.shim.runtime_cli import Runtime, read_pid_file
from berth.shim.stdio import ConsoleSocket, Pipes

TIOCSWINSZ = 0x5414
MAX_ORPHANS = 256
CREATE_TIMEOUT = 120.0


class Options:
    id = ""
    bundle = ""
    state_dir = ""
    runtime = ""
    runtime_root = ""
    log_path = ""
    log_max_size = 0
    log_max_file = 1
    tty = False
    stdin = False
    ready_fd = -1
    foreground = False
    daemonized = False


def _dump(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def host_ids(process: dict, linux: dict) -> tuple[int, int]:
    """The process's uid and gid on the host (through the user namespace's mappings)."""
    user = process.get("user") or {}
    uid, gid = int(user.get("uid") or 0), int(user.get("gid") or 0)

    def mapped(value: int, mappings: list) -> int:
        for m in mappings or ():
            inside, outside, size = int(m.get("containerID", 0)), int(m.get("hostID", 0)), int(m.get("size", 0))
            if inside <= value < inside + size:
                return outside + value - inside
        return value

    return mapped(uid, linux.get("uidMappings")), mapped(gid, linux.get("gidMappings"))


def _valid_id(value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > 128 or value.startswith(".") or not all(
            c.isalnum() or c in "_.-" for c in value):
        raise InvalidArgument(f"invalid exec id {value!r}")
    return value


class Shim:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.dir = opts.state_dir
        self.loop = Loop(self._on_child)
        self.runtime = Runtime(opts.runtime, opts.runtime_root or None, self.dir, opts.id)
        self.init = Process(self, None, opts.tty)
        self.execs: dict[str, Process] = {}
        self._by_pid: dict[int, Process] = {}
        self._orphans: dict[int, int] = {}  # reaped before we knew them: pid -> wait status
        self._listener: _socket.socket | None = None
        self._config: dict = {}
        self.remove_state = False

    # --- setup -------------------------------------------------------------------------------

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def prepare(self) -> None:
        """State dir, pid file, control socket."""
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        try:
            with open(self.path(PID_FILE), "rb") as f:
                old = json.loads(f.read())
            if isinstance(old, dict) and is_alive(int(old.get("pid", 0)), old.get("start_time")):
                raise AlreadyExists(f"a shim (pid {old['pid']}) already serves {self.dir}")
        except (OSError, ValueError):
            pass
        for stale in (INIT_PID_FILE, EXIT_FILE):
            try:
                os.unlink(self.path(stale))
            except FileNotFoundError:
                pass
        me = os.getpid()
        atomic_write(self.path(PID_FILE), _dump({"pid": me, "start_time": start_time(me)}))
        sock_path = self.path(SOCKET)
        try:
            os.unlink(sock_path)
        except FileNotFoundError:
            pass
        listener = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        bind_path, dirfd = short_path(sock_path)
        old_mask = os.umask(0o177)
        try:
            listener.bind(bind_path)
        finally:
            os.umask(old_mask)
            if dirfd >= 0:
                os.close(dirfd)
        listener.listen(64)
        listener.setblocking(False)
        self._listener = listener
        self.loop.add(listener.fileno(), POLLIN, self._accept)

    def _bundle_config(self) -> dict:
        try:
            with open(os.path.join(self.opts.bundle, "config.json"), "rb") as f:
                config = json.loads(f.read())
            return config if isinstance(config, dict) else {}
        except (OSError, ValueError):
            return {}  # the runtime will say what is wrong with it

    def create(self) -> int:
        """``RUNTIME create``; the init's stdio are ours. Returns the init's pid."""
        opts = self.opts
        self._config = self._bundle_config()
        if opts.log_path:
            self.init.log = JsonFileLog(opts.log_path, opts.log_max_size, opts.log_max_file)
        pid_file = self.path(INIT_PID_FILE)
        args = ["create", "--bundle", opts.bundle, "--pid-file", pid_file]
        uid, gid = host_ids(self._config.get("process") or {}, self._config.get("linux") or {})
        pid, master, pipes = self._launch(args, pid_file, opts.tty, opts.stdin, uid, gid, CREATE_TIMEOUT)
        self.init.oom_file = oom.counter_file(pid)
        self.init.oom_before = oom.kill_count(self.init.oom_file)
        self._track(self.init, pid)
        if master >= 0:
            self.init.take_master(master, opts.stdin)
        else:
            self.init.take_pipes(pipes)
        return pid

    def _launch(self, args: list[str], pid_file: str, tty: bool, stdin: bool, uid: int, gid: int,
                timeout: float) -> tuple[int, int, Pipes | None]:
        """Run a runtime command that starts a process (create, exec) with stdio we hold."""
        if tty:
            console = ConsoleSocket(self.dir)
            try:
                self.runtime.call(*args, "--console-socket", console.path, self.opts.id,
                                  timeout=timeout, while_waiting=console.poll)
                master = console.receive()
            finally:
                console.close()
            try:
                return read_pid_file(pid_file), master, None
            except BaseException:
                os.close(master)
                raise
        pipes = Pipes(stdin, uid, gid)
        try:
            self.runtime.call(*args, self.opts.id, stdio=pipes.for_runtime(), timeout=timeout)
            pipes.close_theirs()
            return read_pid_file(pid_file), -1, pipes
        except BaseException:
            pipes.close_all()
            raise

    def _track(self, process: Process, pid: int) -> None:
        process.pid = pid
        status = self._orphans.pop(pid, None)
        if status is not None:
            process.exited(status)
        else:
            self._by_pid[pid] = process

    def _on_child(self, pid: int, status: int) -> None:
        process = self._by_pid.pop(pid, None)
        if process is not None:
            process.exited(status)
            return
        self._orphans[pid] = status
        if len(self._orphans) > MAX_ORPHANS:
            del self._orphans[next(iter(self._orphans))]

    def process_exited(self, process: Process) -> None:
        if process is self.init:
            atomic_write(self.path(EXIT_FILE), _dump({"pid": process.pid, **process.exit_info()}))

    # --- serving -----------------------------------------------------------------------------

    def serve(self) -> None:
        self.loop.run()

    def _accept(self, _events: int) -> None:
        while True:
            try:
                fd, _addr = self._listener._accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            Conn(self, fd)

    def dispatch(self, conn: Conn, request: dict) -> None:
        op = request.get("op")
        handler = getattr(self, f"op_{op}", None) if isinstance(op, str) and op.isidentifier() else None
        try:
            if handler is None:
                raise InvalidArgument(f"unknown operation {op!r}")
            result = handler(conn, request)
        except BerthError as exc:
            conn.reply_error(exc)
            return
        except OSError as exc:
            conn.reply_error(FailedPrecondition(f"{op}: {exc.strerror or exc}"))
            return
        except (TypeError, ValueError, KeyError) as exc:
            conn.reply_error(InvalidArgument(f"{op}: bad request: {exc}"))
            return
        if result is not None:
            conn.reply(result)

    def _process(self, request: dict) -> Process:
        exec_id = request.get("exec_id")
        if exec_id is None:
            return self.init
        process = self.execs.get(exec_id) if isinstance(exec_id, str) else None
        if process is None:
            raise NotFound(f"no such exec: {exec_id}")
        return process

    def _running(self) -> None:
        if self.init.exit_code is not None:
            raise FailedPrecondition(f"container {self.opts.id} is not running")

    # --- operations (each returns the answer, or None when it answers later) ----------------

    def op_start(self, conn: Conn, request: dict) -> dict:
        if self.init.started:
            raise FailedPrecondition(f"container {self.opts.id} has already been started")
        self._running()
        self.runtime.call("start", self.opts.id)
        self.init.started = True
        return {}

    def op_state(self, conn: Conn, request: dict) -> dict:
        return self._process(request).state()

    def op_kill(self, conn: Conn, request: dict) -> dict:
        from berth.spec.signals import parse_signal

        raw = request.get("signal", 15)
        signal = parse_signal(str(raw))
        process = self._process(request)
        if process is self.init:
            if self.init.exit_code is not None and not request.get("all"):
                raise FailedPrecondition(f"container {self.opts.id} is not running")
            self.runtime.call("kill", *(["--all"] if request.get("all") else []), self.opts.id, str(signal))
        else:
            if process.exit_code is not None:
                raise FailedPrecondition(f"exec {process.exec_id} is not running")
            os.kill(process.pid, signal)
        return {}

    def op_wait(self, conn: Conn, request: dict) -> dict | None:
        process = self._process(request)
        if process.settled:
            return process.exit_info()
        conn.wait_for(process)
        return None

    def op_resize(self, conn: Conn, request: dict) -> dict:
        process = self._process(request)
        width, height = int(request["width"]), int(request["height"])
        if not (0 <= width < 65536 and 0 <= height < 65536):
            raise InvalidArgument(f"invalid terminal size {width}x{height}")
        if process.master < 0:
            raise FailedPrecondition("the process has no terminal")
        import fcntl

        order = sys.byteorder
        fcntl.ioctl(process.master, TIOCSWINSZ,
                    height.to_bytes(2, order) + width.to_bytes(2, order) + b"\0\0\0\0")
        return {}

    def op_attach(self, conn: Conn, request: dict) -> None:
        process = self._process(request)
        conn.begin_attach(process, bool(request.get("stdin")), bool(request.get("stdout", True)),
                          bool(request.get("stderr", True)), bool(request.get("close_stdin")))
        return None

    def op_close_stdin(self, conn: Conn, request: dict) -> dict:
        self._process(request).close_stdin()
        return {}

    def op_exec(self, conn: Conn, request: dict) -> dict | None:
        exec_id = _valid_id(request.get("exec_id"))
        if exec_id in self.execs:
            raise AlreadyExists(f"exec {exec_id} already exists")
        self._running()
        spec = request.get("process")
        if not isinstance(spec, dict):
            raise InvalidArgument("exec: process must be an OCI process object")
        tty = bool(request.get("tty", spec.get("terminal")))
        spec = dict(spec, terminal=tty)
        stdin = bool(request.get("stdin"))
        spec_file, pid_file = self.path(f"exec-{exec_id}.json"), self.path(f"exec-{exec_id}.pid")
        atomic_write(spec_file, _dump(spec))
        uid, gid = host_ids(spec, self._config.get("linux") or {})
        process = Process(self, exec_id, tty)
        try:
            pid, master, pipes = self._launch(["exec", "--process", spec_file, "--detach", "--pid-file", pid_file],
                                              pid_file, tty, stdin, uid, gid, 60.0)
        finally:
            for leftover in (spec_file, pid_file):
                try:
                    os.unlink(leftover)
                except FileNotFoundError:
                    pass
        self.execs[exec_id] = process
        self._track(process, pid)
        if master >= 0:
            process.take_master(master, stdin)
        else:
            process.take_pipes(pipes)
        attach = request.get("attach")
        if isinstance(attach, dict):
            conn.begin_attach(process, bool(attach.get("stdin")), bool(attach.get("stdout", True)),
                              bool(attach.get("stderr", True)), bool(attach.get("close_stdin")), {"pid": pid})
            return None
        return {"pid": pid}

    def op_delete(self, conn: Conn, request: dict) -> None:
        self.runtime.call("delete", *(["--force"] if request.get("force") else []), self.opts.id)
        remove_tree(self.dir)  # before answering: once delete returns, the state is gone
        conn.reply({})
        conn.flush_now()
        self.loop.stop()

    def op_shutdown(self, conn: Conn, request: dict) -> None:
        if self.init.exit_code is None and self.init.pid and not request.get("now"):
            raise FailedPrecondition(f"container {self.opts.id} is still running")
        conn.reply({})
        conn.flush_now()
        self.loop.stop()

    def op_stats(self, conn: Conn, request: dict) -> dict:
        self._running()
        out = self.runtime.call("events", "--stats", self.opts.id)
        for line in out.splitlines():
            event = json.loads(line)
            if isinstance(event, dict) and event.get("type") == "stats":
                return {"stats": event.get("data") or {}}
        raise FailedPrecondition("the runtime printed no stats")

    def op_pids(self, conn: Conn, request: dict) -> dict:
        out = self.runtime.call("ps", "--format", "json", self.opts.id)
        pids = json.loads(out or b"[]")
        return {"pids": pids if isinstance(pids, list) else []}

    def op_pause(self, conn: Conn, request: dict) -> dict:
        self._running()
        self.runtime.call("pause", self.opts.id)
        self.init.paused = True
        return {}

    def op_resume(self, conn: Conn, request: dict) -> dict:
        self._running()
        self.runtime.call("resume", self.opts.id)
        self.init.paused = False
        return {}

    def op_update(self, conn: Conn, request: dict) -> dict:
        resources = request.get("resources")
        if not isinstance(resources, dict):
            raise InvalidArgument("update: resources must be an object")
        path = self.path("resources.json")
        atomic_write(path, _dump(resources))
        try:
            self.runtime.call("update", "--resources", path, self.opts.id)
        finally:
            os.unlink(path)
        return {}

    # --- the end ----------------------------------------------------------------------------

    def close(self) -> None:
        """Leave: close everything; remove the socket and pid file (all the state on delete)."""
        if self._listener is not None:
            self.loop.remove(self._listener.fileno())
            self._listener.close()
            self._listener = None
        for process in [self.init, *self.execs.values()]:
            for conn in list(process.attaches) + list(process.waiters):
                conn.close()
            process.close()
        if self.remove_state:
            remove_tree(self.dir)
        else:
            for name in (SOCKET, PID_FILE):
                try:
                    os.unlink(self.path(name))
                except FileNotFoundError:
                    pass


def remove_tree(path: str) -> None:
    """``shutil.rmtree`` without importing shutil (the shim's state dir is small and flat)."""
    try:
        entries = list(os.scandir(path))
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            remove_tree(entry.path)
        else:
            try:
                os.unlink(entry.path)
            except FileNotFoundError:
                pass
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
