"""cgroup v2 (unified): one directory under a cgroup2 mount, like runc's fs2 driver.

The mount point is a parameter, so the same code runs on /sys/fs/cgroup (unified mode),
on /sys/fs/cgroup/unified (the cgroup2 half of hybrid mode) and on a fake tree in tests.

create() enables, top-down, every controller each ancestor offers in its
cgroup.subtree_control (runc does the same), ignoring refusals: an ancestor with
processes of its own cannot delegate domain controllers, and set() then reports the
missing controller by name. Unlike runc, a parent in "domain invalid"/threaded mode is
not switched to threaded mode; the resulting write errors say why.
"""

from __future__ import annotations

import os
import time

from berth.errors import BerthError, FailedPrecondition, InvalidArgument, NotFound
from berth.runtime.cgroups import _fs, _paths, _v2set
from berth.runtime.cgroups.base import Cgroup


def _enable_controllers(d: str) -> None:
    """Enable in ``d``'s subtree_control every controller ``d`` has (runc enables all).

    Errors are ignored as runc does: a cgroup with processes of its own cannot enable
    domain controllers for its children, and a missing one shows up when set() writes.
    """
    available = (_fs.read_or_none(d, "cgroup.controllers") or "").split()
    enabled = (_fs.read_or_none(d, "cgroup.subtree_control") or "").split()
    missing = [c for c in available if c not in enabled]
    if not missing:
        return
    try:
        _fs.write(d, "cgroup.subtree_control", " ".join("+" + c for c in missing))
    except BerthError:
        for c in missing:
            try:
                _fs.write(d, "cgroup.subtree_control", "+" + c)
            except BerthError:
                pass


class V2Cgroup(Cgroup):
    mode = "v2"
    freeze_timeout = 10.0  # seconds to wait for "frozen 1" (runc: 1000 x 10 ms)

    def __init__(self, path: str, mountpoint: str | None = None, created: str = "") -> None:
        if not path.startswith("/"):
            raise InvalidArgument(f"cgroup: v2 cgroup path must be absolute, got {path!r}")
        self._path = path.rstrip("/")
        self._mountpoint = mountpoint.rstrip("/") if mountpoint else None
        self._created = created  # the topmost directory create() made above the leaf

    @property
    def path(self) -> str:
        return self._path

    def create(self) -> None:
        mountpoint = self._mountpoint or _paths.v2_mountpoint_for(self._path)
        if self._path != mountpoint and not self._path.startswith(mountpoint + "/"):
            raise InvalidArgument(f"cgroup: {self._path} is not under the cgroup2 mount {mountpoint}")
        if self._path == mountpoint:
            raise InvalidArgument(f"cgroup: refusing to use the root cgroup {mountpoint} for a container")
        made = _fs.make_dirs(self._path)
        if made and made[0] != self._path and not self._created:
            self._created = made[0]
        # top-down: a controller must be enabled in a parent before its child can enable it
        cur = mountpoint
        for part in self._path[len(mountpoint) + 1:].split("/")[:-1]:
            _enable_controllers(cur)
            cur = cur + "/" + part
        _enable_controllers(cur)

    def add_pid(self, pid: int) -> None:
        _fs.write_pid(self._path, pid)

    def set(self, resources: dict) -> None:
        if not resources:
            return
        if not isinstance(resources, dict):
            raise InvalidArgument("cgroup: linux.resources must be an object")
        _v2set.apply(self._path, resources)

    def freeze(self) -> None:
        if not _fs.exists(self._path, "cgroup.freeze"):
            raise FailedPrecondition(f"cgroup: cannot freeze {self._path}: no cgroup.freeze (kernel < 5.2?)")
        try:
            _fs.write(self._path, "cgroup.freeze", "1")
            if not self._wait_frozen():
                raise FailedPrecondition(f"cgroup: timeout waiting for {self._path} to freeze")
        except BaseException:
            try:
                _fs.write(self._path, "cgroup.freeze", "0")  # never leave it half frozen
            except BerthError:
                pass
            raise

    def _wait_frozen(self) -> bool:
        """Poll cgroup.events until it says "frozen 1"."""
        deadline = time.monotonic() + self.freeze_timeout
        while True:
            events = _fs.read_flat_keyed(self._path, "cgroup.events")
            if events is None:
                raise NotFound(f"cgroup: {self._path} does not exist")
            if events.get("frozen") == 1:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)

    def thaw(self) -> None:
        if not _fs.exists(self._path, "cgroup.freeze"):
            return  # nothing can be frozen without the file
        _fs.write(self._path, "cgroup.freeze", "0")

    def frozen(self) -> bool:
        state = _fs.read_or_none(self._path, "cgroup.freeze")
        if state is None or state.strip() != "1":
            return False
        return self._wait_frozen()

    def pids(self) -> list[int]:
        if not os.path.isdir(self._path):
            raise NotFound(f"cgroup: {self._path} does not exist")
        return _fs.walk_pids(self._path)

    def stats(self) -> dict:
        from berth.runtime.cgroups import _v2stats

        if not os.path.isdir(self._path):
            raise NotFound(f"cgroup: {self._path} does not exist")
        return _v2stats.collect(self._path)

    def oom_kill_count(self) -> int:
        return (_fs.read_flat_keyed(self._path, "memory.events") or {}).get("oom_kill", 0)

    def destroy(self) -> None:
        try:
            _fs.remove_tree(self._path)
        except OSError as err:
            raise FailedPrecondition(
                f"cgroup: rmdir {self._path}: {os.strerror(err.errno) if err.errno else err}") from None
        if self._created:
            _fs.remove_created_parents([self._path], [self._created])

    def exists(self) -> bool:
        return os.path.isdir(self._path)

    def paths(self) -> dict[str, str]:
        out = {"mode": "v2", "": self._path}
        if self._created:
            out["created"] = self._created
        return out
