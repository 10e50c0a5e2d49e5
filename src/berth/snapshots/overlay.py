"""The overlayfs snapshotter.

    OverlaySnapshotter(root)

On disk::

    <root>/metadata.db            SQLite (WAL): one table, one row per snapshot
    <root>/snapshots/<n>/fs       the snapshot's own files (an overlay upper dir)
    <root>/snapshots/<n>/work     overlay's work dir (active snapshots)

``n`` is the row's id, a sequence number never reused. Mounts:

- active, no parent: a read-write bind mount of its empty ``fs``;
- active with parents: ``overlay`` with ``lowerdir`` = the parent chain's ``fs`` dirs,
  nearest first, ``upperdir`` = its ``fs``, ``workdir`` = its ``work``;
- view: a read-only bind of the parent's ``fs`` for a one-layer chain, else a
  read-only ``overlay`` of the chain (no upper); a view of nothing: its own empty ``fs``.

Directories are made under a temporary name and renamed into place inside the
database transaction, and removed after it commits (renamed away first), so a crash
leaves at most an orphan directory, which ``cleanup()`` deletes. Several processes may
share one root: SQLite serialises the writers (``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping

from berth._sys.sqlite import Txn, open_db
from berth.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from berth.snapshots.base import Info, Kind, Snapshotter, Usage, check_key
from berth.snapshots.mount import Mount

_SCHEMA = """
CREATE TABLE IF NOT EXISTS snapshots (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    key       TEXT NOT NULL UNIQUE,
    kind      TEXT NOT NULL CHECK (kind IN ('active', 'view', 'committed')),
    parent_id INTEGER REFERENCES snapshots(id),
    labels    TEXT NOT NULL DEFAULT '{}',
    created   REAL NOT NULL,
    updated   REAL NOT NULL,
    size      INTEGER,
    inodes    INTEGER
);
CREATE INDEX IF NOT EXISTS snapshots_parent ON snapshots(parent_id);
"""


class OverlaySnapshotter(Snapshotter):
    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self._snapshots = os.path.join(self.root, "snapshots")
        os.makedirs(self._snapshots, mode=0o700, exist_ok=True)
        os.chmod(self.root, 0o700)  # layers hold setuid files and device nodes: root only
        os.chmod(self._snapshots, 0o700)
        self._lock = threading.Lock()
        self._db = open_db(os.path.join(self.root, "metadata.db"), _SCHEMA)
        self._index_off = os.path.exists("/sys/module/overlay/parameters/index")

    # --- paths --------------------------------------------------------------------

    def fs_path(self, sid: int) -> str:
        return os.path.join(self._snapshots, str(sid), "fs")

    def work_path(self, sid: int) -> str:
        return os.path.join(self._snapshots, str(sid), "work")

    # --- database helpers -----------------------------------------------------------

    def _write(self) -> Txn:
        return Txn(self._db, self._lock)

    def _row(self, key: str) -> tuple[int, str, int | None, str, float, float, int | None, int | None]:
        """The row of ``key`` (callers hold ``self._lock``)."""
        row = self._db.execute(
            "SELECT id, kind, parent_id, labels, created, updated, size, inodes FROM snapshots WHERE key = ?",
            (key,),
        ).fetchone()
        if row is None:
            raise NotFound(f"snapshot {key} not found")
        return row

    def _chain(self, sid: int | None) -> list[int]:
        """Ids from ``sid`` down to the bottom layer."""
        ids: list[int] = []
        while sid is not None:
            ids.append(sid)
            row = self._db.execute("SELECT parent_id FROM snapshots WHERE id = ?", (sid,)).fetchone()
            sid = row[0] if row else None
        return ids

    def _key_of(self, sid: int | None) -> str | None:
        if sid is None:
            return None
        row = self._db.execute("SELECT key FROM snapshots WHERE id = ?", (sid,)).fetchone()
        return row[0] if row else None

    # --- the interface ----------------------------------------------------------------

    def prepare(self, key: str, parent: str | None = None, labels: Mapping[str, str] | None = None) -> list[Mount]:
        return self._create(Kind.ACTIVE, key, parent, labels)

    def view(self, key: str, parent: str | None = None, labels: Mapping[str, str] | None = None) -> list[Mount]:
        return self._create(Kind.VIEW, key, parent, labels)

    def _create(self, kind: Kind, key: str, parent: str | None, labels: Mapping[str, str] | None) -> list[Mount]:
        check_key(key)
        if parent is not None:
            check_key(parent, "parent")
        now = time.time()
        tmp = tempfile.mkdtemp(prefix="new-", dir=self._snapshots)
        try:
            os.mkdir(os.path.join(tmp, "fs"), 0o755)
            if kind is Kind.ACTIVE:
                os.mkdir(os.path.join(tmp, "work"), 0o711)
            with self._write() as db:
                if db.execute("SELECT 1 FROM snapshots WHERE key = ?", (key,)).fetchone():
                    raise AlreadyExists(f"snapshot {key} already exists")
                parent_id = None
                if parent is not None:
                    prow = db.execute("SELECT id, kind FROM snapshots WHERE key = ?", (parent,)).fetchone()
                    if prow is None:
                        raise NotFound(f"parent snapshot {parent} not found")
                    if prow[1] != Kind.COMMITTED.value:
                        raise FailedPrecondition(f"parent snapshot {parent} is {prow[1]}, not committed")
                    parent_id = prow[0]
                cur = db.execute(
                    "INSERT INTO snapshots (key, kind, parent_id, labels, created, updated) VALUES (?, ?, ?, ?, ?, ?)",
                    (key, kind.value, parent_id, json.dumps(dict(labels or {})), now, now),
                )
                sid = int(cur.lastrowid or 0)
                if parent_id is not None:  # the upper's root starts owned like the parent's
                    st = os.stat(self.fs_path(parent_id))
                    os.chown(os.path.join(tmp, "fs"), st.st_uid, st.st_gid)
                os.rename(tmp, os.path.join(self._snapshots, str(sid)))
                tmp = ""
                return self._mounts(sid, kind, parent_id)
        finally:
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)

    def mounts(self, key: str) -> list[Mount]:
        check_key(key)
        with self._lock:
            sid, kind, parent_id, *_ = self._row(key)
            if kind == Kind.COMMITTED.value:
                raise FailedPrecondition(f"snapshot {key} is committed: only active snapshots and views have mounts")
            return self._mounts(sid, Kind(kind), parent_id)

    def _mounts(self, sid: int, kind: Kind, parent_id: int | None) -> list[Mount]:
        lowers = [self.fs_path(i) for i in self._chain(parent_id)]
        if kind is Kind.ACTIVE:
            if not lowers:
                return [Mount("bind", self.fs_path(sid), ("rw", "rbind"))]
            opts = ["index=off"] if self._index_off else []
            opts += [f"workdir={self.work_path(sid)}", f"upperdir={self.fs_path(sid)}", "lowerdir=" + ":".join(lowers)]
            return [Mount("overlay", "overlay", tuple(opts))]
        # a view
        if not lowers:
            return [Mount("bind", self.fs_path(sid), ("ro", "rbind"))]
        if len(lowers) == 1:
            return [Mount("bind", lowers[0], ("ro", "rbind"))]
        opts = ["index=off"] if self._index_off else []
        opts += ["ro", "lowerdir=" + ":".join(lowers)]
        return [Mount("overlay", "overlay", tuple(opts))]

    def commit(self, name: str, key: str, labels: Mapping[str, str] | None = None) -> None:
        check_key(name, "name")
        check_key(key)
        with self._write() as db:
            row = db.execute("SELECT id, kind, labels FROM snapshots WHERE key = ?", (key,)).fetchone()
            if row is None:
                raise NotFound(f"snapshot {key} not found")
            sid, kind, old_labels = row
            if kind != Kind.ACTIVE.value:
                raise FailedPrecondition(f"snapshot {key} is {kind}, not active: only active snapshots commit")
            if db.execute("SELECT 1 FROM snapshots WHERE key = ?", (name,)).fetchone():
                raise AlreadyExists(f"snapshot {name} already exists")
            merged = json.loads(old_labels) if labels is None else dict(labels)
            db.execute(  # usage: measured on the first usage() call, then kept (it cannot change)
                "UPDATE snapshots SET key = ?, kind = ?, labels = ?, updated = ? WHERE id = ?",
                (name, Kind.COMMITTED.value, json.dumps(merged), time.time(), sid),
            )
        shutil.rmtree(self.work_path(sid), ignore_errors=True)  # only mounted read-write snapshots need it

    def remove(self, key: str) -> None:
        check_key(key)
        with self._write() as db:
            row = db.execute("SELECT id FROM snapshots WHERE key = ?", (key,)).fetchone()
            if row is None:
                raise NotFound(f"snapshot {key} not found")
            sid = row[0]
            child = db.execute("SELECT key FROM snapshots WHERE parent_id = ? LIMIT 1", (sid,)).fetchone()
            if child is not None:
                raise FailedPrecondition(f"snapshot {key} has children (e.g. {child[0]}): remove them first")
            db.execute("DELETE FROM snapshots WHERE id = ?", (sid,))
            doomed = os.path.join(self._snapshots, f"rm-{sid}")
            try:
                os.rename(os.path.join(self._snapshots, str(sid)), doomed)
            except FileNotFoundError:
                doomed = ""
        if doomed:
            shutil.rmtree(doomed, ignore_errors=True)

    def stat(self, key: str) -> Info:
        check_key(key)
        with self._lock:
            _sid, kind, parent_id, labels, created, updated, *_ = self._row(key)
            parent = self._key_of(parent_id)
        return Info(Kind(kind), key, parent, json.loads(labels), created, updated)

    def walk(self) -> Iterator[Info]:
        with self._lock:
            rows = self._db.execute(
                "SELECT s.key, s.kind, p.key, s.labels, s.created, s.updated "
                "FROM snapshots s LEFT JOIN snapshots p ON s.parent_id = p.id ORDER BY s.id"
            ).fetchall()
        for key, kind, parent, labels, created, updated in rows:
            yield Info(Kind(kind), key, parent, json.loads(labels), created, updated)

    def usage(self, key: str) -> Usage:
        check_key(key)
        with self._lock:
            sid, kind, _p, _l, _c, _u, size, inodes = self._row(key)
        if kind == Kind.COMMITTED.value and size is not None:
            return Usage(size, inodes or 0)
        size, inodes = _disk_usage(self.fs_path(sid))
        if kind == Kind.COMMITTED.value:
            with self._write() as db:
                db.execute("UPDATE snapshots SET size = ?, inodes = ? WHERE id = ?", (size, inodes, sid))
        return Usage(size, inodes)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- beyond the interface ----------------------------------------------------------

    def upper_and_lowers(self, key: str) -> tuple[str, list[str]]:
        """The ``fs`` dir of active snapshot ``key`` and those of its parents, nearest first."""
        with self._lock:
            sid, kind, parent_id, *_ = self._row(key)
            if kind != Kind.ACTIVE.value:
                raise FailedPrecondition(f"snapshot {key} is {kind}, not active")
            chain = self._chain(parent_id)
        return self.fs_path(sid), [self.fs_path(i) for i in chain]

    def staging_dir(self) -> str:
        """A new empty directory on the snapshots' filesystem, to fill before ``adopt``."""
        tmp = tempfile.mkdtemp(prefix="stage-", dir=self._snapshots)
        os.mkdir(os.path.join(tmp, "fs"), 0o755)
        return os.path.join(tmp, "fs")

    def adopt(self, key: str, staged: str) -> None:
        """Make ``staged`` (from ``staging_dir()``) the content of active snapshot ``key``.

        For filling a layer's snapshot ahead of its parent's commit: the snapshot model
        lets a child be prepared only on a committed parent, but a layer's files do not
        depend on the layers below, so they can be written while those are still unpacking.
        """
        staged = os.path.abspath(staged)
        holder = os.path.dirname(staged)
        if os.path.dirname(holder) != self._snapshots or not os.path.basename(holder).startswith("stage-"):
            raise InvalidArgument(f"{staged} is not a staging directory of this snapshotter")
        with self._lock:
            sid, kind, *_ = self._row(key)
            if kind != Kind.ACTIVE.value:
                raise FailedPrecondition(f"snapshot {key} is {kind}, not active")
            os.rename(staged, self.fs_path(sid))  # replaces the empty fs dir prepare made
        os.rmdir(holder)

    def discard_staging(self, staged: str) -> None:
        """Delete a staging directory that will not be adopted."""
        holder = os.path.dirname(os.path.abspath(staged))
        if os.path.dirname(holder) == self._snapshots and os.path.basename(holder).startswith("stage-"):
            shutil.rmtree(holder, ignore_errors=True)

    def cleanup(self) -> list[str]:
        """Delete directories no snapshot owns (left by a crash); return their names.

        Also deletes staging directories in use: call it when nothing unpacks (at start).
        """
        with self._lock:
            ids = {str(r[0]) for r in self._db.execute("SELECT id FROM snapshots")}
        removed = []
        for name in os.listdir(self._snapshots):
            if name not in ids:
                shutil.rmtree(os.path.join(self._snapshots, name), ignore_errors=True)
                removed.append(name)
        return removed


def _disk_usage(path: str) -> tuple[int, int]:
    """(bytes allocated, inodes) under ``path``; hard links counted once; symlinks not followed."""
    seen: set[tuple[int, int]] = set()
    size = 0
    stack = [path]
    while stack:
        d = stack.pop()
        try:
            it = os.scandir(d)
        except OSError:
            continue
        with it:
            for entry in it:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                ident = (st.st_dev, st.st_ino)
                if ident in seen:
                    continue
                seen.add(ident)
                size += st.st_blocks * 512
                if stat.S_ISDIR(st.st_mode):
                    stack.append(entry.path)
    return size, len(seen)
