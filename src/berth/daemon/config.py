"""berthd's settings: where it keeps things, which runtimes it knows, which registries are
insecure. Every path is configurable so that tests run daemons side by side."""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field


def _default_berth_runtime() -> str:
    beside = os.path.join(os.path.dirname(sys.executable), "berth-runtime")
    return beside if os.path.exists(beside) else (shutil.which("berth-runtime") or "berth-runtime")


def _default_shim() -> str:
    beside = os.path.join(os.path.dirname(sys.executable), "berth-shim")
    return beside if os.path.exists(beside) else (shutil.which("berth-shim") or "berth-shim")


@dataclass
class DaemonConfig:
    data_root: str = "/var/lib/berth"
    exec_root: str = "/run/berth"
    socket_path: str = ""                      # default: <exec_root>/berth.sock
    socket_mode: int = 0o660
    pidfile: str = ""                          # default: <exec_root>/berthd.pid
    runtimes: dict[str, str] = field(default_factory=dict)
    default_runtime: str = "berth"
    shim_path: str = field(default_factory=_default_shim)
    insecure_registries: list[str] = field(default_factory=list)
    cgroup_parent: str = "/berth"
    log_max_size: int = 0                      # json-file log rotation defaults (0: no rotation)
    log_max_file: int = 1
    bridge: str = ""                           # default network's bridge ("": berth0, see services.networks)
    bip: str = ""                              # its gateway address and subnet, e.g. 10.213.0.1/24
    debug: bool = False

    def __post_init__(self) -> None:
        self.socket_path = self.socket_path or os.path.join(self.exec_root, "berth.sock")
        self.pidfile = self.pidfile or os.path.join(self.exec_root, "berthd.pid")
        known = {"berth": _default_berth_runtime()}
        for name, path in (("runc", "runc"), ("crun", "crun")):
            found = shutil.which(path)
            if found:
                known[name] = found
        known.update(self.runtimes)
        self.runtimes = known

    # layout (DESIGN.md "On disk")
    @property
    def content_root(self) -> str:
        return os.path.join(self.data_root, "content")

    @property
    def snapshots_root(self) -> str:
        return os.path.join(self.data_root, "snapshots", "overlay")

    @property
    def containers_root(self) -> str:
        return os.path.join(self.data_root, "containers")

    @property
    def volumes_root(self) -> str:
        return os.path.join(self.data_root, "volumes")

    @property
    def metadata_path(self) -> str:
        return os.path.join(self.data_root, "metadata.db")

    @property
    def shims_root(self) -> str:
        return os.path.join(self.exec_root, "shims")

    @property
    def runtime_root(self) -> str:
        return os.path.join(self.exec_root, "runtime")

    def runtime_path(self, name: str) -> str:
        from berth.errors import InvalidArgument

        try:
            return self.runtimes[name]
        except KeyError:
            raise InvalidArgument(f"unknown or invalid runtime name: {name}") from None
