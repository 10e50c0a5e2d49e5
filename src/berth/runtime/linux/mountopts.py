"""Parse OCI mount options into mount(2) flags, propagation, recursive attrs and data (runc's table)."""

from __future__ import annotations

from berth._sys import libc as c

# option -> (clear?, flag)
FLAG_OPTIONS: dict[str, tuple[bool, int]] = {
    "async": (True, c.MS_SYNCHRONOUS), "atime": (True, c.MS_NOATIME), "bind": (False, c.MS_BIND),
    "defaults": (False, 0), "dev": (True, c.MS_NODEV), "diratime": (True, c.MS_NODIRATIME),
    "dirsync": (False, c.MS_DIRSYNC), "exec": (True, c.MS_NOEXEC), "mand": (False, c.MS_MANDLOCK),
    "noatime": (False, c.MS_NOATIME), "nodev": (False, c.MS_NODEV), "nodiratime": (False, c.MS_NODIRATIME),
    "noexec": (False, c.MS_NOEXEC), "nomand": (True, c.MS_MANDLOCK), "norelatime": (True, c.MS_RELATIME),
    "nostrictatime": (True, c.MS_STRICTATIME), "nosuid": (False, c.MS_NOSUID),
    "rbind": (False, c.MS_BIND | c.MS_REC), "relatime": (False, c.MS_RELATIME),
    "remount": (False, c.MS_REMOUNT), "ro": (False, c.MS_RDONLY), "rw": (True, c.MS_RDONLY),
    "silent": (False, c.MS_SILENT), "loud": (True, c.MS_SILENT), "strictatime": (False, c.MS_STRICTATIME),
    "suid": (True, c.MS_NOSUID), "sync": (False, c.MS_SYNCHRONOUS), "nosymfollow": (False, c.MS_NOSYMFOLLOW),
    "symfollow": (True, c.MS_NOSYMFOLLOW),
}
PROPAGATION_OPTIONS: dict[str, int] = {
    "private": c.MS_PRIVATE, "rprivate": c.MS_PRIVATE | c.MS_REC,
    "shared": c.MS_SHARED, "rshared": c.MS_SHARED | c.MS_REC,
    "slave": c.MS_SLAVE, "rslave": c.MS_SLAVE | c.MS_REC,
    "unbindable": c.MS_UNBINDABLE, "runbindable": c.MS_UNBINDABLE | c.MS_REC,
}
# recursive attributes (mount_setattr): option -> (clear?, attr)
RECURSIVE_OPTIONS: dict[str, tuple[bool, int]] = {
    "rro": (False, c.MOUNT_ATTR_RDONLY), "rrw": (True, c.MOUNT_ATTR_RDONLY),
    "rnosuid": (False, c.MOUNT_ATTR_NOSUID), "rsuid": (True, c.MOUNT_ATTR_NOSUID),
    "rnodev": (False, c.MOUNT_ATTR_NODEV), "rdev": (True, c.MOUNT_ATTR_NODEV),
    "rnoexec": (False, c.MOUNT_ATTR_NOEXEC), "rexec": (True, c.MOUNT_ATTR_NOEXEC),
    "rnodiratime": (False, c.MOUNT_ATTR_NODIRATIME), "rdiratime": (True, c.MOUNT_ATTR_NODIRATIME),
    "rnoatime": (False, c.MOUNT_ATTR_NOATIME), "ratime": (True, c.MOUNT_ATTR__ATIME),
    "rstrictatime": (False, c.MOUNT_ATTR_STRICTATIME), "rnostrictatime": (True, c.MOUNT_ATTR__ATIME),
    "rrelatime": (False, c.MOUNT_ATTR_RELATIME), "rnorelatime": (True, c.MOUNT_ATTR__ATIME),
    "rnosymfollow": (False, c.MOUNT_ATTR_NOSYMFOLLOW), "rsymfollow": (True, c.MOUNT_ATTR_NOSYMFOLLOW),
}
IGNORED_OPTIONS = ("tmpcopyup", "idmap", "ridmap")


class MountOptions:
    __slots__ = ("flags", "propagation", "attr_set", "attr_clr", "data")

    def __init__(self) -> None:
        self.flags = 0
        self.propagation: list[int] = []
        self.attr_set = 0
        self.attr_clr = 0
        self.data: list[str] = []


def parse(options: list[str] | None) -> MountOptions:
    out = MountOptions()
    for opt in options or ():
        if opt in FLAG_OPTIONS:
            clear, flag = FLAG_OPTIONS[opt]
            out.flags = out.flags & ~flag if clear else out.flags | flag
        elif opt in PROPAGATION_OPTIONS:
            out.propagation.append(PROPAGATION_OPTIONS[opt])
        elif opt in RECURSIVE_OPTIONS:
            clear, attr = RECURSIVE_OPTIONS[opt]
            if clear:
                out.attr_clr |= attr
                out.attr_set &= ~attr
            else:
                out.attr_set |= attr
                out.attr_clr &= ~attr
            if attr == c.MOUNT_ATTR_NOATIME or attr == c.MOUNT_ATTR_STRICTATIME:
                out.attr_clr |= c.MOUNT_ATTR__ATIME
        elif opt in IGNORED_OPTIONS:
            continue
        else:
            out.data.append(opt)
    return out
