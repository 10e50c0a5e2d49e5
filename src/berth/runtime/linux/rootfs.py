"""The container's root filesystem: mounts, devices, pivot_root, masked and read-only paths.

Everything here runs in the container's init, inside its new mount namespace.
"""

from __future__ import annotations

import errno
import os
import stat

from berth._sys import libc
from berth.runtime.linux import mountopts
from berth.runtime.linux.paths import secure_join

DEFAULT_DEVICES = (
    # path, type, major, minor
    ("/dev/null", "c", 1, 3), ("/dev/zero", "c", 1, 5), ("/dev/full", "c", 1, 7),
    ("/dev/random", "c", 1, 8), ("/dev/urandom", "c", 1, 9), ("/dev/tty", "c", 5, 0),
)
DEFAULT_SYMLINKS = (
    ("/proc/self/fd", "/dev/fd"), ("/proc/self/fd/0", "/dev/stdin"),
    ("/proc/self/fd/1", "/dev/stdout"), ("/proc/self/fd/2", "/dev/stderr"),
)
_ST_TO_MS = (
    (os.ST_RDONLY, libc.MS_RDONLY), (os.ST_NOSUID, libc.MS_NOSUID), (os.ST_NODEV, libc.MS_NODEV),
    (os.ST_NOEXEC, libc.MS_NOEXEC), (os.ST_NOATIME, libc.MS_NOATIME),
    (os.ST_NODIRATIME, libc.MS_NODIRATIME), (os.ST_RELATIME, libc.MS_RELATIME),
)


def locked_flags(path: str) -> int:
    """The flags a bind remount must keep (the kernel locks them in user namespaces)."""
    vfs = os.statvfs(path)
    return sum(ms for st_flag, ms in _ST_TO_MS if vfs.f_flag & st_flag)


def prepare_root(rootfs: str, propagation: str | None) -> None:
    flags = mountopts.PROPAGATION_OPTIONS.get(propagation or "rslave", libc.MS_SLAVE | libc.MS_REC)
    libc.mount(None, "/", None, flags)
    make_parent_private(rootfs)
    libc.mount(rootfs, rootfs, "bind", libc.MS_BIND | libc.MS_REC)


def make_parent_private(rootfs: str) -> None:
    """pivot_root needs the new root's parent mount not to be shared."""
    best, shared = "", False
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            point = fields[4]
            if (rootfs == point or rootfs.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
                best = point
                shared = any(x.startswith("shared:") for x in fields[6:fields.index("-")])
    if best and shared:
        libc.mount(None, best, None, libc.MS_PRIVATE)


def _make_target(dest: str, is_file: bool) -> None:
    if os.path.lexists(dest):
        return
    if is_file:
        os.makedirs(os.path.dirname(dest), mode=0o755, exist_ok=True)
        os.close(os.open(dest, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o755))
    else:
        os.makedirs(dest, mode=0o755, exist_ok=True)


def mount_entry(rootfs: str, entry: dict, cgroup_paths: dict[str, str] | None, new_cgroupns: bool,
                mount_label_ok: bool = True) -> None:
    dest = secure_join(rootfs, entry["destination"])
    kind = entry.get("type") or ""
    source = entry.get("source") or kind
    opts = mountopts.parse(entry.get("options"))
    is_bind = bool(opts.flags & libc.MS_BIND) or kind == "bind"
    data = ",".join(opts.data) or None
    if kind == "cgroup":
        _mount_cgroup(dest, opts, cgroup_paths or {}, new_cgroupns)
    elif is_bind:
        if not os.path.exists(source):
            raise OSError(errno.ENOENT, f"mount source {source} for {entry['destination']}: no such file or directory")
        _make_target(dest, not os.path.isdir(source))
        libc.mount(source, dest, "bind", opts.flags & (libc.MS_BIND | libc.MS_REC) | libc.MS_BIND)
        extra = opts.flags & ~(libc.MS_BIND | libc.MS_REC | libc.MS_REMOUNT)
        if extra:
            libc.mount(None, dest, None, libc.MS_BIND | libc.MS_REMOUNT | extra | locked_flags(dest) & ~libc.MS_RDONLY
                       | (extra & libc.MS_RDONLY))
    else:
        _make_target(dest, False)
        try:
            libc.mount(source, dest, kind, opts.flags & ~libc.MS_REMOUNT, data)
        except PermissionError:
            if kind != "sysfs":
                raise
            # sysfs needs the network namespace's owner: fall back to the host's, read-only
            libc.mount("/sys", dest, "bind", libc.MS_BIND | libc.MS_REC)
            libc.mount(None, dest, None, libc.MS_BIND | libc.MS_REMOUNT | libc.MS_RDONLY | locked_flags(dest))
    for prop in opts.propagation:
        libc.mount(None, dest, None, prop)
    if opts.attr_set or opts.attr_clr:
        libc.mount_setattr(dest, opts.attr_set, opts.attr_clr, recursive=True)


def _mount_cgroup(dest: str, opts: mountopts.MountOptions, paths: dict[str, str], new_ns: bool) -> None:
    _make_target(dest, False)
    flags = opts.flags & ~(libc.MS_BIND | libc.MS_REC | libc.MS_REMOUNT)
    if paths.get("mode") == "v2":
        if new_ns:
            libc.mount("cgroup2", dest, "cgroup2", flags)
        else:
            libc.mount(paths[""], dest, "bind", libc.MS_BIND | libc.MS_REC)
            libc.mount(None, dest, None, libc.MS_BIND | libc.MS_REMOUNT | flags | locked_flags(dest))
        return
    libc.mount("tmpfs", dest, "tmpfs", flags & ~libc.MS_RDONLY, "mode=755")
    for name, host_dir in paths.items():
        if name in ("mode", "created") or not host_dir:
            continue
        sub = "unified" if name == "" else name[5:] if name.startswith("name=") else name
        target = os.path.join(dest, sub)
        os.makedirs(target, exist_ok=True)
        libc.mount(host_dir, target, "bind", libc.MS_BIND | libc.MS_REC)
        libc.mount(None, target, None, libc.MS_BIND | libc.MS_REMOUNT | flags | locked_flags(target))
    if flags & libc.MS_RDONLY:
        libc.mount(None, dest, None, libc.MS_REMOUNT | flags, "mode=755")


def create_devices(rootfs: str, devices: list[dict], bind_from_host: bool) -> None:
    wanted = {p: (t, ma, mi, 0o666, 0, 0) for p, t, ma, mi in DEFAULT_DEVICES}
    for dev in devices:
        wanted[dev["path"]] = (dev.get("type", "c"), dev.get("major", 0), dev.get("minor", 0),
                               dev.get("fileMode", 0o666), dev.get("uid", 0), dev.get("gid", 0))
    old_umask = os.umask(0)
    try:
        for path, (kind, major, minor, mode, uid, gid) in wanted.items():
            dest = secure_join(rootfs, path)
            os.makedirs(os.path.dirname(dest), mode=0o755, exist_ok=True)
            if bind_from_host:
                _make_target(dest, True)
                libc.mount(path, dest, "bind", libc.MS_BIND)
                continue
            type_bits = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}.get(kind)
            if type_bits is None:
                raise OSError(errno.EINVAL, f"device {path}: unknown type {kind!r}")
            if os.path.lexists(dest):
                if os.path.ismount(dest):
                    continue
                os.unlink(dest)
            try:
                os.mknod(dest, type_bits | (mode & 0o7777), os.makedev(major, minor))
                os.chown(dest, uid, gid)
            except OSError as exc:
                raise OSError(exc.errno, f"create device {path}: {exc.strerror}") from None
    finally:
        os.umask(old_umask)


def create_dev_symlinks(rootfs: str) -> None:
    links = list(DEFAULT_SYMLINKS)
    if os.path.exists("/proc/kcore"):
        links.append(("/proc/kcore", "/dev/core"))
    for target, link in links:
        dest = secure_join(rootfs, link)
        try:
            os.symlink(target, dest)
        except FileExistsError:
            pass
    ptmx = secure_join(rootfs, "/dev/ptmx")
    if os.path.lexists(ptmx) and not os.path.ismount(ptmx):
        os.unlink(ptmx)
    if not os.path.lexists(ptmx):
        os.symlink("pts/ptmx", ptmx)


def pivot(rootfs: str) -> None:
    """pivot_root without a put_old directory (runc's way), then drop the old root."""
    old_root = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    new_root = os.open(rootfs, os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fchdir(new_root)
        libc.pivot_root(".", ".")
        os.fchdir(old_root)
        libc.mount(None, ".", None, libc.MS_SLAVE | libc.MS_REC)
        libc.umount(".", libc.MNT_DETACH)
        os.chdir("/")
    finally:
        os.close(old_root)
        os.close(new_root)


def move_root(rootfs: str) -> None:
    """--no-pivot: move the root filesystem over / and chroot into it."""
    os.chdir(rootfs)
    libc.mount(rootfs, "/", None, libc.MS_MOVE)
    os.chroot(".")
    os.chdir("/")


def mask_paths(paths: list[str]) -> None:
    for path in paths:
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                libc.mount("tmpfs", path, "tmpfs", libc.MS_RDONLY)
            else:
                libc.mount("/dev/null", path, "bind", libc.MS_BIND)
        except FileNotFoundError:
            continue


def readonly_paths(paths: list[str]) -> None:
    for path in paths:
        try:
            libc.mount(path, path, "bind", libc.MS_BIND | libc.MS_REC)
        except FileNotFoundError:
            continue
        libc.mount(None, path, None, libc.MS_BIND | libc.MS_REMOUNT | libc.MS_RDONLY | locked_flags(path))


def remount_root_readonly() -> None:
    libc.mount(None, "/", None, libc.MS_BIND | libc.MS_REMOUNT | libc.MS_RDONLY | locked_flags("/"))


def apply_sysctl(sysctl: dict[str, str]) -> None:
    for key, value in sysctl.items():
        path = "/proc/sys/" + key.replace(".", "/")
        try:
            with open(path, "w") as f:
                f.write(str(value))
        except OSError as exc:
            raise OSError(exc.errno, f"sysctl {key}={value}: {exc.strerror}") from None
