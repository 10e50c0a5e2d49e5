"""System commands: info, version, events, system df, system prune."""

from __future__ import annotations

import json
import platform
import sys
from datetime import datetime, timezone
from typing import Any

from berth.cli.berth_client import API_VERSION, APIError, Client, iter_json
from berth.cli.berth_common import UsageError, parse_filters, parser
from berth.cli.berth_format import Template, TemplateError, bytes_size, human_size, parse_since, print_deleted, \
    print_deleted_images, table


def _template(fmt: str, data: Any) -> None:
    try:
        print(Template(fmt).render(data))
    except TemplateError as e:
        raise UsageError(f"template parsing error: {e}") from None


def info(api: Client, argv: list[str]) -> int:
    p = parser("info", "[OPTIONS]", "Display system-wide information")
    p.add_argument("-f", "--format", default="")
    args = p.parse_args(argv)
    data = api.get("/info")
    if args.format:
        _template(args.format, data)
        return 0
    from berth import __version__

    lines = ["Client:", f" Version:    {__version__}", " Context:    default", " Debug Mode: false", "",
             "Server:",
             f" Containers: {data.get('Containers', 0)}", f"  Running: {data.get('ContainersRunning', 0)}",
             f"  Paused: {data.get('ContainersPaused', 0)}", f"  Stopped: {data.get('ContainersStopped', 0)}",
             f" Images: {data.get('Images', 0)}", f" Server Version: {data.get('ServerVersion', '')}",
             f" Storage Driver: {data.get('Driver', '')}", f" Logging Driver: {data.get('LoggingDriver', '')}",
             f" Cgroup Driver: {data.get('CgroupDriver', '')}", f" Cgroup Version: {data.get('CgroupVersion', '')}",
             " Plugins:"]
    for kind, names in (data.get("Plugins") or {}).items():
        lines.append(f"  {kind}: {' '.join(names or [])}")
    lines += [f" Runtimes: {' '.join(sorted(data.get('Runtimes') or {}))}",
              f" Default Runtime: {data.get('DefaultRuntime', '')}",
              f" Init Binary: {data.get('InitBinary', '')}",
              " Security Options:"] + [f"  {o}" for o in data.get("SecurityOptions") or []] + [
              f" Kernel Version: {data.get('KernelVersion', '')}",
              f" Operating System: {data.get('OperatingSystem', '')}", f" OSType: {data.get('OSType', '')}",
              f" Architecture: {data.get('Architecture', '')}", f" CPUs: {data.get('NCPU', 0)}",
              f" Total Memory: {bytes_size(data.get('MemTotal') or 0)}", f" Name: {data.get('Name', '')}",
              f" ID: {data.get('ID', '')}", f" Docker Root Dir: {data.get('DockerRootDir', '')}",
              f" Debug Mode: {str(bool(data.get('Debug'))).lower()}",
              f" Live Restore Enabled: {str(bool(data.get('LiveRestoreEnabled'))).lower()}"]
    print("\n".join(lines))
    for warning in data.get("Warnings") or []:
        sys.stderr.write(warning + "\n")
    return 0


def version(api: Client, argv: list[str]) -> int:
    p = parser("version", "[OPTIONS]", "Show the Berth version information")
    p.add_argument("-f", "--format", default="")
    args = p.parse_args(argv)
    from berth import __version__

    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    client = {"Version": __version__, "ApiVersion": API_VERSION, "DefaultAPIVersion": API_VERSION,
              "GoVersion": "python" + platform.python_version(), "Os": "linux", "Arch": arch}
    server_error = None
    try:
        server = api.get("/version")
    except APIError as e:
        server, server_error = None, e
    if args.format:
        _template(args.format, {"Client": client, "Server": server})
        return 0
    lines = ["Client:", f" Version:           {__version__}", f" API version:       {API_VERSION}",
             f" Python version:    {platform.python_version()}", f" OS/Arch:           linux/{arch}", ""]
    if server:
        lines += [f"Server: {(server.get('Platform') or {}).get('Name', '')}", " Engine:",
                  f"  Version:          {server.get('Version', '')}",
                  f"  API version:      {server.get('ApiVersion', '')} (minimum version {server.get('MinAPIVersion', '')})",
                  f"  Go version:       {server.get('GoVersion', '')}",
                  f"  OS/Arch:          {server.get('Os', '')}/{server.get('Arch', '')}"]
    print("\n".join(lines))
    if server_error is not None:
        raise server_error
    return 0


def event_line(e: dict[str, Any]) -> str:
    nano = int(e.get("timeNano") or int(e.get("time") or 0) * 1_000_000_000)
    when = datetime.fromtimestamp(nano // 1_000_000_000, timezone.utc).astimezone()
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S") + f".{nano % 1_000_000_000:09d}" + when.strftime("%z")
    stamp = stamp[:-2] + ":" + stamp[-2:]
    actor = e.get("Actor") or {}
    attrs = actor.get("Attributes") or {}
    attr_text = ", ".join(f"{k}={v}" for k, v in sorted(attrs.items()))
    return f"{stamp} {e.get('Type', '')} {e.get('Action', '')} {actor.get('ID', '')}" + (f" ({attr_text})" if attrs else "")


def events(api: Client, argv: list[str]) -> int:
    p = parser("events", "[OPTIONS]", "Get real time events from the server")
    p.add_argument("--since", default="", help="Show all events created since timestamp")
    p.add_argument("--until", default="", help="Stream events until this timestamp")
    p.add_argument("-f", "--filter", action="append", default=[], help="Filter output based on conditions provided")
    p.add_argument("--format", default="", help="Format output using a custom template")
    args = p.parse_args(argv)
    try:
        since, until = parse_since(args.since), parse_since(args.until)
    except ValueError as e:
        raise UsageError(str(e)) from None
    query = {"since": since or None, "until": until or None, "filters": parse_filters(args.filter)}
    resp = api.call("GET", "/events", query=query)
    template = Template(args.format) if args.format and args.format != "json" else None
    for event in iter_json(resp):
        if args.format == "json" or args.format == "{{json .}}":
            print(json.dumps(event, separators=(",", ":")))
        elif template is not None:
            print(template.render(event))
        else:
            print(event_line(event))
        sys.stdout.flush()
    return 0


def df(api: Client, argv: list[str]) -> int:
    p = parser("system df", "[OPTIONS]", "Show docker disk usage")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--format", default="")
    args = p.parse_args(argv)
    data = api.get("/system/df") or {}
    images = data.get("Images") or []
    containers = data.get("Containers") or []
    volumes = data.get("Volumes") or []
    layers = data.get("LayersSize") or 0
    active_images = [i for i in images if (i.get("Containers") or 0) > 0]
    active_size = sum(i.get("Size") or 0 for i in active_images)
    image_reclaim = max(0, layers - active_size)
    running = [c for c in containers if c.get("State") == "running"]
    c_size = sum(c.get("SizeRw") or 0 for c in containers)
    c_reclaim = sum(c.get("SizeRw") or 0 for c in containers if c.get("State") != "running")
    v_size = sum(((v.get("UsageData") or {}).get("Size") or 0) for v in volumes)
    v_active = [v for v in volumes if ((v.get("UsageData") or {}).get("RefCount") or 0) > 0]

    def pct(part: int, whole: int) -> str:
        return f"{human_size(part)} ({int(part * 100 / whole) if whole else 0}%)" if whole else human_size(part)

    rows = [["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"],
            ["Images", str(len(images)), str(len(active_images)), human_size(layers), pct(image_reclaim, layers)],
            ["Containers", str(len(containers)), str(len(running)), human_size(c_size), pct(c_reclaim, c_size)],
            ["Local Volumes", str(len(volumes)), str(len(v_active)), human_size(v_size), pct(v_size, v_size)],
            ["Build Cache", "0", "0", "0B", "0B"]]
    if args.format:
        keys = ["Type", "TotalCount", "Active", "Size", "Reclaimable"]
        for row in rows[1:]:
            _template(args.format, dict(zip(keys, row)))
        return 0
    sys.stdout.write(table(rows))
    if args.verbose:
        print("\nImages space usage:\n")
        irows = [["REPOSITORY", "TAG", "IMAGE ID", "SIZE", "CONTAINERS"]]
        for i in images:
            for t in i.get("RepoTags") or ["<none>:<none>"]:
                repo, _, tag = t.rpartition(":")
                irows.append([repo, tag, i["Id"].split(":")[-1][:12], human_size(i.get("Size") or 0),
                              str(i.get("Containers", 0))])
        sys.stdout.write(table(irows))
        print("\nLocal Volumes space usage:\n")
        vrows = [["VOLUME NAME", "LINKS", "SIZE"]]
        for v in volumes:
            usage = v.get("UsageData") or {}
            vrows.append([v.get("Name", ""), str(usage.get("RefCount", 0)), human_size(usage.get("Size") or 0)])
        sys.stdout.write(table(vrows))
    return 0


def prune(api: Client, argv: list[str]) -> int:
    from berth.cli.berth_images import confirm

    p = parser("system prune", "[OPTIONS]", "Remove unused data")
    p.add_argument("-a", "--all", action="store_true", help="Remove all unused images not just dangling ones")
    p.add_argument("-f", "--force", action="store_true", help="Do not prompt for confirmation")
    p.add_argument("--volumes", action="store_true", help="Prune anonymous volumes")
    p.add_argument("--filter", action="append", default=[])
    args = p.parse_args(argv)
    what = ["all stopped containers", "all networks not used by at least one container"]
    if args.volumes:
        what.append("all anonymous volumes not used by at least one container")
    what.append("all images without at least one container associated to them" if args.all else "all dangling images")
    if not args.force and not confirm("WARNING! This will remove:\n" + "".join(f"  - {w}\n" for w in what)):
        return 0
    filters = parse_filters(args.filter) or {}
    reclaimed = 0
    for path, key, title in (("/containers/prune", "ContainersDeleted", "Deleted Containers:"),
                             ("/networks/prune", "NetworksDeleted", "Deleted Networks:"),
                             *((("/volumes/prune", "VolumesDeleted", "Deleted Volumes:"),) if args.volumes else ())):
        try:
            result = api.post(path, filters=json.dumps(filters)) or {}
        except APIError as e:
            if e.status == 404:
                continue
            raise
        print_deleted(title, result.get(key) or [])
        reclaimed += result.get("SpaceReclaimed") or 0
    image_filters = dict(filters, dangling=["false" if args.all else "true"])
    result = api.post("/images/prune", filters=json.dumps(image_filters)) or {}
    print_deleted_images(result.get("ImagesDeleted") or [])
    reclaimed += result.get("SpaceReclaimed") or 0
    print(f"Total reclaimed space: {human_size(reclaimed)}")
    return 0
