"""``berth-runtime``: runc's command line, name for name and flag for flag.

Kept import-light on purpose (no argparse, logging, asyncio): it is a short-lived
command on every container start.
"""

from __future__ import annotations

from berth._sys import jsonfast as json
import os
import sys

from berth import OCI_SPEC_VERSION, __version__
from berth.cli.argparse_runc import Flag, Parsed, parse, parse_duration
from berth.errors import BerthError, InvalidArgument

PROG = "berth-runtime"
GLOBAL_FLAGS = [
    Flag("root", value=True, default=""), Flag("log", value=True, default=""),
    Flag("log-format", value=True, default="text"), Flag("debug"), Flag("systemd-cgroup"),
    Flag("rootless", value=True, default="auto"), Flag("criu", value=True, default="criu"),
    Flag("version", "v"), Flag("help", "h"),
]
CREATE_FLAGS = [
    Flag("bundle", "b", value=True, default=""), Flag("console-socket", value=True, default=""),
    Flag("pid-file", value=True, default=""), Flag("no-pivot"), Flag("no-new-keyring"),
    Flag("preserve-fds", value=True, default="0"), Flag("help", "h"),
]
RUN_FLAGS = CREATE_FLAGS + [Flag("detach", "d"), Flag("keep"), Flag("no-subreaper")]
EXEC_FLAGS = [
    Flag("console-socket", value=True, default=""), Flag("cwd", value=True, default=""),
    Flag("env", "e", value=True, repeat=True), Flag("tty", "t"), Flag("user", "u", value=True, default=""),
    Flag("additional-gids", "g", value=True, repeat=True), Flag("process", "p", value=True, default=""),
    Flag("detach", "d"), Flag("pid-file", value=True, default=""), Flag("process-label", value=True, default=""),
    Flag("apparmor", value=True, default=""), Flag("no-new-privs"), Flag("cap", "c", value=True, repeat=True),
    Flag("preserve-fds", value=True, default="0"), Flag("cgroup", value=True, repeat=True),
    Flag("ignore-paused"), Flag("help", "h"),
]
UPDATE_VALUE_FLAGS = (
    "blkio-weight", "cpu-period", "cpu-quota", "cpu-rt-period", "cpu-rt-runtime", "cpu-share",
    "cpuset-cpus", "cpuset-mems", "memory", "memory-reservation", "memory-swap", "kernel-memory",
    "kernel-memory-tcp", "pids-limit", "l3-cache-schema", "mem-bw-schema",
)
USAGE = f"""NAME:
   {PROG} - an OCI runtime with runc's command line (Berth {__version__})

USAGE:
   {PROG} [global options] command [command options] [arguments...]

COMMANDS:
   create    create a container
   delete    delete any resources held by the container often used with detached container
   events    display container events such as OOM notifications, cpu, memory, and IO usage statistics
   exec      execute new process inside the container
   features  show the enabled features
   kill      kill sends the specified signal (default: SIGTERM) to the container's init process
   list      lists containers started by {PROG} with the given root
   pause     pause suspends all processes inside the container
   ps        ps displays the processes running inside a container
   resume    resumes all processes that have been previously paused
   run       create and run a container
   spec      create a new specification file
   start     executes the user defined process in a created container
   state     output the state of a container
   update    update container resource constraints

GLOBAL OPTIONS:
   --debug             enable debug logging
   --log value         set the log file to write {PROG} logs to (default is '/dev/stderr')
   --log-format value  set the log format ('text' (default), or 'json') (default: "text")
   --root value        root directory for storage of container state (default: "/run/berth-runtime")
   --systemd-cgroup    enable systemd cgroup support (not supported: an error)
   --rootless value    ignore cgroup permission errors ('true', 'false', or 'auto') (default: "auto")
   --help, -h          show help
   --version, -v       print the version
"""


class Logger:
    """runc's --log/--log-format: errors (and debug lines with --debug) to a file."""

    def __init__(self, path: str, fmt: str, debug: bool) -> None:
        self.path = path
        self.fmt = fmt
        self.debug_enabled = debug

    def write(self, level: str, msg: str) -> None:
        if not self.path:
            return
        from berth.runtime.container import utc_now

        now = utc_now()
        if self.fmt == "json":
            line = json.dumps({"level": level, "msg": msg, "time": now})
        else:
            line = f'time="{now}" level={level} msg={json.dumps(msg)}'
        try:
            with open(self.path, "a") as f:
                f.write(line + "\n")
        except OSError:
            pass

    def debug(self, msg: str) -> None:
        if self.debug_enabled:
            self.write("debug", msg)


def _id(args: Parsed, command: str, extra_ok: bool = False) -> str:
    if not args.args:
        raise InvalidArgument(f'"{PROG} {command}" requires a container id')
    if len(args.args) > 1 and not extra_ok:
        raise InvalidArgument(f'"{PROG} {command}" requires exactly 1 argument(s)')
    return args.args[0]


def _load(root: str, container_id: str):  # noqa: ANN202
    from berth.runtime.container import Container

    return Container.load(root, container_id)


def _int_flag(value: object, name: str) -> int:
    try:
        return int(str(value))
    except ValueError:
        raise InvalidArgument(f"invalid value {value!r} for flag -{name}") from None


def cmd_spec(argv: list[str], g: Parsed) -> int:
    from berth.runtime.spec_cmd import write_spec

    args = parse(argv, [Flag("bundle", "b", value=True, default=""), Flag("rootless"), Flag("help", "h")], command="spec")
    write_spec(args.bundle or ".", bool(args.rootless))
    return 0


def _create_options(args: Parsed, g: Parsed, command: str):  # noqa: ANN202
    from berth.runtime.create import CreateOptions

    return CreateOptions(g.root, _id(args, command), bundle=args.bundle or os.getcwd(), pid_file=args.pid_file,
                         console_socket=args.console_socket, no_pivot=bool(args.no_pivot),
                         no_new_keyring=bool(args.no_new_keyring),
                         preserve_fds=_int_flag(args.preserve_fds, "preserve-fds"))


def cmd_create(argv: list[str], g: Parsed) -> int:
    from berth.runtime.create import create

    create(_create_options(parse(argv, CREATE_FLAGS, command="create"), g, "create"))
    return 0


def cmd_run(argv: list[str], g: Parsed) -> int:
    from berth.runtime.run import run

    args = parse(argv, RUN_FLAGS, command="run")
    return run(_create_options(args, g, "run"), detach=bool(args.detach), keep=bool(args.keep))


def cmd_start(argv: list[str], g: Parsed) -> int:
    from berth.runtime.start import start

    start(_load(g.root, _id(parse(argv, [], command="start"), "start")))
    return 0


def cmd_state(argv: list[str], g: Parsed) -> int:
    container = _load(g.root, _id(parse(argv, [], command="state"), "state"))
    print(json.dumps(container.oci_state(), indent=2))
    return 0


def cmd_list(argv: list[str], g: Parsed) -> int:
    from berth.runtime.container import Container, list_ids

    args = parse(argv, [Flag("format", "f", value=True, default="table"), Flag("quiet", "q")], command="list")
    if args.format not in ("table", "json"):
        raise InvalidArgument(f"invalid format option: {args.format}")
    states = []
    for cid in list_ids(g.root):
        try:
            states.append(Container.load(g.root, cid).oci_state())
        except BerthError:
            continue
    if args.quiet:
        for s in states:
            print(s["id"])
    elif args.format == "json":
        owner = _owner_name()  # runc: the owner's name here, "" only in ``state``
        print(json.dumps([dict(s, owner=owner) for s in states] or None, separators=(",", ":")))
    else:
        rows = [["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]]
        for s in states:
            rows.append([s["id"], str(s["pid"]), s["status"], s["bundle"], s["created"], _owner_name()])
        widths = [max(12, max(len(r[i]) for r in rows) + 3) for i in range(6)]
        for row in rows:
            print("".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
    return 0


def _owner_name() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def cmd_kill(argv: list[str], g: Parsed) -> int:
    from berth.runtime.kill import kill
    from berth.spec.signals import parse_signal

    args = parse(argv, [Flag("all", "a"), Flag("help", "h")], command="kill")
    if not args.args:
        raise InvalidArgument(f'"{PROG} kill" requires a container id')
    if len(args.args) > 2:
        raise InvalidArgument(f'"{PROG} kill" requires at most 2 arguments')
    container = _load(g.root, args.args[0])  # first, as runc: an unknown id beats a bad signal
    signal_number = parse_signal(args.args[1] if len(args.args) > 1 else "SIGTERM")
    kill(container, signal_number, all_processes=bool(args.all))
    return 0


def cmd_delete(argv: list[str], g: Parsed) -> int:
    from berth.errors import NotFound
    from berth.runtime.delete import delete

    args = parse(argv, [Flag("force", "f"), Flag("help", "h")], command="delete")
    container_id = _id(args, "delete")
    try:
        container = _load(g.root, container_id)
    except NotFound:
        if args.force:
            return 0
        raise
    delete(container, force=bool(args.force))
    return 0


def cmd_exec(argv: list[str], g: Parsed) -> int:
    from berth.runtime.execute import ExecOptions, exec_process, process_from_args

    args = parse(argv, EXEC_FLAGS, stop_after=1, command="exec")
    container = _load(g.root, _id(args, "exec", extra_ok=True))
    if args.process:
        try:
            with open(args.process) as f:
                process = json.load(f)
        except OSError as exc:
            raise InvalidArgument(f"open {args.process}: {exc.strerror}") from None
        except ValueError as exc:
            raise InvalidArgument(f"{args.process}: invalid JSON: {exc}") from None
    else:
        if len(args.args) < 2:
            raise InvalidArgument("exec args cannot be empty")
        gids = [_int_flag(x, "additional-gids") for x in args.additional_gids]
        process = process_from_args(container, args.args[1:], cwd=args.cwd, env=args.env, user=args.user,
                                    tty=bool(args.tty), caps=args.cap, no_new_privs=bool(args.no_new_privs),
                                    additional_gids=gids)
    opts = ExecOptions(process, pid_file=args.pid_file, console_socket=args.console_socket,
                       detach=bool(args.detach), preserve_fds=_int_flag(args.preserve_fds, "preserve-fds"),
                       ignore_paused=bool(args.ignore_paused))
    if not opts.detach:
        from berth._sys import libc

        libc.prctl(libc.PR_SET_CHILD_SUBREAPER, 1)
    pid, master = exec_process(container, opts)
    if opts.detach:
        return 0
    from berth.runtime.run import forward_signals, wait_child

    forward_signals(pid, master)
    if master >= 0:
        from berth._sys.proc import is_alive, start_time
        from berth.runtime.linux.tty import proxy

        started = start_time(pid)
        proxy(master, lambda: is_alive(pid, started))
    return wait_child(pid)


def cmd_ps(argv: list[str], g: Parsed) -> int:
    from berth.runtime.ps import container_pids, ps_table

    args = parse(argv, [Flag("format", "f", value=True, default="table"), Flag("help", "h")], stop_after=0, command="ps")
    container = _load(g.root, _id(args, "ps", extra_ok=True))
    pids = container_pids(container)
    if args.format == "json":
        print(json.dumps(pids, separators=(",", ":")))
    elif args.format == "table":
        sys.stdout.write(ps_table(pids, args.args[1:]))
    else:
        raise InvalidArgument(f"invalid format option: {args.format}")
    return 0


def cmd_pause(argv: list[str], g: Parsed) -> int:
    from berth.runtime.pause import pause

    pause(_load(g.root, _id(parse(argv, [], command="pause"), "pause")))
    return 0


def cmd_resume(argv: list[str], g: Parsed) -> int:
    from berth.runtime.pause import resume

    resume(_load(g.root, _id(parse(argv, [], command="resume"), "resume")))
    return 0


def cmd_update(argv: list[str], g: Parsed) -> int:
    from berth.runtime.update import load_resources, resources_from_flags, update

    flags = [Flag("resources", "r", value=True, default=""), Flag("help", "h")]
    flags += [Flag(name, value=True) for name in UPDATE_VALUE_FLAGS]
    args = parse(argv, flags, command="update")
    container = _load(g.root, _id(args, "update"))
    given = {n: args.values[n.replace("-", "_")] for n in UPDATE_VALUE_FLAGS if args.values[n.replace("-", "_")] is not None}
    for unsupported in ("l3-cache-schema", "mem-bw-schema"):
        if unsupported in given:
            raise InvalidArgument(f"--{unsupported}: Intel RDT is not supported")
    resources = load_resources(args.resources) if args.resources else resources_from_flags(given)
    update(container, resources)
    return 0


def cmd_events(argv: list[str], g: Parsed) -> int:
    from berth.runtime import events

    args = parse(argv, [Flag("interval", value=True, default="5s"), Flag("stats"), Flag("help", "h")], command="events")
    container = _load(g.root, _id(args, "events"))
    from berth.errors import FailedPrecondition
    from berth.spec import status as st

    if container.status() == st.STOPPED:  # runc refuses both --stats and the stream
        raise FailedPrecondition(f"container with id {container.id} is not running")
    if args.stats:
        print(json.dumps(events.stats_event(container), separators=(",", ":")))
        return 0
    return events.stream(container, parse_duration(str(args.interval)))


def cmd_features(argv: list[str], g: Parsed) -> int:
    from berth.runtime.features import features_json

    parse(argv, [Flag("help", "h")], command="features")
    print(json.dumps(features_json(), indent=4))
    return 0


def cmd_unsupported(argv: list[str], g: Parsed) -> int:
    raise InvalidArgument("checkpoint and restore (CRIU) are not supported by berth-runtime")


COMMANDS = {
    "spec": cmd_spec, "create": cmd_create, "run": cmd_run, "start": cmd_start, "state": cmd_state,
    "list": cmd_list, "ps": cmd_ps, "kill": cmd_kill, "delete": cmd_delete, "exec": cmd_exec,
    "pause": cmd_pause, "resume": cmd_resume, "update": cmd_update, "events": cmd_events,
    "features": cmd_features, "checkpoint": cmd_unsupported, "restore": cmd_unsupported,
}


def version_text() -> str:
    return f"{PROG} version {__version__}\ncommit: v{__version__}\nspec: {OCI_SPEC_VERSION}\n"


def _split_global(argv: list[str]) -> tuple[list[str], str, list[str]]:
    """Global flags come before the command name."""
    value_flags = {n for f in GLOBAL_FLAGS if f.takes_value for n in f.names}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("-"):
            return argv[:i], arg, argv[i + 1:]
        name = arg.lstrip("-")
        i += 2 if name in value_flags and "=" not in name else 1
    return argv, "", []


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logger = Logger("", "text", False)
    command = ""
    try:
        global_argv, command, rest = _split_global(argv)
        g = parse(global_argv, GLOBAL_FLAGS)
        logger = Logger(str(g.log), str(g.log_format), bool(g.debug))
        if g.log_format not in ("text", "json"):
            raise InvalidArgument(f"invalid log-format: {g.log_format}")
        if g.version:
            sys.stdout.write(version_text())
            return 0
        if g.help or not command or command == "help":
            sys.stdout.write(USAGE)
            return 0 if (g.help or command == "help") else 1
        if g.systemd_cgroup:
            raise InvalidArgument("systemd cgroup driver is not supported by berth-runtime; use the cgroupfs driver")
        if not g.root:
            from berth.runtime.container import DEFAULT_ROOT

            g.values["root"] = DEFAULT_ROOT
        g.values["root"] = os.path.abspath(str(g.root))
        handler = COMMANDS.get(command)
        if handler is None:
            raise InvalidArgument(f"No help topic for '{command}'")
        if "-h" in rest or "--help" in rest:
            if command != "exec" or rest.index("-h" if "-h" in rest else "--help") == 0:
                sys.stdout.write(f"USAGE:\n   {PROG} {command} [command options] <container-id>\n")
                return 0
        logger.debug(f"{command} {' '.join(rest)}")
        return handler(rest, g)
    except BerthError as exc:
        return _fail(logger, str(exc), command)
    except OSError as exc:
        return _fail(logger, exc.strerror if exc.strerror and not exc.filename else str(exc), command)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - never a traceback for the user
        return _fail(logger, f"internal error: {type(exc).__name__}: {exc}", command)


def _fail(logger: Logger, message: str, command: str = "") -> int:
    logger.write("error", message)
    sys.stderr.write(f"{PROG}: {message}\n")
    return 255 if command == "exec" else 1  # runc: a failed exec exits 255, not its process's status


if __name__ == "__main__":
    sys.exit(main())
