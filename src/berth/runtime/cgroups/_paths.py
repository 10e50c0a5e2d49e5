"""Where a container's cgroup lives: mountinfo, /proc/self/cgroup and runc's path rules.

The rules are runc's cgroupfs driver (libcontainer/cgroups/fs/paths.go and
fs2/defaultpath.go, with specconv's handling of an empty ``linux.cgroupsPath``):

- the path is first cleaned like runc's ``utils.CleanPath`` (``..`` cannot escape);
- absolute: relative to the root of each hierarchy (v1: each controller's mount point;
  v2: the cgroup2 mount);
- relative: v1 - under the calling process's own cgroup in each hierarchy (from
  /proc/self/cgroup, minus the mount's root); v2 - under the *parent* of the caller's
  own cgroup (runc: the caller's cgroup most likely has processes, so no controllers
  can be enabled below it);
- empty: the container id, taken as a relative path (so ``<own cgroup>/<id>``), which
  is what runc does (specconv sets Name=id, Path="");
- the systemd form ``slice:prefix:name`` (relative, exactly two colons) is refused;
- a path that resolves to the hierarchy root or the caller's own cgroup is refused,
  since destroy() would then remove someone else's cgroup.
"""

from __future__ import annotations

import os

from berth.errors import FailedPrecondition, InvalidArgument


class Mount:
    """One cgroup or cgroup2 mount from /proc/self/mountinfo."""

    __slots__ = ("mountpoint", "root", "fstype", "controllers")

    def __init__(self, mountpoint: str, root: str, fstype: str, controllers: list[str]) -> None:
        self.mountpoint = mountpoint
        self.root = root  # the cgroup that is mounted there ("/" unless bind/cgroupns)
        self.fstype = fstype  # "cgroup" (v1) or "cgroup2"
        self.controllers = controllers  # v1: ["cpu", "cpuacct"], ["name=systemd"]; v2: []

    def __repr__(self) -> str:
        return f"Mount({self.mountpoint!r}, {self.root!r}, {self.fstype!r}, {self.controllers!r})"


def _unescape(field: str) -> str:
    r"""mountinfo escapes space, tab, newline and backslash as \040, \011, \012, \134."""
    if "\\" not in field:
        return field
    out = []
    i = 0
    while i < len(field):
        c = field[i]
        digits = field[i + 1:i + 4]
        if c == "\\" and len(digits) == 3 and all(d in "01234567" for d in digits):
            out.append(chr(int(digits, 8)))
            i += 4
        else:
            out.append(c)
            i += 1
    return "".join(out)


def known_v1_controllers(proc_cgroups: str | None = None) -> set[str]:
    """Controller names from /proc/cgroups (enabled ones), used to read mount options."""
    if proc_cgroups is None:
        try:
            with open("/proc/cgroups", encoding="ascii") as f:
                proc_cgroups = f.read()
        except OSError:
            proc_cgroups = ""
    names: set[str] = set()
    for line in proc_cgroups.splitlines():
        if not line or line[0] == "#":
            continue
        parts = line.split()
        if len(parts) >= 4 and parts[3] != "0":
            names.add(parts[0])
    return names


def parse_mountinfo(text: str, known: set[str]) -> list[Mount]:
    """The cgroup and cgroup2 mounts in a mountinfo text, in order."""
    mounts: list[Mount] = []
    for line in text.splitlines():
        fields = line.split()
        try:
            sep = fields.index("-", 6)
        except ValueError:
            continue
        if len(fields) < sep + 4:
            continue
        fstype = fields[sep + 1]
        if fstype not in ("cgroup", "cgroup2"):
            continue
        controllers: list[str] = []
        if fstype == "cgroup":
            for opt in fields[sep + 3].split(","):
                if opt in known or opt.startswith("name="):
                    controllers.append(opt)
        mounts.append(Mount(_unescape(fields[4]), _unescape(fields[3]), fstype, controllers))
    return mounts


def read_mounts() -> list[Mount]:
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        text = f.read()
    return parse_mountinfo(text, known_v1_controllers())


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """/proc/PID/cgroup as {controller: path}; the v2 line ("0::/x") is under key ""."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        for name in parts[1].split(","):
            out[name] = parts[2]
    return out


def read_own_cgroup() -> dict[str, str]:
    with open("/proc/self/cgroup", encoding="utf-8", errors="surrogateescape") as f:
        return parse_proc_cgroup(f.read())


def _clean(path: str) -> str:
    """Go's filepath.Clean for absolute or relative paths (no leading "//" kept)."""
    absolute = path.startswith("/")
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not absolute:
                parts.append("..")
            continue
        parts.append(part)
    joined = "/".join(parts)
    if absolute:
        return "/" + joined
    return joined or "."


def clean_path(path: str) -> str:
    """runc's utils.CleanPath: clean, and make a relative path unable to climb with "..".

    "" stays "", "/a/../../b" is "/b", "a/../../b" is "b", ".." is ".".
    """
    if path == "":
        return ""
    path = _clean(path)
    if not path.startswith("/"):
        path = _clean("/" + path)[1:] or "."
    return path


def is_systemd_form(path: str) -> bool:
    return not path.startswith("/") and path.count(":") == 2


def inner_path(cgroups_path: str, container_id: str) -> str:
    """The cleaned path inside each hierarchy (absolute) or below the caller's cgroup."""
    if is_systemd_form(cgroups_path):
        raise InvalidArgument("systemd cgroup driver is not supported")
    inner = clean_path(cgroups_path)
    if inner == "":
        if not container_id:
            raise InvalidArgument("cgroup: empty cgroupsPath and no container id")
        inner = clean_path(container_id)
    if inner in ("/", "."):
        raise InvalidArgument(f"cgroup: cgroupsPath {cgroups_path!r} names an existing parent cgroup, not a new one")
    return inner


def _join(base: str, *rest: str) -> str:
    out = base.rstrip("/") or "/"
    for r in rest:
        r = r.strip("/")
        if r and r != ".":
            out = out.rstrip("/") + "/" + r
    return out


def _relative_to_mount(own: str, mount_root: str) -> str:
    """An own-cgroup path as seen below a mount whose root is ``mount_root``."""
    if mount_root in ("", "/"):
        return own
    if own == mount_root:
        return "/"
    if own.startswith(mount_root.rstrip("/") + "/"):
        return own[len(mount_root.rstrip("/")):]
    # the mount shows another part of the tree (cgroup namespace): take own as-is
    return own


def v1_hierarchies(mounts: list[Mount], root: str) -> list[tuple[str, Mount]]:
    """(key, mount) for every hierarchy mounted under ``root`` in hybrid/legacy mode.

    Keys are controller names ("cpu", "cpuacct", "name=systemd", ...); a co-mounted
    hierarchy gives one key per controller (same mount). The cgroup2 mount of hybrid
    mode (e.g. ``root/unified``) has key "", as in runc.
    """
    prefix = root.rstrip("/") + "/"
    out: list[tuple[str, Mount]] = []
    seen: set[str] = set()
    for m in mounts:
        if not m.mountpoint.startswith(prefix):
            continue
        keys = m.controllers if m.fstype == "cgroup" else [""]
        for key in keys:
            if key not in seen:
                seen.add(key)
                out.append((key, m))
    return out


def resolve_v1(cgroups_path: str, container_id: str, root: str, mounts: list[Mount],
               own: dict[str, str] | None = None) -> dict[str, str]:
    """{controller: directory} for the v1 (hybrid or legacy) hierarchies under root."""
    inner = inner_path(cgroups_path, container_id)
    hierarchies = v1_hierarchies(mounts, root)
    if not hierarchies:
        raise FailedPrecondition(f"cgroup: no cgroup hierarchies are mounted under {root}")
    dirs: dict[str, str] = {}
    for key, m in hierarchies:
        if inner.startswith("/"):
            dirs[key] = _join(m.mountpoint, inner)
            continue
        if own is None:
            own = read_own_cgroup()
        own_path = own.get(key)
        if own_path is None:
            continue  # we are not in that hierarchy at all; runc skips it too
        dirs[key] = _join(m.mountpoint, _relative_to_mount(own_path, m.root), inner)
    return dirs


def resolve_v2(cgroups_path: str, container_id: str, root: str, mount_root: str = "/",
               own: dict[str, str] | None = None) -> str:
    """The cgroup directory under a cgroup2 mount at ``root``."""
    inner = inner_path(cgroups_path, container_id)
    if inner.startswith("/"):
        return _join(root, inner)
    if own is None:
        own = read_own_cgroup()
    own_path = own.get("")
    if own_path is None:
        raise FailedPrecondition("cgroup: the calling process has no cgroup v2 entry in /proc/self/cgroup")
    own_path = _relative_to_mount(own_path, mount_root)
    parent = os.path.dirname(own_path.rstrip("/")) or "/"
    return _join(root, parent, inner)


def mount_root_of(root: str, mounts: list[Mount]) -> str:
    """The mountinfo root field of the mount at ``root`` ("/" when it is not a mount)."""
    root = root.rstrip("/") or "/"
    for m in mounts:
        if m.mountpoint == root:
            return m.root
    return "/"


def v2_mountpoint_for(directory: str) -> str:
    """The cgroup2 mount point that holds ``directory``.

    From mountinfo (longest cgroup2 mount point prefix); for a directory outside any
    cgroup2 mount (a fake tree in tests), the topmost ancestor holding cgroup.controllers.
    """
    best = ""
    try:
        mounts = read_mounts()
    except OSError:
        mounts = []
    for m in mounts:
        if m.fstype == "cgroup2":
            mp = m.mountpoint.rstrip("/") or "/"
            if (directory == mp or directory.startswith(mp.rstrip("/") + "/")) and len(mp) > len(best):
                best = mp
    if best:
        return best
    top = directory
    cur = directory
    while True:
        if os.path.exists(cur + "/cgroup.controllers"):
            top = cur
        parent = os.path.dirname(cur)
        if parent == cur:
            return top
        cur = parent
