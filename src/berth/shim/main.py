"""``berth-shim``: parse the flags (see ``berth.shim``), daemonize, create, serve.

Start-up in two executions of the same program, so that ctypes (needed only for prctl)
does not stay resident for the container's whole life:

1. the process the daemon started checks its flags, forks and exits; the child starts a
   new session (its own process group), points stdio at /dev/null, becomes a child
   subreaper (which survives execve), and re-executes itself with ``--daemonized``;
2. the re-executed shim writes its pid file, binds its socket, creates the container,
   reports on ``--ready-fd``, and serves until ``delete`` or ``shutdown``.
"""

from __future__ import annotations

import os
import sys

from berth._sys import jsonfast as json
from berth.errors import BerthError, InvalidArgument
from berth.shim.protocol import INIT_PID_FILE
from berth.shim.server import Options, Shim

PROG = "berth-shim"
_VALUE_FLAGS = {
    "--id": "id", "--bundle": "bundle", "--state-dir": "state_dir", "--runtime": "runtime",
    "--runtime-root": "runtime_root", "--log-path": "log_path", "--log-max-size": "log_max_size",
    "--log-max-file": "log_max_file", "--ready-fd": "ready_fd",
}
_BOOL_FLAGS = {"--tty": "tty", "--stdin": "stdin", "--foreground": "foreground", "--daemonized": "daemonized"}
_UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_size(text: str) -> int:
    raw = text.strip().lower().removesuffix("b").removesuffix("i")
    factor = 1
    if raw and raw[-1] in _UNITS:
        factor, raw = _UNITS[raw[-1]], raw[:-1]
    try:
        value = float(raw) * factor
    except ValueError:
        raise InvalidArgument(f"invalid size {text!r}") from None
    if value < 0:
        raise InvalidArgument(f"invalid size {text!r}")
    return int(value)


def _which(name: str) -> str:
    if "/" in name:
        return os.path.abspath(name)
    for directory in os.environ.get("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin").split(":"):
        candidate = os.path.join(directory or ".", name)
        if os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
            return candidate
    raise InvalidArgument(f"runtime {name!r} not found in PATH")


def parse(argv: list[str]) -> Options:
    opts = Options()
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, inline = arg.partition("=")
        if name in _VALUE_FLAGS:
            if eq:
                value = inline
            else:
                i += 1
                if i >= len(argv):
                    raise InvalidArgument(f"flag needs an argument: {name}")
                value = argv[i]
            setattr(opts, _VALUE_FLAGS[name], value)
        elif arg in _BOOL_FLAGS:
            setattr(opts, _BOOL_FLAGS[arg], True)
        elif arg in ("-h", "--help"):
            raise InvalidArgument(_usage())
        else:
            raise InvalidArgument(f"unknown argument: {arg}")
        i += 1
    for flag in ("--id", "--bundle", "--state-dir", "--runtime"):
        if not getattr(opts, _VALUE_FLAGS[flag]):
            raise InvalidArgument(f"missing required flag {flag}")
    if "/" in opts.id or opts.id in (".", ".."):
        raise InvalidArgument(f"invalid container id {opts.id!r}")
    try:
        opts.ready_fd = int(opts.ready_fd)
        opts.log_max_file = int(opts.log_max_file)
    except ValueError as exc:
        raise InvalidArgument(f"invalid number: {exc}") from None
    opts.log_max_size = parse_size(str(opts.log_max_size))
    if opts.log_max_file < 1:
        raise InvalidArgument("--log-max-file must be at least 1")
    opts.bundle = os.path.abspath(opts.bundle)
    opts.state_dir = os.path.abspath(opts.state_dir)
    opts.runtime = _which(opts.runtime)
    if opts.runtime_root:
        opts.runtime_root = os.path.abspath(opts.runtime_root)
    if opts.log_path:
        opts.log_path = os.path.abspath(opts.log_path)
    return opts


def _usage() -> str:
    return (f"usage: {PROG} --id ID --bundle DIR --state-dir DIR --runtime PATH [--runtime-root DIR] "
            "[--tty] [--stdin] [--ready-fd N] [--log-path FILE [--log-max-size BYTES] [--log-max-file N]] "
            "[--foreground]")


def _report(fd: int, message: dict) -> None:
    if fd < 0:
        return
    try:
        os.write(fd, (json.dumps(message, separators=(",", ":")) + "\n").encode())
    except OSError:
        pass
    try:
        os.close(fd)
    except OSError:
        pass


def _ready_fd_from(argv: list[str]) -> int:
    for i, arg in enumerate(argv):
        value = arg[len("--ready-fd="):] if arg.startswith("--ready-fd=") else (
            argv[i + 1] if arg == "--ready-fd" and i + 1 < len(argv) else None)
        if value is not None and value.isdigit():
            return int(value)
    return -1


def _detach_stdio() -> None:
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    if null > 2:
        os.close(null)


def _become_subreaper() -> None:
    from berth._sys import libc

    libc.prctl(libc.PR_SET_CHILD_SUBREAPER, 1)


def _reexec(argv: list[str]) -> None:
    """Run this program again, daemonized, without what stage 1 loaded."""
    args = [*argv, "--daemonized"]
    script = sys.argv[0] if sys.argv else ""
    if os.path.isabs(script) and os.path.isfile(script) and os.access(script, os.X_OK):
        os.execv(script, [script, *args])
    src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    code = f"import sys; sys.path.insert(0, {src!r}); from berth.shim.main import main; sys.exit(main())"
    os.execv(sys.executable, [sys.executable, "-IS", "-c", code, *args])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        opts = parse(argv)
    except BerthError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        _report(_ready_fd_from(argv), _failure(exc))
        return 2
    if not opts.daemonized:
        if not opts.foreground:
            if os.fork():
                return 0
            os.setsid()
            os.chdir("/")
            _detach_stdio()
        try:
            _become_subreaper()
        except OSError as exc:
            _report(opts.ready_fd, {"ok": False, "error": f"prctl(PR_SET_CHILD_SUBREAPER): {exc}"})
            return 1
        if not opts.foreground:
            if opts.ready_fd >= 0:
                os.set_inheritable(opts.ready_fd, True)
            try:
                _reexec(argv)
            except OSError as exc:
                _report(opts.ready_fd, {"ok": False, "error": f"re-executing the shim: {exc}"})
                return 1
    return run(opts)


def _failure(exc: BaseException) -> dict:
    """The readiness report of a failed start: the message and the error's class in berth.errors."""
    if isinstance(exc, BerthError):
        kind = next((c.__name__ for c in type(exc).__mro__ if c.__module__ == "berth.errors"), "BerthError")
        return {"ok": False, "error": str(exc), "kind": kind}
    return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "kind": "BerthError"}


def run(opts: Options) -> int:
    if opts.ready_fd >= 0:
        try:
            os.set_inheritable(opts.ready_fd, False)  # neither the runtime nor the container holds it
        except OSError:
            opts.ready_fd = -1
    try:
        shim = Shim(opts)
        shim.prepare()
    except BaseException as exc:  # noqa: BLE001 - everything is reported to the starter
        _report(opts.ready_fd, _failure(exc))
        return 1
    try:
        init_pid = shim.create()
    except BaseException as exc:  # noqa: BLE001
        if os.path.exists(shim.path(INIT_PID_FILE)):  # the runtime made it; we failed after
            try:
                shim.runtime.call("delete", "--force", opts.id, timeout=10.0)
            except BaseException:  # noqa: BLE001 - the first error is the one to report
                pass
        shim.remove_state = True
        shim.close()
        _report(opts.ready_fd, _failure(exc))
        return 1
    _report(opts.ready_fd, {"ok": True, "pid": os.getpid(), "init_pid": init_pid})
    try:
        shim.serve()
    finally:
        shim.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
