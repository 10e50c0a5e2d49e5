"""Apply an image layer (a tar changeset) to a directory, safely, in one pass.

    apply_layer(stream, target_dir, *, parents=(), on_progress=None, devices=None) -> AppliedLayer
        overlayfs' own form, for a snapshot's upper directory: ``.wh.NAME`` becomes a
        whiteout (char device 0/0 named NAME), ``.wh..wh..opq`` the xattr
        ``trusted.overlay.opaque=y`` on its directory.
    apply_layer_plain(stream, target_dir, *, on_progress=None, devices=None) -> AppliedLayer
        a flat tree (what ``umoci unpack`` produces): whiteouts delete what lower layers
        put there. For trees compared in tests, ``docker import`` and non-overlay views.
    AppliedLayer(size, diff_id, entries, skipped, implicit_dirs, root_listed)
    inherit_from_lowers(target_dir, parents, applied)
        for a layer applied ahead of its lowers (into a staging dir): what ``parents=``
        does during the apply, afterwards.

The stream is the *uncompressed* tar (see ``compression.open_decompressed``). It is read
once, forward only, through ``tarfile`` in stream mode; the sha256 of every byte read,
the zero padding after the end-of-archive marker included, is the layer's diff ID.

Safety: nothing is ever written outside ``target_dir``. Every path is walked from a
descriptor of ``target_dir`` one component at a time with ``O_NOFOLLOW``; nothing is
opened by a full path. Entry names with a ``..`` component are refused (the layer is
invalid); leading ``/`` is dropped. A parent that is a symlink or a non-directory (put
there by this layer) is replaced by a directory, never followed. Hard links must name
a file already in ``target_dir`` (reached the same way). Symlinks are created with
their target as written and are never followed while applying.

Ownership, modes, times, xattrs: uid/gid are kept numerically (``chown`` as root only;
names are ignored). Modes include setuid/setgid/sticky, set after ``chown`` (which would
clear them). Directory modes and mtimes are set at the end, deepest first, so that
creating their contents changes neither. xattrs come from PAX ``SCHILY.xattr.*``
records (``security.capability`` included); ``trusted.overlay.*`` from a layer is
dropped (it would steer overlayfs); an xattr the filesystem or our privileges cannot
hold (ENOTSUP, or EPERM when not root) is skipped, as containerd does.

Device nodes: created like containerd does, only when the process could create them
in the runtime's place: root in the initial user namespace (``devices=None`` decides
so; ``True``/``False`` force it). Otherwise a char/block device entry is skipped and
named in ``AppliedLayer.skipped``. They are allowed anywhere in the tree, as in
containerd and umoci: the snapshot root is 0700 so no other host user reaches them,
and inside a container the runtime's device cgroup decides what may be opened. FIFOs
are always created. In the overlay form, the opaque xattr needs CAP_SYS_ADMIN (and
whiteouts CAP_MKNOD before Linux 5.8): without it ``apply_layer`` raises
FailedPrecondition.

In the overlay form, a parent directory that the layer does not list itself is created
with the attributes the same directory has in the nearest of ``parents`` (the lower
layers, top first), as containerd does, so that the merged view keeps them; a layer
without a root entry takes the root owner and mode of the layer below. A whiteout
followed by a directory of the same name in one layer makes that directory opaque.

Same-layer rules (image-spec layer.md): a whiteout hides lower layers only, never an
entry of its own layer, whatever the order; an opaque marker likewise spares the
entries its layer puts in that directory. Later entries replace earlier ones of the
same name (a directory over a directory merges, as tar does). ``.wh..wh.*`` entries
other than the opaque marker (aufs metadata such as ``.wh..wh.plnk``) are ignored.

Speed: every byte is read once; file data moves in reads of up to 1 MiB, straight
from tarfile's stream to ``os.write``; the directory walk is cached as open fds; a
name is unlinked only when creating it finds it taken. Decompression (isal, zstd) and
sha256 run in C with the GIL released.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, TypeVar

from berth.errors import FailedPrecondition, InvalidArgument

WHITEOUT_PREFIX = ".wh."
WHITEOUT_META_PREFIX = ".wh..wh."
WHITEOUT_OPAQUE = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
PAX_XATTR = "SCHILY.xattr."

TAR_BUFSIZE = 32 * 1024  # tarfile's own read size: a header read copies what is left of it
COPY_CHUNK = 1 << 20  # file data moves in reads of up to this many bytes
PROGRESS_STEP = 1 << 20
_DIR_CACHE_MAX = 256  # open directory fds kept (RLIMIT_NOFILE is often 1024)

_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_NEWFILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

ProgressFn = Callable[[int], None]
_T = TypeVar("_T")


@dataclass(frozen=True)
class AppliedLayer:
    """What applying a layer read and did."""

    size: int  # bytes of the uncompressed tar stream
    diff_id: str  # "sha256:<hex>" of those bytes
    entries: int = 0  # tar entries read
    skipped: tuple[str, ...] = field(default=())  # entries not created (devices without privilege)
    implicit_dirs: tuple[str, ...] = field(default=())  # parents the layer did not list
    root_listed: bool = False  # the layer has an entry for its root directory


def apply_layer(
    stream: IO[bytes],
    target_dir: str,
    *,
    parents: Sequence[str] = (),
    on_progress: ProgressFn | None = None,
    devices: bool | None = None,
) -> AppliedLayer:
    """Apply the tar ``stream`` to ``target_dir`` in overlayfs' form (an upper dir)."""
    return _Applier(stream, target_dir, overlay=True, parents=parents,
                    on_progress=on_progress, devices=devices).run()


def apply_layer_plain(
    stream: IO[bytes],
    target_dir: str,
    *,
    on_progress: ProgressFn | None = None,
    devices: bool | None = None,
) -> AppliedLayer:
    """Apply the tar ``stream`` to ``target_dir`` as a flat tree: whiteouts delete."""
    return _Applier(stream, target_dir, overlay=False, parents=(),
                    on_progress=on_progress, devices=devices).run()


def privileged() -> bool:
    """True if this process is root in the initial user namespace (may mknod devices)."""
    if os.geteuid() != 0:
        return False
    try:
        with open("/proc/self/uid_map", "rb") as f:
            fields = f.read().split()
    except OSError:
        return True
    return fields[:3] == [b"0", b"0", b"4294967295"]


def split_name(name: str, what: str = "entry") -> list[str]:
    """The components of a tar name made relative; InvalidArgument on a ``..`` component."""
    parts = [p for p in name.split("/") if p and p != "."]
    if ".." in parts:
        raise InvalidArgument(f"layer {what} {name!r} escapes the layer (has a '..' component)")
    return parts


# --- the stream: hashing reader ---------------------------------------------------------


class _HashingReader:
    """Reads ``raw`` forward, hashing and counting every byte handed out."""

    __slots__ = ("_raw", "_hash", "size", "_progress", "_next_report")

    def __init__(self, raw: IO[bytes], progress: ProgressFn | None) -> None:
        self._raw = raw
        self._hash = hashlib.sha256()
        self.size = 0
        self._progress = progress
        self._next_report = PROGRESS_STEP

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        if data:
            self._hash.update(data)
            self.size += len(data)
            if self._progress is not None and self.size >= self._next_report:
                self._next_report = self.size + PROGRESS_STEP
                self._progress(self.size)
        return data

    def drain(self) -> None:
        while self.read(COPY_CHUNK):
            pass
        if self._progress is not None:
            self._progress(self.size)

    def diff_id(self) -> str:
        return "sha256:" + self._hash.hexdigest()


# --- the applier -----------------------------------------------------------------------


class _Applier:
    def __init__(
        self,
        stream: IO[bytes],
        target_dir: str,
        *,
        overlay: bool,
        parents: Sequence[str],
        on_progress: ProgressFn | None,
        devices: bool | None,
    ) -> None:
        self.reader = _HashingReader(stream, on_progress)
        self.target_dir = target_dir
        self.overlay = overlay
        self.parents = list(parents)
        self.root = os.geteuid() == 0
        self.devices = privileged() if devices is None else devices
        self.dirs: dict[str, int] = {}  # relpath -> O_NOFOLLOW directory fd ("" = target_dir)
        self.created: set[str] = set()  # paths this layer put there (whiteouts spare them)
        self.deferred: dict[str, tuple[int, int, int]] = {}  # dir path -> (mode, atime_ns, mtime_ns)
        self.whiteouts: set[str] = set()  # overlay whiteouts made by this layer
        self.skipped: list[str] = []
        self.skipped_paths: set[str] = set()
        self.implicit: list[str] = []
        self.entries = 0
        self.root_listed = False

    # --- driver ---------------------------------------------------------------------

    def run(self) -> AppliedLayer:
        try:
            root_fd = os.open(self.target_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise FailedPrecondition(f"cannot apply a layer to {self.target_dir}: {e.strerror}") from None
        self.dirs[""] = root_fd
        try:
            self._apply_all()
            self._finish_dirs()
            if self.overlay and not self.root_listed and self.parents:
                _inherit_root(root_fd, self.parents[0])
        finally:
            for fd in self.dirs.values():
                os.close(fd)
            self.dirs.clear()
        return AppliedLayer(
            self.reader.size,
            self.reader.diff_id(),
            self.entries,
            tuple(self.skipped),
            tuple(self.implicit),
            self.root_listed,
        )

    def _apply_all(self) -> None:
        try:
            tf = tarfile.open(fileobj=self.reader, mode="r|", bufsize=TAR_BUFSIZE)  # type: ignore[call-overload]
        except tarfile.ReadError as e:
            if self.reader.size == 0:  # an empty blob is an empty layer
                return
            raise InvalidArgument(f"layer is not a valid tar stream: {e}") from None
        stream = tf.fileobj  # tarfile's _Stream: member data is read straight from it
        try:
            while True:
                try:
                    info = tf.next()
                except tarfile.TarError as e:
                    raise InvalidArgument(f"layer is not a valid tar stream: {e}") from None
                if info is None:
                    break
                tf.members.clear()  # stream mode keeps every TarInfo otherwise
                if len(self.dirs) > _DIR_CACHE_MAX:
                    self._flush_cache()  # between entries: no caller holds a cached fd
                self.entries += 1
                try:
                    self._apply_entry(tf, stream, info)
                except OSError as e:
                    raise OSError(e.errno, f"applying layer entry {info.name!r}: {e.strerror}") from None
        finally:
            tf.close()
        self.reader.drain()

    # --- one entry ------------------------------------------------------------------

    def _apply_entry(self, tf: tarfile.TarFile, stream: IO[bytes], info: tarfile.TarInfo) -> None:
        parts = split_name(info.name)
        if any(p.startswith(WHITEOUT_META_PREFIX) for p in parts[:-1]):
            return  # inside aufs metadata (.wh..wh.plnk/...)
        if not parts:
            if info.isdir():
                self.root_listed = True
                self._set_owner_xattrs_dir(self.dirs[""], info)
                self.deferred[""] = (info.mode & 0o7777, *_times(info))
            return
        base = parts[-1]
        if base.startswith(WHITEOUT_PREFIX):
            self._whiteout(parts[:-1], base)
            return
        path = "/".join(parts)
        pfd = self._dir_fd(parts[:-1])
        self.created.add(path)
        if info.isdir():
            self._make_dir(pfd, path, base, info)
        elif info.isreg():
            fd = self._fresh(pfd, path, base, lambda: os.open(base, _O_NEWFILE, 0o600, dir_fd=pfd))
            src = tf.extractfile(info) if info.issparse() else stream
            self._fill_file(fd, info, src)  # type: ignore[arg-type]
        elif info.issym():
            self._fresh(pfd, path, base, lambda: os.symlink(info.linkname, base, dir_fd=pfd))
            self._set_meta_nofollow(pfd, base, info)
        elif info.islnk():
            self._make_hardlink(pfd, path, base, info)
        elif info.ischr() or info.isblk():
            if not self.devices:
                self._skip(path)
                return
            kind = stat.S_IFCHR if info.ischr() else stat.S_IFBLK
            dev = os.makedev(info.devmajor, info.devminor)
            self._fresh(pfd, path, base, lambda: os.mknod(base, kind | 0o600, dev, dir_fd=pfd))
            self._set_meta_node(pfd, base, info)
        elif info.isfifo():
            self._fresh(pfd, path, base, lambda: os.mkfifo(base, 0o600, dir_fd=pfd))
            self._set_meta_node(pfd, base, info)
        else:  # pax global headers are consumed by tarfile; anything else is unknown
            self._skip(path)

    def _fresh(self, pfd: int, path: str, base: str, make: Callable[[], _T]) -> _T:
        """``make()`` a new entry; if the name is taken, clear it first (replace, never merge)."""
        try:
            return make()
        except FileExistsError:
            self._clear(pfd, path, base)
            return make()

    def _skip(self, path: str) -> None:
        self.created.discard(path)
        self.skipped.append(path)
        self.skipped_paths.add(path)

    def _make_dir(self, pfd: int, path: str, base: str, info: tarfile.TarInfo) -> None:
        fd = self.dirs.get(path)
        if fd is None:
            try:
                fd = os.open(base, _O_DIR, dir_fd=pfd)
            except FileNotFoundError:
                os.mkdir(base, 0o700, dir_fd=pfd)
                fd = os.open(base, _O_DIR, dir_fd=pfd)
            except OSError as e:
                if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                os.unlink(base, dir_fd=pfd)  # a symlink or file: replaced, not followed
                os.mkdir(base, 0o700, dir_fd=pfd)
                fd = os.open(base, _O_DIR, dir_fd=pfd)
            self._cache(path, fd)
        self._set_owner_xattrs_dir(fd, info)
        if path in self.whiteouts:  # a whiteout then a directory: hides the lower one
            self._set_opaque(fd, path)
        self.deferred[path] = (info.mode & 0o7777, *_times(info))
        if path in self.implicit:  # made earlier for a child, listed now: its own attributes win
            self.implicit.remove(path)

    def _fill_file(self, fd: int, info: tarfile.TarInfo, src: IO[bytes]) -> None:
        """Copy the entry's data into new file ``fd``, then its metadata; closes ``fd``."""
        try:
            remaining = info.size
            write = os.write
            while remaining > 0:
                chunk = src.read(remaining if remaining < COPY_CHUNK else COPY_CHUNK)
                if not chunk:
                    raise InvalidArgument(f"layer is truncated inside {info.name!r}")
                n = write(fd, chunk)
                while n < len(chunk):  # a short write (rare, e.g. a signal)
                    n += write(fd, memoryview(chunk)[n:])
                remaining -= len(chunk)
            if self.root:
                os.fchown(fd, info.uid, info.gid)
            os.fchmod(fd, info.mode & 0o7777)
            self._set_xattrs(fd, info)
            os.utime(fd, ns=_times(info))
        finally:
            os.close(fd)

    def _make_hardlink(self, pfd: int, path: str, base: str, info: tarfile.TarInfo) -> None:
        target = split_name(info.linkname, "hardlink target")
        if not target:
            raise InvalidArgument(f"layer hardlink {info.name!r} points at the layer's root")
        tpath = "/".join(target)
        if tpath == path:
            raise InvalidArgument(f"layer hardlink {info.name!r} points at itself")
        if tpath in self.skipped_paths:
            self._skip(path)  # a link to a device node that was not created
            return
        tfd = self._existing_dir_fd(target[:-1], info.linkname)
        try:
            st = os.stat(target[-1], dir_fd=tfd, follow_symlinks=False)
        except FileNotFoundError:
            raise InvalidArgument(
                f"layer hardlink {info.name!r} points at {info.linkname!r}, which is not in the layer"
            ) from None
        if stat.S_ISDIR(st.st_mode):
            raise InvalidArgument(f"layer hardlink {info.name!r} points at a directory")
        try:
            os.link(target[-1], base, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
        except FileExistsError:
            self._clear(pfd, path, base)
            tfd = self._existing_dir_fd(target[:-1], info.linkname)  # _clear may have closed it
            os.link(target[-1], base, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)

    # --- whiteouts ------------------------------------------------------------------

    def _whiteout(self, dir_parts: list[str], base: str) -> None:
        if base == WHITEOUT_OPAQUE:
            dpath = "/".join(dir_parts)
            fd = self._dir_fd(dir_parts)
            if self.overlay:
                self._set_opaque(fd, dpath)
            else:
                self._prune(fd, dpath)
            return
        if base.startswith(WHITEOUT_META_PREFIX):
            return  # other aufs metadata (.wh..wh.plnk, .wh..wh.aufs)
        name = base[len(WHITEOUT_PREFIX):]
        if name in ("", ".", ".."):
            raise InvalidArgument(f"layer has an invalid whiteout {base!r}")
        path = "/".join([*dir_parts, name])
        if path in self.created:
            return  # a whiteout hides lower layers only, never this layer's own entries
        pfd = self._dir_fd(dir_parts)
        if self.overlay:
            try:
                self._fresh(pfd, path, name, lambda: os.mknod(name, stat.S_IFCHR, os.makedev(0, 0), dir_fd=pfd))
            except PermissionError:
                raise FailedPrecondition(
                    f"cannot create the overlay whiteout for {path}: mknod needs root"
                ) from None
            self.whiteouts.add(path)
        else:
            self._remove(pfd, path, name)

    def _set_opaque(self, fd: int, path: str) -> None:
        try:
            os.setxattr(fd, OPAQUE_XATTR, b"y")
        except OSError as e:
            raise FailedPrecondition(
                f"cannot mark {path or '/'} opaque ({OPAQUE_XATTR}): {e.strerror}; overlay layers need root"
            ) from None

    def _prune(self, fd: int, dpath: str) -> None:
        """Plain form of an opaque dir: delete what lower layers put below ``dpath``."""
        with os.scandir(fd) as it:
            children = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
        for name, is_dir in children:
            path = f"{dpath}/{name}" if dpath else name
            if path not in self.created:
                self._remove(fd, path, name)
            elif is_dir:
                cfd = os.open(name, _O_DIR, dir_fd=fd)
                try:
                    self._prune(cfd, path)
                finally:
                    os.close(cfd)

    # --- paths ----------------------------------------------------------------------

    def _dir_fd(self, parts: list[str]) -> int:
        """An fd of directory ``parts`` under target_dir, creating or replacing as needed."""
        key = "/".join(parts)
        fd = self.dirs.get(key)
        if fd is not None:
            return fd
        # walk down from the deepest cached ancestor
        i = len(parts) - 1
        while i > 0 and "/".join(parts[:i]) not in self.dirs:
            i -= 1
        fd = self.dirs["/".join(parts[:i])]
        for j in range(i, len(parts)):
            name = parts[j]
            path = "/".join(parts[: j + 1])
            try:
                cfd = os.open(name, _O_DIR, dir_fd=fd)
            except FileNotFoundError:
                self._implicit_dir(fd, parts[: j + 1])
                cfd = os.open(name, _O_DIR, dir_fd=fd)
            except OSError as e:
                if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                os.unlink(name, dir_fd=fd)  # symlinked (or non-dir) parent: replaced, not followed
                self._implicit_dir(fd, parts[: j + 1])
                cfd = os.open(name, _O_DIR, dir_fd=fd)
            self._cache(path, cfd)
            fd = cfd
        return fd

    def _existing_dir_fd(self, parts: list[str], what: str) -> int:
        """Like _dir_fd, but only through directories that exist: nothing is created."""
        key = "/".join(parts)
        fd = self.dirs.get(key)
        if fd is not None:
            return fd
        fd = self.dirs[""]
        for j, name in enumerate(parts):
            path = "/".join(parts[: j + 1])
            cached = self.dirs.get(path)
            if cached is not None:
                fd = cached
                continue
            try:
                cfd = os.open(name, _O_DIR, dir_fd=fd)
            except OSError:
                raise InvalidArgument(f"layer hardlink target {what!r} is not inside the layer") from None
            self._cache(path, cfd)
            fd = cfd
        return fd

    def _implicit_dir(self, pfd: int, parts: list[str]) -> None:
        """Create a parent directory the layer does not list (attributes from the lowers)."""
        name = parts[-1]
        path = "/".join(parts)
        os.mkdir(name, 0o755, dir_fd=pfd)
        self.created.add(path)
        self.implicit.append(path)
        lower = _lower_dir_stat(self.parents, parts) if self.parents else None
        if lower is None and path not in self.whiteouts:
            return
        fd = os.open(name, _O_DIR, dir_fd=pfd)
        try:
            if path in self.whiteouts:
                self._set_opaque(fd, path)
            if lower is not None:
                if self.root:
                    os.fchown(fd, lower.st_uid, lower.st_gid)
                os.fchmod(fd, stat.S_IMODE(lower.st_mode))
                self.deferred[path] = (stat.S_IMODE(lower.st_mode), lower.st_atime_ns, lower.st_mtime_ns)
        finally:
            os.close(fd)

    def _cache(self, path: str, fd: int) -> None:
        self.dirs[path] = fd  # evicted between entries only (see _apply_all)

    def _flush_cache(self, under: str | None = None) -> None:
        """Close cached fds: all, or those of ``under`` and below (never the root's)."""
        if under is None:
            doomed = [k for k in self.dirs if k]
        else:
            prefix = under + "/"
            doomed = [k for k in self.dirs if k == under or k.startswith(prefix)]
        for key in doomed:
            os.close(self.dirs.pop(key))

    def _clear(self, pfd: int, path: str, name: str) -> None:
        """Make room for a new non-directory entry at ``name`` (replace what is there)."""
        try:
            os.unlink(name, dir_fd=pfd)
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            self._remove(pfd, path, name)
        except PermissionError:  # EPERM: unlink of a directory on some filesystems
            self._remove(pfd, path, name)

    def _remove(self, pfd: int, path: str, name: str) -> None:
        """Delete ``name`` in ``pfd`` whatever it is, a directory tree included."""
        try:
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            self._flush_cache(path)  # cached fds below it would point at deleted directories
            shutil.rmtree(name, dir_fd=pfd)
        else:
            os.unlink(name, dir_fd=pfd)

    # --- metadata -------------------------------------------------------------------

    def _set_owner_xattrs_dir(self, fd: int, info: tarfile.TarInfo) -> None:
        if self.root:
            os.fchown(fd, info.uid, info.gid)
        self._set_xattrs(fd, info)

    def _set_meta_nofollow(self, pfd: int, base: str, info: tarfile.TarInfo) -> None:
        """Owner, xattrs and times of a symlink (no mode: Linux has no lchmod)."""
        if self.root:
            os.chown(base, info.uid, info.gid, dir_fd=pfd, follow_symlinks=False)
        if _xattrs(info):
            self._set_xattrs(f"/proc/self/fd/{pfd}/{base}", info, follow_symlinks=False)
        os.utime(base, ns=_times(info), dir_fd=pfd, follow_symlinks=False)

    def _set_meta_node(self, pfd: int, base: str, info: tarfile.TarInfo) -> None:
        """Owner, mode, xattrs and times of a device node or FIFO just made (not opened)."""
        if self.root:
            os.chown(base, info.uid, info.gid, dir_fd=pfd, follow_symlinks=False)
        os.chmod(base, info.mode & 0o7777, dir_fd=pfd)  # ours, just made: not a symlink
        if _xattrs(info):
            self._set_xattrs(f"/proc/self/fd/{pfd}/{base}", info, follow_symlinks=False)
        os.utime(base, ns=_times(info), dir_fd=pfd, follow_symlinks=False)

    def _set_xattrs(self, target: int | str, info: tarfile.TarInfo, *, follow_symlinks: bool = True) -> None:
        for key, value in _xattrs(info):
            if key.startswith("trusted.overlay."):
                continue  # would steer overlayfs (opaque, redirect, metacopy): never from a layer
            try:
                os.setxattr(target, key, value, follow_symlinks=follow_symlinks)
            except OSError as e:
                if (
                    e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP)
                    or (e.errno == errno.EPERM and (not self.root or not follow_symlinks))
                ):  # EPERM on a symlink: user.* xattrs cannot live on symlinks
                    self.skipped.append(f"{info.name} (xattr {key})")
                    continue
                raise

    def _finish_dirs(self) -> None:
        """Directory modes and times, deepest first, after everything inside them exists."""
        order = sorted(self.deferred, key=lambda p: p.count("/") if p else -1, reverse=True)
        for path in order:
            mode, atime_ns, mtime_ns = self.deferred[path]
            if len(self.dirs) > _DIR_CACHE_MAX:
                self._flush_cache()
            parts = path.split("/") if path else []
            fd = self.dirs.get(path)
            own = False
            if fd is None:
                try:
                    fd = os.open(parts[-1], _O_DIR, dir_fd=self._existing_dir_fd(parts[:-1], path))
                except (OSError, InvalidArgument):
                    continue  # deleted or replaced later in the layer
                own = True
            try:
                os.fchmod(fd, mode)
                os.utime(fd, ns=(atime_ns, mtime_ns))
            finally:
                if own:
                    os.close(fd)

def inherit_from_lowers(target_dir: str, parents: Sequence[str], applied: AppliedLayer) -> None:
    """Give the directories a layer created without listing them the attributes they have
    in ``parents`` (the lower layers, nearest first), and its root the nearest lower's
    root attributes if the layer has no root entry. For a layer applied with no
    ``parents`` (e.g. into a staging directory, ahead of its lowers): ``apply_layer`` does
    the same by itself when given them.
    """
    if not parents:
        return
    root = os.geteuid() == 0
    root_fd = os.open(target_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if not applied.root_listed:
            _inherit_root(root_fd, parents[0])
        for path in applied.implicit_dirs:
            parts = path.split("/")
            lower = _lower_dir_stat(parents, parts)
            if lower is None:
                continue
            fd = _walk_nofollow(root_fd, parts)
            if fd is None:
                continue  # removed again later in the layer
            try:
                if root:
                    os.fchown(fd, lower.st_uid, lower.st_gid)
                os.fchmod(fd, stat.S_IMODE(lower.st_mode))
                os.utime(fd, ns=(lower.st_atime_ns, lower.st_mtime_ns))
            finally:
                os.close(fd)
    finally:
        os.close(root_fd)


def _inherit_root(root_fd: int, lower_root: str) -> None:
    """A layer without a root entry keeps the root owner and mode of the layer below."""
    try:
        st = os.stat(lower_root)
    except OSError:
        return
    if os.geteuid() == 0:
        os.fchown(root_fd, st.st_uid, st.st_gid)
    os.fchmod(root_fd, stat.S_IMODE(st.st_mode))


def _walk_nofollow(root_fd: int, parts: list[str]) -> int | None:
    """A new fd of directory ``parts`` under ``root_fd``, through directories only."""
    fd = os.dup(root_fd)
    try:
        for name in parts:
            nfd = os.open(name, _O_DIR, dir_fd=fd)
            os.close(fd)
            fd = nfd
    except OSError:
        os.close(fd)
        return None
    return fd


def _times(info: tarfile.TarInfo) -> tuple[int, int]:
    mtime_ns = int(info.mtime * 1_000_000_000)
    atime = info.pax_headers.get("atime") if info.pax_headers else None
    if atime is not None:
        try:
            return int(float(atime) * 1_000_000_000), mtime_ns
        except ValueError:
            pass
    return mtime_ns, mtime_ns


def _xattrs(info: tarfile.TarInfo) -> list[tuple[str, bytes]]:
    pax = info.pax_headers
    if not pax:
        return []
    return [
        (key[len(PAX_XATTR):], value.encode("utf-8", "surrogateescape"))
        for key, value in pax.items()
        if key.startswith(PAX_XATTR)
    ]


def _lower_dir_stat(parents: Sequence[str], parts: list[str]) -> os.stat_result | None:
    """stat of directory ``parts`` in the nearest lower layer that has anything there."""
    for lower in parents:
        try:
            fd = os.open(lower, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            for name in parts[:-1]:
                nfd = os.open(name, _O_DIR, dir_fd=fd)
                os.close(fd)
                fd = nfd
            st = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
        except OSError:
            continue  # not in this layer (or hidden by a non-directory): look lower
        finally:
            os.close(fd)
        if stat.S_ISDIR(st.st_mode):
            return st
        return None  # a file, symlink or whiteout hides anything below
    return None
