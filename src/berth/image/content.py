"""The content store: blobs addressed by digest, and a resumable ingest area.

Layout under ``root``::

    blobs/<algorithm>/<hex>          committed blobs, read-only (0444), verified
    ingest/<sha256(ref)>/data        bytes written so far for one ingest ref
    ingest/<sha256(ref)>/meta        {"ref", "expected", "size", "started"} (JSON)

A blob enters ``blobs/`` only through ``Writer.commit()`` (or ``put_bytes``), which checks
its size and digest, fsyncs it and renames it into place: a reader never sees a partial
or unverified blob. An ingest survives a crash and a closed writer: reopening the same ref
continues from the bytes already there (they are hashed once to restore the digest
state). One writer at a time holds a ref (an ``flock`` on its data file); a second one
gets Unavailable.

    store = ContentStore(root)
    with store.writer("layer-sha256:ab..", "sha256:ab..", 1234) as w:
        w.write(chunk)          # repeatedly; w.offset says how much is there
        w.commit()              # InvalidArgument on size/digest mismatch (ingest deleted)

Errors: NotFound (no such blob or ingest), InvalidArgument (mismatch, bad digest),
AlreadyExists (``writer`` for a digest already stored), Unavailable (ref locked).
"""

from __future__ import annotations

import builtins
import errno
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from berth.errors import AlreadyExists, InvalidArgument, NotFound, Unavailable
from berth.image.digest import ALGORITHMS, CHUNK, SHA256, Digester, compute_digest, parse_digest

DEFAULT_STALE_INGEST_SECONDS = 24 * 3600
_READ_BYTES_MAX = 64 << 20


@dataclass(frozen=True)
class IngestStatus:
    ref: str
    offset: int
    expected_digest: str | None
    expected_size: int | None
    started: float
    updated: float


class ContentStore:
    """Blobs on disk under ``root``; see the module docstring for the layout."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.fspath(root)
        self.blobs_dir = os.path.join(self.root, "blobs")
        self.ingest_dir = os.path.join(self.root, "ingest")
        for algorithm in ALGORITHMS:
            os.makedirs(os.path.join(self.blobs_dir, algorithm), mode=0o755, exist_ok=True)
        os.makedirs(self.ingest_dir, mode=0o700, exist_ok=True)

    # --- reading -------------------------------------------------------------------

    def blob_path(self, digest: str) -> str:
        """Where the blob lives (or would live); checks the digest, not the file."""
        algorithm, encoded = parse_digest(digest)
        return os.path.join(self.blobs_dir, algorithm, encoded)

    def path(self, digest: str) -> str:
        """The path of a stored blob; NotFound if it is not there."""
        path = self.blob_path(digest)
        if not os.path.isfile(path):
            raise NotFound(f"content {digest} not found")
        return path

    def exists(self, digest: str) -> bool:
        return os.path.isfile(self.blob_path(digest))

    def info(self, digest: str) -> int:
        """The size of a stored blob in bytes."""
        try:
            return os.stat(self.blob_path(digest)).st_size
        except FileNotFoundError:
            raise NotFound(f"content {digest} not found") from None

    def open(self, digest: str) -> BinaryIO:
        try:
            return open(self.blob_path(digest), "rb")
        except FileNotFoundError:
            raise NotFound(f"content {digest} not found") from None

    def read_bytes(self, digest: str, max_size: int = _READ_BYTES_MAX) -> bytes:
        """A small blob (a manifest, a config) whole; InvalidArgument past ``max_size``."""
        with self.open(digest) as f:
            data = f.read(max_size + 1)
        if len(data) > max_size:
            raise InvalidArgument(f"content {digest} is larger than {max_size} bytes")
        return data

    def list(self) -> Iterator[tuple[str, int]]:
        """Every stored blob as (digest, size)."""
        for algorithm, length in ALGORITHMS.items():
            directory = os.path.join(self.blobs_dir, algorithm)
            try:
                entries = os.scandir(directory)
            except FileNotFoundError:
                continue
            with entries:
                for entry in entries:
                    if len(entry.name) == length and entry.is_file(follow_symlinks=False):
                        yield f"{algorithm}:{entry.name}", entry.stat(follow_symlinks=False).st_size

    # --- writing -------------------------------------------------------------------

    def writer(
        self, ref: str, expected_digest: str | None = None, expected_size: int | None = None
    ) -> Writer:
        """Open (or resume) the ingest ``ref``; AlreadyExists if the digest is stored."""
        if not ref:
            raise InvalidArgument("ingest ref must not be empty")
        if expected_digest is not None:
            parse_digest(expected_digest)
            if self.exists(expected_digest):
                raise AlreadyExists(f"content {expected_digest} already exists")
        if expected_size is not None and expected_size < 0:
            raise InvalidArgument(f"invalid expected size {expected_size}")
        return Writer(self, ref, expected_digest, expected_size)

    def put_bytes(self, data: bytes, expected_digest: str | None = None) -> str:
        """Store a small blob at once; returns its digest (sha256 unless ``expected_digest``
        names another algorithm). InvalidArgument if it does not match ``expected_digest``."""
        algorithm = parse_digest(expected_digest)[0] if expected_digest else SHA256
        digest = compute_digest(data, algorithm)
        if expected_digest is not None and digest != expected_digest:
            raise InvalidArgument(f"digest mismatch: expected {expected_digest}, got {digest}")
        target = self.blob_path(digest)
        if os.path.exists(target):
            return digest
        fd, tmp = tempfile.mkstemp(prefix=".put-", dir=self.ingest_dir)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o444)
            os.rename(tmp, target)
        except BaseException:
            _unlink_quiet(tmp)
            raise
        _fsync_dir(os.path.dirname(target))
        return digest

    # --- removing ------------------------------------------------------------------

    def delete(self, digest: str) -> None:
        try:
            os.unlink(self.blob_path(digest))
        except FileNotFoundError:
            raise NotFound(f"content {digest} not found") from None

    def gc(self, keep: set[str]) -> builtins.list[str]:
        """Delete every blob whose digest is not in ``keep``; returns what was removed."""
        removed = []
        for digest, _ in list(self.list()):
            if digest not in keep:
                try:
                    os.unlink(self.blob_path(digest))
                except FileNotFoundError:
                    continue
                removed.append(digest)
        return sorted(removed)

    # --- ingests -------------------------------------------------------------------

    def ingest_path(self, ref: str) -> str:
        return os.path.join(self.ingest_dir, hashlib.sha256(ref.encode()).hexdigest())

    def ingests(self) -> builtins.list[IngestStatus]:
        """Ingests in progress or left behind (by a crash, or a writer closed uncommitted)."""
        found = []
        for entry in _scandir_names(self.ingest_dir):
            status = self._status(os.path.join(self.ingest_dir, entry))
            if status is not None:
                found.append(status)
        return sorted(found, key=lambda s: s.ref)

    def status(self, ref: str) -> IngestStatus:
        status = self._status(self.ingest_path(ref))
        if status is None:
            raise NotFound(f"ingest {ref!r} not found")
        return status

    def abort(self, ref: str) -> None:
        """Drop an ingest that no writer holds; NotFound if there is none."""
        directory = self.ingest_path(ref)
        if not os.path.isdir(directory):
            raise NotFound(f"ingest {ref!r} not found")
        if not _remove_if_unlocked(directory):
            raise Unavailable(f"ingest {ref!r} is in use by another writer")

    def cleanup_ingests(self, older_than: float = DEFAULT_STALE_INGEST_SECONDS) -> builtins.list[str]:
        """Remove ingests that no writer holds and that nothing touched for ``older_than``
        seconds, and stray temp files; returns the refs (or names) removed."""
        removed = []
        now = time.time()
        for name in _scandir_names(self.ingest_dir):
            path = os.path.join(self.ingest_dir, name)
            try:
                mtime = _newest_mtime(path)
            except FileNotFoundError:
                continue
            if now - mtime < older_than:
                continue
            if os.path.isdir(path):
                status = self._status(path)
                if _remove_if_unlocked(path):
                    removed.append(status.ref if status else name)
            else:
                _unlink_quiet(path)
                removed.append(name)
        return removed

    def _status(self, directory: str) -> IngestStatus | None:
        try:
            with open(os.path.join(directory, "meta"), "rb") as f:
                meta = json.loads(f.read())
            st = os.stat(os.path.join(directory, "data"))
        except (OSError, ValueError):
            return None
        return IngestStatus(
            ref=meta.get("ref", ""),
            offset=st.st_size,
            expected_digest=meta.get("expected"),
            expected_size=meta.get("size"),
            started=float(meta.get("started", st.st_mtime)),
            updated=st.st_mtime,
        )


class Writer:
    """Appends to one ingest; ``commit()`` verifies and moves it into ``blobs/``.

    ``close()`` (also on leaving a ``with`` block) keeps the bytes for a later resume;
    ``abort()`` drops them. A writer is for one thread at a time.
    """

    def __init__(
        self, store: ContentStore, ref: str, expected_digest: str | None, expected_size: int | None
    ) -> None:
        self.store = store
        self.ref = ref
        self.expected_digest = expected_digest
        self.expected_size = expected_size
        self.algorithm = parse_digest(expected_digest)[0] if expected_digest else SHA256
        self.directory = store.ingest_path(ref)
        self._data_path = os.path.join(self.directory, "data")
        self._fd = self._open_locked()
        self._digester = Digester(self.algorithm)
        self.closed = False
        try:
            self._resume()
        except BaseException:
            os.close(self._fd)
            raise

    @property
    def offset(self) -> int:
        """Bytes in the ingest so far."""
        return self._digester.size

    def digest(self) -> str:
        """The digest of the bytes written so far."""
        return self._digester.digest()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._check_open()
        view = memoryview(data).cast("B")
        if self.expected_size is not None and self.offset + len(view) > self.expected_size:
            size = self.offset + len(view)
            self.abort()
            raise InvalidArgument(
                f"{self.ref}: more data than expected: {size} bytes or more, expected {self.expected_size}"
            )
        self._digester.update(view)
        while view:
            view = view[os.write(self._fd, view):]

    def reset(self) -> None:
        """Forget the bytes written so far and start again from offset 0."""
        self._check_open()
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)
        self._digester = Digester(self.algorithm)

    def commit(self) -> str:
        """Verify size and digest, then move the blob into place atomically.

        Returns the digest. On a mismatch the ingest is deleted and InvalidArgument
        raised; if the same blob got stored meanwhile, the ingest is dropped quietly.
        """
        self._check_open()
        size, digest = self.offset, self.digest()
        if self.expected_size is not None and size != self.expected_size:
            self.abort()
            raise InvalidArgument(
                f"{self.ref}: size mismatch: expected {self.expected_size} bytes, got {size}"
            )
        if self.expected_digest is not None and digest != self.expected_digest:
            self.abort()
            raise InvalidArgument(
                f"{self.ref}: digest mismatch: expected {self.expected_digest}, got {digest}"
            )
        target = self.store.blob_path(digest)
        if os.path.exists(target):
            self.abort()
            return digest
        os.fsync(self._fd)
        os.fchmod(self._fd, 0o444)
        os.rename(self._data_path, target)
        _fsync_dir(os.path.dirname(target))
        shutil.rmtree(self.directory, ignore_errors=True)
        self._release()
        return digest

    def close(self) -> None:
        """Stop writing but keep the ingest, so that a later writer resumes it."""
        if self.closed:
            return
        try:
            os.fsync(self._fd)
        except OSError:
            pass
        self._release()

    def abort(self) -> None:
        """Drop the ingest and its bytes."""
        if self.closed:
            return
        shutil.rmtree(self.directory, ignore_errors=True)
        self._release()

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- internals -----------------------------------------------------------------

    def _check_open(self) -> None:
        if self.closed:
            raise InvalidArgument(f"writer for {self.ref!r} is closed")

    def _release(self) -> None:
        self.closed = True
        os.close(self._fd)

    def _open_locked(self) -> int:
        for _ in range(10):
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            try:
                fd = os.open(self._data_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except FileNotFoundError:  # the directory went away under us (commit/abort)
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise Unavailable(f"ingest {self.ref!r} is in use by another writer") from None
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self._data_path))
            except FileNotFoundError:
                same = False
            if same:
                return fd
            os.close(fd)  # committed or aborted between open and lock: start over
        raise Unavailable(f"ingest {self.ref!r} keeps changing under this writer")

    def _resume(self) -> None:
        meta_path = os.path.join(self.directory, "meta")
        meta = _read_json(meta_path)
        size = os.fstat(self._fd).st_size
        matches = (
            meta is not None
            and meta.get("ref") == self.ref
            and meta.get("expected") == self.expected_digest
            and meta.get("size") == self.expected_size
        )
        if not matches or (self.expected_size is not None and size > self.expected_size):
            os.ftruncate(self._fd, 0)
            size = 0
            started = time.time()
            _write_json(
                meta_path,
                {"ref": self.ref, "expected": self.expected_digest, "size": self.expected_size, "started": started},
            )
        if size:
            self._rehash(size)
        os.lseek(self._fd, self.offset, os.SEEK_SET)

    def _rehash(self, size: int) -> None:
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        pos = 0
        while pos < size:
            n = os.preadv(self._fd, [view[: min(CHUNK, size - pos)]], pos)
            if n <= 0:
                break
            self._digester.update(view[:n])
            pos += n
        if pos != size:  # the file shrank under us: keep what was hashed
            os.ftruncate(self._fd, pos)


# --- small file helpers ---------------------------------------------------------------

def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _read_json(path: str) -> dict[str, object] | None:
    try:
        with open(path, "rb") as f:
            value = json.loads(f.read())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _write_json(path: str, value: dict[str, object]) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(value, f)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


def _scandir_names(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:
        return []


def _newest_mtime(path: str) -> float:
    newest = os.lstat(path).st_mtime
    if os.path.isdir(path):
        for name in os.listdir(path):
            try:
                newest = max(newest, os.lstat(os.path.join(path, name)).st_mtime)
            except FileNotFoundError:
                pass
    return newest


def _remove_if_unlocked(directory: str) -> bool:
    """Remove an ingest directory unless a writer holds its lock."""
    data = os.path.join(directory, "data")
    try:
        fd = os.open(data, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        shutil.rmtree(directory, ignore_errors=True)
        return True
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return False
            raise
        shutil.rmtree(directory, ignore_errors=True)
        return True
    finally:
        os.close(fd)
