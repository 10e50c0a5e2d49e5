"""The field types of the Docker API's request bodies, checked as Go's JSON decoder does in
dockerd: a value of the wrong type is a 400 before anything is made, with dockerd's
message (``invalid JSON: json: cannot unmarshal string into Go struct field
ContainerConfigWrapper.HostConfig.Memory of type int64``), never a 500 from deep inside.

    check_create(body)      POST /containers/create   (Config + HostConfig + NetworkingConfig)
    check_update(body)      POST /containers/{id}/update
    check_exec(body)        POST /containers/{id}/exec
    check_exec_start(body)  POST /exec/{id}/start

As in Go, ``null`` is allowed everywhere (the zero value), unknown fields are ignored, and
a field's name matches case-insensitively: the body is changed in place to the canonical
names (docker-py sends an exec's ``detachKeys``, which dockerd reads as ``DetachKeys``).
A type is a Go type name (``"string"``, ``"bool"``, ``"int64"``, ``"[]string"``,
``"map[string]string"``, ``"strslice"`` for a string or a list of strings), a dict
(a struct: field -> type), or ``("[]", item)`` / ``("map", value)``.
"""

from __future__ import annotations

from typing import Any

from berth.daemon.http import HTTPError

_INT_RANGES = {
    "int": (-(1 << 63), (1 << 63) - 1), "int64": (-(1 << 63), (1 << 63) - 1), "uint16": (0, (1 << 16) - 1),
    "uint32": (0, (1 << 32) - 1), "uint64": (0, (1 << 64) - 1), "uint": (0, (1 << 64) - 1),
}

_THROTTLE = ("[]", {"Path": "string", "Rate": "uint64"})

RESOURCES: dict[str, Any] = {
    "CgroupParent": "string", "BlkioWeight": "uint16",
    "BlkioWeightDevice": ("[]", {"Path": "string", "Weight": "uint16"}),
    "BlkioDeviceReadBps": _THROTTLE, "BlkioDeviceWriteBps": _THROTTLE, "BlkioDeviceReadIOps": _THROTTLE,
    "BlkioDeviceWriteIOps": _THROTTLE, "CpuShares": "int64", "Memory": "int64", "NanoCpus": "int64",
    "CpuPeriod": "int64", "CpuQuota": "int64", "CpuRealtimePeriod": "int64", "CpuRealtimeRuntime": "int64",
    "CpusetCpus": "string", "CpusetMems": "string",
    "Devices": ("[]", {"PathOnHost": "string", "PathInContainer": "string", "CgroupPermissions": "string"}),
    "DeviceCgroupRules": "[]string", "KernelMemory": "int64", "KernelMemoryTCP": "int64",
    "MemoryReservation": "int64", "MemorySwap": "int64", "MemorySwappiness": "int64", "OomKillDisable": "bool",
    "PidsLimit": "int64", "Ulimits": ("[]", {"Name": "string", "Hard": "int64", "Soft": "int64"}),
    "CpuCount": "int64", "CpuPercent": "int64", "IOMaximumIOps": "uint64", "IOMaximumBandwidth": "uint64",
}

RESTART_POLICY = {"Name": "string", "MaximumRetryCount": "int"}

HOST_CONFIG: dict[str, Any] = {
    **RESOURCES,
    "Binds": "[]string", "ContainerIDFile": "string",
    "LogConfig": {"Type": "string", "Config": "map[string]string"}, "NetworkMode": "string",
    "PortBindings": ("map", ("[]", {"HostIp": "string", "HostPort": "string"})),
    "RestartPolicy": RESTART_POLICY, "AutoRemove": "bool", "VolumeDriver": "string", "VolumesFrom": "[]string",
    "ConsoleSize": ("[]", "uint"), "Annotations": "map[string]string", "CapAdd": "strslice", "CapDrop": "strslice",
    "CgroupnsMode": "string", "Dns": "[]string", "DnsOptions": "[]string", "DnsSearch": "[]string",
    "ExtraHosts": "[]string", "GroupAdd": "[]string", "IpcMode": "string", "Cgroup": "string", "Links": "[]string",
    "OomScoreAdj": "int", "PidMode": "string", "Privileged": "bool", "PublishAllPorts": "bool",
    "ReadonlyRootfs": "bool", "SecurityOpt": "[]string", "StorageOpt": "map[string]string",
    "Tmpfs": "map[string]string", "UTSMode": "string", "UsernsMode": "string", "ShmSize": "int64",
    "Sysctls": "map[string]string", "Runtime": "string", "Isolation": "string",
    "Mounts": ("[]", {
        "Type": "string", "Source": "string", "Target": "string", "ReadOnly": "bool", "Consistency": "string",
        "BindOptions": {"Propagation": "string", "NonRecursive": "bool", "CreateMountpoint": "bool"},
        "VolumeOptions": {"NoCopy": "bool", "Labels": "map[string]string",
                          "DriverConfig": {"Name": "string", "Options": "map[string]string"}},
        "TmpfsOptions": {"SizeBytes": "int64", "Mode": "uint32"},
    }),
    "MaskedPaths": "[]string", "ReadonlyPaths": "[]string", "Init": "bool",
}

CONFIG: dict[str, Any] = {
    "Hostname": "string", "Domainname": "string", "User": "string", "AttachStdin": "bool",
    "AttachStdout": "bool", "AttachStderr": "bool", "ExposedPorts": ("map", None), "Tty": "bool",
    "OpenStdin": "bool", "StdinOnce": "bool", "Env": "[]string", "Cmd": "strslice",
    "Healthcheck": {"Test": "[]string", "Interval": "int64", "Timeout": "int64", "StartPeriod": "int64",
                    "StartInterval": "int64", "Retries": "int"},
    "ArgsEscaped": "bool", "Image": "string", "Volumes": ("map", None), "WorkingDir": "string",
    "Entrypoint": "strslice", "NetworkDisabled": "bool", "MacAddress": "string", "OnBuild": "[]string",
    "Labels": "map[string]string", "StopSignal": "string", "StopTimeout": "int", "Shell": "strslice",
}

CREATE: dict[str, Any] = {
    **CONFIG, "HostConfig": HOST_CONFIG,
    "NetworkingConfig": {"EndpointsConfig": ("map", {
        "IPAMConfig": {"IPv4Address": "string", "IPv6Address": "string", "LinkLocalIPs": "[]string"},
        "Links": "[]string", "Aliases": "[]string", "NetworkID": "string", "EndpointID": "string",
        "Gateway": "string", "IPAddress": "string", "IPPrefixLen": "int", "MacAddress": "string",
        "DriverOpts": "map[string]string"})},
}

UPDATE: dict[str, Any] = {**RESOURCES, "RestartPolicy": RESTART_POLICY}

EXEC: dict[str, Any] = {
    "User": "string", "Privileged": "bool", "Tty": "bool", "ConsoleSize": ("[]", "uint"), "AttachStdin": "bool",
    "AttachStderr": "bool", "AttachStdout": "bool", "Detach": "bool", "DetachKeys": "string", "Env": "[]string",
    "WorkingDir": "string", "Cmd": "strslice",
}

EXEC_START: dict[str, Any] = {"Detach": "bool", "Tty": "bool", "ConsoleSize": ("[]", "uint")}

_GO_NAMES = {id(HOST_CONFIG): "container.HostConfig", id(CONFIG): "container.Config"}


def check_create(body: dict) -> None:
    _check(body, CREATE, "ContainerConfigWrapper", "")


def check_update(body: dict) -> None:
    _check(body, UPDATE, "UpdateConfig", "")


def check_exec(body: dict) -> None:
    _check(body, EXEC, "ExecConfig", "")


def check_exec_start(body: dict) -> None:
    _check(body, EXEC_START, "ExecStartCheck", "")


def json_kind(value: Any) -> str:
    """A decoded JSON value as Go's decoder names it in its errors."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _fail(value: Any, top: str, path: str, go_type: str, literal: bool = False) -> None:
    what = f"number {value}" if literal else json_kind(value)
    where = f"Go struct field {top}.{path}" if path else f"Go value of type {top}"
    suffix = f" of type {go_type}" if path else ""
    raise HTTPError(400, f"invalid JSON: json: cannot unmarshal {what} into {where}{suffix}")


def _type_name(spec: Any) -> str:
    if isinstance(spec, str):
        return "[]string" if spec == "strslice" else spec
    if isinstance(spec, dict):
        return _GO_NAMES.get(id(spec), "struct")
    kind, item = spec
    if kind == "[]":
        return "[]" + _type_name(item)
    return "map[string]" + ("struct {}" if item is None else _type_name(item))


def _canonical_keys(value: dict, spec: dict) -> None:
    """Go's decoder matches a field name case-insensitively when none matches exactly."""
    lower = {key.lower(): key for key in spec}
    for key in list(value):
        if key not in spec:
            canonical = lower.get(key.lower())
            if canonical is not None and canonical not in value:
                value[canonical] = value.pop(key)


def _check(value: Any, spec: Any, top: str, path: str) -> None:  # noqa: C901 - one branch per Go kind
    if value is None:
        return
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            _fail(value, top, path, _type_name(spec))
        _canonical_keys(value, spec)
        for key, sub in spec.items():
            if key in value:
                _check(value[key], sub, top, f"{path}.{key}" if path else key)
        return
    if isinstance(spec, tuple):
        kind, item = spec
        if kind == "[]":
            if not isinstance(value, list):
                _fail(value, top, path, _type_name(spec))
            for element in value:
                _check(element, item, top, path)
        else:
            if not isinstance(value, dict):
                _fail(value, top, path, _type_name(spec))
            if item is not None:
                for element in value.values():
                    _check(element, item, top, path)
        return
    if spec == "string":
        if not isinstance(value, str):
            _fail(value, top, path, "string")
    elif spec == "bool":
        if not isinstance(value, bool):
            _fail(value, top, path, "bool")
    elif spec in _INT_RANGES:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(value, top, path, spec)
        low, high = _INT_RANGES[spec]
        if isinstance(value, float) or not low <= value <= high:
            _fail(value, top, path, spec, literal=True)
    elif spec == "[]string":
        if not isinstance(value, list):
            _fail(value, top, path, "[]string")
        for element in value:
            if not isinstance(element, str):
                _fail(element, top, path, "string")
    elif spec == "strslice":  # Go's strslice.StrSlice: a string or a list of strings
        if isinstance(value, str):
            return
        if not isinstance(value, list):
            _fail(value, top, path, "string")
        for element in value:
            if not isinstance(element, str):
                _fail(element, top, path, "string")
    elif spec == "map[string]string":
        if not isinstance(value, dict):
            _fail(value, top, path, "map[string]string")
        for element in value.values():
            if element is not None and not isinstance(element, str):
                _fail(element, top, path, "string")
    else:  # pragma: no cover - a typo in the tables above
        raise AssertionError(f"unknown type {spec!r}")
