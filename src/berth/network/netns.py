"""Named network namespaces, kept alive by a bind mount, as ``ip netns add`` makes them.

    create(name, root=DEFAULT_ROOT) -> str      the nsfs file's path; AlreadyExists if live
    delete(name, root=DEFAULT_ROOT, missing_ok=True)   umount (lazily) and unlink
    exists(name, root=DEFAULT_ROOT) -> bool     the file is a live nsfs mount
    list_names(root=DEFAULT_ROOT) -> list[str]  live namespaces under root, sorted
    path_of(name, root=DEFAULT_ROOT) -> str
    run_in_netns(path, fn) -> T                 fn() in a throwaway thread that joined the netns

How a namespace is made (iproute2's way): ``root`` is made a mount point of its own with
shared propagation (bind-mounted onto itself the first time), so that unmounting a
namespace file also unmounts its copies in other mount namespaces and the namespace is
freed. An empty file is created, then a forked child ``unshare(CLONE_NEWNET)``s and
bind-mounts ``/proc/self/ns/net`` onto it, and exits: the mount keeps the namespace alive
without any process in it (also across a restart of berthd). The child reports a failure
as ``errno`` over a pipe, so the caller sees the real error.

The namespace starts with only ``lo``, down: the CNI ``loopback`` plugin brings it up.
"""

from __future__ import annotations

import errno
import os
import re
import threading
from collections.abc import Callable
from typing import TypeVar

from berth._sys import libc
from berth.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound

DEFAULT_ROOT = "/run/berth/netns"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,254}$")
T = TypeVar("T")


def path_of(name: str, root: str = DEFAULT_ROOT) -> str:
    if not _NAME.match(name) or name in (".", ".."):
        raise InvalidArgument(f"invalid network namespace name {name!r}")
    return os.path.join(root, name)


def _nsfs_dev() -> int:
    return os.stat("/proc/self/ns/net").st_dev


def _is_nsfs(path: str) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return st.st_dev == _nsfs_dev()


def exists(name: str, root: str = DEFAULT_ROOT) -> bool:
    """True if ``root/name`` is a bind-mounted network namespace (not just a leftover file)."""
    return _is_nsfs(path_of(name, root))


def list_names(root: str = DEFAULT_ROOT) -> list[str]:
    try:
        entries = os.listdir(root)
    except FileNotFoundError:
        return []
    return sorted(e for e in entries if _NAME.match(e) and _is_nsfs(os.path.join(root, e)))


def _is_mount_point(path: str) -> bool:
    real = os.path.realpath(path)
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            fields = line.split(b" ", 5)
            if len(fields) > 4 and _unescape(fields[4]) == real:
                return True
    return False


def _unescape(raw: bytes) -> str:
    return re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), raw).decode(errors="surrogateescape")


def _prepare_root(root: str) -> None:
    """mkdir -p root; make it a shared mount point (bind onto itself if it is not one)."""
    os.makedirs(root, mode=0o755, exist_ok=True)
    try:
        libc.mount("none", root, None, libc.MS_SHARED | libc.MS_REC)
        return
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise FailedPrecondition(f"mount --make-shared {root}: {os.strerror(e.errno or 0)}") from None
    # EINVAL: root is not a mount point yet (iproute2 upgrades it to one, then retries)
    if not _is_mount_point(root):
        try:
            libc.mount(root, root, None, libc.MS_BIND | libc.MS_REC)
        except OSError as e:
            raise FailedPrecondition(f"mount --bind {root} {root}: {os.strerror(e.errno or 0)}") from None
    try:
        libc.mount("none", root, None, libc.MS_SHARED | libc.MS_REC)
    except OSError as e:
        raise FailedPrecondition(f"mount --make-shared {root}: {os.strerror(e.errno or 0)}") from None


def _unshare_and_bind(target: str) -> None:
    """Fork a child that enters a new network namespace and pins it on ``target``."""
    libc.preload()  # no dlopen in the child
    rfd, wfd = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # child: only syscalls, then _exit
        code = 0
        try:
            os.close(rfd)
            libc.unshare(libc.CLONE_NEWNET)
            libc.mount("/proc/self/ns/net", target, None, libc.MS_BIND)
        except OSError as e:
            code = e.errno or errno.EIO
        except BaseException:
            code = errno.EIO
        try:
            os.write(wfd, code.to_bytes(4, "little"))
        finally:
            os._exit(0 if code == 0 else 1)
    os.close(wfd)
    try:
        raw = b""
        while True:
            chunk = os.read(rfd, 4)
            if not chunk:
                break
            raw += chunk
    finally:
        os.close(rfd)
        os.waitpid(pid, 0)
    code = int.from_bytes(raw, "little") if len(raw) == 4 else errno.EIO
    if code:
        raise OSError(code, f"new network namespace on {target}: {os.strerror(code)}")


def create(name: str, root: str = DEFAULT_ROOT) -> str:
    """Create the namespace ``root/name`` and return its path."""
    target = path_of(name, root)
    _prepare_root(root)
    if _is_nsfs(target):
        raise AlreadyExists(f"network namespace {name} already exists")
    try:  # an empty leftover from an interrupted create is reused
        fd = os.open(target, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o444)
        os.close(fd)
    except OSError as e:
        raise FailedPrecondition(f"create {target}: {os.strerror(e.errno or 0)}") from None
    try:
        _unshare_and_bind(target)
    except OSError as e:
        try:
            os.unlink(target)
        except OSError:
            pass
        raise FailedPrecondition(str(e)) from None
    return target


def delete(name: str, root: str = DEFAULT_ROOT, missing_ok: bool = True) -> None:
    """Unmount and remove ``root/name``; the namespace goes when its last user goes."""
    target = path_of(name, root)
    try:
        libc.umount(target, libc.MNT_DETACH)
    except OSError as e:
        if e.errno == errno.ENOENT:
            if missing_ok:
                return
            raise NotFound(f"network namespace {name} not found") from None
        if e.errno != errno.EINVAL:  # EINVAL: not a mount (a leftover file)
            raise FailedPrecondition(f"umount {target}: {os.strerror(e.errno or 0)}") from None
    try:
        os.unlink(target)
    except FileNotFoundError:
        if not missing_ok:
            raise NotFound(f"network namespace {name} not found") from None


def run_in_netns(path: str, fn: Callable[[], T]) -> T:
    """Call ``fn()`` in a new thread that has joined the network namespace at ``path``.

    setns(CLONE_NEWNET) changes only the calling thread, so the caller's threads stay
    where they are; the thread is never reused. Sockets that ``fn`` creates belong to that
    namespace for their whole life, wherever they are used afterwards (Docker's embedded
    DNS and CNI's ns.Do work the same way).
    """
    libc.preload()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise NotFound(f"network namespace {path}: {os.strerror(e.errno or 0)}") from None
    box: dict[str, object] = {}

    def body() -> None:
        try:
            libc.setns(fd, libc.CLONE_NEWNET)
        except OSError as e:
            box["error"] = FailedPrecondition(f"enter network namespace {path}: {os.strerror(e.errno or 0)}")
            return
        try:
            box["value"] = fn()
        except BaseException as e:  # handed to the caller
            box["error"] = e

    try:
        thread = threading.Thread(target=body, name="berth-netns", daemon=True)
        thread.start()
        thread.join()
    finally:
        os.close(fd)
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]
