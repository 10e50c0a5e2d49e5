"""``berth run`` / ``berth create`` flags, and the container config they make
(``POST /containers/create``: Docker's Config with HostConfig and NetworkingConfig)."""

from __future__ import annotations

import argparse
import os
import re

from berth.cli.berth_common import Parser, UsageError, parser

TYPE_CHECKING = False  # not typing's: importing typing would cost every berth command ~4 ms
if TYPE_CHECKING:
    from typing import Any

_BINARY = {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def ram_bytes(text: str) -> int:
    """Docker's RAMInBytes: ``512m`` -> 536870912 (binary units, b/k/m/g/t, optional 'b')."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([bkmgt]?)(?:i?b)?", text.strip().lower())
    if not m:
        raise UsageError(f"invalid size: '{text}'")
    return int(float(m.group(1)) * _BINARY[m.group(2) or "b"])


def add_create_flags(p: Parser) -> None:
    a = p.add_argument
    a("-i", "--interactive", action="store_true", help="Keep STDIN open even if not attached")
    a("-t", "--tty", action="store_true", help="Allocate a pseudo-TTY")
    a("--name", default="", help="Assign a name to the container")
    a("-e", "--env", action="append", default=[], help="Set environment variables")
    a("--env-file", action="append", default=[], help="Read in a file of environment variables")
    a("-w", "--workdir", default=None, help="Working directory inside the container")
    a("-u", "--user", default=None, help="Username or UID (format: <name|uid>[:<group|gid>])")
    a("-v", "--volume", action="append", default=[], help="Bind mount a volume")
    a("--mount", action="append", default=[], help="Attach a filesystem mount to the container")
    a("--volumes-from", action="append", default=[], help="Mount volumes from the specified container(s)")
    a("--tmpfs", action="append", default=[], help="Mount a tmpfs directory")
    a("-p", "--publish", action="append", default=[], help="Publish a container's port(s) to the host")
    a("-P", "--publish-all", action="store_true", help="Publish all exposed ports to random ports")
    a("--expose", action="append", default=[], help="Expose a port or a range of ports")
    a("--network", "--net", default="", help="Connect a container to a network")
    a("--network-alias", "--net-alias", action="append", default=[], help="Add network-scoped alias for the container")
    a("--ip", default="", help="IPv4 address (e.g., 172.30.100.104)")
    a("--mac-address", default="", help="Container MAC address (e.g., 92:d0:c6:0a:29:33)")
    a("--hostname", "-h", dest="hostname", default="", help="Container host name")
    a("--add-host", action="append", default=[], help="Add a custom host-to-IP mapping (host:ip)")
    a("--dns", action="append", default=[], help="Set custom DNS servers")
    a("--dns-search", action="append", default=[], help="Set custom DNS search domains")
    a("--dns-option", "--dns-opt", action="append", default=[], help="Set DNS options")
    a("--entrypoint", default=None, help="Overwrite the default ENTRYPOINT of the image")
    a("--restart", default="no", help="Restart policy to apply when a container exits")
    a("--rm", action="store_true", help="Automatically remove the container when it exits")
    a("--init", action="store_true", help="Run an init inside the container that forwards signals and reaps processes")
    a("-m", "--memory", default="", help="Memory limit")
    a("--memory-swap", default="", help="Swap limit equal to memory plus swap: '-1' to enable unlimited swap")
    a("--memory-reservation", default="", help="Memory soft limit")
    a("--cpus", default="", help="Number of CPUs")
    a("-c", "--cpu-shares", type=int, default=0, help="CPU shares (relative weight)")
    a("--cpuset-cpus", default="", help="CPUs in which to allow execution (0-3, 0,1)")
    a("--cpu-quota", type=int, default=0)
    a("--cpu-period", type=int, default=0)
    a("--pids-limit", type=int, default=None, help="Tune container pids limit (set -1 for unlimited)")
    a("--ulimit", action="append", default=[], help="Ulimit options")
    a("--shm-size", default="", help="Size of /dev/shm")
    a("--read-only", action="store_true", help="Mount the container's root filesystem as read only")
    a("--cap-add", action="append", default=[], help="Add Linux capabilities")
    a("--cap-drop", action="append", default=[], help="Drop Linux capabilities")
    a("--privileged", action="store_true", help="Give extended privileges to this container")
    a("--security-opt", action="append", default=[], help="Security Options")
    a("--device", action="append", default=[], help="Add a host device to the container")
    a("--group-add", action="append", default=[], help="Add additional groups to join")
    a("--ipc", default="", help="IPC mode to use")
    a("--pid", default="", help="PID namespace to use")
    a("--uts", default="", help="UTS namespace to use")
    a("--sysctl", action="append", default=[], help="Sysctl options")
    a("--runtime", default="", help="Runtime to use for this container")
    a("-l", "--label", action="append", default=[], help="Set meta data on a container")
    a("--stop-signal", default="", help="Signal to stop the container")
    a("--stop-timeout", type=int, default=None, help="Timeout (in seconds) to stop a container")
    a("--log-driver", default="", help="Logging driver for the container")
    a("--log-opt", action="append", default=[], help="Log driver options")
    a("--platform", default=os.environ.get("DOCKER_DEFAULT_PLATFORM", ""), help="Set platform if server is multi-platform capable")
    a("--pull", default="missing", choices=["always", "missing", "never"], help="Pull image before creating")
    a("-q", "--quiet", action="store_true", help="Suppress the pull output")
    a("--help", action="help", help="Print usage")


def run_parser() -> Parser:
    p = parser("run", "[OPTIONS] IMAGE [COMMAND] [ARG...]", "Create and run a new container from an image",
               add_help=False)
    add_create_flags(p)
    p.add_argument("-d", "--detach", action="store_true", help="Run container in background and print container ID")
    p.add_argument("-a", "--attach", action="append", default=[], help="Attach to STDIN, STDOUT or STDERR")
    p.add_argument("--sig-proxy", default="true", help="Proxy received signals to the process")
    p.add_argument("--detach-keys", default="", help="Override the key sequence for detaching a container")
    return p


def create_parser() -> Parser:
    p = parser("create", "[OPTIONS] IMAGE [COMMAND] [ARG...]", "Create a new container", add_help=False)
    add_create_flags(p)
    return p


def split_args(p: argparse.ArgumentParser, argv: list[str]) -> tuple[list[str], str, list[str]]:
    """Options before the image, the image, and the command after it (options there are
    the command's, as docker treats them)."""
    takes_value = {s for action in p._actions for s in action.option_strings  # noqa: SLF001
                   if action.nargs != 0}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        if arg.startswith("--"):
            if "=" not in arg and arg in takes_value:
                i += 1
        else:  # -it, -e X, -eX, -p80:80
            for j, ch in enumerate(arg[1:], 1):
                if f"-{ch}" in takes_value:
                    if j == len(arg) - 1:
                        i += 1
                    break
        i += 1
    options = argv[:i - 1] if i and argv[i - 1] == "--" else argv[:i]
    if i >= len(argv):
        p.parse_args(options)
        raise UsageError(f"\"berth {getattr(p, 'command', 'run')}\" requires at least 1 argument.")
    return options, argv[i], argv[i + 1:]


def _env(args: argparse.Namespace) -> list[str]:
    env: list[str] = []
    for path in args.env_file:
        try:
            with open(path) as f:
                lines = f.read().splitlines()
        except OSError as e:
            raise UsageError(f"open {path}: {e.strerror}") from None
        for line in lines:
            line = line.strip()
            if line and not line.startswith("#"):
                env.append(_one_env(line))
    env += [_one_env(e) for e in args.env]
    return [e for e in env if e]


def _one_env(item: str) -> str:
    if "=" in item:
        return item
    value = os.environ.get(item)
    return f"{item}={value}" if value is not None else ""


def _ports(args: argparse.Namespace) -> tuple[dict[str, dict], dict[str, list[dict]]]:
    """``--expose`` and ``-p`` (Docker's syntax: ranges, ``[::1]:8080:80``, ``/udp``)."""
    from berth.errors import InvalidArgument
    from berth.network.ports import parse_publish, port_bindings

    exposed: dict[str, dict] = {}
    for item in args.expose:
        port, _, proto = item.partition("/")
        exposed[f"{port}/{proto or 'tcp'}"] = {}
    requests = []
    for item in args.publish:
        try:
            requests.extend(parse_publish(item))
        except InvalidArgument as e:
            raise UsageError(f"invalid argument \"{item}\" for \"-p, --publish\" flag: {e}") from None
    bindings = port_bindings(requests)
    for key in bindings:
        exposed[key] = {}
    return exposed, bindings


def _restart(text: str) -> dict[str, Any]:
    name, _, count = text.partition(":")
    if name not in ("no", "always", "on-failure", "unless-stopped", ""):
        raise UsageError(f"invalid restart policy '{text}'")
    if count and name != "on-failure":
        raise UsageError(f"invalid restart policy: maximum retry count can only be used with 'on-failure'")
    try:
        return {"Name": "" if name == "no" else name, "MaximumRetryCount": int(count or 0)}
    except ValueError:
        raise UsageError(f"invalid restart policy '{text}'") from None


def _ulimits(items: list[str]) -> list[dict[str, Any]]:
    out = []
    for item in items:
        name, eq, values = item.partition("=")
        soft, _, hard = values.partition(":")
        if not eq or not soft:
            raise UsageError(f"invalid ulimit argument: {item}")
        try:
            out.append({"Name": name, "Soft": int(soft), "Hard": int(hard or soft)})
        except ValueError:
            raise UsageError(f"invalid ulimit argument: {item}") from None
    return out


def _devices(items: list[str]) -> list[dict[str, str]]:
    out = []
    for item in items:
        parts = item.split(":")
        host = parts[0]
        inside = parts[1] if len(parts) > 1 and parts[1] else host
        perms = parts[2] if len(parts) > 2 else "rwm"
        out.append({"PathOnHost": host, "PathInContainer": inside, "CgroupPermissions": perms})
    return out


_MOUNT_KEYS = {"type", "source", "src", "target", "dst", "destination", "readonly", "ro", "consistency",
               "bind-propagation", "bind-nonrecursive", "volume-driver", "volume-nocopy", "volume-label",
               "volume-opt", "tmpfs-size", "tmpfs-mode"}
_TRUE, _FALSE = ("1", "t", "true"), ("0", "f", "false")


def _bool(value: str, key: str) -> bool:
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise UsageError(f"invalid value for {key}: {value}")


def parse_mount(item: str) -> dict[str, Any]:
    """docker's ``--mount`` (opts/mount.go): comma-separated key=value fields (CSV quoting)."""
    import csv

    try:
        fields = next(csv.reader([item]))
    except (csv.Error, StopIteration):
        raise UsageError(f"invalid argument \"{item}\" for \"--mount\" flag") from None
    mount: dict[str, Any] = {"Type": "volume"}
    bind: dict[str, Any] = {}
    volume: dict[str, Any] = {}
    tmpfs: dict[str, Any] = {}
    for field in fields:
        key, eq, value = field.partition("=")
        key = key.strip().lower()
        if not eq:
            if key in ("readonly", "ro", "volume-nocopy", "bind-nonrecursive"):
                value = "true"
            else:
                raise UsageError(f"invalid argument \"{item}\" for \"--mount\" flag: invalid field '{field}' "
                                 "must be a key=value pair")
        if key not in _MOUNT_KEYS:
            raise UsageError(f"invalid argument \"{item}\" for \"--mount\" flag: unexpected key '{key}' in "
                             f"'{field}'")
        if key == "type":
            mount["Type"] = value
        elif key in ("source", "src"):
            mount["Source"] = value
        elif key in ("target", "dst", "destination"):
            mount["Target"] = value
        elif key in ("readonly", "ro"):
            mount["ReadOnly"] = _bool(value, key)
        elif key == "consistency":
            mount["Consistency"] = value
        elif key == "bind-propagation":
            bind["Propagation"] = value
        elif key == "bind-nonrecursive":
            bind["NonRecursive"] = _bool(value, key)
        elif key == "volume-driver":
            volume.setdefault("DriverConfig", {})["Name"] = value
        elif key == "volume-nocopy":
            volume["NoCopy"] = _bool(value, key)
        elif key == "volume-label":
            k, _, v = value.partition("=")
            volume.setdefault("Labels", {})[k] = v
        elif key == "volume-opt":
            k, _, v = value.partition("=")
            volume.setdefault("DriverConfig", {}).setdefault("Options", {})[k] = v
        elif key == "tmpfs-size":
            tmpfs["SizeBytes"] = ram_bytes(value)
        elif key == "tmpfs-mode":
            try:
                tmpfs["Mode"] = int(value, 8)
            except ValueError:
                raise UsageError(f"invalid value for {key}: {value}") from None
    if not mount.get("Target"):
        raise UsageError(f"invalid argument \"{item}\" for \"--mount\" flag: target is required")
    for options, kind, prefix, field_name in ((bind, "bind", "bind-*", "BindOptions"),
                                              (volume, "volume", "volume-*", "VolumeOptions"),
                                              (tmpfs, "tmpfs", "tmpfs-*", "TmpfsOptions")):
        if options:
            if mount["Type"] != kind:
                raise UsageError(f"invalid argument \"{item}\" for \"--mount\" flag: cannot mix '{prefix}' "
                                 f"options with mount type '{mount['Type']}'")
            mount[field_name] = options
    return mount


def _volumes(items: list[str]) -> tuple[list[str], dict[str, dict]]:
    """``-v``: SRC:DEST[:MODE] are binds (a relative host path starting with '.' made
    absolute, as docker's CLI does), a path alone is a volume of the container's config."""
    binds: list[str] = []
    volumes: dict[str, dict] = {}
    for item in items:
        src, sep, rest = item.partition(":")
        if sep and src and (rest.startswith("/") or ":" in rest):
            if src.startswith("."):
                src = os.path.abspath(src)
            binds.append(f"{src}:{rest}")
        else:
            volumes[item] = {}
    return binds, volumes


def _networking(args: argparse.Namespace) -> dict[str, Any] | None:
    """NetworkingConfig: the endpoint of the ``--network`` with its aliases and ``--ip``."""
    endpoint: dict[str, Any] = {}
    if args.network_alias:
        endpoint["Aliases"] = list(args.network_alias)
    if args.ip:
        endpoint["IPAMConfig"] = {"IPv4Address": args.ip}
    if args.mac_address:
        endpoint["MacAddress"] = args.mac_address
    name = args.network or "default"
    if not endpoint and name in ("default", "bridge", "host", "none"):
        return None
    return {"EndpointsConfig": {name: endpoint}}


def build_config(args: argparse.Namespace, image: str, command: list[str]) -> dict[str, Any]:
    """The body of POST /containers/create."""
    exposed, bindings = _ports(args)
    labels = {}
    for item in args.label:
        key, _, value = item.partition("=")
        labels[key] = value
    binds, volumes = _volumes(args.volume)
    tmpfs = {}
    for item in args.tmpfs:
        path, _, opts = item.partition(":")
        tmpfs[path] = opts
    host: dict[str, Any] = {
        "Binds": binds or None, "Tmpfs": tmpfs or None, "PortBindings": bindings or None,
        "PublishAllPorts": args.publish_all, "NetworkMode": args.network or "default",
        "RestartPolicy": _restart(args.restart), "AutoRemove": args.rm,
        "Init": True if args.init else None, "ReadonlyRootfs": args.read_only,
        "CapAdd": args.cap_add or None, "CapDrop": args.cap_drop or None, "Privileged": args.privileged,
        "SecurityOpt": args.security_opt or None, "ExtraHosts": args.add_host or None, "Dns": args.dns or None,
        "DnsSearch": args.dns_search or None, "DnsOptions": args.dns_option or None,
        "Devices": _devices(args.device) or None, "GroupAdd": args.group_add or None,
        "IpcMode": args.ipc, "PidMode": args.pid, "UTSMode": args.uts, "Ulimits": _ulimits(args.ulimit) or None,
        "Sysctls": dict(s.partition("=")[::2] for s in args.sysctl) or None,
        "Mounts": [parse_mount(m) for m in args.mount] or None, "VolumesFrom": args.volumes_from or None,
        "LogConfig": {"Type": args.log_driver, "Config": dict(o.partition("=")[::2] for o in args.log_opt)},
    }
    if args.runtime:
        host["Runtime"] = args.runtime
    if args.memory:
        host["Memory"] = ram_bytes(args.memory)
    if args.memory_swap:
        host["MemorySwap"] = -1 if args.memory_swap == "-1" else ram_bytes(args.memory_swap)
    if args.memory_reservation:
        host["MemoryReservation"] = ram_bytes(args.memory_reservation)
    if args.cpus:
        try:
            host["NanoCpus"] = int(round(float(args.cpus) * 1e9))
        except ValueError:
            raise UsageError(f"invalid argument \"{args.cpus}\" for \"--cpus\" flag") from None
    for key, value in (("CpuShares", args.cpu_shares), ("CpuQuota", args.cpu_quota), ("CpuPeriod", args.cpu_period)):
        if value:
            host[key] = value
    if args.cpuset_cpus:
        host["CpusetCpus"] = args.cpuset_cpus
    if args.pids_limit is not None:
        host["PidsLimit"] = args.pids_limit
    if args.shm_size:
        host["ShmSize"] = ram_bytes(args.shm_size)
    attach = getattr(args, "attach", []) or []
    detached = getattr(args, "detach", False)
    interactive = args.interactive
    config: dict[str, Any] = {
        "Image": image, "Cmd": command or None, "Env": _env(args), "Labels": labels,
        "Tty": args.tty, "OpenStdin": interactive, "StdinOnce": interactive and not detached,
        "AttachStdin": interactive and not detached or "stdin" in [a.lower() for a in attach],
        "AttachStdout": not detached and (not attach or "stdout" in [a.lower() for a in attach]),
        "AttachStderr": not detached and (not attach or "stderr" in [a.lower() for a in attach]),
        "ExposedPorts": exposed or None, "Volumes": volumes or None, "HostConfig": host,
        "NetworkingConfig": _networking(args),
    }
    if args.hostname:
        config["Hostname"] = args.hostname
    if args.mac_address:
        config["MacAddress"] = args.mac_address
    if args.workdir is not None:
        config["WorkingDir"] = args.workdir
    if args.user is not None:
        config["User"] = args.user
    if args.entrypoint is not None:
        config["Entrypoint"] = [args.entrypoint] if args.entrypoint else [""]
    if args.stop_signal:
        config["StopSignal"] = args.stop_signal
    if args.stop_timeout is not None:
        config["StopTimeout"] = args.stop_timeout
    return {k: v for k, v in config.items() if v is not None}
