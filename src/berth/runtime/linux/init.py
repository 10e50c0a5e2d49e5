"""The container side of the fork: the two stages that become the container's process.

Stage 1 (forked by the runtime, in the runtime's namespaces): waits until the runtime has
put it in the cgroup, joins namespaces given by path, unshares the user namespace (the
runtime writes the id maps), unshares the rest and forks stage 2, whose pid it reports.

Stage 2 (pid 1 of a new pid namespace, or the exec'd process): builds the root filesystem
(``create``) or only the process (``exec``), reports ``ready`` and, for ``create``, blocks on
the exec fifo until ``start`` opens it, then execs the user's program.

Every failure is sent back over the sync channel as one line; nothing here returns.
"""

from __future__ import annotations

import os

from berth._sys import libc
from berth.runtime.linux import namespaces, process as proc, rootfs as rfs
from berth.runtime.linux.sync import Channel


class InitContext:
    """What the forked stages need; filled in by the runtime before the fork."""

    def __init__(self, config: dict, channel: Channel, *, rootfs: str = "", exec_pid: int = 0,
                 fifo_path: str = "", console_fd: int = -1, no_pivot: bool = False,
                 preserve_fds: int = 0, cgroup_paths: dict[str, str] | None = None,
                 stage1_waits: bool = False, container_id: str = "", new_keyring: bool = True) -> None:
        self.config = config
        self.process: dict = config.get("process") or {}
        self.linux: dict = config.get("linux") or {}
        self.channel = channel
        self.rootfs = rootfs
        self.exec_pid = exec_pid  # non-zero: this is an ``exec`` into that container
        self.fifo_path = fifo_path
        self.console_fd = console_fd
        self.no_pivot = no_pivot
        self.container_id = container_id
        self.new_keyring = new_keyring  # a session keyring of its own (runc's default)
        self.preserve_fds = preserve_fds
        self.cgroup_paths = cgroup_paths
        self.stage1_waits = stage1_waits  # stay as stage 2's parent and exit with its status
        self.namespaces = namespaces.configured(config)
        self.new_cgroupns = not exec_pid and "cgroup" in self.namespaces and not self.namespaces["cgroup"]


def preload(ctx: InitContext) -> None:
    """Import now what the later steps need: after pivot_root (or joining the container's
    mount namespace) the runtime's own files are out of reach."""
    import resource  # noqa: F401 - rlimits

    libc.preload()

    from berth.runtime.linux import capabilities

    capabilities.last_cap()
    if ctx.linux.get("seccomp"):
        from berth.runtime.linux import seccomp

        seccomp.preload()
    hooks = ctx.config.get("hooks") or {}
    if hooks.get("startContainer") or hooks.get("createContainer"):
        from berth.runtime.linux import hooks as _hooks  # noqa: F401
    if ctx.process.get("terminal"):
        import fcntl  # noqa: F401
        import socket  # noqa: F401

        from berth.runtime.linux import tty  # noqa: F401


def stage1(ctx: InitContext) -> None:
    """Runs in the first child; never returns."""
    try:
        # Not dumpable: no process of the container may open /proc/PID/exe (the host's
        # Python) or our fds while we run inside its namespaces (CVE-2019-5736). execve of
        # the user's program makes it dumpable again.
        libc.prctl(libc.PR_SET_DUMPABLE, 0)
        preload(ctx)
        if ctx.exec_pid:
            opened = namespaces.open_paths(_exec_namespace_paths(ctx.exec_pid))
        else:
            opened = namespaces.open_paths(ctx.namespaces)
            # as host root, before a user namespace takes away the right to reach the state dir
            ctx.fifo_fd = os.open(ctx.fifo_path, os.O_PATH | os.O_CLOEXEC)
        namespaces.join(opened)
        if not ctx.exec_pid and "user" in ctx.namespaces and not ctx.namespaces["user"]:
            libc.unshare(libc.CLONE_NEWUSER)
            ctx.channel.send("usermap")
            ctx.channel.expect("mapped")
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
        if not ctx.exec_pid:  # the cgroup namespace waits until stage 2 is in its cgroup
            libc.unshare(namespaces.unshare_flags(ctx.namespaces, exclude=("user", "cgroup")))
        pipes = None
        if ctx.stage1_waits and not ctx.process.get("terminal"):  # runc's foreground stdio: pipes
            from berth.runtime.linux import stdio

            pipes = stdio.make_pipes()
        pid = os.fork()
        if pid == 0:
            if pipes:
                stdio.use_pipes(pipes)
            stage2(ctx)
        ctx.channel.send("pid", pid=pid)
        if ctx.stage1_waits:
            ctx.channel.close()
            _wait_and_exit(pid, pipes)
        os._exit(0)
    except BaseException as exc:  # noqa: BLE001 - everything must reach the runtime
        _fail(ctx, exc)


def _wait_and_exit(pid: int, pipes: list | None = None) -> None:
    """A foreground ``run``'s stage 1: the parent of the container's init, so the runtime
    (our parent) learns its exit status from ours without being a subreaper. Signals are
    the runtime's to forward, not ours to die of. With ``pipes``, first copy the stdio."""
    import _signal

    for sig in range(1, _signal.NSIG):
        if sig not in (_signal.SIGCHLD, _signal.SIGKILL, _signal.SIGSTOP):
            try:
                _signal.signal(sig, _signal.SIG_IGN)
            except (OSError, ValueError):
                pass
    if pipes:
        from berth.runtime.linux.stdio import copy

        copy(pipes)
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        os._exit(255)
    code = os.waitstatus_to_exitcode(status)
    os._exit(code if code >= 0 else 128 - code)


def _exec_namespace_paths(pid: int) -> dict[str, str]:
    """The container's namespaces that differ from ours."""
    paths = {}
    for kind, name in namespaces.PROC_NAMES.items():
        theirs = f"/proc/{pid}/ns/{name}"
        try:
            if os.stat(theirs).st_ino != os.stat(f"/proc/self/ns/{name}").st_ino:
                paths[kind] = theirs
        except FileNotFoundError:
            continue
    return paths


def _fail(ctx: InitContext, exc: BaseException) -> None:
    message = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    if isinstance(exc, OSError) and not isinstance(exc, proc.ExecError) and exc.filename:
        message = f"{message}: {exc.filename}"
    if os.environ.get("BERTH_INIT_TRACE"):
        import traceback

        message += "\n" + "".join(traceback.format_exception(exc))
    try:
        ctx.channel.send("error", msg=message or type(exc).__name__)
    finally:
        os._exit(1)


def stage2(ctx: InitContext) -> None:
    """Runs as the container's process; never returns."""
    try:
        if ctx.exec_pid:
            init_msg = ctx.channel.expect("init")
            _prepare_exec(ctx)
        else:
            init_msg = _prepare_container(ctx)
        path, env = _finalize_process(ctx)
        ctx.channel.send("ready")
    except BaseException as exc:  # noqa: BLE001
        _fail(ctx, exc)
    if ctx.exec_pid:
        _exec(ctx, path, env, report=True)
    _wait_for_start(ctx, init_msg.get("state") or {})
    _exec(ctx, path, env, report=False)


def _in_new_userns(ctx: InitContext) -> bool:
    return "user" in ctx.namespaces


def _join_cgroup_namespace(ctx: InitContext) -> dict:
    """Wait until the runtime has put us in the container's cgroup ("init"), then unshare
    the cgroup namespace if asked, so that its root is that cgroup."""
    init_msg = ctx.channel.expect("init")
    if ctx.new_cgroupns:
        libc.unshare(libc.CLONE_NEWCGROUP)
    return init_msg


def _prepare_container(ctx: InitContext) -> dict:
    """Everything up to ``ready``; returns the runtime's "init" message (state for hooks).

    The runtime makes the cgroup and moves us into it (slow on v1: an RCU grace period)
    while we mount; only the cgroup mount waits for it."""
    if "mount" not in ctx.namespaces:
        raise OSError(22, "a mount namespace is required to set up the root filesystem")
    linux = ctx.linux
    hooks = ctx.config.get("hooks") or {}
    rootfs = ctx.rootfs
    init_msg = None
    if "network" in ctx.namespaces and not ctx.namespaces["network"]:
        namespaces.loopback_up()
    if ctx.new_keyring:
        _join_session_keyring(ctx.container_id)
    rfs.prepare_root(rootfs, linux.get("rootfsPropagation"))
    for entry in ctx.config.get("mounts") or ():
        if init_msg is None and entry.get("type") == "cgroup":  # its directories exist from now
            init_msg = _join_cgroup_namespace(ctx)
        rfs.mount_entry(rootfs, entry, ctx.cgroup_paths, ctx.new_cgroupns)
    if init_msg is None:
        init_msg = _join_cgroup_namespace(ctx)
    state = init_msg.get("state") or {}
    if hooks.get("prestart") or hooks.get("createRuntime"):
        ctx.channel.send("hooks")
        ctx.channel.expect("hooks-done")
    if hooks.get("createContainer"):
        from berth.runtime.linux.hooks import run_hooks

        run_hooks(hooks["createContainer"], dict(state, pid=os.getpid()), "createContainer")  # runc: pid inside
    rfs.create_devices(rootfs, linux.get("devices") or [], bind_from_host=_in_new_userns(ctx))
    rfs.create_dev_symlinks(rootfs)
    if ctx.no_pivot:
        rfs.move_root(rootfs)
    else:
        rfs.pivot(rootfs)
    if ctx.process.get("cwd"):  # runc creates a missing cwd (before the root goes read-only)
        cwd = ctx.process["cwd"]
        try:
            os.makedirs(cwd, 0o755, exist_ok=True)
        except OSError as exc:  # runc's words: "mkdir /etc/passwd: not a directory"
            code = 20 if isinstance(exc, FileExistsError) else exc.errno  # ENOTDIR: it exists, not a dir
            raise OSError(code, f"mkdir {cwd}: {os.strerror(code).lower()}") from None
    hostname = ctx.config.get("hostname")
    domainname = ctx.config.get("domainname")
    if (hostname or domainname) and "uts" not in ctx.namespaces:
        raise OSError(22, "unable to set hostname without a private UTS namespace")
    if hostname:
        libc.sethostname(hostname)
    if domainname:
        libc.setdomainname(domainname)
    if linux.get("sysctl"):
        rfs.apply_sysctl(linux["sysctl"])
    if ctx.process.get("terminal"):
        _console(ctx, mount_console=True)
    rfs.readonly_paths(linux.get("readonlyPaths") or [])
    rfs.mask_paths(linux.get("maskedPaths") or [])
    if (ctx.config.get("root") or {}).get("readonly"):
        rfs.remount_root_readonly()
    propagation = linux.get("rootfsPropagation")
    if propagation:
        from berth.runtime.linux.mountopts import PROPAGATION_OPTIONS

        libc.mount(None, "/", None, PROPAGATION_OPTIONS[propagation])
    proc.set_oom_score_adj(ctx.process.get("oomScoreAdj"))
    return init_msg


def _join_session_keyring(container_id: str) -> None:
    """Keys made inside the container stay out of the caller's session keyring (runc's
    "_ses.<id>", with view/read/link/setattr for the user). Kernels without keys: skip."""
    try:
        serial = libc.join_session_keyring(f"_ses.{container_id}")
        libc.keyring_add_perm(serial, 0x080D0000)
    except OSError as exc:
        if exc.errno != 38:  # ENOSYS
            raise OSError(exc.errno, f"could not create session key: {exc.strerror}") from None


def _prepare_exec(ctx: InitContext) -> None:
    if ctx.process.get("terminal"):
        _console(ctx, mount_console=False)


def _console(ctx: InitContext, mount_console: bool) -> None:
    from berth.runtime.linux import tty

    user = ctx.process.get("user") or {}
    slave = tty.setup_console(ctx.console_fd, user.get("uid", 0), user.get("gid", 0), mount_console)
    ctx.console_fd = -1
    tty.make_controlling(slave)


def _finalize_process(ctx: InitContext) -> tuple[str, dict[str, str]]:
    """rlimits, seccomp (early when no_new_privs is off), caps, user, cwd; returns (path, env)."""
    from berth.runtime.linux import capabilities

    process = ctx.process
    proc.set_rlimits(process.get("rlimits"))
    seccomp = ctx.linux.get("seccomp")
    nnp = bool(process.get("noNewPrivileges"))
    if seccomp and not nnp:
        from berth.runtime.linux.seccomp import apply_seccomp

        apply_seccomp(seccomp)
        ctx.seccomp_done = True
    caps = process.get("capabilities")
    if caps is not None:
        capabilities.drop_bounding_set(caps.get("bounding") or [])
    user = process.get("user") or {}
    proc.switch_user(user, _in_new_userns(ctx), _setgroups_allowed(ctx))
    cwd = process.get("cwd") or "/"
    try:
        os.chdir(cwd)
    except OSError as exc:
        raise OSError(exc.errno, f'chdir to cwd ("{cwd}") set in config.json failed: {exc.strerror.lower()}') from None
    capabilities.apply_caps(caps, warn=_quiet)
    if nnp:
        libc.prctl(libc.PR_SET_NO_NEW_PRIVS, 1)
    env = proc.env_dict(process.get("env"))
    env.setdefault("HOME", proc.home_of(user.get("uid", 0)))
    path = proc.look_path(process["args"][0], env)
    return path, env


def _quiet(message: str) -> None:
    """runc only logs refused ambient capabilities; the container's stderr is not ours to write."""


def _setgroups_allowed(ctx: InitContext) -> bool:
    try:
        with open("/proc/self/setgroups") as f:
            return f.read().strip() != "deny"
    except OSError:
        return True


def _wait_for_start(ctx: InitContext, state: dict) -> None:
    """Block until ``start`` opens the fifo, then run startContainer hooks."""
    ctx.channel.close()
    try:
        fd = os.open(f"/proc/self/fd/{ctx.fifo_fd}", os.O_WRONLY | os.O_CLOEXEC)
        os.write(fd, b"0")
        os.close(fd)
        os.close(ctx.fifo_fd)
        hooks = (ctx.config.get("hooks") or {}).get("startContainer")
        if hooks:
            from berth.runtime.linux.hooks import run_hooks

            state = dict(state, status="created", pid=os.getpid())
            run_hooks(hooks, state, "startContainer")
    except BaseException as exc:  # noqa: BLE001 - nobody is listening but our stderr
        os.write(2, f"berth-runtime init: {exc}\n".encode())
        os._exit(1)


def _exec(ctx: InitContext, path: str, env: dict[str, str], report: bool) -> None:
    try:
        proc.close_fds_from(3, keep=tuple(range(3, 3 + ctx.preserve_fds)))
        import _signal  # built in; Python ignores these two, and an ignored signal survives execve

        _signal.signal(_signal.SIGPIPE, _signal.SIG_DFL)
        _signal.signal(_signal.SIGXFSZ, _signal.SIG_DFL)
        seccomp = ctx.linux.get("seccomp")
        if seccomp and not getattr(ctx, "seccomp_done", False):
            from berth.runtime.linux.seccomp import apply_seccomp

            apply_seccomp(seccomp)
        os.execve(path, ctx.process["args"], env)
    except BaseException as exc:  # noqa: BLE001
        if report:
            _fail(ctx, exc)
        os.write(2, f"berth-runtime init: exec {path}: {exc}\n".encode())
        os._exit(127)
