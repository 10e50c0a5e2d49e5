"""Volume commands: ``berth volume create | ls | inspect | rm | prune``, as docker's."""

from __future__ import annotations

import json
import sys
from typing import Any

from berth.cli.berth_client import APIError, Client
from berth.cli.berth_common import UsageError, parse_filters, parser
from berth.cli.berth_format import TemplateError, human_size, print_deleted, print_inspected, render_rows

VOLUME_HEADERS = {"Driver": "DRIVER", "Name": "VOLUME NAME", "Mountpoint": "MOUNTPOINT", "Scope": "SCOPE",
                  "Labels": "LABELS", "CreatedAt": "CREATED AT"}


def _pairs(items: list[str], flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, _, value = item.partition("=")
        if not key:
            raise UsageError(f"invalid argument \"{item}\" for \"{flag}\" flag: invalid key")
        out[key] = value
    return out


def create(api: Client, argv: list[str]) -> int:
    p = parser("volume create", "[OPTIONS] [VOLUME]", "Create a volume")
    p.add_argument("-d", "--driver", default="local", help="Specify volume driver name")
    p.add_argument("--label", action="append", default=[], help="Set metadata for a volume")
    p.add_argument("-o", "--opt", action="append", default=[], help="Set driver specific options")
    p.add_argument("--name", default="", help="Specify volume name")
    p.add_argument("volume", nargs="?", default="")
    args = p.parse_args(argv)
    if args.name and args.volume and args.name != args.volume:
        raise UsageError("conflicting options: either specify --name or provide positional arg, not both")
    body = {"Name": args.volume or args.name, "Driver": args.driver, "DriverOpts": _pairs(args.opt, "--opt"),
            "Labels": _pairs(args.label, "--label")}
    print((api.post("/volumes/create", body) or {}).get("Name", ""))
    return 0


def ls(api: Client, argv: list[str]) -> int:
    p = parser("volume ls", "[OPTIONS]", "List volumes")
    p.add_argument("-q", "--quiet", action="store_true", help="Only display volume names")
    p.add_argument("-f", "--filter", action="append", default=[], help="Provide filter values (e.g. \"dangling=true\")")
    p.add_argument("--format", default="", help="Format output using a custom template")
    args = p.parse_args(argv)
    volumes = (api.get("/volumes", filters=parse_filters(args.filter)) or {}).get("Volumes") or []
    volumes.sort(key=lambda v: v.get("Name", ""))
    if args.quiet:
        sys.stdout.write("".join(v["Name"] + "\n" for v in volumes))
        return 0
    rows = [{**v, "Labels": ",".join(f"{k}={val}" for k, val in sorted((v.get("Labels") or {}).items()))}
            for v in volumes]
    fmt = args.format or "table {{.Driver}}\t{{.Name}}"
    try:
        sys.stdout.write(render_rows(fmt, rows, VOLUME_HEADERS))
    except TemplateError as e:
        raise UsageError(f"template parsing error: {e}") from None
    return 0


def inspect(api: Client, argv: list[str]) -> int:
    p = parser("volume inspect", "[OPTIONS] VOLUME [VOLUME...]", "Display detailed information on one or more volumes")
    p.add_argument("-f", "--format", default="", help="Format output using a custom template")
    p.add_argument("volumes", nargs="+")
    args = p.parse_args(argv)
    found: list[Any] = []
    failed = False
    for name in args.volumes:
        try:
            found.append(api.get(f"/volumes/{name}"))
        except APIError as e:
            sys.stderr.write(f"Error response from daemon: {e.message}\n")
            failed = True
    print_inspected(found, args.format)
    return 1 if failed else 0


def rm(api: Client, argv: list[str]) -> int:
    p = parser("volume rm", "[OPTIONS] VOLUME [VOLUME...]", "Remove one or more volumes")
    p.add_argument("-f", "--force", action="store_true", help="Force the removal of one or more volumes")
    p.add_argument("volumes", nargs="+")
    args = p.parse_args(argv)
    failed = False
    for name in args.volumes:
        try:
            api.delete(f"/volumes/{name}", force=args.force or None)
            print(name)
        except APIError as e:
            sys.stderr.write(f"Error response from daemon: {e.message}\n")
            failed = True
    return 1 if failed else 0


def prune(api: Client, argv: list[str]) -> int:
    from berth.cli.berth_images import confirm

    p = parser("volume prune", "[OPTIONS]", "Remove unused local volumes")
    p.add_argument("-a", "--all", action="store_true", help="Remove all unused volumes, not just anonymous ones")
    p.add_argument("-f", "--force", action="store_true", help="Do not prompt for confirmation")
    p.add_argument("--filter", action="append", default=[], help="Provide filter values (e.g. \"label=<label>\")")
    args = p.parse_args(argv)
    what = "all local volumes" if args.all else "anonymous local volumes"
    if not args.force and not confirm(f"WARNING! This will remove {what} not used by at least one container."):
        return 0
    filters = parse_filters(args.filter) or {}
    if args.all:
        filters["all"] = ["true"]
    result = api.post("/volumes/prune", filters=json.dumps(filters)) or {}
    print_deleted("Deleted Volumes:", result.get("VolumesDeleted") or [])
    print(f"Total reclaimed space: {human_size(result.get('SpaceReclaimed') or 0)}")
    return 0
