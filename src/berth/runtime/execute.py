"""``exec``: run a new process inside a running container's namespaces and cgroup."""

from __future__ import annotations

import os

from berth.errors import FailedPrecondition, InvalidArgument
from berth.runtime.bundle import validate_process
from berth.runtime.container import Container
from berth.runtime.launch import start_init
from berth.runtime.linux.init import InitContext
from berth.runtime.linux.sync import Channel
from berth.spec import status as st


class ExecOptions:
    def __init__(self, process: dict, pid_file: str = "", console_socket: str = "", detach: bool = False,
                 preserve_fds: int = 0, ignore_paused: bool = False) -> None:
        self.process = process
        self.pid_file = pid_file
        self.console_socket = console_socket
        self.detach = detach
        self.preserve_fds = preserve_fds
        self.ignore_paused = ignore_paused


def exec_process(container: Container, opts: ExecOptions) -> tuple[int, int]:
    """Start the process; return (its host pid, pty master fd or -1 when the runtime holds the pty)."""
    status = container.status()
    if status == st.PAUSED and not opts.ignore_paused:
        raise FailedPrecondition("cannot exec in a paused container (use --ignore-paused to override)")
    if status not in (st.CREATED, st.RUNNING, st.PAUSED):
        raise FailedPrecondition(f"cannot exec in a stopped container")
    validate_process(opts.process)
    terminal = bool(opts.process.get("terminal"))
    if terminal and opts.detach and not opts.console_socket:
        raise InvalidArgument("cannot allocate tty if runc will detach without setting console socket")
    if not terminal and opts.console_socket:
        raise InvalidArgument("cannot use console socket if runc will not detach or allocate tty")
    config = dict(container.config)
    config["process"] = opts.process
    if opts.process.get("capabilities"):
        from berth.runtime.linux.capabilities import validate_caps

        validate_caps(opts.process["capabilities"])
    parent, child = Channel.pair()
    console_fd, master_sock = -1, -1
    if opts.console_socket:
        from berth.runtime.linux.tty import connect_console_socket

        console_fd = connect_console_socket(opts.console_socket)
    elif terminal:
        import socket

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        master_sock, console_fd = ours.detach(), theirs.detach()
    ctx = InitContext(config, child, exec_pid=container.pid, console_fd=console_fd,
                      preserve_fds=opts.preserve_fds)
    cgroup = container.cgroup() if container.record.get("cgroup") else None
    launch = start_init(ctx, parent, child, cgroup, lambda pid: container.hook_state(status))
    try:  # the channel closes on a successful execve; an error message means it failed
        msg = launch.channel.recv()
    except EOFError:
        msg = None
    finally:
        launch.channel.close()
    if msg and msg.get("type") == "error":
        raise FailedPrecondition(f"exec failed: unable to start container process: {msg.get('msg')}")
    if opts.pid_file:
        from berth.runtime.create import write_pid_file

        write_pid_file(opts.pid_file, launch.pid)
    master = -1
    if master_sock >= 0:
        from berth.runtime.linux.tty import receive_master

        master = receive_master(master_sock)
    return launch.pid, master


def process_from_args(container: Container, args: list[str], cwd: str = "", env: list[str] | None = None,
                      user: str = "", tty: bool = False, caps: list[str] | None = None,
                      no_new_privs: bool = False, additional_gids: list[int] | None = None) -> dict:
    """A process spec built from exec's flags on top of the container's own process (as runc)."""
    base = container.config.get("process") or {}
    process = {
        "terminal": tty,
        "args": args,
        "env": list(base.get("env") or []) + list(env or []),
        "cwd": cwd or base.get("cwd") or "/",
        "user": dict(base.get("user") or {"uid": 0, "gid": 0}),
        "capabilities": {k: list(v) for k, v in (base.get("capabilities") or {}).items()},
        "rlimits": base.get("rlimits") or [],
        "noNewPrivileges": bool(base.get("noNewPrivileges")) or no_new_privs,
    }
    if user:
        uid, _, gid = user.partition(":")
        try:
            process["user"] = {"uid": int(uid), "gid": int(gid or 0)}
        except ValueError:
            raise InvalidArgument(f"invalid user {user!r}: must be uid[:gid]") from None
    if additional_gids:
        process["user"]["additionalGids"] = additional_gids
    for cap in caps or ():
        for kind in ("bounding", "effective", "permitted", "ambient", "inheritable"):
            process["capabilities"].setdefault(kind, [])
            if cap not in process["capabilities"][kind] and kind != "inheritable":
                process["capabilities"][kind].append(cap)
    return process
