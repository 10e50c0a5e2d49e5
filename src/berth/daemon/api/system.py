"""System endpoints: ``/_ping``, ``/version``, ``/info``, ``/events``, ``/system/df``, and
``/swarm`` answered as by a dockerd that is not part of a swarm."""

from __future__ import annotations

import json
import os
import platform
import time

from berth import __version__
from berth.daemon.http import HTTPError, Request, Response, StreamResponse, json_response
from berth.daemon.router import API_VERSION, MIN_API_VERSION, Router


def register(router: Router, daemon) -> None:  # noqa: ANN001, C901 - one closure per endpoint
    @router.route("GET", "/_ping")
    async def ping(request: Request) -> Response:
        headers = {"Cache-Control": "no-cache, no-store, must-revalidate", "Pragma": "no-cache"}
        return Response(200, b"" if request.method == "HEAD" else b"OK", "text/plain; charset=utf-8", headers)

    router.add("HEAD", "/_ping", ping)

    @router.route("GET", "/version")
    async def version(request: Request) -> Response:
        uname = os.uname()
        return json_response({
            "Platform": {"Name": "Berth"},
            "Components": [{"Name": "Engine", "Version": __version__,
                            "Details": {"ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION,
                                        "Os": "linux", "Arch": _arch(), "KernelVersion": uname.release}}],
            "Version": __version__, "ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION,
            "GitCommit": "", "GoVersion": "python" + platform.python_version(), "Os": "linux", "Arch": _arch(),
            "KernelVersion": uname.release, "BuildTime": "",
        })

    @router.route("GET", "/info")
    async def info(request: Request) -> Response:
        counts = daemon.services["containers"].counts()
        uname = os.uname()
        return json_response({
            "ID": _daemon_id(daemon), "Containers": counts["total"], "ContainersRunning": counts["running"],
            "ContainersPaused": counts["paused"], "ContainersStopped": counts["stopped"],
            "Images": daemon.services["images"].count(), "Driver": "overlay2", "DriverStatus": [],
            "DockerRootDir": daemon.config.data_root, "Plugins": {"Volume": ["local"], "Network": ["bridge", "host", "null"],
                                                                  "Log": ["json-file"]},
            "MemoryLimit": True, "SwapLimit": True, "CpuCfsPeriod": True, "CpuCfsQuota": True, "CPUShares": True,
            "CPUSet": True, "PidsLimit": True, "OomKillDisable": True, "IPv4Forwarding": True,
            "Debug": daemon.config.debug, "ExperimentalBuild": False, "NFd": len(os.listdir("/proc/self/fd")), "NGoroutines": 0,
            "SystemTime": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z", "LoggingDriver": "json-file",
            "CgroupDriver": "cgroupfs", "CgroupVersion": _cgroup_version(), "KernelVersion": uname.release,
            "OperatingSystem": _os_name(), "OSType": "linux", "Architecture": uname.machine,
            "NCPU": os.cpu_count() or 1, "MemTotal": _mem_total(), "Name": uname.nodename, "Labels": [],
            "ServerVersion": __version__, "DefaultRuntime": daemon.config.default_runtime,
            "Runtimes": {name: {"path": path} for name, path in daemon.config.runtimes.items()},
            "Swarm": {"LocalNodeState": "inactive"}, "LiveRestoreEnabled": True, "Isolation": "",
            "InitBinary": "", "SecurityOptions": ["name=seccomp,profile=builtin"], "Warnings": [],
            "RegistryConfig": {"InsecureRegistryCIDRs": ["127.0.0.0/8"], "IndexConfigs": {},
                               "Mirrors": []},
        })

    @router.route("GET", "/events")
    async def events(request: Request) -> StreamResponse:
        since = _timestamp(request.arg("since"))
        until = _timestamp(request.arg("until"))
        filters = request.json_arg("filters", {}) or {}
        if not isinstance(filters, dict):
            raise HTTPError(400, "invalid filters")
        filters = {k: (list(v) if isinstance(v, (list, dict)) else [v]) for k, v in filters.items()}

        async def chunks():  # noqa: ANN202
            async for event in daemon.events.stream(since, until, filters):
                yield (json.dumps(event) + "\n").encode()

        return StreamResponse(chunks())

    @router.route("GET", "/system/df")
    async def df(request: Request) -> Response:
        images, containers = daemon.services["images"], daemon.services["containers"]
        return json_response({
            "LayersSize": images.layers_size(),
            "Images": images.summaries(),
            "Containers": containers.summaries(all_=True, size=True),
            "Volumes": daemon.services["volumes"].summaries(),
            "BuildCache": [],
        })

    # no swarm mode: dockerd's answers on a node that is not part of a swarm (docker-py's
    # `leave_swarm(force=True)` takes the 503 for "nothing to leave")
    @router.route("GET", "/swarm")
    async def swarm(request: Request) -> Response:
        raise HTTPError(503, "This node is not a swarm manager. Use \"docker swarm init\" or \"docker swarm join\" "
                             "to connect this node to swarm and try again.")

    @router.route("POST", "/swarm/leave")
    async def swarm_leave(request: Request) -> Response:
        raise HTTPError(503, "This node is not part of a swarm")

    @router.route("POST", "/swarm/init")
    async def swarm_init(request: Request) -> Response:
        raise HTTPError(501, "swarm mode is not supported by berthd")


def _timestamp(raw: str) -> float | None:
    """Docker's --since/--until: unix seconds (with fraction) or RFC 3339, or a duration ago."""
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        pass
    try:
        text = raw.rstrip("Z").split(".")[0]
        return time.mktime(time.strptime(text, "%Y-%m-%dT%H:%M:%S")) - time.timezone
    except ValueError:
        raise HTTPError(400, f"invalid timestamp: {raw}") from None


def _arch() -> str:
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)


def _cgroup_version() -> str:
    return "2" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else "1"


def _os_name() -> str:
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "Linux"


def _mem_total() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def _daemon_id(daemon) -> str:  # noqa: ANN001
    path = os.path.join(daemon.config.data_root, "engine-id")
    try:
        with open(path) as f:
            return f.read().strip()
    except FileNotFoundError:
        import uuid

        value = str(uuid.uuid4()).upper()
        from berth._sys.files import atomic_write

        atomic_write(path, value.encode(), 0o600)
        return value
