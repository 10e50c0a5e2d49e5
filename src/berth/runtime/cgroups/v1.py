"""cgroup v1 (legacy and hybrid): one directory per mounted hierarchy, like runc's fs driver.

``dirs`` maps each controller to the container's directory in that controller's
hierarchy: "cpu", "cpuacct", ..., "name=systemd", and "" for the cgroup2 mount of hybrid
mode (joined but never configured, as runc does). Co-mounted controllers ("cpu,cpuacct")
share one directory.
"""

from __future__ import annotations

import os

from berth.errors import FailedPrecondition, InvalidArgument, NotFound
from berth.runtime.cgroups import _fs, _v1set
from berth.runtime.cgroups.base import Cgroup


def _copy_cpuset_if_empty(d: str) -> None:
    parent = os.path.dirname(d)
    for name in ("cpuset.cpus", "cpuset.mems"):
        mine = _fs.read_or_none(d, name)
        if mine is None or mine.strip():
            continue
        theirs = (_fs.read_or_none(parent, name) or "").strip()
        if theirs:
            _fs.write(d, name, theirs)


def _ensure_cpuset(leaf: str) -> None:
    """runc's cpusetEnsureParent: every cpuset dir from the hierarchy root down to the
    leaf needs cpus and mems before a task may join, and a new one starts empty."""
    chain = []
    cur = leaf
    while _fs.exists(os.path.dirname(cur), "cpuset.cpus"):
        chain.append(cur)
        cur = os.path.dirname(cur)
    for d in reversed(chain):
        _copy_cpuset_if_empty(d)


class V1Cgroup(Cgroup):
    mode = "v1"

    def __init__(self, dirs: dict[str, str], created: list[str] | None = None) -> None:
        if not dirs:
            raise InvalidArgument("cgroup: no cgroup v1 directories given")
        self._dirs = dict(dirs)
        # the topmost directory create() made above a leaf, per hierarchy (for destroy)
        self._created = list(created or [])

    def dir(self, controller: str) -> str | None:
        return self._dirs.get(controller)

    def _unique(self) -> list[str]:
        out: list[str] = []
        for d in self._dirs.values():
            if d not in out:
                out.append(d)
        return out

    def create(self) -> None:
        cpuset = self._dirs.get("cpuset")
        for d in self._unique():
            made = _fs.make_dirs(d)
            if made and made[0] != d and made[0] not in self._created:
                self._created.append(made[0])
            if d == cpuset:
                _ensure_cpuset(d)

    def add_pid(self, pid: int) -> None:
        for d in self._unique():
            _fs.write_pid(d, pid)

    def set(self, resources: dict) -> None:
        if not resources:
            return
        if not isinstance(resources, dict):
            raise InvalidArgument("cgroup: linux.resources must be an object")
        _v1set.apply(self._dirs, resources)

    def _freezer(self) -> str:
        d = self._dirs.get("freezer")
        if not d:
            raise FailedPrecondition("cgroup: cannot freeze: the freezer controller is not mounted")
        return d

    def freeze(self) -> None:
        _v1set.freeze(self._freezer())

    def thaw(self) -> None:
        _fs.write(self._freezer(), "freezer.state", "THAWED")

    def frozen(self) -> bool:
        d = self._dirs.get("freezer")
        if not d:
            return False
        return _v1set.frozen(d)

    def _procs_dir(self) -> str:
        for key in ("pids", "devices", "memory", "freezer"):
            if key in self._dirs:
                return self._dirs[key]
        return self._unique()[0]

    def pids(self) -> list[int]:
        d = self._procs_dir()
        if not os.path.isdir(d):
            raise NotFound(f"cgroup: {d} does not exist")
        return _fs.walk_pids(d)

    def stats(self) -> dict:
        from berth.runtime.cgroups import _v1stats

        if not any(os.path.isdir(d) for d in self._unique()):
            raise NotFound(f"cgroup: {self._procs_dir()} does not exist")
        return _v1stats.collect(self._dirs)

    def oom_kill_count(self) -> int:
        d = self._dirs.get("memory")
        if not d:
            return 0
        return (_fs.read_flat_keyed(d, "memory.oom_control") or {}).get("oom_kill", 0)

    def destroy(self) -> None:
        failed: list[str] = []
        for d in self._unique():
            try:
                # once one hierarchy stayed busy through the retries, the rest will too
                _fs.remove_tree(d, retry=not failed)
            except OSError as err:
                failed.append(f"rmdir {d}: {os.strerror(err.errno) if err.errno else err}")
        if failed:
            more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
            raise FailedPrecondition(f"cgroup: {failed[0]}{more}")
        _fs.remove_created_parents(self._unique(), self._created)

    def exists(self) -> bool:
        return any(os.path.isdir(d) for d in self._unique())

    def paths(self) -> dict[str, str]:
        out = {"mode": "v1"}
        out.update(self._dirs)
        if self._created:
            out["created"] = "\n".join(self._created)
        return out

