"""``berth network create|ls|inspect|rm|connect|disconnect|prune``, as ``docker network``."""

from __future__ import annotations

import json
import sys
from typing import Any

from berth.cli.berth_client import APIError, Client
from berth.cli.berth_common import UsageError, parse_filters, parser, short
from berth.cli.berth_format import render_rows

HEADERS = {"ID": "NETWORK ID", "Name": "NAME", "Driver": "DRIVER", "Scope": "SCOPE", "IPv6": "IPV6",
           "Internal": "INTERNAL", "Labels": "LABELS", "CreatedAt": "CREATED AT"}


def _pairs(items: list[str], flag: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not key:
            raise UsageError(f"invalid argument \"{item}\" for \"{flag}\" flag")
        out[key] = value
    return out


def create(api: Client, argv: list[str]) -> int:
    p = parser("network create", "[OPTIONS] NETWORK", "Create a network")
    p.add_argument("-d", "--driver", default="bridge", help="Driver to manage the Network")
    p.add_argument("--subnet", action="append", default=[], help="Subnet in CIDR format")
    p.add_argument("--gateway", action="append", default=[], help="IPv4 Gateway for the master subnet")
    p.add_argument("--ip-range", action="append", default=[], help="Allocate container ip from a sub-range")
    p.add_argument("--internal", action="store_true", help="Restrict external access to the network")
    p.add_argument("--label", action="append", default=[], help="Set metadata on a network")
    p.add_argument("-o", "--opt", action="append", default=[], help="Set driver specific options")
    p.add_argument("--ipv6", action="store_true", help="Enable IPv6 networking")
    p.add_argument("--attachable", action="store_true", help="Enable manual container attachment")
    p.add_argument("name")
    args = p.parse_args(argv)
    if len(args.gateway) > len(args.subnet) or len(args.ip_range) > len(args.subnet):
        raise UsageError("every ip-range or gateway must have a corresponding subnet")
    config = []
    for i, subnet in enumerate(args.subnet):
        entry: dict[str, Any] = {"Subnet": subnet}
        if i < len(args.gateway):
            entry["Gateway"] = args.gateway[i]
        if i < len(args.ip_range):
            entry["IPRange"] = args.ip_range[i]
        config.append(entry)
    body = {"Name": args.name, "CheckDuplicate": True, "Driver": args.driver, "Internal": args.internal,
            "EnableIPv6": args.ipv6, "Attachable": args.attachable,
            "IPAM": {"Driver": "default", "Options": {}, "Config": config},
            "Options": _pairs(args.opt, "--opt"), "Labels": _pairs(args.label, "--label")}
    answer = api.post("/networks/create", body) or {}
    if answer.get("Warning"):
        sys.stderr.write(f"WARNING: {answer['Warning']}\n")
    print(answer.get("Id", ""))
    return 0


def ls(api: Client, argv: list[str]) -> int:
    p = parser("network ls", "[OPTIONS]", "List networks")
    p.add_argument("-f", "--filter", action="append", default=[], help="Provide filter values (e.g. 'driver=bridge')")
    p.add_argument("--format", default="", help="Pretty-print networks using a Go template")
    p.add_argument("--no-trunc", action="store_true", help="Do not truncate the output")
    p.add_argument("-q", "--quiet", action="store_true", help="Only display network IDs")
    args = p.parse_args(argv)
    networks = api.get("/networks", filters=json.dumps(parse_filters(args.filter)) if args.filter else None) or []
    networks.sort(key=lambda n: n["Name"])
    rows = [{"ID": n["Id"] if args.no_trunc else short(n["Id"]), "Name": n["Name"], "Driver": n["Driver"],
             "Scope": n["Scope"], "IPv6": str(bool(n.get("EnableIPv6"))).lower(),
             "Internal": str(bool(n.get("Internal"))).lower(), "CreatedAt": n.get("Created", ""),
             "Labels": ",".join(f"{k}={v}" for k, v in (n.get("Labels") or {}).items())} for n in networks]
    if args.quiet:
        sys.stdout.write("".join(r["ID"] + "\n" for r in rows))
        return 0
    fmt = args.format or "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}"
    sys.stdout.write(render_rows(fmt, rows, HEADERS))
    return 0


def inspect(api: Client, argv: list[str]) -> int:
    from berth.cli.berth_containers import inspect as inspect_any

    p = parser("network inspect", "[OPTIONS] NETWORK [NETWORK...]", "Display detailed information on networks")
    p.add_argument("-f", "--format", default="")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("names", nargs="+")
    args = p.parse_args(argv)
    return inspect_any(api, ["--type", "network", *(["--format", args.format] if args.format else []), *args.names])


def rm(api: Client, argv: list[str]) -> int:
    p = parser("network rm", "NETWORK [NETWORK...]", "Remove one or more networks")
    p.add_argument("-f", "--force", action="store_true", help="Do not error if the network does not exist")
    p.add_argument("names", nargs="+")
    args = p.parse_args(argv)
    failed = False
    for name in args.names:
        try:
            api.delete(f"/networks/{name}")
            print(name)
        except APIError as e:
            if args.force and e.status == 404:
                continue
            sys.stderr.write(f"Error response from daemon: {e.message}\n")
            failed = True
    return 1 if failed else 0


def connect(api: Client, argv: list[str]) -> int:
    p = parser("network connect", "[OPTIONS] NETWORK CONTAINER", "Connect a container to a network")
    p.add_argument("--alias", action="append", default=[], help="Add network-scoped alias for the container")
    p.add_argument("--ip", default="", help="IPv4 address (e.g., 172.30.100.104)")
    p.add_argument("--link", action="append", default=[])
    p.add_argument("network")
    p.add_argument("container")
    args = p.parse_args(argv)
    endpoint: dict[str, Any] = {"Aliases": args.alias or None, "Links": args.link or None}
    if args.ip:
        endpoint["IPAMConfig"] = {"IPv4Address": args.ip}
    api.post(f"/networks/{args.network}/connect", {"Container": args.container, "EndpointConfig": endpoint})
    return 0


def disconnect(api: Client, argv: list[str]) -> int:
    p = parser("network disconnect", "[OPTIONS] NETWORK CONTAINER", "Disconnect a container from a network")
    p.add_argument("-f", "--force", action="store_true", help="Force the container to disconnect from a network")
    p.add_argument("network")
    p.add_argument("container")
    args = p.parse_args(argv)
    api.post(f"/networks/{args.network}/disconnect", {"Container": args.container, "Force": args.force})
    return 0


def prune(api: Client, argv: list[str]) -> int:
    from berth.cli.berth_images import confirm

    p = parser("network prune", "[OPTIONS]", "Remove all unused networks")
    p.add_argument("-f", "--force", action="store_true", help="Do not prompt for confirmation")
    p.add_argument("--filter", action="append", default=[])
    args = p.parse_args(argv)
    if not args.force and not confirm("WARNING! This will remove all custom networks not used by at least one "
                                      "container."):
        return 0
    filters = parse_filters(args.filter)
    answer = api.post("/networks/prune", filters=json.dumps(filters) if filters else None) or {}
    deleted = answer.get("NetworksDeleted") or []
    if deleted:
        print("Deleted Networks:")
        for name in deleted:
            print(name)
    return 0
