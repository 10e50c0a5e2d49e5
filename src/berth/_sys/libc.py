"""ctypes bindings to the few libc calls that the stdlib of Python 3.11 lacks.

Every call raises ``OSError`` with the real errno on failure, like ``os`` does.
ctypes is loaded on the first call, not on import (~1 ms and ~0.9 MiB): the runtime's
own process often needs only the constants.
"""

from __future__ import annotations

import os

# namespace clone flags
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWTIME = 0x00000080

# mount flags
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOSYMFOLLOW = 256
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_SILENT = 32768
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MS_LAZYTIME = 1 << 25
MNT_DETACH = 2

# prctl options
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_SET_NAME = 15
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_SET_CHILD_SUBREAPER = 36
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4

_SYSCALLS = {
    "x86_64": {"pivot_root": 155, "capget": 125, "capset": 126, "mount_setattr": 442, "open_tree": 428,
               "keyctl": 250},
    "aarch64": {"pivot_root": 41, "capget": 90, "capset": 91, "mount_setattr": 442, "open_tree": 428,
                "keyctl": 219},
}
_NR = _SYSCALLS.get(os.uname().machine, _SYSCALLS["x86_64"])



class _Lazy:
    """Stands for the module global ``name`` until the first use loads ctypes."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> object:
        _load()
        return getattr(globals()[self._name], attr)


_libc: object = _Lazy("_libc")
_types: object = _Lazy("_types")


def _load() -> None:
    import ctypes

    lib = ctypes.CDLL(None, use_errno=True)
    lib.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    lib.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    lib.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    lib.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    lib.setdomainname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    lib.syscall.restype = ctypes.c_long

    class CapHeader(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class CapData(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]

    class MountAttr(ctypes.Structure):
        _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                    ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]

    global _libc, _types
    _types = ctypes
    _types.CapHeader = CapHeader  # type: ignore[attr-defined]
    _types.CapData = CapData  # type: ignore[attr-defined]
    _types.MountAttr = MountAttr  # type: ignore[attr-defined]
    _libc = lib


def preload() -> None:
    """Load ctypes and libc now (before the host's files go out of reach)."""
    if isinstance(_libc, _Lazy):
        _load()


def _check(result: int, what: str = "") -> int:
    if result < 0:
        err = _types.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}" if what else os.strerror(err))
    return result


def _b(value: str | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    res = _libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data))
    if res < 0:
        err = _types.get_errno()
        raise OSError(err, f"mount {source or fstype} to {target}: {os.strerror(err)}")


def umount(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(_b(target), flags), f"umount {target}")


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    _check(_libc.setns(fd, nstype), "setns")


def pivot_root(new_root: str, put_old: str) -> None:
    _check(_libc.syscall(_NR["pivot_root"], _b(new_root), _b(put_old)), "pivot_root")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return _check(_libc.prctl(option, arg2, arg3, arg4, arg5), "prctl")


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, len(raw)), "sethostname")


def setdomainname(name: str) -> None:
    raw = name.encode()
    _check(_libc.setdomainname(raw, len(raw)), "setdomainname")


_CAP_V3 = 0x20080522


def capget(pid: int = 0) -> tuple[int, int, int]:
    """Return (effective, permitted, inheritable) as 64-bit masks."""
    header = _types.CapHeader(_CAP_V3, pid)
    data = (_types.CapData * 2)()
    _check(_libc.syscall(_NR["capget"], _types.byref(header), data), "capget")
    return (
        data[0].effective | data[1].effective << 32,
        data[0].permitted | data[1].permitted << 32,
        data[0].inheritable | data[1].inheritable << 32,
    )


def capset(effective: int, permitted: int, inheritable: int) -> None:
    header = _types.CapHeader(_CAP_V3, 0)
    data = (_types.CapData * 2)()
    for i in (0, 1):
        shift = 32 * i
        data[i].effective = (effective >> shift) & 0xFFFFFFFF
        data[i].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    _check(_libc.syscall(_NR["capset"], _types.byref(header), data), "capset")


AT_FDCWD = -100
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
MOUNT_ATTR__ATIME = 0x70
MOUNT_ATTR_RELATIME = 0x0
MOUNT_ATTR_NOATIME = 0x10
MOUNT_ATTR_STRICTATIME = 0x20
MOUNT_ATTR_NODIRATIME = 0x80
MOUNT_ATTR_NOSYMFOLLOW = 0x200000


def mount_setattr(path: str, attr_set: int, attr_clr: int, recursive: bool = True) -> None:
    """Change mount attributes, recursively by default (kernel 5.12+): how ``rro`` works."""
    attr = _types.MountAttr(attr_set, attr_clr, 0, 0)
    flags = AT_RECURSIVE if recursive else 0
    _check(_libc.syscall(_NR["mount_setattr"], AT_FDCWD, _b(path), flags, _types.byref(attr),
                         _types.sizeof(attr)), f"mount_setattr {path}")


def kernel_at_least(major: int, minor: int) -> bool:
    release = os.uname().release.split("-")[0].split(".")
    try:
        return (int(release[0]), int(release[1])) >= (major, minor)
    except (ValueError, IndexError):
        return False


KEYCTL_JOIN_SESSION_KEYRING = 1
KEYCTL_SETPERM = 5
KEYCTL_DESCRIBE = 6


def join_session_keyring(name: str) -> int:
    """A new session keyring named ``name`` for this process, its serial returned."""
    return _check(_libc.syscall(_NR["keyctl"], KEYCTL_JOIN_SESSION_KEYRING, _b(name)), "keyctl join")


def keyring_add_perm(serial: int, bits: int) -> None:
    """OR ``bits`` into the key's permission mask (runc's ModKeyringPerm)."""
    buf = _types.create_string_buffer(256)
    _check(_libc.syscall(_NR["keyctl"], KEYCTL_DESCRIBE, serial, buf, 256), "keyctl describe")
    perm = int(buf.value.split(b";")[3], 16)
    _check(_libc.syscall(_NR["keyctl"], KEYCTL_SETPERM, serial, perm | bits), "keyctl setperm")
