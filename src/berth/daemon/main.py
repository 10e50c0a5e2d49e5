"""``berthd``: the daemon's command line. It serves the Docker Engine API on a unix socket
until SIGTERM or SIGINT; stopping it stops no container (each has its own shim)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

from berth.daemon.config import DaemonConfig
from berth.errors import BerthError


def parse_args(argv: list[str]) -> DaemonConfig:
    parser = argparse.ArgumentParser(prog="berthd", description="Berth's daemon: the Docker Engine API over a unix socket")
    parser.add_argument("--data-root", default="/var/lib/berth", help="persistent state (default %(default)s)")
    parser.add_argument("--exec-root", default="/run/berth", help="volatile state (default %(default)s)")
    parser.add_argument("-H", "--host", default="", help="unix://PATH to listen on (default <exec-root>/berth.sock)")
    parser.add_argument("-p", "--pidfile", default="", help="pid file (default <exec-root>/berthd.pid)")
    parser.add_argument("--add-runtime", action="append", default=[], metavar="NAME=PATH",
                        help="an OCI runtime with runc's command line, for --runtime NAME")
    parser.add_argument("--default-runtime", default="berth", help="runtime for containers (default %(default)s)")
    parser.add_argument("--insecure-registry", action="append", default=[], metavar="HOST[:PORT]",
                        help="a registry to reach over plain HTTP")
    parser.add_argument("--cgroup-parent", default="/berth", help="parent cgroup of containers (default %(default)s)")
    parser.add_argument("--log-opt", action="append", default=[], metavar="max-size=N|max-file=N",
                        help="json-file log defaults")
    parser.add_argument("-b", "--bridge", default="", help="the default network's bridge (default berth0, or "
                        "berth-<hash of the exec root> with another --exec-root)")
    parser.add_argument("--bip", default="", metavar="CIDR",
                        help="the default network's gateway address and subnet (default: a free Docker pool)")
    parser.add_argument("-D", "--debug", action="store_true")
    args = parser.parse_args(argv)
    host = args.host
    if host and not host.startswith("unix://"):
        parser.error(f"only unix:// hosts are supported, not {host!r}")
    runtimes = {}
    for item in args.add_runtime:
        name, eq, path = item.partition("=")
        if not eq or not name or not path:
            parser.error(f"--add-runtime wants NAME=PATH, not {item!r}")
        runtimes[name] = path
    config = DaemonConfig(data_root=os.path.abspath(args.data_root), exec_root=os.path.abspath(args.exec_root),
                          socket_path=host[len("unix://"):] if host else "", pidfile=args.pidfile,
                          runtimes=runtimes, default_runtime=args.default_runtime,
                          insecure_registries=args.insecure_registry, cgroup_parent=args.cgroup_parent,
                          bridge=args.bridge, bip=args.bip, debug=args.debug)
    for opt in args.log_opt:
        key, _, value = opt.partition("=")
        from berth.daemon.logs import parse_size

        if key == "max-size":
            config.log_max_size = parse_size(value)
        elif key == "max-file":
            config.log_max_file = int(value)
        else:
            parser.error(f"unknown log option {key!r}")
    if config.default_runtime not in config.runtimes:
        parser.error(f"--default-runtime {config.default_runtime!r} is not a known runtime")
    return config


async def run(config: DaemonConfig) -> None:
    from berth._sys.files import atomic_write
    from berth.daemon.app import Daemon

    daemon = Daemon(config)
    daemon.build()
    await daemon.serve()
    atomic_write(config.pidfile, str(os.getpid()).encode(), 0o644)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sys.stderr.write(f"berthd: serving the Docker Engine API on unix://{config.socket_path}\n")
    try:
        await stop.wait()
    finally:
        await daemon.close()
        try:
            os.unlink(config.pidfile)
        except FileNotFoundError:
            pass


def main(argv: list[str] | None = None) -> int:
    config = parse_args(sys.argv[1:] if argv is None else argv)
    if os.geteuid() != 0:
        sys.stderr.write("berthd: must run as root\n")
        return 1
    try:
        asyncio.run(run(config))
    except BerthError as exc:
        sys.stderr.write(f"berthd: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
