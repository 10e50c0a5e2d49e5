"""The image store: image records and their names in SQLite, beside the content store
and the snapshotter.

    stores = Stores(root)        # <root>/metadata.db, <root>/content, <root>/snapshots/overlay
    images = stores.images       # ImageStore
    images.list() / get(name_or_id) / tag(src, new) / untag(name) / remove(name_or_id, ...)
    images.prune(dangling_only=True, in_use=...) / inspect(name) / history(name)
    images.gc(stores.content, stores.snapshotter)   # or stores.gc()

An image is one manifest (its digest is the record's key) with its config, platform,
size and the chain ID of its top layer. Its *ID*, as Docker prints it, is the config
digest; two records (an OCI and a Docker manifest of the same config) share one ID.
Names point at records: tags (``docker.io/library/busybox:latest``) and repository
digests (``docker.io/library/busybox@sha256:…``, the digest a pull resolved: an index's
when the tag named an index). Names are stored fully qualified; ``RepoTags`` and
``RepoDigests`` print them in Docker's familiar form.

Lookups (``get``, ``inspect``, ...) take what ``docker image inspect`` takes: a name
(``busybox``, ``host:5000/a/b:tag``, ``name@sha256:…``), a full ID (``sha256:<64 hex>``
or the bare hex), or a unique prefix of the ID's hex (``3f57d9401f8d``).

Lifecycle, as Docker's: ``untag`` removes one name, and the record with its last tag
(its repository digests go with it); a tag moved to another image (``tag``, a newer
pull) leaves the old record *dangling* (no names), which ``prune`` removes.
``remove`` refuses (FailedPrecondition) to delete a record that ``in_use(image_id)``
reports in use by a container, unless ``force``.

The database is ``<root>/metadata.db`` in WAL mode, the daemon's metadata database
(tables ``images``, ``image_names``, ``layer_diffs``); the snapshotter keeps its own
database under its root. Writers serialise through ``BEGIN IMMEDIATE``; several
processes may share the file.

Garbage collection (``gc``) deletes blobs and committed snapshots that no image
references. Pulls and loads hold a *lease* (a shared ``flock`` on ``<root>/images.lock``)
from their first write to their record; gc takes the lock exclusively, so it never
deletes what an unfinished pull has just stored.
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from berth._sys.sqlite import Txn, open_db
from berth.errors import FailedPrecondition, InvalidArgument, NotFound
from berth.image import manifests as _manifests
from berth.image.content import ContentStore
from berth.image.digest import compute_digest, is_digest
from berth.image.platforms import normalize
from berth.image.reference import Reference, parse_reference
from berth.snapshots.base import Kind, Snapshotter
from berth.snapshots.chain import chain_ids
from berth.snapshots.overlay import OverlaySnapshotter

InUse = Callable[[str], bool]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    manifest_digest TEXT PRIMARY KEY,
    manifest_size   INTEGER NOT NULL,
    media_type      TEXT NOT NULL,
    config_digest   TEXT NOT NULL,
    config          BLOB NOT NULL,
    platform        TEXT NOT NULL,
    created         TEXT,
    size            INTEGER NOT NULL,
    layer_sizes     TEXT NOT NULL,
    diff_ids        TEXT NOT NULL,
    chain_id        TEXT,
    added           REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS images_config ON images(config_digest);
CREATE TABLE IF NOT EXISTS image_names (
    name            TEXT PRIMARY KEY,
    kind            TEXT NOT NULL CHECK (kind IN ('tag', 'digest')),
    manifest_digest TEXT NOT NULL REFERENCES images(manifest_digest) ON DELETE CASCADE,
    updated         REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS image_names_target ON image_names(manifest_digest);
CREATE TABLE IF NOT EXISTS layer_diffs (
    diff_id TEXT PRIMARY KEY,
    size    INTEGER NOT NULL
);
"""

_FULL_ID = re.compile(r"(?:sha256:)?([0-9a-f]{64})")
_ID_PREFIX = re.compile(r"(?:sha256:)?([0-9a-f]{1,63})")
_COLUMNS = ("manifest_digest, manifest_size, media_type, config_digest, platform, created, size, "
            "layer_sizes, diff_ids, chain_id, added")
STAGING_PREFIX = "pull-"  # keys of active snapshots a pull or load prepares


@dataclass(frozen=True)
class ImageRecord:
    """One image: a manifest and what it leads to. ``id`` is the config digest."""

    manifest_digest: str
    manifest_size: int
    media_type: str
    config_digest: str
    platform: str  # os/arch[/variant] from the config
    created: str | None  # the config's "created" (RFC 3339)
    size: int  # bytes of its layers unpacked (uncompressed tar sizes)
    chain_id: str | None  # the top layer's chain ID: the snapshot to run it from
    diff_ids: tuple[str, ...] = ()
    layer_sizes: tuple[int, ...] = ()
    names: tuple[str, ...] = ()  # tags, fully qualified
    digests: tuple[str, ...] = ()  # repository digests, fully qualified
    added: float = 0.0

    @property
    def id(self) -> str:
        return self.config_digest

    @property
    def short_id(self) -> str:
        return self.config_digest.split(":", 1)[1][:12]

    @property
    def dangling(self) -> bool:
        return not self.names and not self.digests

    def repo_tags(self) -> list[str]:
        return [familiar(n) for n in self.names]

    def repo_digests(self) -> list[str]:
        return [familiar(n) for n in self.digests]


@dataclass(frozen=True)
class GcResult:
    blobs: list[str] = field(default_factory=list)
    snapshots: list[str] = field(default_factory=list)


def familiar(name: str) -> str:
    """A stored (fully qualified) name as Docker prints it: ``busybox:latest``."""
    try:
        return parse_reference(name, default_tag=None).familiar()
    except InvalidArgument:
        return name


def tag_name(text: str) -> str:
    """Normalize a name to tag: ``busybox`` -> ``docker.io/library/busybox:latest``."""
    ref = parse_reference(text)
    if ref.digest is not None:
        raise InvalidArgument(f"refusing to create a tag with a digest reference: {text}")
    return f"{ref.name}:{ref.tag}"


def digest_name(ref: Reference, digest: str) -> str:
    return f"{ref.name}@{digest}"


class ImageStore:
    """Image records and names in ``<root>/metadata.db``; see the module docstring."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.path.abspath(os.fspath(root))
        os.makedirs(self.root, mode=0o711, exist_ok=True)
        self._lock = threading.RLock()
        self._db = open_db(os.path.join(self.root, "metadata.db"), _SCHEMA)
        self._lock_path = os.path.join(self.root, "images.lock")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- leases: keep gc away from a pull in progress ------------------------------------

    @contextlib.contextmanager
    def lease(self) -> Iterator[None]:
        """Held by a pull or load from its first write until its record exists."""
        with _flock(self._lock_path, fcntl.LOCK_SH):
            yield

    # --- adding ------------------------------------------------------------------------

    def add(
        self,
        *,
        manifest_digest: str,
        manifest_size: int,
        media_type: str,
        config: bytes,
        layer_sizes: Sequence[int],
        names: Sequence[str] = (),
        digests: Sequence[str] = (),
    ) -> ImageRecord:
        """Create (or refresh) the record of a manifest and point ``names`` (tags) and
        ``digests`` (``repo@digest``) at it. A name that pointed elsewhere moves."""
        doc = parse_config(config)
        diff_ids = doc["rootfs"]["diff_ids"]
        if len(layer_sizes) != len(diff_ids):
            raise InvalidArgument(f"{len(layer_sizes)} layer sizes for {len(diff_ids)} layers")
        platform = str(normalize(str(doc.get("os") or ""), str(doc.get("architecture") or ""),
                                 str(doc.get("variant") or "")))
        created = doc.get("created") if isinstance(doc.get("created"), str) else None
        chain = chain_ids(diff_ids)[-1] if diff_ids else None
        now = time.time()
        tags = [tag_name(n) for n in names]
        repo_digests = [_check_digest_name(d) for d in digests]
        with self._write() as db:
            db.execute(
                "INSERT INTO images (manifest_digest, manifest_size, media_type, config_digest, config, platform, "
                "created, size, layer_sizes, diff_ids, chain_id, added) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) "
                "ON CONFLICT(manifest_digest) DO UPDATE SET size = excluded.size, "
                "layer_sizes = excluded.layer_sizes",
                (manifest_digest, manifest_size, media_type, compute_digest(config), config, platform, created,
                 int(sum(layer_sizes)), json.dumps(list(layer_sizes)), json.dumps(diff_ids), chain, now),
            )
            for name in tags:
                self._set_name(db, name, "tag", manifest_digest, now)
            for name in repo_digests:
                self._set_name(db, name, "digest", manifest_digest, now)
        return self._record(manifest_digest)

    def record_layer(self, diff_id: str, size: int) -> None:
        """Remember the uncompressed size of a layer (for sizes, history, docker save)."""
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO layer_diffs (diff_id, size) VALUES (?, ?)", (diff_id, size))

    def layer_size(self, diff_id: str) -> int | None:
        with self._lock:
            row = self._db.execute("SELECT size FROM layer_diffs WHERE diff_id = ?", (diff_id,)).fetchone()
        return int(row[0]) if row else None

    # --- reading -----------------------------------------------------------------------

    def list(self, *, dangling: bool | None = None) -> builtins.list[ImageRecord]:
        """Every record, newest first; ``dangling=True``/``False`` filters."""
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM images ORDER BY added DESC").fetchall()
            names = self._names_by_target()
        records = [_to_record(row, names.get(row[0], [])) for row in rows]
        if dangling is not None:
            records = [r for r in records if r.dangling == dangling]
        return records

    def get(self, name_or_id: str) -> ImageRecord:
        """The record a name, an ID or an ID prefix names; NotFound if none."""
        return self._resolve(name_or_id)[0]

    def config(self, name_or_id: str | ImageRecord) -> dict[str, Any]:
        """The image config (parsed JSON) of a record."""
        return json.loads(self.config_bytes(name_or_id))

    def config_bytes(self, name_or_id: str | ImageRecord) -> bytes:
        digest = name_or_id.manifest_digest if isinstance(name_or_id, ImageRecord) else self.get(name_or_id).manifest_digest
        with self._lock:
            row = self._db.execute("SELECT config FROM images WHERE manifest_digest = ?", (digest,)).fetchone()
        if row is None:
            raise NotFound(f"no such image: {digest}")
        return bytes(row[0])

    def inspect(self, name_or_id: str) -> dict[str, Any]:
        """What ``docker image inspect`` prints for the image."""
        record = self.get(name_or_id)
        config = self.config(record)
        container_config = dict(_DOCKER_CONFIG_DEFAULTS)
        container_config.update(config.get("config") or {})
        return {
            "Id": record.id,
            "RepoTags": record.repo_tags(),
            "RepoDigests": record.repo_digests(),
            "Parent": "",
            "Comment": config.get("comment", ""),
            "Created": record.created or "",
            "DockerVersion": config.get("docker_version", ""),
            "Author": config.get("author", ""),
            "Config": container_config,
            "Architecture": config.get("architecture", ""),
            **({"Variant": config["variant"]} if config.get("variant") else {}),
            "Os": config.get("os", ""),
            **({"OsVersion": config["os.version"]} if config.get("os.version") else {}),
            "Size": record.size,
            "VirtualSize": record.size,
            "GraphDriver": {"Name": "overlay", "Data": {"ChainID": record.chain_id or ""}},
            "RootFS": {"Type": "layers", "Layers": list(record.diff_ids)},
            "Metadata": {"LastTagTime": _rfc3339(record.added)},
            "Descriptor": {"mediaType": record.media_type, "digest": record.manifest_digest,
                           "size": record.manifest_size},
        }

    def history(self, name_or_id: str) -> builtins.list[dict[str, Any]]:
        """What the Engine API's ``/images/{name}/history`` returns: newest first."""
        record = self.get(name_or_id)
        config = self.config(record)
        history = config.get("history")
        if not isinstance(history, list) or not history:
            history = [{"created": record.created} for _ in record.diff_ids] or [{"created": record.created}]
        sizes = list(record.layer_sizes)
        entries = []
        layer = 0
        for item in history:
            item = item if isinstance(item, dict) else {}
            size = 0
            if not item.get("empty_layer") and layer < len(sizes):
                size = sizes[layer]
                layer += 1
            entries.append({
                "Id": "<missing>",
                "Created": _unix(item.get("created")),
                "CreatedBy": item.get("created_by", ""),
                "Tags": None,
                "Size": size,
                "Comment": item.get("comment", ""),
            })
        entries.reverse()
        entries[0]["Id"] = record.id
        entries[0]["Tags"] = record.repo_tags() or None
        return entries

    # --- names ---------------------------------------------------------------------------

    def tag(self, src: str, new_name: str) -> ImageRecord:
        """Point the tag ``new_name`` at the image ``src`` names (moving it if it exists)."""
        record = self.get(src)
        name = tag_name(new_name)
        with self._write() as db:
            self._set_name(db, name, "tag", record.manifest_digest, time.time())
        return self._record(record.manifest_digest)

    def set_names(self, manifest_digest: str, *, tags: Sequence[str] = (), digests: Sequence[str] = ()) -> ImageRecord:
        """Point more tags and repository digests (``repo@digest``) at a record."""
        self._record(manifest_digest)
        now = time.time()
        with self._write() as db:
            for name in tags:
                self._set_name(db, tag_name(name), "tag", manifest_digest, now)
            for name in digests:
                self._set_name(db, _check_digest_name(name), "digest", manifest_digest, now)
        return self._record(manifest_digest)

    def untag(self, name: str) -> builtins.list[dict[str, str]]:
        """Remove one name (a tag or a ``repo@digest``); with the image's last tag its
        digests and the record go too. Docker-style report: ``[{"Untagged": ...}, {"Deleted": id}]``."""
        stored = self._stored_name(name)
        if stored is None:
            raise NotFound(f"no such image: {name}")
        with self._write() as db:
            row = db.execute("SELECT manifest_digest FROM image_names WHERE name = ?", (stored,)).fetchone()
            if row is None:
                raise NotFound(f"no such image: {name}")
            return self._untag(db, stored, row[0])

    def remove(self, name_or_id: str, force: bool = False, in_use: InUse = lambda d: False) -> builtins.list[dict[str, str]]:
        """``docker rmi``: by name, untag it (the image goes with its last tag); by ID,
        remove every name and the image. Refused (FailedPrecondition), unless ``force``,
        when the image would go while ``in_use(image_id)``, or, by ID, when names of
        several repositories point at it."""
        stored = self._stored_name(name_or_id)
        with self._write() as db:
            row = db.execute("SELECT manifest_digest FROM image_names WHERE name = ?", (stored,)).fetchone() if stored else None
            if row is not None:
                target = row[0]
                others = db.execute(
                    "SELECT COUNT(*) FROM image_names WHERE manifest_digest = ? AND kind = 'tag' AND name != ?",
                    (target, stored),
                ).fetchone()[0]
                if others == 0 and not force:  # the image goes with its last tag
                    image_id = db.execute("SELECT config_digest FROM images WHERE manifest_digest = ?",
                                          (target,)).fetchone()[0]
                    if in_use(image_id):
                        raise FailedPrecondition(
                            f"unable to remove repository reference {familiar(stored)!r} (must force): "
                            f"a container is using its image {image_id[7:19]}"
                        )
                return self._untag(db, stored, target)
            records = self._resolve_locked(db, name_or_id)
            image_id = records[0].id
            repos = {parse_reference(n, default_tag=None).name for r in records for n in r.names}
            if not force:
                if len(repos) > 1:
                    raise FailedPrecondition(
                        f"unable to delete {image_id[7:19]} (must be forced): image is referenced in multiple "
                        f"repositories ({', '.join(sorted(familiar(r) for r in repos))})"
                    )
                if in_use(image_id):
                    raise FailedPrecondition(
                        f"unable to delete {image_id[7:19]} (must be forced): a container is using it"
                    )
            report: builtins.list[dict[str, str]] = []
            for record in records:
                for name in (*record.names, *record.digests):
                    report.append({"Untagged": familiar(name)})
                db.execute("DELETE FROM images WHERE manifest_digest = ?", (record.manifest_digest,))
            report.append({"Deleted": image_id})
            return report

    def prune(self, dangling_only: bool = True, in_use: InUse = lambda d: False) -> builtins.list[str]:
        """Remove dangling images (all unused ones with ``dangling_only=False``) that
        ``in_use`` does not claim; returns the IDs removed."""
        removed: builtins.list[str] = []
        with self._write() as db:
            names = self._names_by_target(db)
            rows = db.execute("SELECT manifest_digest, config_digest FROM images").fetchall()
            for digest, image_id in rows:
                if dangling_only and names.get(digest):
                    continue
                if in_use(image_id):
                    continue
                db.execute("DELETE FROM images WHERE manifest_digest = ?", (digest,))
                if image_id not in removed:
                    removed.append(image_id)
        return removed

    # --- garbage collection --------------------------------------------------------------

    def gc(self, content_store: ContentStore, snapshotter: Snapshotter, *,
           stale_after: float = 3600.0) -> GcResult:
        """Delete the blobs and committed snapshots no image references, and active
        snapshots a pull left behind more than ``stale_after`` seconds ago. Waits for
        pulls in progress (their leases) to finish first."""
        with _flock(self._lock_path, fcntl.LOCK_EX):
            keep_blobs: set[str] = set()
            keep_snapshots: set[str] = set()
            with self._lock:
                rows = self._db.execute("SELECT manifest_digest, config_digest, diff_ids FROM images").fetchall()
                digest_names = [r[0] for r in self._db.execute("SELECT name FROM image_names WHERE kind = 'digest'")]
            for manifest_digest, config_digest, diff_ids in rows:
                keep_blobs.update((manifest_digest, config_digest))
                keep_snapshots.update(chain_ids(json.loads(diff_ids)))
                try:
                    body = content_store.read_bytes(manifest_digest)
                    keep_blobs.update(d.digest for d in _manifests.layers(body))
                except (NotFound, InvalidArgument, ValueError):
                    pass
            for name in digest_names:
                keep_blobs.add(name.rsplit("@", 1)[1])  # the index a pull resolved
            removed_blobs = content_store.gc(keep_blobs)
            removed_snapshots: builtins.list[str] = []
            now = time.time()
            for info in reversed(list(snapshotter.walk())):  # children before parents
                doomed = (
                    (info.kind is Kind.COMMITTED and info.name not in keep_snapshots)
                    or (info.kind is Kind.ACTIVE and info.name.startswith(STAGING_PREFIX)
                        and now - info.created > stale_after)
                )
                if not doomed:
                    continue
                try:
                    snapshotter.remove(info.name)
                except (FailedPrecondition, NotFound):
                    continue  # a container's snapshot sits on it, or it went meanwhile
                removed_snapshots.append(info.name)
        return GcResult(removed_blobs, removed_snapshots)

    # --- internals -----------------------------------------------------------------------

    def _write(self) -> Txn:
        return Txn(self._db, self._lock)

    def _set_name(self, db: sqlite3.Connection, name: str, kind: str, target: str, now: float) -> None:
        db.execute(
            "INSERT INTO image_names (name, kind, manifest_digest, updated) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET manifest_digest = excluded.manifest_digest, updated = excluded.updated",
            (name, kind, target, now),
        )

    def _untag(self, db: sqlite3.Connection, stored: str, target: str) -> builtins.list[dict[str, str]]:
        report = [{"Untagged": familiar(stored)}]
        db.execute("DELETE FROM image_names WHERE name = ?", (stored,))
        tags_left = db.execute("SELECT COUNT(*) FROM image_names WHERE manifest_digest = ? AND kind = 'tag'",
                               (target,)).fetchone()[0]
        if tags_left:
            return report
        for (name,) in db.execute("SELECT name FROM image_names WHERE manifest_digest = ?", (target,)).fetchall():
            report.append({"Untagged": familiar(name)})
        image_id = db.execute("SELECT config_digest FROM images WHERE manifest_digest = ?", (target,)).fetchone()[0]
        db.execute("DELETE FROM images WHERE manifest_digest = ?", (target,))  # names cascade
        report.append({"Deleted": image_id})
        return report

    def _stored_name(self, text: str) -> str | None:
        """The stored form of a name (``repo:tag`` or ``repo@digest``), None if not a name."""
        if _FULL_ID.fullmatch(text):
            return None
        try:
            ref = parse_reference(text)
        except InvalidArgument:
            return None
        return digest_name(ref, ref.digest) if ref.digest else f"{ref.name}:{ref.tag}"

    def _resolve(self, text: str) -> builtins.list[ImageRecord]:
        with self._lock:
            return self._resolve_locked(self._db, text)

    def _resolve_locked(self, db: sqlite3.Connection, text: str) -> builtins.list[ImageRecord]:
        if not isinstance(text, str) or not text.strip():
            raise InvalidArgument("an image name or ID is needed")
        text = text.strip()
        full = _FULL_ID.fullmatch(text)
        if full:
            digest = f"sha256:{full.group(1)}"
            rows = db.execute(f"SELECT {_COLUMNS} FROM images WHERE config_digest = ? ORDER BY added DESC",
                              (digest,)).fetchall()
            if not rows:
                rows = db.execute(f"SELECT {_COLUMNS} FROM images WHERE manifest_digest = ?", (digest,)).fetchall()
            return self._records(db, rows, text)
        stored = self._stored_name(text)
        if stored is not None:
            row = db.execute("SELECT manifest_digest FROM image_names WHERE name = ?", (stored,)).fetchone()
            if row is not None:
                return self._records(db, db.execute(f"SELECT {_COLUMNS} FROM images WHERE manifest_digest = ?",
                                                    (row[0],)).fetchall(), text)
            if "@" in stored:  # repo@<manifest digest> of an image known under that repository
                repo, digest = stored.rsplit("@", 1)
                rows = db.execute(
                    f"SELECT {_COLUMNS} FROM images WHERE manifest_digest = ? AND EXISTS (SELECT 1 FROM image_names n "
                    "WHERE n.manifest_digest = images.manifest_digest AND (n.name LIKE ? OR n.name LIKE ?))",
                    (digest, f"{repo}:%", f"{repo}@%"),
                ).fetchall()
                if rows:
                    return self._records(db, rows, text)
        prefix = _ID_PREFIX.fullmatch(text)
        if prefix:
            rows = db.execute(f"SELECT {_COLUMNS} FROM images WHERE config_digest LIKE ? ORDER BY added DESC",
                              (f"sha256:{prefix.group(1)}%",)).fetchall()
            ids = {r[3] for r in rows}
            if len(ids) > 1:
                raise InvalidArgument(f"image ID prefix {text!r} is ambiguous: it matches {len(ids)} images")
            if rows:
                return self._records(db, rows, text)
        raise NotFound(f"no such image: {text}")

    def _records(self, db: sqlite3.Connection, rows: builtins.list[Any], text: str) -> builtins.list[ImageRecord]:
        if not rows:
            raise NotFound(f"no such image: {text}")
        names = self._names_by_target(db)
        return [_to_record(row, names.get(row[0], [])) for row in rows]

    def _record(self, manifest_digest: str) -> ImageRecord:
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM images WHERE manifest_digest = ?",
                                   (manifest_digest,)).fetchone()
            if row is None:
                raise NotFound(f"no such image: {manifest_digest}")
            names = self._db.execute("SELECT name, kind FROM image_names WHERE manifest_digest = ? ORDER BY name",
                                     (manifest_digest,)).fetchall()
        return _to_record(row, names)

    def _names_by_target(self, db: sqlite3.Connection | None = None) -> dict[str, builtins.list[tuple[str, str]]]:
        out: dict[str, builtins.list[tuple[str, str]]] = {}
        for name, kind, target in (db or self._db).execute(
            "SELECT name, kind, manifest_digest FROM image_names ORDER BY name"
        ):
            out.setdefault(target, []).append((name, kind))
        return out


class Stores:
    """The image side of a data root, opened together::

        <root>/metadata.db          ImageStore
        <root>/content/             ContentStore
        <root>/snapshots/overlay/   OverlaySnapshotter
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.path.abspath(os.fspath(root))
        self.images = ImageStore(self.root)
        self.content = ContentStore(os.path.join(self.root, "content"))
        self.snapshotter = OverlaySnapshotter(os.path.join(self.root, "snapshots", "overlay"))

    def gc(self, stale_after: float = 3600.0) -> GcResult:
        return self.images.gc(self.content, self.snapshotter, stale_after=stale_after)

    def close(self) -> None:
        self.images.close()
        self.snapshotter.close()

    def __enter__(self) -> Stores:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def open_stores(root: str | os.PathLike[str] | Stores) -> Iterator[Stores]:
    """``Stores`` for a root path (closed afterwards), or the open ``Stores`` given."""
    if isinstance(root, Stores):
        yield root
        return
    stores = Stores(root)
    try:
        yield stores
    finally:
        stores.close()


def parse_config(config: bytes) -> dict[str, Any]:
    """An image config, checked enough to be used: a JSON object with rootfs.diff_ids."""
    try:
        doc = json.loads(config)
    except ValueError:
        raise InvalidArgument("image config is not valid JSON") from None
    if not isinstance(doc, dict):
        raise InvalidArgument("image config is not a JSON object")
    rootfs = doc.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) and is_digest(d) for d in diff_ids):
        raise InvalidArgument("image config has no valid rootfs.diff_ids list")
    return doc


# --- helpers ------------------------------------------------------------------------------


@contextlib.contextmanager
def _flock(path: str, mode: int) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, mode)
        yield
    finally:
        os.close(fd)  # releases the lock


def _check_digest_name(text: str) -> str:
    ref = parse_reference(text, default_tag=None)
    if ref.digest is None:
        raise InvalidArgument(f"not a repository digest: {text} (expected name@sha256:...)")
    return digest_name(ref, ref.digest)


def _to_record(row: Sequence[Any], names: Sequence[tuple[str, str]]) -> ImageRecord:
    (manifest_digest, manifest_size, media_type, config_digest, platform, created, size,
     layer_sizes, diff_ids, chain_id, added) = row
    return ImageRecord(
        manifest_digest=manifest_digest,
        manifest_size=int(manifest_size),
        media_type=media_type,
        config_digest=config_digest,
        platform=platform,
        created=created,
        size=int(size),
        chain_id=chain_id,
        diff_ids=tuple(json.loads(diff_ids)),
        layer_sizes=tuple(json.loads(layer_sizes)),
        names=tuple(n for n, k in names if k == "tag"),
        digests=tuple(n for n, k in names if k == "digest"),
        added=float(added),
    )


_DOCKER_CONFIG_DEFAULTS: dict[str, Any] = {
    "Hostname": "", "Domainname": "", "User": "", "AttachStdin": False, "AttachStdout": False,
    "AttachStderr": False, "Tty": False, "OpenStdin": False, "StdinOnce": False, "Env": None,
    "Cmd": None, "Image": "", "Volumes": None, "WorkingDir": "", "Entrypoint": None,
    "OnBuild": None, "Labels": None,
}

_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)?$")


def _unix(value: object) -> int:
    """Seconds since the epoch of an RFC 3339 time (nanoseconds allowed); 0 if unparsable."""
    if not isinstance(value, str):
        return 0
    m = _RFC3339.match(value.strip())
    if not m:
        return 0
    zone = m.group(3) or "Z"
    try:
        return int(datetime.fromisoformat(m.group(1) + ("+00:00" if zone == "Z" else zone)).timestamp())
    except ValueError:
        return 0


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts).astimezone().isoformat()
