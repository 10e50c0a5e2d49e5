"""The volumes service: Docker's ``local`` volume driver, named and anonymous volumes,
reference counting by containers, prune, and copy-up of an image's content.

    build(daemon) -> VolumesService

    create(name="", driver="", opts=None, labels=None) -> (volume, created)   "" makes an anonymous one
    get(name) -> volume    list_volumes(filters) -> [volume]    summaries() -> [volume + UsageData]
    await remove(name, force)   await prune(filters) -> (names, reclaimed)
    users(name) -> [container ids]          set_users_checker(users, running_users)
    mountpoint(name) -> <data_root>/volumes/<name>/_data
    activate(name, cid) / deactivate(name, cid)   mount / unmount a volume made with driver options
    copy_up(name, rootfs, path) -> bool     the image's content at path into an empty volume

On disk: ``<data_root>/volumes/<name>/_data`` (the content), the record in the metadata
DB (kind ``volume``, id = name): Docker's volume document (Name, Driver, Mountpoint,
CreatedAt, Labels, Scope, Options). Anonymous volumes get a 64-hex name and the label
``com.docker.volume.anonymous``; ``docker volume prune`` removes only those unless asked
for ``all`` (Docker 23+).

References are derived, never stored: a volume is in use while a container (in any
state) has a mount point on it; the containers service answers ``users(name)``. A volume
in use is not removed (409 ``remove NAME: volume is in use - [ids]``), forced or not.

A removal drops the record first, then renames the directory aside and deletes it; on
start, directories without a record (what a crash in the middle of a create or a
removal left) are deleted, never across a mount.

Driver options, as the local driver takes them: ``type``, ``device``, ``o`` (``mount -t
TYPE -o O DEVICE``; ``type=none,o=bind,device=/path`` binds a host directory). Such a
volume is mounted on ``_data`` when a container using it starts and unmounted when the
last running one stops.

Copy-up (dockerd's ``copyExistingContents``): a volume mounted where the image has a
directory is filled with that directory's content at the container's first start, if the
volume is empty and the mount does not say ``nocopy``: modes, owners, times, symlinks,
hard links, device nodes and extended attributes are kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import shutil
import stat
import threading
import time
from collections.abc import Callable

from berth.daemon.mountspec import check_volume_name
from berth.errors import FailedPrecondition, InvalidArgument, NotFound

KIND = "volume"
ANONYMOUS_LABEL = "com.docker.volume.anonymous"
DRIVER = "local"
LOCAL_OPTIONS = ("type", "device", "o", "size")
_REQUIRED = {"device": ("type",), "type": ("device",), "o": ("device", "type")}
_TRASH = ".removing-"


def build(daemon) -> VolumesService:  # noqa: ANN001 - berth.daemon.app.Daemon
    return VolumesService(daemon)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class VolumesService:
    def __init__(self, daemon) -> None:  # noqa: ANN001
        self.daemon = daemon
        self.db = daemon.db
        self.events = daemon.events
        self.root = daemon.config.volumes_root
        self._records: dict[str, dict] = {rid: rec for rid, rec in self.db.all(KIND)}
        self._users: Callable[[str], list[str]] = lambda name: []
        self._running_users: Callable[[str], list[str]] = lambda name: []
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}  # per volume: mount, unmount and copy-up
        self._active: dict[str, set[str]] = {}  # volume -> containers between their start and exit

    def set_users_checker(self, users: Callable[[str], list[str]],
                          running_users: Callable[[str], list[str]] | None = None) -> None:
        """``users(name)``: the containers with a mount point on the volume (the containers
        service); ``running_users(name)``: those of them that run."""
        self._users = users
        if running_users is not None:
            self._running_users = running_users

    def users(self, name: str) -> list[str]:
        return list(self._users(name))

    # --- paths -----------------------------------------------------------------------------

    def _dir(self, name: str) -> str:
        return os.path.join(self.root, name)

    def mountpoint(self, name: str) -> str:
        return os.path.join(self.root, name, "_data")

    def _lock(self, name: str) -> threading.Lock:
        """Containers start in parallel (worker threads): one at a time mounts a volume or
        copies into it."""
        with self._guard:
            lock = self._locks.get(name)
            if lock is None:
                lock = self._locks[name] = threading.Lock()
            return lock

    # --- the daemon's hooks ----------------------------------------------------------------

    async def start(self) -> None:
        """Delete what a crash left: directories without a record, half-removed ones."""
        await asyncio.to_thread(self._remove_orphans)

    def _remove_orphans(self) -> None:
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return
        for name in names:
            if name.startswith(_TRASH) or (name not in self._records and os.path.isdir(self._dir(name))):
                self._delete_dir(self._dir(name))

    # --- records ---------------------------------------------------------------------------

    def get(self, name: str) -> dict:
        rec = self._records.get(name)
        if rec is None:
            raise NotFound(f"get {name}: no such volume")
        return dict(rec)

    def exists(self, name: str) -> bool:
        return name in self._records

    def is_anonymous(self, name: str) -> bool:
        rec = self._records.get(name)
        return rec is not None and ANONYMOUS_LABEL in (rec.get("Labels") or {})

    def create(self, name: str = "", driver: str = "", opts: dict | None = None,
               labels: dict | None = None) -> tuple[dict, bool]:
        """A new volume, or the existing one of that name (``created`` False). Without a
        name: an anonymous volume."""
        driver = driver or DRIVER
        if driver != DRIVER:
            raise NotFound(f'error looking up volume plugin {driver}: plugin "{driver}" not found')
        labels = {str(k): str(v) for k, v in (labels or {}).items()}
        if not name:
            name = secrets.token_hex(32)
            labels[ANONYMOUS_LABEL] = ""
        check_volume_name(name)
        existing = self._records.get(name)
        if existing is not None:
            return dict(existing), False
        opts = {str(k): str(v) for k, v in (opts or {}).items()}
        _check_options(opts)
        data = self.mountpoint(name)
        os.makedirs(self._dir(name), mode=0o701, exist_ok=True)
        os.makedirs(data, mode=0o755, exist_ok=True)
        rec = {"CreatedAt": _now(), "Driver": DRIVER, "Labels": labels, "Mountpoint": data, "Name": name,
               "Options": opts or None, "Scope": "local"}
        try:
            self.db.put(KIND, name, rec, create=True)
        except BaseException:
            self._delete_dir(self._dir(name))
            raise
        self._records[name] = rec
        self.events.publish("volume", "create", name, {"driver": DRIVER})
        return dict(rec), True

    def list_volumes(self, filters: dict[str, list[str]] | None = None) -> list[dict]:
        filters = filters or {}
        for key, values in filters.items():
            if key not in ("dangling", "name", "driver", "label"):
                raise InvalidArgument(f"invalid filter '{key}'")
            if key == "dangling":
                for value in values:
                    if value.lower() not in ("true", "false", "1", "0"):
                        raise InvalidArgument(f"invalid filter 'dangling={value}'")
        out = []
        for name, rec in sorted(self._records.items()):
            if self._matches(name, rec, filters):
                out.append(dict(rec))
        return out

    def _matches(self, name: str, rec: dict, filters: dict[str, list[str]]) -> bool:
        for key, wanted in filters.items():
            if not wanted:
                continue
            if key == "dangling":
                dangling = wanted[-1].lower() in ("true", "1")
                if bool(self.users(name)) == dangling:
                    return False
            elif key == "name":
                if not any(_search(w, name) for w in wanted):
                    return False
            elif key == "driver":
                if rec["Driver"] not in wanted:
                    return False
            elif key == "label":
                if not _labels_match(rec.get("Labels") or {}, wanted):
                    return False
            elif key == "label!":
                if _labels_any(rec.get("Labels") or {}, wanted):
                    return False
        return True

    def summaries(self) -> list[dict]:
        """For ``/system/df``: every volume with UsageData (Size in bytes, RefCount)."""
        out = []
        for name, rec in sorted(self._records.items()):
            doc = dict(rec)
            doc["UsageData"] = {"Size": dir_size(self.mountpoint(name)), "RefCount": len(self.users(name))}
            out.append(doc)
        return out

    # --- removal ---------------------------------------------------------------------------

    async def remove(self, name: str, force: bool = False) -> None:
        rec = self._records.get(name)
        if rec is None:
            if force:
                return
            raise NotFound(f"get {name}: no such volume")
        users = self.users(name)
        if users:
            raise FailedPrecondition(f"remove {name}: volume is in use - [{', '.join(users)}]")
        trash = self._drop(name)
        self.events.publish("volume", "destroy", name, {"driver": DRIVER})
        if trash:
            await asyncio.to_thread(self._delete_dir, trash)

    def _drop(self, name: str) -> str:
        """Forget the volume and move its directory aside (the name is free at once)."""
        self.db.delete(KIND, name)
        self._records.pop(name, None)
        with self._guard:
            self._locks.pop(name, None)
        self._active.pop(name, None)
        path = self._dir(name)
        data = self.mountpoint(name)
        if is_mount(data):
            with contextlib.suppress(OSError):
                _unmount(data)
        trash = os.path.join(self.root, f"{_TRASH}{name}-{secrets.token_hex(4)}")
        try:
            os.rename(path, trash)
        except FileNotFoundError:
            return ""
        except OSError:
            return path
        return trash

    @staticmethod
    def _delete_dir(path: str) -> None:
        """rmtree that never crosses a mount (a volume bound from a host directory must
        never lose the host's files): what is mounted below is unmounted first, and if
        anything stays mounted, nothing is deleted."""
        for point in sorted(mounts_under(path), key=len, reverse=True):
            with contextlib.suppress(OSError):
                _unmount(point, detach=True)
        if mounts_under(path):
            return
        shutil.rmtree(path, ignore_errors=True)

    def discard(self, name: str) -> None:
        """Remove at once a volume made a moment ago and still unused (a create that failed)."""
        if name in self._records and not self.users(name):
            trash = self._drop(name)
            self.events.publish("volume", "destroy", name, {"driver": DRIVER})
            if trash:
                self._delete_dir(trash)

    async def remove_anonymous(self, names: list[str]) -> None:
        """``docker rm -v`` / ``--rm``: the container's anonymous volumes that nothing else uses."""
        for name in names:
            if self.is_anonymous(name) and not self.users(name):
                with contextlib.suppress(NotFound, FailedPrecondition):
                    await self.remove(name)

    async def prune(self, filters: dict[str, list[str]] | None = None) -> tuple[list[str], int]:
        filters = filters or {}
        for key in filters:
            if key not in ("label", "label!", "all"):
                raise InvalidArgument(f"invalid filter '{key}'")
        all_ = False
        for value in filters.get("all") or []:
            if value.lower() not in ("true", "false", "1", "0"):
                raise InvalidArgument(f"invalid filter 'all={value}'")
            all_ = value.lower() in ("true", "1")
        label_filters = {k: v for k, v in filters.items() if k in ("label", "label!")}
        candidates = [name for name, rec in sorted(self._records.items())
                      if (all_ or ANONYMOUS_LABEL in (rec.get("Labels") or {}))
                      and self._matches(name, rec, label_filters) and not self.users(name)]
        deleted: list[str] = []
        reclaimed = 0
        for name in candidates:
            size = await asyncio.to_thread(dir_size, self.mountpoint(name))
            if name not in self._records or self.users(name):  # changed meanwhile
                continue
            trash = self._drop(name)
            self.events.publish("volume", "destroy", name, {"driver": DRIVER})
            if trash:
                await asyncio.to_thread(self._delete_dir, trash)
            deleted.append(name)
            reclaimed += size
        self.events.publish("volume", "prune", "", {"reclaimed": str(reclaimed)})
        return deleted, reclaimed

    # --- for containers (called from worker threads) ------------------------------------

    def activate(self, name: str, owner: str = "") -> str:
        """The volume's directory, ready to be bound into container ``owner``: a volume made
        with driver options is mounted on it first."""
        rec = self._records.get(name)
        if rec is None:
            raise NotFound(f"get {name}: no such volume")
        data = self.mountpoint(name)
        os.makedirs(data, mode=0o755, exist_ok=True)
        opts = rec.get("Options") or {}
        if opts.get("device"):
            with self._lock(name):
                self._active.setdefault(name, set()).add(owner)
                if not is_mount(data):
                    _mount_local(opts, data)
        return data

    def deactivate(self, name: str, owner: str = "") -> None:
        """Container ``owner`` is done with the volume: one made with driver options is
        unmounted once no container uses it (neither one starting since berthd started, nor
        one recorded as running)."""
        active = self._active.get(name)
        if active is not None:
            active.discard(owner)
        rec = self._records.get(name)
        if rec is None or not (rec.get("Options") or {}).get("device") or active or self._running_users(name):
            return
        data = self.mountpoint(name)
        lock = self._lock(name)
        if not lock.acquire(blocking=False):  # a container is starting on it: it stays mounted
            return
        try:
            if is_mount(data) and not self._active.get(name):
                with contextlib.suppress(OSError):
                    _unmount(data)
        finally:
            lock.release()

    def copy_up(self, name: str, rootfs: str, path: str) -> bool:
        """Fill an empty volume with what the image has at ``path`` (a directory)."""
        from berth.runtime.linux.paths import secure_join

        try:
            source = secure_join(rootfs, path)
        except Exception:  # noqa: BLE001 - a path that leaves the root: nothing to copy
            return False
        if not os.path.isdir(source) or os.path.islink(source):
            return False
        target = self.mountpoint(name)
        with self._lock(name):
            if os.listdir(target):
                return False
            try:
                copy_tree(source, target)
            except OSError as exc:
                raise FailedPrecondition(f"copying image data from {path} to volume {name}: {exc}") from None
        return True


# --- helpers -------------------------------------------------------------------------------


def _search(pattern: str, text: str) -> bool:
    try:
        return re.search(pattern, text) is not None
    except re.error:
        return pattern in text


def _labels_match(labels: dict, wanted: list[str]) -> bool:
    for item in wanted:
        key, eq, value = item.partition("=")
        if key not in labels or (eq and labels[key] != value):
            return False
    return True


def _labels_any(labels: dict, wanted: list[str]) -> bool:
    for item in wanted:
        key, eq, value = item.partition("=")
        if key in labels and (not eq or labels[key] == value):
            return True
    return False


def _check_options(opts: dict[str, str]) -> None:
    """The local driver's rules (dockerd's validateOpts)."""
    for key in opts:
        if key not in LOCAL_OPTIONS:
            raise InvalidArgument(f'invalid option: "{key}"')
    if "size" in opts:
        raise InvalidArgument("quota size requested but no quota support")
    for key, required in _REQUIRED.items():
        if key in opts:
            for other in required:
                if other not in opts:
                    raise InvalidArgument(f'missing required option: "{other}"')


def _mount_local(opts: dict[str, str], target: str) -> None:
    from berth.snapshots.mount import Mount

    kind = opts.get("type") or "none"
    options = tuple(o for o in (opts.get("o") or "").split(",") if o)
    try:
        Mount(kind, opts["device"], options).mount(target)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise FailedPrecondition(f"error while mounting volume '{target}': failed to mount local volume: mount "
                                 f"{opts['device']}:{target}, data: {opts.get('o', '')}: {reason}") from None


def _unescape(field: str) -> str:
    r"""mountinfo escapes space, tab, newline and backslash as \040, \011, \012, \134."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounts_under(path: str, include_self: bool = True) -> list[str]:
    """Mount points at or below ``path`` (from /proc/self/mountinfo: bind mounts within
    one filesystem, which ``os.path.ismount`` does not see, included)."""
    root = os.path.realpath(path).rstrip("/")
    found = []
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                fields = line.split(" ")
                if len(fields) > 4:
                    point = _unescape(fields[4])
                    if point.startswith(root + "/") or (include_self and point == root):
                        found.append(point)
    except OSError:
        pass
    return found


def is_mount(path: str) -> bool:
    return os.path.realpath(path).rstrip("/") in mounts_under(path)


def _unmount(path: str, detach: bool = False) -> None:
    from berth.snapshots.mount import unmount

    unmount(path, detach=detach)


def dir_size(path: str) -> int:
    """Apparent size of the regular files under ``path`` (hard links once), as dockerd's df."""
    total = 0
    seen: set[tuple[int, int]] = set()
    stack = [path]
    while stack:
        current = stack.pop()
        try:
            with os.scandir(current) as it:
                entries = list(it)
        except OSError:
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                stack.append(entry.path)
            elif stat.S_ISREG(st.st_mode):
                if st.st_nlink > 1:
                    key = (st.st_dev, st.st_ino)
                    if key in seen:
                        continue
                    seen.add(key)
                total += st.st_size
    return total


# --- copy-up -------------------------------------------------------------------------------


def copy_tree(src: str, dst: str) -> None:
    """Copy the content of directory ``src`` into the existing directory ``dst`` with modes,
    owners, times, symlinks, hard links, device nodes, fifos and extended attributes; then
    ``dst`` takes ``src``'s owner and mode (dockerd's copyExistingContents + copyOwnership)."""
    _copy_contents(src, dst, {})
    st = os.lstat(src)
    os.chown(dst, st.st_uid, st.st_gid)
    os.chmod(dst, stat.S_IMODE(st.st_mode))
    _copy_xattrs(src, dst)


def _copy_contents(src: str, dst: str, links: dict[tuple[int, int], str]) -> None:
    with os.scandir(src) as it:
        entries = list(it)
    for entry in entries:
        s = entry.path
        d = os.path.join(dst, entry.name)
        st = entry.stat(follow_symlinks=False)
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            os.mkdir(d, 0o700)
            _copy_contents(s, d, links)
        elif stat.S_ISLNK(mode):
            os.symlink(os.readlink(s), d)
        elif stat.S_ISREG(mode):
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in links:
                os.link(links[key], d)
                continue
            shutil.copyfile(s, d, follow_symlinks=False)
            if st.st_nlink > 1:
                links[key] = d
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
            os.mknod(d, mode, st.st_rdev)
        else:
            continue
        _copy_metadata(s, d, st)


def _copy_metadata(src: str, dst: str, st: os.stat_result) -> None:
    link = stat.S_ISLNK(st.st_mode)
    os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
    if not link:
        os.chmod(dst, stat.S_IMODE(st.st_mode))  # after chown, which clears setuid bits
    _copy_xattrs(src, dst)  # after chown, which clears security.capability
    with contextlib.suppress(OSError):
        os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _copy_xattrs(src: str, dst: str) -> None:
    try:
        names = os.listxattr(src, follow_symlinks=False)
    except OSError:
        return
    for name in names:
        if name.startswith("trusted.overlay."):
            continue
        with contextlib.suppress(OSError):
            os.setxattr(dst, name, os.getxattr(src, name, follow_symlinks=False), follow_symlinks=False)
