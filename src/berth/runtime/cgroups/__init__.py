"""Container cgroups, v1 and v2 behind one interface (runc's libcontainer/cgroups fs and fs2).

Public surface::

    detect_mode(root="/sys/fs/cgroup") -> "v1" | "v2"
    open_cgroup(cgroups_path, container_id, root="/sys/fs/cgroup") -> Cgroup
    from_state(paths) -> Cgroup              # paths as returned by Cgroup.paths()
    Cgroup                                   # the interface (base.py)
      ├── V1Cgroup   (v1.py: legacy and hybrid hierarchies)
      └── V2Cgroup   (v2.py: one cgroup2 mount, its mount point a parameter)

Typical use by the runtime: ``cg = open_cgroup(spec_path, id); cg.create();
cg.set(spec["linux"]["resources"]); cg.add_pid(init_pid)``; save ``cg.paths()`` in
state.json; later ``from_state(saved)`` for pause/resume/events/delete.

Mode. ``detect_mode`` says "v2" when ``root`` holds ``cgroup.controllers`` (the root
of a cgroup2 mount always does; a v1 hierarchy or the tmpfs of legacy/hybrid mode never
does), otherwise "v1". In v1 mode the hierarchies are read from /proc/self/mountinfo
(every cgroup mount under ``root``, whatever its name: cpu and cpuacct may be one mount
or two); a cgroup2 mount under ``root`` (hybrid mode's ``unified``) is joined too, under
the key "", as runc does.

cgroupsPath (runc's cgroupfs driver, see _paths.py):

- absolute ``/a/b``: ``<hierarchy root>/a/b`` in each hierarchy;
- relative ``a/b``: v1 - below the caller's own cgroup in each hierarchy (read from
  /proc/self/cgroup); v2 - below the *parent* of the caller's own cgroup;
- empty: the container id as a relative path (runc's behaviour, not ``/<id>``);
- cleaned first like runc's CleanPath, so ``..`` never climbs out;
- ``slice:prefix:name`` (systemd driver syntax): InvalidArgument;
- a path naming the hierarchy root or the caller's own cgroup: InvalidArgument.

paths() / from_state(). ``{"mode": "v1"|"v2", <controller>: <dir>, ...}``; v2 has one
directory under the key "". One more key, "created", appears when create() had to make
parent directories: the topmost one per hierarchy (newline-separated), so that a later
destroy() from another process removes what create() made and nothing that existed
before. Every other key is a controller name (v1) or "" (the cgroup2 directory).

resources. ``set()`` takes OCI ``linux.resources`` as parsed JSON (runtime-spec
config-linux.md). -1 means unlimited, 0 or absent means "leave as is" (runc). v1 and v2
details, and what each version ignores, are in _v1set.py and _v2set.py; the v1->v2
conversions (cpu.weight from shares, memory.swap.max, io.weight, cpu.max, pids.max) are
in _spec.py. Devices: v1 writes devices.deny "a" then each rule in order when
``devices`` is present (callers wanting runc's always-allowed devices append
``DEFAULT_ALLOWED_DEVICES``); v2 skips devices without error, since v2 device control
needs an eBPF program that Berth does not load.

Errors: ``InvalidArgument`` (a value the spec or the kernel refuses), ``FailedPrecondition``
(busy, controller missing, not permitted), ``NotFound`` (the cgroup is gone); each is one
line such as ``cgroup: write /sys/fs/cgroup/memory/c1/memory.limit_in_bytes=4096:
Device or resource busy (current usage: ..., peak usage: ...)``.

Import cost: importing the package loads only os, berth.errors and two small modules
(base, _spec); the driver for the detected mode and the stats readers are imported when
first needed. No re, json, pathlib, logging or typing.
"""

from __future__ import annotations

import os

from berth.errors import InvalidArgument
from berth.runtime.cgroups._spec import DEFAULT_ALLOWED_DEVICES
from berth.runtime.cgroups.base import Cgroup

__all__ = ["Cgroup", "DEFAULT_ALLOWED_DEVICES", "detect_mode", "from_state", "open_cgroup"]

DEFAULT_ROOT = "/sys/fs/cgroup"


def _norm(root: str) -> str:
    return root.rstrip("/") or "/"


def detect_mode(root: str = DEFAULT_ROOT) -> str:
    """ "v2" if ``root`` is a cgroup2 mount (it holds cgroup.controllers), else "v1"."""
    return "v2" if os.path.exists(_norm(root) + "/cgroup.controllers") else "v1"


def open_cgroup(cgroups_path: str, container_id: str, root: str = DEFAULT_ROOT) -> Cgroup:
    """The container's cgroup for an OCI ``linux.cgroupsPath`` (not created yet)."""
    from berth.runtime.cgroups import _paths

    if not isinstance(cgroups_path, str):
        raise InvalidArgument("cgroup: linux.cgroupsPath must be a string")
    root = _norm(root)
    if detect_mode(root) == "v2":
        from berth.runtime.cgroups.v2 import V2Cgroup

        inner = _paths.inner_path(cgroups_path, container_id)
        mounts = _paths.read_mounts() if not inner.startswith("/") else []
        mount_root = _paths.mount_root_of(root, mounts) if mounts else "/"
        return V2Cgroup(_paths.resolve_v2(cgroups_path, container_id, root, mount_root), mountpoint=root)

    from berth.runtime.cgroups.v1 import V1Cgroup

    dirs = _paths.resolve_v1(cgroups_path, container_id, root, _paths.read_mounts())
    return V1Cgroup(dirs)


def from_state(paths: dict[str, str]) -> Cgroup:
    """Re-open a cgroup from what ``Cgroup.paths()`` returned."""
    if not isinstance(paths, dict) or not paths:
        raise InvalidArgument("cgroup: no cgroup paths in the saved state")
    dirs = {k: v for k, v in paths.items() if k not in ("mode", "created")}
    for key, value in dirs.items():
        if not isinstance(value, str) or not value.startswith("/"):
            raise InvalidArgument(f"cgroup: saved cgroup path for {key!r} is not an absolute path")
    mode = paths.get("mode") or ("v2" if list(dirs) == [""] else "v1")
    created = paths.get("created") or ""
    if mode == "v2":
        from berth.runtime.cgroups.v2 import V2Cgroup

        if "" not in dirs:
            raise InvalidArgument("cgroup: saved cgroup v2 state has no directory")
        return V2Cgroup(dirs[""], created=created)
    if mode == "v1":
        from berth.runtime.cgroups.v1 import V1Cgroup

        return V1Cgroup(dirs, created=[c for c in created.split("\n") if c])
    raise InvalidArgument(f"cgroup: unknown cgroup mode {mode!r} in the saved state")
