"""``create``: set up a container from a bundle and leave its init waiting on the exec fifo."""

from __future__ import annotations

import os

from berth._sys.files import atomic_write
from berth._sys.proc import start_time
from berth.errors import InvalidArgument, NotFound
from berth.runtime.bundle import load_config, rootfs_path
from berth.runtime.container import Container, utc_now
from berth.runtime.launch import start_init
from berth.runtime.linux.init import InitContext
from berth.runtime.linux.sync import Channel


class CreateOptions:
    def __init__(self, root: str, container_id: str, bundle: str = ".", pid_file: str = "",
                 console_socket: str = "", no_pivot: bool = False, no_new_keyring: bool = False,
                 preserve_fds: int = 0,
                 foreground: bool = False) -> None:
        self.root = root
        self.id = container_id
        self.bundle = os.path.abspath(bundle or ".")
        self.pid_file = pid_file
        self.console_socket = console_socket
        self.no_pivot = no_pivot
        self.no_new_keyring = no_new_keyring
        self.preserve_fds = preserve_fds
        self.foreground = foreground  # ``run`` without -d: the runtime waits and holds the pty


def check_config(config: dict, rootfs: str, opts: CreateOptions) -> None:
    if not os.path.isdir(rootfs):
        raise NotFound(f"rootfs ({rootfs}) does not exist")
    process = config.get("process")
    if not process:
        raise InvalidArgument("process must be set in config.json")
    terminal = bool(process.get("terminal"))
    if terminal and not opts.console_socket and not opts.foreground:
        raise InvalidArgument("cannot allocate tty if runc will detach without setting console socket")
    if not terminal and opts.console_socket:
        raise InvalidArgument("cannot use console socket if runc will not detach or allocate tty")
    linux = config.get("linux") or {}
    if linux.get("seccomp"):
        from berth.runtime.linux.seccomp import validate_seccomp

        validate_seccomp(linux["seccomp"])
    if process.get("capabilities"):
        from berth.runtime.linux.capabilities import validate_caps

        validate_caps(process["capabilities"])


def create(opts: CreateOptions) -> tuple[Container, int]:
    """Create the container; returns it and the fd of the pty master (foreground tty) or -1."""
    config = load_config(opts.bundle)
    rootfs = rootfs_path(opts.bundle, config)
    check_config(config, rootfs, opts)
    container = Container.create_dir(opts.root, opts.id)
    cgroup = None
    try:
        os.mkfifo(container.fifo_path, 0o622)
        os.chmod(container.fifo_path, 0o622)  # whatever the umask: a non-root init must open it
        warming, cgroup = _open_cgroup(config, opts.id)
        container.record.update(bundle=opts.bundle, rootfs=rootfs, created=utc_now(), owner="", config=config)
        master = _launch(container, config, rootfs, cgroup, opts)
        if opts.pid_file:
            write_pid_file(opts.pid_file, container.pid)
        from berth._sys.cgroup_warm import reap

        reap(warming)
        return container, master
    except BaseException:
        if cgroup is not None:
            try:
                cgroup.destroy()
            except Exception:  # noqa: BLE001 - the original error matters more
                pass
        container.remove_dir()
        raise


def _open_cgroup(config: dict, container_id: str) -> tuple:
    """(pid of the warming child, the container's cgroup), the cgroup not made yet:
    ``_launch`` makes it while the init starts.

    The first cgroup migration after a quiet spell waits for an RCU grace period (~14 ms
    here, a third of a start); ``warm`` starts that wait now, in a child, so that it runs
    alongside the fork and the namespace setup instead of after them."""
    from berth._sys.cgroup_warm import warm
    from berth.runtime.cgroups import open_cgroup

    return warm(), open_cgroup((config.get("linux") or {}).get("cgroupsPath") or "", container_id)


def _make_cgroup(cgroup, linux: dict) -> None:  # noqa: ANN001
    cgroup.create()
    cgroup.set(cgroup_resources(linux))


def cgroup_resources(linux: dict) -> dict:
    """linux.resources plus what runc always allows: the default devices and linux.devices."""
    resources = dict(linux.get("resources") or {})
    if "devices" in resources:
        from berth.runtime.cgroups import DEFAULT_ALLOWED_DEVICES

        extra = [
            {"allow": True, "type": d.get("type", "c"), "major": d.get("major", 0), "minor": d.get("minor", 0),
             "access": "rwm"}
            for d in linux.get("devices") or () if d.get("type", "c") in ("c", "b")
        ]
        resources["devices"] = list(resources["devices"]) + DEFAULT_ALLOWED_DEVICES + extra
    return resources


def _launch(container: Container, config: dict, rootfs: str, cgroup, opts: CreateOptions) -> int:  # noqa: ANN001
    parent, child = Channel.pair()
    console_fd, master_sock = -1, -1
    if opts.console_socket:
        from berth.runtime.linux.tty import connect_console_socket

        console_fd = connect_console_socket(opts.console_socket)
    elif opts.foreground and (config.get("process") or {}).get("terminal"):
        import socket

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        master_sock, console_fd = ours.detach(), theirs.detach()
    ctx = InitContext(config, child, rootfs=rootfs, fifo_path=container.fifo_path, console_fd=console_fd,
                      no_pivot=opts.no_pivot, preserve_fds=opts.preserve_fds, stage1_waits=opts.foreground,
                      container_id=opts.id, new_keyring=not opts.no_new_keyring,
                      cgroup_paths=cgroup.paths() if cgroup else None)
    hooks = config.get("hooks") or {}

    def state_for_hooks(pid: int) -> dict:
        container.record["pid"] = pid
        return container.hook_state("creating")

    def runtime_hooks(state: dict) -> None:
        from berth.runtime.linux.hooks import run_hooks

        run_hooks(hooks.get("prestart"), state, "prestart")
        run_hooks(hooks.get("createRuntime"), state, "createRuntime")

    launch = start_init(ctx, parent, child, cgroup, state_for_hooks, runtime_hooks,
                        setup_cgroup=lambda: _make_cgroup(cgroup, config.get("linux") or {}))
    launch.channel.close()
    container.record["cgroup"] = cgroup.paths()
    container.waiter = launch.waiter
    container.record["pid"] = launch.pid
    container.record["pid_start"] = start_time(launch.pid)
    container.save()
    if master_sock >= 0:
        from berth.runtime.linux.tty import receive_master

        return receive_master(master_sock)
    return -1


def write_pid_file(path: str, pid: int) -> None:
    path = os.path.abspath(path)
    atomic_write(path, str(pid).encode(), mode=0o644)
