"""What a snapshotter hands out: mounts, and how to perform and undo them.

    Mount(type, source, options)      one mount, in containerd's shape
        .mount(target)                performs it (root; ``bind``/``rbind``, ``ro``, overlay data)
    unmount(target, *, detach=False)  undoes one mount at target
    mount_all(mounts, target)         performs them in order (undoing the done ones on error)
    mounted(mounts) -> ContextManager[str]   a temporary mount point, unmounted and removed after

Overlay data longer than a page (many layers) would be refused by the kernel; then the
mount is made from a child process that first changes into the directory the layer
paths share, with the paths made relative to it, as containerd does.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from berth._sys import libc
from berth.errors import FailedPrecondition

_FLAGS = {
    "ro": (libc.MS_RDONLY, True),
    "rw": (libc.MS_RDONLY, False),
    "nosuid": (libc.MS_NOSUID, True),
    "suid": (libc.MS_NOSUID, False),
    "nodev": (libc.MS_NODEV, True),
    "dev": (libc.MS_NODEV, False),
    "noexec": (libc.MS_NOEXEC, True),
    "exec": (libc.MS_NOEXEC, False),
    "noatime": (libc.MS_NOATIME, True),
    "relatime": (libc.MS_RELATIME, True),
    "bind": (libc.MS_BIND, True),
    "rbind": (libc.MS_BIND | libc.MS_REC, True),
}
_PAGE = os.sysconf("SC_PAGE_SIZE")
_DIR_OPTIONS = ("lowerdir=", "upperdir=", "workdir=")


@dataclass(frozen=True)
class Mount:
    """A mount: ``type`` (``overlay``, ``bind``...), ``source`` and ``options`` as fstab has them."""

    type: str
    source: str
    options: tuple[str, ...] = field(default=())

    @property
    def readonly(self) -> bool:
        return "ro" in self.options

    def option(self, prefix: str) -> str | None:
        """The value of option ``prefix=...`` (e.g. ``upperdir``), or None."""
        for opt in self.options:
            if opt.startswith(prefix + "="):
                return opt[len(prefix) + 1:]
        return None

    def flags_and_data(self) -> tuple[int, str]:
        flags = 0
        data: list[str] = []
        for opt in self.options:
            known = _FLAGS.get(opt)
            if known is None:
                data.append(opt)
            elif known[1]:
                flags |= known[0]
            else:
                flags &= ~known[0]
        if self.type == "bind":
            flags |= libc.MS_BIND
        return flags, ",".join(data)

    def mount(self, target: str) -> None:
        """Mount at ``target`` (which must exist). Needs root."""
        flags, data = self.flags_and_data()
        try:
            if flags & libc.MS_BIND:
                libc.mount(self.source, target, None, flags & ~libc.MS_RDONLY, None)
                if flags & libc.MS_RDONLY:  # a bind mount turns read-only on remount only
                    libc.mount(None, target, None, flags | libc.MS_REMOUNT, None)
            elif len(data) >= _PAGE - 1:
                _mount_long_overlay(self, target, flags, data)
            else:
                libc.mount(self.source, target, self.type, flags, data or None)
        except PermissionError:
            raise FailedPrecondition(f"mounting {self.type} at {target} needs root") from None


def unmount(target: str, *, detach: bool = False) -> None:
    """Unmount ``target``; ``detach`` for a lazy unmount of a busy one."""
    libc.umount(target, libc.MNT_DETACH if detach else 0)


def mount_all(mounts: Sequence[Mount], target: str) -> None:
    """Perform ``mounts`` on ``target`` in order; on failure, undo those already done."""
    done = 0
    try:
        for m in mounts:
            m.mount(target)
            done += 1
    except BaseException:
        for _ in range(done):
            unmount(target, detach=True)
        raise


def unmount_all(target: str, count: int = 1) -> None:
    for _ in range(count):
        unmount(target, detach=True)


@contextlib.contextmanager
def mounted(mounts: Sequence[Mount], *, dir: str | None = None) -> Iterator[str]:
    """Mount ``mounts`` on a fresh temporary directory; unmount and remove it afterwards."""
    target = tempfile.mkdtemp(prefix="berth-mnt-", dir=dir)
    try:
        mount_all(mounts, target)
        try:
            yield target
        finally:
            unmount_all(target, len(mounts))
    finally:
        os.rmdir(target)


def _mount_long_overlay(m: Mount, target: str, flags: int, data: str) -> None:
    """Overlay data too long for a page: mount from a child that chdirs to the common dir."""
    opts = data.split(",")
    paths: list[str] = []
    for opt in opts:
        for prefix in _DIR_OPTIONS:
            if opt.startswith(prefix):
                paths.extend(opt[len(prefix):].split(":"))
    common = os.path.commonpath(paths) if paths else "/"
    rel_opts = []
    for opt in opts:
        for prefix in _DIR_OPTIONS:
            if opt.startswith(prefix):
                rel = [os.path.relpath(p, common) for p in opt[len(prefix):].split(":")]
                opt = prefix + ":".join(rel)
                break
        rel_opts.append(opt)
    short = ",".join(rel_opts)
    if len(short) >= _PAGE - 1:
        raise FailedPrecondition(f"overlay mount options for {target} exceed a page even when relative")
    libc.preload()
    target = os.path.abspath(target)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 0
        try:
            os.chdir(common)
            libc.mount(m.source, target, m.type, flags, short)
        except OSError as e:
            code = e.errno or 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise OSError(code, f"mount overlay to {target}: {os.strerror(code)}")
