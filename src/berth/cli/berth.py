"""``berth``: the command line of berthd, a client of its Docker Engine API, with Docker's
commands and flags.

    berth [-H unix:///run/berth/berth.sock] COMMAND [ARGS...]      ($BERTH_HOST as well)

Each command group lives in its own module (berth_images, berth_run, berth_containers,
berth_system, berth_networks, berth_volumes), imported only when its command runs. Errors are one line,
as Docker's: ``Error response from daemon: …`` (exit 1; 125 for run and create), flag
errors exit 125.
"""

from __future__ import annotations

import importlib
import sys

from berth.cli.berth_client import APIError, Client, ConnectionFailed
from berth.cli.berth_common import ExitCode, UsageError

# command -> (module, function, what it does)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "run": ("berth_run", "run", "Create and run a new container from an image"),
    "create": ("berth_run", "create", "Create a new container"),
    "start": ("berth_run", "start", "Start one or more stopped containers"),
    "attach": ("berth_run", "attach", "Attach local standard input, output, and error streams to a running container"),
    "exec": ("berth_run", "exec_", "Execute a command in a running container"),
    "ps": ("berth_containers", "ps", "List containers"),
    "stop": ("berth_containers", "stop", "Stop one or more running containers"),
    "kill": ("berth_containers", "kill", "Kill one or more running containers"),
    "restart": ("berth_containers", "restart", "Restart one or more containers"),
    "rm": ("berth_containers", "rm", "Remove one or more containers"),
    "logs": ("berth_containers", "logs", "Fetch the logs of a container"),
    "inspect": ("berth_containers", "inspect", "Return low-level information on Berth objects"),
    "top": ("berth_containers", "top", "Display the running processes of a container"),
    "stats": ("berth_containers", "stats", "Display a live stream of container(s) resource usage statistics"),
    "pause": ("berth_containers", "pause", "Pause all processes within one or more containers"),
    "unpause": ("berth_containers", "unpause", "Unpause all processes within one or more containers"),
    "wait": ("berth_containers", "wait", "Block until one or more containers stop, then print their exit codes"),
    "rename": ("berth_containers", "rename", "Rename a container"),
    "update": ("berth_containers", "update", "Update configuration of one or more containers"),
    "pull": ("berth_images", "pull", "Download an image from a registry"),
    "push": ("berth_images", "push", "Upload an image to a registry"),
    "images": ("berth_images", "images", "List images"),
    "rmi": ("berth_images", "rmi", "Remove one or more images"),
    "tag": ("berth_images", "tag", "Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE"),
    "save": ("berth_images", "save", "Save one or more images to a tar archive (streamed to STDOUT by default)"),
    "load": ("berth_images", "load", "Load an image from a tar archive or STDIN"),
    "import": ("berth_images", "import_", "Import the contents from a tarball to create a filesystem image"),
    "history": ("berth_images", "history", "Show the history of an image"),
    "login": ("berth_images", "login", "Log in to a registry"),
    "info": ("berth_system", "info", "Display system-wide information"),
    "version": ("berth_system", "version", "Show the Berth version information"),
    "events": ("berth_system", "events", "Get real time events from the server"),
}

# management commands: berth image ls, berth container rm, berth system df ...
GROUPS: dict[str, dict[str, str]] = {
    "image": {"ls": "images", "list": "images", "pull": "pull", "push": "push", "rm": "rmi", "remove": "rmi",
              "tag": "tag", "save": "save", "load": "load", "import": "import", "history": "history",
              "inspect": "image-inspect", "prune": "image-prune"},
    "container": {"ls": "ps", "list": "ps", "ps": "ps", "run": "run", "create": "create", "start": "start",
                  "stop": "stop", "kill": "kill", "restart": "restart", "rm": "rm", "remove": "rm", "logs": "logs",
                  "inspect": "container-inspect", "top": "top", "stats": "stats", "pause": "pause",
                  "unpause": "unpause", "wait": "wait", "rename": "rename", "update": "update", "exec": "exec",
                  "attach": "attach", "prune": "container-prune"},
    "system": {"df": "system-df", "prune": "system-prune", "info": "info", "events": "events"},
    "network": {"create": "network-create", "ls": "network-ls", "list": "network-ls",
                "inspect": "network-inspect", "rm": "network-rm", "remove": "network-rm",
                "connect": "network-connect", "disconnect": "network-disconnect", "prune": "network-prune"},
    "volume": {"create": "volume-create", "ls": "volume-ls", "list": "volume-ls", "inspect": "volume-inspect",
               "rm": "volume-rm", "remove": "volume-rm", "prune": "volume-prune"},
}
HIDDEN: dict[str, tuple[str, str]] = {
    "image-inspect": ("berth_images", "image_inspect"),
    "image-prune": ("berth_images", "image_prune"),
    "container-inspect": ("berth_containers", "container_inspect"),
    "container-prune": ("berth_containers", "container_prune"),
    "system-df": ("berth_system", "df"),
    "system-prune": ("berth_system", "prune"),
    "network-create": ("berth_networks", "create"),
    "network-ls": ("berth_networks", "ls"),
    "network-inspect": ("berth_networks", "inspect"),
    "network-rm": ("berth_networks", "rm"),
    "network-connect": ("berth_networks", "connect"),
    "network-disconnect": ("berth_networks", "disconnect"),
    "network-prune": ("berth_networks", "prune"),
    "volume-create": ("berth_volumes", "create"),
    "volume-ls": ("berth_volumes", "ls"),
    "volume-inspect": ("berth_volumes", "inspect"),
    "volume-rm": ("berth_volumes", "rm"),
    "volume-prune": ("berth_volumes", "prune"),
}
DAEMON_ERROR_125 = ("run", "create")

USAGE = """Usage:  berth [OPTIONS] COMMAND

A client of berthd, in Docker's command-line conventions

Options:
  -H, --host string    Daemon socket to connect to (default $BERTH_HOST or unix:///run/berth/berth.sock)
  -D, --debug          Show tracebacks of internal errors
  -v, --version        Print version information and quit
  -h, --help           Print this help

Management Commands:
  container   Manage containers
  image       Manage images
  network     Manage networks
  system      Manage Berth
  volume      Manage volumes

Commands:
"""


def _usage() -> str:
    width = max(len(c) for c in COMMANDS) + 2
    return USAGE + "".join(f"  {name.ljust(width)}{text}\n" for name, (_, _, text) in sorted(COMMANDS.items()))


def _group_usage(group: str) -> str:
    lines = [f"Usage:  berth {group} COMMAND\n", "Commands:"]
    lines += [f"  {name}" for name in sorted(GROUPS[group])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    host = None
    debug = False
    while args and args[0].startswith("-"):
        flag = args.pop(0)
        if flag in ("-H", "--host"):
            if not args:
                return _usage_error("flag needs an argument: -H")
            host = args.pop(0)
        elif flag.startswith("--host="):
            host = flag.split("=", 1)[1]
        elif flag in ("-D", "--debug"):
            debug = True
        elif flag in ("-h", "--help"):
            sys.stdout.write(_usage())
            return 0
        elif flag in ("-v", "--version"):
            from berth import __version__

            sys.stdout.write(f"Berth version {__version__}\n")
            return 0
        elif flag == "--":
            break
        else:
            return _usage_error(f"unknown flag: {flag}\nSee 'berth --help'.")
    if not args:
        sys.stdout.write(_usage())
        return 0
    command = args.pop(0)
    if command in GROUPS:
        if not args or args[0] in ("-h", "--help"):
            sys.stdout.write(_group_usage(command))
            return 0
        sub = args.pop(0)
        if sub not in GROUPS[command]:
            return _usage_error(f"'{command} {sub}' is not a berth command.\nSee 'berth {command} --help'")
        command = GROUPS[command][sub]
    if command in COMMANDS:
        module_name, function, _ = COMMANDS[command]
    elif command in HIDDEN:
        module_name, function = HIDDEN[command]
    else:
        return _usage_error(f"'{command}' is not a berth command.\nSee 'berth --help'")
    api = None
    try:
        api = Client(host)
        module = importlib.import_module(f"berth.cli.{module_name}")
        return int(getattr(module, function)(api, args) or 0)
    except ExitCode as e:
        return e.code
    except UsageError as e:
        sys.stderr.write(f"berth: {e}\n")
        return e.exit_code
    except APIError as e:
        sys.stderr.write(f"Error response from daemon: {e.message}\n")
        return 125 if command in DAEMON_ERROR_125 else 1
    except ConnectionFailed as e:
        sys.stderr.write(f"{e}\n")
        return 125 if command in DAEMON_ERROR_125 else 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # noqa: BLE001 - one line, never a traceback (unless --debug)
        if debug:
            raise
        sys.stderr.write(f"berth: {e}\n")
        return 1


def _usage_error(message: str) -> int:
    sys.stderr.write(f"berth: {message}\n")
    return 125


if __name__ == "__main__":
    sys.exit(main())
