"""Reading and validating an OCI bundle (config.json + root filesystem)."""

from __future__ import annotations

from berth._sys import jsonfast as json
import os

from berth.errors import InvalidArgument, NotFound

NAMESPACE_TYPES = ("pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time")


def load_config(bundle: str) -> dict:
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise NotFound(f"open {path}: no such file or directory") from None
    except OSError as exc:
        raise InvalidArgument(f"open {path}: {exc.strerror}") from None
    try:
        config = json.loads(raw)
    except ValueError as exc:
        raise InvalidArgument(f"{path}: invalid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise InvalidArgument(f"{path}: the config must be a JSON object")
    validate_config(config)
    return config


def rootfs_path(bundle: str, config: dict) -> str:
    path = config["root"]["path"]
    if not os.path.isabs(path):
        path = os.path.join(bundle, path)
    return os.path.realpath(path)


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise InvalidArgument(message)


def validate_config(config: dict) -> None:
    """Check what the runtime relies on, before anything is created."""
    _require(isinstance(config.get("ociVersion"), str), "config.json: ociVersion must be set")
    root = config.get("root")
    _require(isinstance(root, dict) and isinstance(root.get("path"), str) and bool(root["path"]),
             "config.json: root.path must be set")
    process = config.get("process")
    if process is not None:
        _require(isinstance(process, dict), "config.json: process must be an object")
        validate_process(process)
    linux = config.get("linux") or {}
    _require(isinstance(linux, dict), "config.json: linux must be an object")
    seen: set[str] = set()
    for ns in linux.get("namespaces") or []:
        kind = ns.get("type") if isinstance(ns, dict) else None
        _require(kind in NAMESPACE_TYPES, f"unknown namespace type {kind!r}")
        _require(kind not in seen, f"duplicate namespace type {kind!r}")
        seen.add(kind)
        if ns.get("path"):
            _require(os.path.exists(ns["path"]), f"namespace {kind} path {ns['path']}: no such file or directory")
    if "user" in seen and not any(ns.get("path") for ns in linux["namespaces"] if ns.get("type") == "user"):
        _require(bool(linux.get("uidMappings")) and bool(linux.get("gidMappings")),
                 "user namespaces enabled, but no user mapping found")
    elif linux.get("uidMappings") and "user" not in seen:
        raise InvalidArgument("user mappings found, but no user namespace enabled")
    if linux.get("sysctl") and not isinstance(linux["sysctl"], dict):
        raise InvalidArgument("config.json: linux.sysctl must be an object")
    for mount in config.get("mounts") or []:
        _require(isinstance(mount, dict) and isinstance(mount.get("destination"), str),
                 "config.json: every mount needs a destination")
        _require(os.path.isabs(mount["destination"]),
                 f"mount destination {mount['destination']} is not absolute")
    for phase, hooks in (config.get("hooks") or {}).items():
        for hook in hooks or []:
            _require(isinstance(hook, dict) and isinstance(hook.get("path"), str),
                     f"config.json: a {phase} hook needs a path")
            _require(os.path.isabs(hook["path"]), f"hook path {hook['path']} is not absolute")


def validate_process(process: dict) -> None:
    args = process.get("args")
    _require(isinstance(args, list) and len(args) > 0 and all(isinstance(a, str) for a in args),
             "args must not be empty")
    cwd = process.get("cwd", "/")
    _require(isinstance(cwd, str) and os.path.isabs(cwd), "cwd property must be an absolute path")
    for entry in process.get("env") or []:
        _require(isinstance(entry, str), "env entries must be strings")
    user = process.get("user") or {}
    _require(isinstance(user.get("uid", 0), int) and isinstance(user.get("gid", 0), int),
             "process.user uid and gid must be integers")
    for rl in process.get("rlimits") or []:
        _require(isinstance(rl, dict) and isinstance(rl.get("type"), str), "rlimit needs a type")
