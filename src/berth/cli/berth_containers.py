"""Commands on existing containers: ps, stop, kill, restart, rm, logs, inspect, top,
stats, pause, unpause, wait, rename, update, container prune."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

from berth.cli.berth_client import APIError, Client
from berth.cli.berth_common import UsageError, parse_filters, parser, short
from berth.cli.berth_format import TemplateError, ago, bytes_size, human_size, parse_since, \
    print_deleted, print_inspected, render_rows, table


#: at most this many requests at once in parallel commands (docker's CLI: parallelOperation, 50)
PARALLEL = 50


def _each(api: Client, names: list[str], action: Callable[[str], Any], *, echo: bool = True,
          parallel: bool = False) -> int:
    """Docker's multi-container commands: act on each, print it, report failures, exit 1.

    With ``parallel`` (stop, kill, rm, pause, unpause, as docker's CLI does), up to
    ``PARALLEL`` requests are in flight at once; names and errors are still printed in the
    order given, each as soon as it and those before it are done."""
    if parallel and len(names) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(PARALLEL, len(names))) as pool:
            futures = [pool.submit(action, name) for name in names]
            return _report_each(names, [f.result for f in futures], echo)
    return _report_each(names, [lambda name=name: action(name) for name in names], echo)


def _report_each(names: list[str], outcomes: list[Callable[[], Any]], echo: bool) -> int:
    failed = False
    for name, outcome in zip(names, outcomes):
        try:
            outcome()
            if echo:
                print(name, flush=True)
        except APIError as e:
            sys.stderr.write(f"Error response from daemon: {e.message}\n")
            failed = True
    return 1 if failed else 0


# --- ps ----------------------------------------------------------------------------------------

PS_HEADERS = {"ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND", "CreatedAt": "CREATED AT",
              "RunningFor": "CREATED", "Ports": "PORTS", "State": "STATE", "Status": "STATUS", "Size": "SIZE",
              "Names": "NAMES", "Labels": "LABELS", "Mounts": "MOUNTS", "Networks": "NETWORKS"}


def _ports(ports: list[dict[str, Any]]) -> str:
    out = []
    for p in ports or []:
        proto = p.get("Type", "tcp")
        if p.get("PublicPort"):
            out.append(f"{p.get('IP') or '0.0.0.0'}:{p['PublicPort']}->{p.get('PrivatePort')}/{proto}")
        else:
            out.append(f"{p.get('PrivatePort')}/{proto}")
    return ", ".join(out)


def ps_row(c: dict[str, Any], no_trunc: bool) -> dict[str, Any]:
    command = c.get("Command") or ""
    if not no_trunc and len(command) > 20:
        command = command[:19] + "…"
    labels = c.get("Labels") or {}
    names = [n.lstrip("/") for n in c.get("Names") or []]
    image = c.get("Image") or ""
    if image.startswith("sha256:") and not no_trunc:
        image = short(image)
    return {
        "ID": c["Id"] if no_trunc else short(c["Id"]),
        "Image": image, "Command": json.dumps(command, ensure_ascii=False) if command else '""',
        "CreatedAt": time.strftime("%Y-%m-%d %H:%M:%S %z %Z", time.localtime(c.get("Created") or 0)),
        "RunningFor": ago(c.get("Created") or 0), "Ports": _ports(c.get("Ports") or []),
        "State": c.get("State", ""), "Status": c.get("Status", ""),
        "Size": human_size(c.get("SizeRw") or 0) + (f" (virtual {human_size(c['SizeRootFs'])})"
                                                     if c.get("SizeRootFs") else ""),
        "Names": ",".join(names), "Labels": ",".join(f"{k}={v}" for k, v in labels.items()),
        "Label": lambda key: labels.get(key, ""),
        "Mounts": ",".join(m.get("Name") or m.get("Source", "") for m in c.get("Mounts") or []),
        "Networks": ",".join(((c.get("NetworkSettings") or {}).get("Networks") or {}).keys()),
    }


def ps(api: Client, argv: list[str]) -> int:
    p = parser("ps", "[OPTIONS]", "List containers")
    p.add_argument("-a", "--all", action="store_true", help="Show all containers (default shows just running)")
    p.add_argument("-q", "--quiet", action="store_true", help="Only display container IDs")
    p.add_argument("-f", "--filter", action="append", default=[], help="Filter output based on conditions provided")
    p.add_argument("--format", default="", help="Format output using a custom template")
    p.add_argument("-n", "--last", type=int, default=-1, help="Show n last created containers (includes all states)")
    p.add_argument("-l", "--latest", action="store_true", help="Show the latest created container (includes all states)")
    p.add_argument("--no-trunc", action="store_true", help="Don't truncate output")
    p.add_argument("-s", "--size", action="store_true", help="Display total file sizes")
    args = p.parse_args(argv)
    limit = 1 if args.latest else args.last
    query = {"all": args.all or limit > 0, "size": args.size, "limit": limit if limit > 0 else None,
             "filters": parse_filters(args.filter)}
    containers = api.get("/containers/json", **query) or []
    rows = [ps_row(c, args.no_trunc) for c in containers]
    if args.quiet:
        sys.stdout.write("".join(r["ID"] + "\n" for r in rows))
        return 0
    fmt = args.format or ("table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t"
                          "{{.Names}}" + ("\t{{.Size}}" if args.size else ""))
    try:
        sys.stdout.write(render_rows(fmt, rows, PS_HEADERS))
    except TemplateError as e:
        raise UsageError(f"template: {e}") from None
    return 0


# --- lifecycle -----------------------------------------------------------------------------------


def stop(api: Client, argv: list[str]) -> int:
    p = parser("stop", "[OPTIONS] CONTAINER [CONTAINER...]", "Stop one or more running containers")
    p.add_argument("-t", "--time", "--timeout", type=int, default=None, help="Seconds to wait before killing the container")
    p.add_argument("-s", "--signal", default="", help="Signal to send to the container")
    p.add_argument("containers", nargs="+")
    args = p.parse_args(argv)
    q = {"t": args.time, "signal": args.signal or None}
    return _each(api, args.containers, lambda n: api.request("POST", f"/containers/{n}/stop", query=q),
                 parallel=True)


def kill(api: Client, argv: list[str]) -> int:
    p = parser("kill", "[OPTIONS] CONTAINER [CONTAINER...]", "Kill one or more running containers")
    p.add_argument("-s", "--signal", default="", help="Signal to send to the container")
    p.add_argument("containers", nargs="+")
    args = p.parse_args(argv)
    return _each(api, args.containers, lambda n: api.post(f"/containers/{n}/kill", signal=args.signal or None),
                 parallel=True)


def restart(api: Client, argv: list[str]) -> int:
    p = parser("restart", "[OPTIONS] CONTAINER [CONTAINER...]", "Restart one or more containers")
    p.add_argument("-t", "--time", "--timeout", type=int, default=None)
    p.add_argument("-s", "--signal", default="")
    p.add_argument("containers", nargs="+")
    args = p.parse_args(argv)
    q = {"t": args.time, "signal": args.signal or None}
    return _each(api, args.containers, lambda n: api.request("POST", f"/containers/{n}/restart", query=q))


def rm(api: Client, argv: list[str]) -> int:
    p = parser("rm", "[OPTIONS] CONTAINER [CONTAINER...]", "Remove one or more containers")
    p.add_argument("-f", "--force", action="store_true", help="Force the removal of a running container (uses SIGKILL)")
    p.add_argument("-v", "--volumes", action="store_true", help="Remove anonymous volumes associated with the container")
    p.add_argument("-l", "--link", action="store_true", help="Remove the specified link")
    p.add_argument("containers", nargs="+")
    args = p.parse_args(argv)
    return _each(api, args.containers, lambda n: api.delete(f"/containers/{n}", force=args.force, v=args.volumes),
                 parallel=True)


def pause(api: Client, argv: list[str]) -> int:
    p = parser("pause", "CONTAINER [CONTAINER...]", "Pause all processes within one or more containers")
    p.add_argument("containers", nargs="+")
    args = p.parse_args(argv)
    return _each(api, args.containers, lambda n: api.post(f"/containers/{n}/pause"), parallel=True)


def unpause(api: Client, argv: list[str]) -> int:
    p = parser("unpause", "CONTAINER [CONTAINER...]", "Unpause all processes within one or more containers")
    p.add_argument("containers", nargs="+")
    args = p.parse_args(argv)
    return _each(api, args.containers, lambda n: api.post(f"/containers/{n}/unpause"), parallel=True)


def wait(api: Client, argv: list[str]) -> int:
    p = parser("wait", "CONTAINER [CONTAINER...]", "Block until one or more containers stop, then print their exit codes")
    p.add_argument("containers", nargs="+")
    args = p.parse_args(argv)

    def one(name: str) -> None:
        print((api.post(f"/containers/{name}/wait") or {}).get("StatusCode", 0))

    return _each(api, args.containers, one, echo=False)


def rename(api: Client, argv: list[str]) -> int:
    p = parser("rename", "CONTAINER NEW_NAME", "Rename a container")
    p.add_argument("container")
    p.add_argument("name")
    args = p.parse_args(argv)
    api.post(f"/containers/{args.container}/rename", name=args.name)
    return 0


def update(api: Client, argv: list[str]) -> int:
    from berth.cli.berth_create import _restart, ram_bytes

    p = parser("update", "[OPTIONS] CONTAINER [CONTAINER...]", "Update configuration of one or more containers")
    p.add_argument("-m", "--memory", default="")
    p.add_argument("--memory-swap", default="")
    p.add_argument("--memory-reservation", default="")
    p.add_argument("--cpus", default="")
    p.add_argument("-c", "--cpu-shares", type=int, default=0)
    p.add_argument("--cpu-quota", type=int, default=0)
    p.add_argument("--cpu-period", type=int, default=0)
    p.add_argument("--cpuset-cpus", default="")
    p.add_argument("--cpuset-mems", default="")
    p.add_argument("--pids-limit", type=int, default=None)
    p.add_argument("--restart", default="")
    p.add_argument("containers", nargs="+")
    args = p.parse_args(argv)
    body: dict[str, Any] = {}
    if args.memory:
        body["Memory"] = ram_bytes(args.memory)
    if args.memory_swap:
        body["MemorySwap"] = -1 if args.memory_swap == "-1" else ram_bytes(args.memory_swap)
    if args.memory_reservation:
        body["MemoryReservation"] = ram_bytes(args.memory_reservation)
    if args.cpus:
        body["NanoCpus"] = int(round(float(args.cpus) * 1e9))
    for key, value in (("CpuShares", args.cpu_shares), ("CpuQuota", args.cpu_quota), ("CpuPeriod", args.cpu_period),
                       ("CpusetCpus", args.cpuset_cpus), ("CpusetMems", args.cpuset_mems)):
        if value:
            body[key] = value
    if args.pids_limit is not None:
        body["PidsLimit"] = args.pids_limit
    if args.restart:
        body["RestartPolicy"] = _restart(args.restart)
    if not body:
        raise UsageError("you must provide one or more flags when using this command")

    def one(name: str) -> None:
        result = api.post(f"/containers/{name}/update", body) or {}
        for warning in result.get("Warnings") or []:
            sys.stderr.write(f"WARNING: {warning}\n")

    return _each(api, args.containers, one)


def container_prune(api: Client, argv: list[str]) -> int:
    from berth.cli.berth_images import confirm

    p = parser("container prune", "[OPTIONS]", "Remove all stopped containers")
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("--filter", action="append", default=[])
    args = p.parse_args(argv)
    if not args.force and not confirm("WARNING! This will remove all stopped containers."):
        return 0
    result = api.post("/containers/prune", filters=json.dumps(parse_filters(args.filter) or {})) or {}
    print_deleted("Deleted Containers:", result.get("ContainersDeleted") or [])
    print(f"Total reclaimed space: {human_size(result.get('SpaceReclaimed') or 0)}")
    return 0


# --- logs ---------------------------------------------------------------------------------------


def logs(api: Client, argv: list[str]) -> int:
    from berth.cli.berth_stream import Demux, _writer

    p = parser("logs", "[OPTIONS] CONTAINER", "Fetch the logs of a container")
    p.add_argument("-f", "--follow", action="store_true", help="Follow log output")
    p.add_argument("--tail", "-n", default="all", help="Number of lines to show from the end of the logs")
    p.add_argument("--since", default="", help="Show logs since timestamp or relative (e.g. 42m)")
    p.add_argument("--until", default="", help="Show logs before a timestamp or relative (e.g. 42m)")
    p.add_argument("-t", "--timestamps", action="store_true", help="Show timestamps")
    p.add_argument("--details", action="store_true", help="Show extra details provided to logs")
    p.add_argument("container")
    args = p.parse_args(argv)
    try:
        since, until = parse_since(args.since), parse_since(args.until)
    except ValueError as e:
        raise UsageError(str(e)) from None
    info = api.get(f"/containers/{args.container}/json")
    tty = bool((info.get("Config") or {}).get("Tty"))
    query = {"stdout": 1, "stderr": 1, "follow": args.follow, "tail": args.tail, "timestamps": args.timestamps,
             "since": since or None, "until": until or None, "details": args.details}
    resp = api.call("GET", f"/containers/{info['Id']}/logs", query=query)
    out, err = _writer(sys.stdout), _writer(sys.stderr)
    multiplexed = "multiplexed" in (resp.getheader("Content-Type") or "") or not tty
    sink = Demux(out, err).feed if multiplexed else out
    while True:
        chunk = resp.read1(65536)
        if not chunk:
            break
        sink(chunk)
    return 0


# --- inspect, top, stats -------------------------------------------------------------------------


def inspect(api: Client, argv: list[str]) -> int:
    p = parser("inspect", "[OPTIONS] NAME|ID [NAME|ID...]", "Return low-level information on Berth objects")
    p.add_argument("-f", "--format", default="", help="Format output using a custom template")
    p.add_argument("-s", "--size", action="store_true", help="Display total file sizes if the type is container")
    p.add_argument("--type", default="", help="Only inspect objects of the given type")
    p.add_argument("names", nargs="+")
    args = p.parse_args(argv)
    kinds = [args.type] if args.type else ["container", "image", "network", "volume"]
    paths = {"container": "/containers/{}/json", "image": "/images/{}/json", "network": "/networks/{}",
             "volume": "/volumes/{}"}
    if any(k not in paths for k in kinds):
        raise UsageError(f"\"{args.type}\" is not a valid value for --type")
    found: list[Any] = []
    failed = False
    for name in args.names:
        for kind in kinds:
            try:
                query = {"size": 1} if kind == "container" and args.size else {}
                found.append(api.request("GET", paths[kind].format(name), query=query))
                break
            except APIError as e:
                if e.status != 404:
                    raise
        else:
            sys.stderr.write(f"Error: No such {args.type or 'object'}: {name}\n")
            failed = True
    print_inspected(found, args.format)
    return 1 if failed else 0


def container_inspect(api: Client, argv: list[str]) -> int:
    return inspect(api, ["--type", "container", *argv])


def top(api: Client, argv: list[str]) -> int:
    p = parser("top", "CONTAINER [ps OPTIONS]", "Display the running processes of a container")
    p.add_argument("container")
    p.add_argument("ps_args", nargs="*")
    args = p.parse_args(argv)
    result = api.get(f"/containers/{args.container}/top", ps_args=" ".join(args.ps_args) or None) or {}
    rows = [list(result.get("Titles") or [])] + [[str(c) for c in row] for row in result.get("Processes") or []]
    sys.stdout.write(table(rows, min_width=20, padding=3))
    return 0


STATS_HEADERS = {"Container": "CONTAINER", "ID": "CONTAINER ID", "Name": "NAME", "CPUPerc": "CPU %",
                 "MemUsage": "MEM USAGE / LIMIT", "MemPerc": "MEM %", "NetIO": "NET I/O", "BlockIO": "BLOCK I/O",
                 "PIDs": "PIDS"}


def stats_row(s: dict[str, Any], name: str) -> dict[str, Any]:
    cpu, pre = s.get("cpu_stats") or {}, s.get("precpu_stats") or {}
    cpu_delta = (cpu.get("cpu_usage") or {}).get("total_usage", 0) - (pre.get("cpu_usage") or {}).get("total_usage", 0)
    sys_delta = (cpu.get("system_cpu_usage") or 0) - (pre.get("system_cpu_usage") or 0)
    ncpu = cpu.get("online_cpus") or len((cpu.get("cpu_usage") or {}).get("percpu_usage") or []) or 1
    cpu_perc = cpu_delta / sys_delta * ncpu * 100.0 if sys_delta > 0 and cpu_delta > 0 else 0.0
    mem = s.get("memory_stats") or {}
    usage = mem.get("usage") or 0
    detail = mem.get("stats") or {}
    usage -= detail.get("inactive_file", detail.get("total_inactive_file", 0)) if usage else 0
    limit = mem.get("limit") or 0
    rx = sum(n.get("rx_bytes", 0) for n in (s.get("networks") or {}).values())
    tx = sum(n.get("tx_bytes", 0) for n in (s.get("networks") or {}).values())
    read = write = 0
    for entry in (s.get("blkio_stats") or {}).get("io_service_bytes_recursive") or []:
        op = (entry.get("op") or "").lower()
        read += entry.get("value", 0) if op == "read" else 0
        write += entry.get("value", 0) if op == "write" else 0
    cid = s.get("id") or ""
    return {"Container": short(cid) or name, "ID": short(cid), "Name": (s.get("name") or name).lstrip("/"),
            "CPUPerc": f"{cpu_perc:.2f}%", "MemUsage": f"{bytes_size(max(usage, 0))} / {bytes_size(limit)}",
            "MemPerc": f"{(usage / limit * 100.0 if limit else 0.0):.2f}%",
            "NetIO": f"{human_size(rx)} / {human_size(tx)}", "BlockIO": f"{human_size(read)} / {human_size(write)}",
            "PIDs": str((s.get("pids_stats") or {}).get("current", 0))}


def stats(api: Client, argv: list[str]) -> int:
    p = parser("stats", "[OPTIONS] [CONTAINER...]", "Display a live stream of container(s) resource usage statistics")
    p.add_argument("-a", "--all", action="store_true", help="Show all containers (default shows just running)")
    p.add_argument("--no-stream", action="store_true", help="Disable streaming stats and only pull the first result")
    p.add_argument("--no-trunc", action="store_true")
    p.add_argument("--format", default="")
    p.add_argument("containers", nargs="*")
    args = p.parse_args(argv)
    fmt = args.format or ("table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t"
                          "{{.BlockIO}}\t{{.PIDs}}")
    explicit = bool(args.containers)
    while True:
        names = args.containers or [c["Id"] for c in api.get("/containers/json", all=args.all) or []]
        rows = []
        for name in names:
            try:
                s = api.get(f"/containers/{name}/stats", stream=False, **({"one-shot": True} if args.no_stream else {}))
            except APIError as e:
                if explicit:
                    raise
                if e.status == 404:
                    continue
                raise
            rows.append(stats_row(s or {}, name))
        text = render_rows(fmt, rows, STATS_HEADERS)
        if args.no_stream:
            sys.stdout.write(text)
            return 0
        sys.stdout.write("\x1b[2J\x1b[H" + text)
        sys.stdout.flush()
        time.sleep(1.0)

