"""Commands that create, start or join containers: run, create, start, attach, exec."""

from __future__ import annotations

import os
import sys
import threading

from berth.cli.berth_client import APIError, Client
from berth.cli.berth_common import ExitCode, UsageError, parser, warn
from berth.cli.berth_create import build_config, create_parser, run_parser, split_args
from berth.cli.berth_stream import parse_detach_keys, proxy_signals, pump, raw_terminal, resize_on_winch

TYPE_CHECKING = False  # not typing's: importing typing would cost every berth command ~4 ms
if TYPE_CHECKING:
    from typing import Any


def _tagged(image: str) -> str:
    from berth.image.reference import parse_reference

    try:
        return parse_reference(image).familiar()
    except Exception:  # noqa: BLE001
        return image


def create_container(api: Client, config: dict[str, Any], args: Any) -> str:
    """POST /containers/create, pulling the image first if the daemon does not have it."""
    image = config["Image"]
    query = {"name": args.name or None, "platform": args.platform or None}
    if args.pull == "always":
        from berth.cli.berth_images import pull_image  # only when pulling: it imports formatting, datetime, ...

        pull_image(api, image, platform=args.platform, quiet=args.quiet, out=sys.stderr)
    try:
        created = api.post("/containers/create", config, **query)
    except APIError as e:
        if e.status != 404 or "image" not in e.message.lower() or args.pull == "never":
            raise
        from berth.cli.berth_images import pull_image

        warn(f"Unable to find image '{_tagged(image)}' locally")
        pull_image(api, image, platform=args.platform, quiet=args.quiet, out=sys.stderr)
        created = api.post("/containers/create", config, **query)
    for warning in created.get("Warnings") or []:
        warn(f"WARNING: {warning}")
    return str(created["Id"])


def create(api: Client, argv: list[str]) -> int:
    p = create_parser()
    options, image, command = split_args(p, argv)
    args = p.parse_args(options)
    config = build_config(args, image, command)
    config["AttachStdin"] = config["AttachStdout"] = config["AttachStderr"] = False
    print(create_container(api, config, args))
    return 0


class _Waiter:
    """POST /containers/{id}/wait sent before the container starts; read in a thread."""

    def __init__(self, api: Client, cid: str, condition: str) -> None:
        self.result: dict[str, Any] | None = None
        self.error: Exception | None = None
        self._thread = threading.Thread(target=self._run, args=(api, cid, condition), daemon=True)
        self._thread.start()

    def _run(self, api: Client, cid: str, condition: str) -> None:
        try:
            self.result = api.post(f"/containers/{cid}/wait", condition=condition) or {}
        except Exception as e:  # noqa: BLE001
            self.error = e

    def code(self, api: Client, cid: str, timeout: float | None = None) -> int:
        self._thread.join(timeout)
        if self._thread.is_alive() or self.result is None:
            try:  # the wait may have missed the exit: ask the container
                state = api.get(f"/containers/{cid}/json").get("State", {})
                if not state.get("Running"):
                    return int(state.get("ExitCode") or 0)
            except APIError:
                pass
            self._thread.join()
        if self.error is not None and self.result is None:
            if isinstance(self.error, APIError) and self.error.status == 404:
                return 0
            raise self.error
        error = (self.result or {}).get("Error") or {}
        if error.get("Message"):
            warn(error["Message"])
        return int((self.result or {}).get("StatusCode") or 0)


def _start_error(e: APIError) -> ExitCode:
    """docker run's codes for a container that could not start: 126, 127, else 125."""
    text = e.message.lower()
    sys.stderr.write(f"Error response from daemon: {e.message}\n")
    if "executable file not found" in text or "no such file or directory" in text:
        return ExitCode(127)
    if "permission denied" in text:
        return ExitCode(126)
    return ExitCode(125)


def _resizer(api: Client, path: str, tty: bool) -> Any:
    if not tty or not os.isatty(sys.stdout.fileno()) and not os.isatty(sys.stdin.fileno()):
        return None

    def resize(h: int, w: int) -> None:
        api.post(f"{path}/resize", h=h, w=w)

    return resize


def _killer(api: Client, cid: str, enabled: bool) -> Any:
    if not enabled:
        return None
    return lambda name: api.post(f"/containers/{cid}/kill", signal=name)


def run(api: Client, argv: list[str]) -> int:
    p = run_parser()
    options, image, command = split_args(p, argv)
    args = p.parse_args(options)
    if args.detach and args.attach:
        raise UsageError("conflicting options: cannot specify both --attach and --detach")
    interactive_tty = args.tty and args.interactive and os.isatty(sys.stdin.fileno())
    if args.tty and args.interactive and not os.isatty(sys.stdin.fileno()):
        raise UsageError("the input device is not a TTY")
    config = build_config(args, image, command)
    cid = create_container(api, config, args)
    if args.detach:
        try:
            api.post(f"/containers/{cid}/start")
        except APIError as e:
            raise _start_error(e) from None
        print(cid)
        return 0
    keys = parse_detach_keys(args.detach_keys)
    query = {"stream": 1, "stdin": int(config["AttachStdin"]), "stdout": int(config["AttachStdout"]),
             "stderr": int(config["AttachStderr"]), "detachKeys": args.detach_keys or None}
    conn = api.hijack("POST", f"/containers/{cid}/attach", query=query)
    waiter = _Waiter(api, cid, "removed" if args.rm else "next-exit")
    try:
        try:
            api.post(f"/containers/{cid}/start")
        except APIError as e:
            if args.rm:  # dockerd removes an AutoRemove container that failed to start; make sure
                try:
                    api.delete(f"/containers/{cid}", force=True)
                except APIError:
                    pass
            raise _start_error(e) from None
        sig_proxy = args.sig_proxy.lower() not in ("false", "0") and not args.tty
        with raw_terminal(sys.stdin.fileno(), interactive_tty), \
                resize_on_winch(_resizer(api, f"/containers/{cid}", args.tty)), \
                proxy_signals(_killer(api, cid, sig_proxy)):
            how = pump(conn, tty=args.tty, stdin=bool(config["AttachStdin"]), detach_keys=keys)
    finally:
        conn.close()
    if how == "detached":
        return 0
    return waiter.code(api, cid, timeout=5.0)


def start(api: Client, argv: list[str]) -> int:
    p = parser("start", "[OPTIONS] CONTAINER [CONTAINER...]", "Start one or more stopped containers")
    p.add_argument("-a", "--attach", action="store_true", help="Attach STDOUT/STDERR and forward signals")
    p.add_argument("-i", "--interactive", action="store_true", help="Attach container's STDIN")
    p.add_argument("--detach-keys", default="")
    p.add_argument("containers", nargs="+")
    args = p.parse_args(argv)
    if not args.attach and not args.interactive:
        failed = False
        for name in args.containers:
            try:
                api.post(f"/containers/{name}/start")
                print(name)
            except APIError as e:
                sys.stderr.write(f"Error response from daemon: {e.message}\n")
                failed = True
        if failed:
            sys.stderr.write("Error: failed to start containers: " + ", ".join(args.containers) + "\n")
        return 1 if failed else 0
    if len(args.containers) > 1:
        raise UsageError("you cannot start and attach multiple containers at once")
    return _attach_and(api, args.containers[0], stdin=args.interactive, keys=args.detach_keys, start=True)


def _attach_and(api: Client, name: str, *, stdin: bool, keys: str, start: bool, sig_proxy: bool = True) -> int:
    info = api.get(f"/containers/{name}/json")
    cid = info["Id"]
    config = info.get("Config") or {}
    tty = bool(config.get("Tty"))
    stdin = stdin and bool(config.get("OpenStdin"))
    if stdin and tty and not os.isatty(sys.stdin.fileno()):
        raise UsageError("the input device is not a TTY")
    if not start and not (info.get("State") or {}).get("Running"):
        raise UsageError("You cannot attach to a stopped container, start it first")
    query = {"stream": 1, "stdin": int(stdin), "stdout": 1, "stderr": 1, "detachKeys": keys or None}
    conn = api.hijack("POST", f"/containers/{cid}/attach", query=query)
    waiter = _Waiter(api, cid, "next-exit")
    try:
        if start:
            api.post(f"/containers/{cid}/start")
        with raw_terminal(sys.stdin.fileno(), stdin and tty), \
                resize_on_winch(_resizer(api, f"/containers/{cid}", tty)), \
                proxy_signals(_killer(api, cid, sig_proxy and not tty)):
            how = pump(conn, tty=tty, stdin=stdin, detach_keys=parse_detach_keys(keys))
    finally:
        conn.close()
    if how == "detached":
        return 0
    return waiter.code(api, cid, timeout=5.0)


def attach(api: Client, argv: list[str]) -> int:
    p = parser("attach", "[OPTIONS] CONTAINER", "Attach local standard input, output, and error streams to a running container")
    p.add_argument("--no-stdin", action="store_true", help="Do not attach STDIN")
    p.add_argument("--sig-proxy", default="true", help="Proxy all received signals to the process")
    p.add_argument("--detach-keys", default="")
    p.add_argument("container")
    args = p.parse_args(argv)
    return _attach_and(api, args.container, stdin=not args.no_stdin, keys=args.detach_keys, start=False,
                       sig_proxy=args.sig_proxy.lower() not in ("false", "0"))


def exec_(api: Client, argv: list[str]) -> int:
    p = parser("exec", "[OPTIONS] CONTAINER COMMAND [ARG...]", "Execute a command in a running container")
    p.add_argument("-d", "--detach", action="store_true", help="Detached mode: run command in the background")
    p.add_argument("-i", "--interactive", action="store_true", help="Keep STDIN open even if not attached")
    p.add_argument("-t", "--tty", action="store_true", help="Allocate a pseudo-TTY")
    p.add_argument("-u", "--user", default="", help="Username or UID (format: <name|uid>[:<group|gid>])")
    p.add_argument("-w", "--workdir", default="", help="Working directory inside the container")
    p.add_argument("-e", "--env", action="append", default=[], help="Set environment variables")
    p.add_argument("--env-file", action="append", default=[])
    p.add_argument("--privileged", action="store_true", help="Give extended privileges to the command")
    p.add_argument("--detach-keys", default="")
    options, container, command = split_args(p, argv)
    args = p.parse_args(options)
    if not command:
        raise UsageError("\"berth exec\" requires at least 2 arguments.")
    if args.tty and args.interactive and not os.isatty(sys.stdin.fileno()):
        raise UsageError("the input device is not a TTY")
    from berth.cli.berth_create import _env

    args.env_file = args.env_file or []
    body = {"AttachStdin": args.interactive and not args.detach, "AttachStdout": not args.detach,
            "AttachStderr": not args.detach, "Tty": args.tty, "Cmd": command, "Env": _env(args),
            "WorkingDir": args.workdir, "User": args.user, "Privileged": args.privileged,
            "DetachKeys": args.detach_keys}
    exec_id = api.post(f"/containers/{container}/exec", body)["Id"]
    if args.detach:
        api.post(f"/exec/{exec_id}/start", {"Detach": True, "Tty": args.tty})
        return 0
    conn = api.hijack("POST", f"/exec/{exec_id}/start", body={"Detach": False, "Tty": args.tty})
    try:
        with raw_terminal(sys.stdin.fileno(), args.tty and args.interactive), \
                resize_on_winch(_resizer(api, f"/exec/{exec_id}", args.tty)):
            how = pump(conn, tty=args.tty, stdin=args.interactive, detach_keys=parse_detach_keys(args.detach_keys))
    finally:
        conn.close()
    if how == "detached":
        return 0
    info = api.get(f"/exec/{exec_id}/json") or {}
    for _ in range(50):
        if not info.get("Running"):
            break
        import time

        time.sleep(0.05)
        info = api.get(f"/exec/{exec_id}/json") or {}
    return int(info.get("ExitCode") or 0)
