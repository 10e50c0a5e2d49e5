"""The layers of one image fetched, verified and unpacked in parallel, committed in order.

    jobs = plan_layers(stores, descriptors, diff_ids)
    runner = LayerRunner(stores, progress, workers=4)
    staged = runner.run(jobs, fetch)      # fetch(job, sink): stream the blob into sink
    ...                                   # store the config and the manifest
    runner.commit(staged)                 # blobs, then snapshots bottom up
    # or runner.discard(staged) if anything else failed
    # (``runner.store(staged, [(config, digest), ...])`` does the three: blobs, commit, sizes)

Per layer, in a pool of ``workers`` threads, according to what the stores hold:

- blob missing, snapshot missing: ``fetch`` writes the compressed bytes into a sink that
  tees them into the content store's writer (which hashes them and keeps them for push
  and save) and into a bounded pipe; the worker thread reads the pipe through the
  decompressor into ``apply_layer``, in a staging directory of the snapshotter. One pass
  over the network bytes. A download the content store had partly kept (an earlier pull
  that broke off) resumes from its offset, and the decompressor is first fed the kept
  bytes from the ingest file, from byte 0. If the registry cannot resume (it answers a
  range request with the whole blob), the layer starts over.
- blob missing, snapshot committed: the blob is fetched into the content store only.
- blob stored, snapshot missing: the blob is read from the content store and unpacked.
- both there: "Already exists".

Nothing is committed before every layer has passed both checks: the compressed bytes
against the manifest's digest and size, the uncompressed ones against the config's diff
ID. If any layer fails, the others are cancelled and staging directories deleted. The
partial downloads are kept for a resume when the failure was the network's
(Unavailable); after any other failure (a digest mismatch, a bad layer) every byte of
the run is suspect and they are dropped, so that the next pull starts clean. The error
reported is the first real one: for a corrupt blob, its digest mismatch (its download is
finished, into the content writer alone, to tell) rather than the tar error it causes. ``commit`` then moves the blobs into the content store and, bottom
up, makes each staged layer the content of a snapshot prepared on its parent, gives the
directories it did not list their attributes in the lower layers, and commits it under
its chain ID.

Progress: ``progress(short_digest, phase, done, total)``, phases ``Waiting``,
``Downloading``, ``Extracting``, ``Pull complete``, ``Already exists``; bytes are the
compressed blob's (as Docker reports them). It may be called from several threads.
"""

from __future__ import annotations

import collections
import io
import os
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import IO, Any

from berth.errors import AlreadyExists, BerthError, InvalidArgument, NotFound, Unavailable
from berth.image.compression import open_decompressed
from berth.image.content import Writer
from berth.image.layers import AppliedLayer, apply_layer, inherit_from_lowers
from berth.image.manifests import Descriptor
from berth.image.store import STAGING_PREFIX, Stores
from berth.snapshots.base import Kind
from berth.snapshots.chain import chain_ids
from berth.image.unpack import DIFF_ID_LABEL

Progress = Callable[[str, str, int, int], None]

WAITING = "Waiting"
DOWNLOADING = "Downloading"
EXTRACTING = "Extracting"
COMPLETE = "Pull complete"
EXISTS = "Already exists"

CHUNK = 1 << 20
PIPE_CHUNKS = 8  # chunks (of up to 1 MiB) buffered between download and unpack, per layer
LOCK_WAIT = 600.0  # seconds to wait for an ingest another pull is writing
RESTARTS = 3


@dataclass
class LayerJob:
    index: int
    digest: str
    size: int
    media_type: str
    diff_id: str
    chain: str
    parent: str | None
    need_blob: bool
    need_unpack: bool
    duplicate_of: int | None = None  # an earlier layer with the same blob fetches it

    @property
    def short(self) -> str:
        return self.digest.split(":", 1)[1][:12]

    @property
    def ref(self) -> str:
        return f"layer-{self.digest}"


@dataclass
class StagedLayer:
    job: LayerJob
    writer: Writer | None = None  # verified, not yet committed
    staged: str | None = None  # staging directory holding the applied layer
    applied: AppliedLayer | None = None


class _Cancelled(Exception):
    """Another layer failed: this one stops."""


class _Restart(Exception):
    """The registry restarted the blob from byte 0 after the decompressor had bytes."""


def plan_layers(stores: Stores, layers: Sequence[Descriptor], diff_ids: Sequence[str]) -> list[LayerJob]:
    """What each layer needs: its blob fetched, its snapshot unpacked, both or neither."""
    if len(layers) != len(diff_ids):
        raise InvalidArgument(f"the manifest has {len(layers)} layers but the config lists {len(diff_ids)} diff IDs")
    chains = chain_ids(diff_ids)
    jobs: list[LayerJob] = []
    first: dict[str, int] = {}
    for i, (desc, diff_id, chain) in enumerate(zip(layers, diff_ids, chains)):
        have_blob = stores.content.exists(desc.digest)
        dup = first.get(desc.digest)
        jobs.append(LayerJob(
            index=i, digest=desc.digest, size=desc.size, media_type=desc.media_type, diff_id=diff_id,
            chain=chain, parent=chains[i - 1] if i else None,
            need_blob=not have_blob and dup is None,
            need_unpack=not _committed(stores, chain),
            duplicate_of=dup if not have_blob else None,
        ))
        first.setdefault(desc.digest, i)
    return jobs


def _committed(stores: Stores, chain: str) -> bool:
    try:
        return stores.snapshotter.stat(chain).kind is Kind.COMMITTED
    except NotFound:
        return False


def layer_size(stores: Stores, diff_id: str, chain: str) -> int:
    """The uncompressed size of a layer recorded before, else its snapshot's disk usage."""
    known = stores.images.layer_size(diff_id)
    if known is not None:
        return known
    try:
        return stores.snapshotter.usage(chain).size
    except NotFound:
        return 0


class LayerRunner:
    def __init__(self, stores: Stores, progress: Progress | None = None, workers: int = 4) -> None:
        self.stores = stores
        self.progress = progress
        self.workers = max(1, workers)
        self.cancel = threading.Event()
        self._lock = threading.Lock()
        self._pipes: set[_Pipe] = set()
        self._errors: list[BaseException] = []
        self._unfinished: list[tuple[LayerJob, Writer]] = []

    # --- the two phases ---------------------------------------------------------------

    def run(self, jobs: Sequence[LayerJob], fetch: Callable[[LayerJob, Any], None] | None) -> list[StagedLayer]:
        """Fetch, verify and stage every layer that needs it; raises the first real error."""
        for job in jobs:
            idle = not job.need_blob and not job.need_unpack
            self._report(job, EXISTS if idle else WAITING, job.size if idle else 0, job.size)
        active = [j for j in jobs if (j.need_blob or j.need_unpack) and j.duplicate_of is None]
        results: dict[int, StagedLayer] = {}
        futures: dict[int, Future[StagedLayer]] = {}
        writers = self._open_writers(active)
        pool = ThreadPoolExecutor(max_workers=max(1, min(self.workers, len(active) or 1)),
                                  thread_name_prefix="berth-layer")
        try:
            for job in active:
                futures[job.index] = pool.submit(self._guarded, job, fetch, writers.get(job.index))
            if futures:
                wait(futures.values(), return_when=FIRST_EXCEPTION)
                if any(f.done() and f.exception() is not None for f in futures.values()):
                    self._cancel_all()
                wait(futures.values())
            for index, future in futures.items():
                if future.exception() is None:
                    results[index] = future.result()
            if len(results) != len(futures):
                raise self._first_error()
            for job in jobs:  # a blob used twice: unpacked again from the first fetch
                if job.duplicate_of is not None and job.need_unpack:
                    source = results.get(job.duplicate_of)
                    path = (os.path.join(self.stores.content.ingest_path(job.ref), "data")
                            if source is not None and source.writer is not None
                            else self.stores.content.path(job.digest))
                    results[job.index] = self._apply_file(job, path)
        except BaseException as e:
            self.cancel.set()
            pool.shutdown(wait=True)
            # a broken connection leaves partial downloads to resume; anything else (a
            # digest mismatch, a bad layer) makes every byte of this run suspect
            keep = isinstance(e, Unavailable)
            for job, writer in self._unfinished:
                if keep:
                    _close(job, writer)
                else:
                    writer.abort()
            self.discard(list(results.values()), keep_ingests=keep)
            raise
        pool.shutdown(wait=True)
        return [results.get(j.index) or StagedLayer(j) for j in jobs]

    def commit(self, staged: Sequence[StagedLayer]) -> None:
        """Blobs into the content store, then snapshots bottom up under their chain IDs."""
        try:
            for layer in staged:
                if layer.writer is not None and not layer.writer.closed:
                    layer.writer.commit()
                layer.writer = None
            for layer in staged:
                if layer.staged is not None:
                    self._commit_snapshot(layer)
        except BaseException:
            self.discard(staged)
            raise
        for layer in staged:
            job = layer.job
            if job.need_blob or job.need_unpack:
                self._report(job, COMPLETE, job.size, job.size)

    def store(self, staged: Sequence[StagedLayer], blobs: Sequence[tuple[bytes, str]]) -> list[int]:
        """``blobs`` ((data, digest): the config, the manifests) into the content store, then
        ``commit`` (or ``discard`` if a blob fails); returns the layers' uncompressed sizes,
        recorded for the layers unpacked now."""
        try:
            for data, digest in blobs:
                self.stores.content.put_bytes(data, digest)
        except BaseException:
            self.discard(staged)
            raise
        self.commit(staged)
        sizes: list[int] = []
        for layer in staged:
            if layer.applied is not None:
                self.stores.images.record_layer(layer.job.diff_id, layer.applied.size)
                sizes.append(layer.applied.size)
            else:
                sizes.append(layer_size(self.stores, layer.job.diff_id, layer.job.chain))
        return sizes

    def discard(self, staged: Sequence[StagedLayer], keep_ingests: bool = True) -> None:
        """Undo a run that will not be committed: staging deleted, downloads kept for a
        resume (or dropped)."""
        for layer in staged:
            if layer.writer is not None:
                if keep_ingests:
                    _close(layer.job, layer.writer)
                else:
                    layer.writer.abort()
            layer.writer = None
            if layer.staged is not None:
                self.stores.snapshotter.discard_staging(layer.staged)
                layer.staged = None

    # --- one layer ----------------------------------------------------------------------

    def _open_writers(self, jobs: Sequence[LayerJob]) -> dict[int, Writer | None]:
        """The content writers of every blob to fetch, taken before any fetch starts and in
        digest order: two pulls sharing layers then never hold one blob each while waiting
        for the other's (a pull waits only while it holds no later blob)."""
        writers: dict[int, Writer | None] = {}
        try:
            for job in sorted((j for j in jobs if j.need_blob), key=lambda j: j.digest):
                writers[job.index] = self._open_writer(job)
        except BaseException:
            for job in jobs:
                writer = writers.get(job.index)
                if writer is not None:
                    _close(job, writer)
            raise
        return writers

    def _guarded(self, job: LayerJob, fetch: Callable[[LayerJob, Any], None] | None,
                 writer: Writer | None) -> StagedLayer:
        try:
            return self._one(job, fetch, writer)
        except BaseException as e:
            with self._lock:
                self._errors.append(e)
            if not isinstance(e, _Cancelled):
                self._cancel_all()
            raise

    def _one(self, job: LayerJob, fetch: Callable[[LayerJob, Any], None] | None,
             writer: Writer | None) -> StagedLayer:
        if writer is None:
            if job.need_blob:
                job.need_blob = False  # another pull stored it meanwhile
            if not job.need_unpack:
                return StagedLayer(job)
            return self._apply_file(job, self.stores.content.path(job.digest))
        if fetch is None:
            writer.close()
            raise NotFound(f"layer {job.digest} is not in the content store")
        try:
            if not job.need_unpack:
                sink = _Sink(writer, None, lambda n: self._report(job, DOWNLOADING, n, job.size), self.cancel)
                fetch(job, sink)
                _verify(job, writer)
                return StagedLayer(job, writer)
            return self._fetch_and_apply(job, writer, fetch)
        except BaseException:
            if not writer.closed:
                with self._lock:
                    self._unfinished.append((job, writer))  # run() decides: keep or drop
            raise

    def _fetch_and_apply(self, job: LayerJob, writer: Writer, fetch: Callable[[LayerJob, Any], None]) -> StagedLayer:
        for _attempt in range(RESTARTS + 1):
            staged = self.stores.snapshotter.staging_dir()
            pipe = _Pipe()
            with self._lock:
                self._pipes.add(pipe)
            if self.cancel.is_set():
                pipe.cancel()
            done = threading.Event()
            sink = _Sink(writer, pipe, lambda n: self._report(job, DOWNLOADING, n, job.size), self.cancel)
            failure: list[BaseException] = []

            def produce() -> None:
                try:
                    if writer.offset:
                        self._prefeed(job, writer.offset, sink)
                    fetch(job, sink)
                    _verify(job, writer)
                except BaseException as e:  # noqa: BLE001 - handed to the consumer
                    failure.append(e)
                    pipe.close(e)
                else:
                    pipe.close()
                finally:
                    done.set()

            producer = threading.Thread(target=produce, name=f"berth-fetch-{job.short}", daemon=True)
            producer.start()
            applied: AppliedLayer | None = None
            apply_error: BaseException | None = None
            consumed = _Counter(lambda n: self._report(job, EXTRACTING, n, job.size) if done.is_set() else None)
            try:
                applied = apply_layer(open_decompressed(_PipeReader(pipe, consumed)), staged)
            except BaseException as e:  # noqa: BLE001 - decided below, with the producer's outcome
                apply_error = e
                pipe.detach()  # the download goes on into the content store only
            producer.join()
            with self._lock:
                self._pipes.discard(pipe)
            error = failure[0] if failure else None
            if isinstance(error, _Restart):
                self.stores.snapshotter.discard_staging(staged)
                writer.reset()
                continue
            if error is not None or apply_error is not None:
                self.stores.snapshotter.discard_staging(staged)
                if error is not None and not isinstance(error, _Cancelled):
                    raise error
                raise apply_error if apply_error is not None else error  # type: ignore[misc]
            assert applied is not None
            if applied.diff_id != job.diff_id:
                self.stores.snapshotter.discard_staging(staged)
                raise InvalidArgument(
                    f"layer {job.digest}: its content has diff ID {applied.diff_id}, the image config says {job.diff_id}"
                )
            self._report(job, EXTRACTING, job.size, job.size)
            return StagedLayer(job, writer, staged, applied)
        raise Unavailable(f"layer {job.digest}: the registry restarted the download {RESTARTS + 1} times")

    def _apply_file(self, job: LayerJob, path: str) -> StagedLayer:
        staged = self.stores.snapshotter.staging_dir()
        try:
            consumed = _Counter(lambda n: self._report(job, EXTRACTING, n, job.size))
            with open(path, "rb", buffering=0) as raw:
                applied = apply_layer(open_decompressed(_FileReader(raw, consumed, self.cancel)), staged)
            if applied.diff_id != job.diff_id:
                raise InvalidArgument(
                    f"layer {job.digest}: its content has diff ID {applied.diff_id}, the image config says {job.diff_id}"
                )
        except BaseException:
            self.stores.snapshotter.discard_staging(staged)
            raise
        return StagedLayer(job, None, staged, applied)

    def _prefeed(self, job: LayerJob, offset: int, sink: _Sink) -> None:
        """Hand the decompressor the bytes an earlier pull left in the ingest."""
        path = os.path.join(self.stores.content.ingest_path(job.ref), "data")
        with open(path, "rb", buffering=0) as f:
            left = offset
            while left > 0:
                data = f.read(min(CHUNK, left))
                if not data:
                    raise Unavailable(f"layer {job.digest}: the partial download shrank while resuming")
                sink.feed(data)
                left -= len(data)

    def _open_writer(self, job: LayerJob) -> Writer | None:
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            if self.cancel.is_set():
                raise _Cancelled()
            try:
                writer = self.stores.content.writer(job.ref, job.digest, job.size)
            except AlreadyExists:
                return None
            except Unavailable:  # another pull is fetching this blob: wait for it
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
                continue
            if writer.offset == job.size and writer.digest() != job.digest:
                writer.reset()  # a whole blob kept from a corrupt download: fetch it again
            return writer

    def _commit_snapshot(self, layer: StagedLayer) -> None:
        job, snapshotter = layer.job, self.stores.snapshotter
        key = f"{STAGING_PREFIX}{secrets.token_hex(6)}-{job.chain}"
        snapshotter.prepare(key, job.parent, labels={DIFF_ID_LABEL: job.diff_id})
        try:
            assert layer.staged is not None and layer.applied is not None
            snapshotter.adopt(key, layer.staged)
            layer.staged = None
            upper, lowers = snapshotter.upper_and_lowers(key)
            inherit_from_lowers(upper, lowers, layer.applied)
            try:
                snapshotter.commit(job.chain, key, labels={DIFF_ID_LABEL: job.diff_id})
            except AlreadyExists:
                snapshotter.remove(key)  # another pull committed this layer first: keep theirs
            key = ""
        finally:
            if key:
                snapshotter.remove(key)

    # --- failures and progress -------------------------------------------------------------

    def _cancel_all(self) -> None:
        self.cancel.set()
        with self._lock:
            pipes = list(self._pipes)
        for pipe in pipes:
            pipe.cancel()

    def _first_error(self) -> BaseException:
        with self._lock:
            real = [e for e in self._errors if not isinstance(e, _Cancelled)]
            if real:
                return real[0]
        return BerthError("layer unpacking was cancelled")

    def _report(self, job: LayerJob, phase: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(job.short, phase, done, total)


def _close(job: LayerJob, writer: Writer) -> None:
    """Keep an unfinished download for a resume; drop a finished one that is wrong."""
    if writer.closed:
        return
    if writer.offset >= job.size and writer.digest() != job.digest:
        writer.abort()
    else:
        writer.close()


def _verify(job: LayerJob, writer: Writer) -> None:
    """The whole blob is there and hashes to the manifest's digest (else its bytes go)."""
    got, size = writer.digest(), writer.offset
    if size != job.size or got != job.digest:
        writer.abort()
        what = f"size mismatch: {size} bytes, expected {job.size}" if size != job.size else f"digest mismatch: got {got}"
        raise InvalidArgument(f"layer {job.digest}: {what}")


# --- plumbing between the download and the unpack ----------------------------------------------


class _Pipe:
    """Bounded chunks from a producer thread to a consumer thread.

    ``detach()`` (consumer gone): puts are dropped. ``cancel()``: both ends raise.
    ``close(error)``: the consumer sees the end, or the error.
    """

    def __init__(self, max_chunks: int = PIPE_CHUNKS) -> None:
        self._chunks: collections.deque[bytes] = collections.deque()
        self._max = max_chunks
        self._cond = threading.Condition()
        self._closed = False
        self._error: BaseException | None = None
        self._detached = False
        self._cancelled = False

    def put(self, data: bytes) -> None:
        with self._cond:
            while len(self._chunks) >= self._max and not (self._detached or self._cancelled):
                self._cond.wait()
            if self._cancelled:
                raise _Cancelled()
            if not self._detached:
                self._chunks.append(data)
                self._cond.notify_all()

    def get(self) -> bytes:
        with self._cond:
            while not self._chunks and not self._closed and not self._cancelled:
                self._cond.wait()
            if self._cancelled:
                raise _Cancelled()
            if self._error is not None:
                raise _Cancelled() if isinstance(self._error, (_Cancelled, _Restart)) else _ProducerFailed()
            if self._chunks:
                data = self._chunks.popleft()
                self._cond.notify_all()
                return data
            return b""

    def close(self, error: BaseException | None = None) -> None:
        with self._cond:
            self._closed = True
            self._error = error
            self._cond.notify_all()

    def detach(self) -> None:
        with self._cond:
            self._detached = True
            self._chunks.clear()
            self._cond.notify_all()

    def cancel(self) -> None:
        with self._cond:
            self._cancelled = True
            self._chunks.clear()
            self._cond.notify_all()


class _ProducerFailed(Exception):
    """The download failed; its own error is the one reported."""


class _Sink:
    """A BlobSink for RegistryClient.fetch_blob: bytes go to the content writer and, if
    there is one, to the pipe towards the decompressor."""

    def __init__(self, writer: Writer, pipe: _Pipe | None, report: Callable[[int], None],
                 cancel: threading.Event) -> None:
        self._writer = writer
        self._pipe = pipe
        self._report = report
        self._cancel = cancel
        self._fed = 0  # bytes the decompressor has been handed
        self._next_report = 0

    @property
    def offset(self) -> int:
        return self._writer.offset

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._cancel.is_set():
            raise _Cancelled()
        self._writer.write(data)
        if self._pipe is not None:
            self.feed(bytes(data))
        offset = self._writer.offset
        if offset >= self._next_report:
            self._next_report = offset + CHUNK
            self._report(offset)

    def feed(self, data: bytes) -> None:
        assert self._pipe is not None
        self._pipe.put(data)
        self._fed += len(data)

    def reset(self) -> None:
        if self._fed:
            raise _Restart()  # the decompressor already has bytes: start the layer over
        self._writer.reset()


class _Counter:
    """Counts bytes read; calls ``report(total)`` about every MiB."""

    __slots__ = ("total", "_report", "_next")

    def __init__(self, report: Callable[[int], None] | None) -> None:
        self.total = 0
        self._report = report
        self._next = CHUNK

    def add(self, n: int) -> None:
        self.total += n
        if self._report is not None and self.total >= self._next:
            self._next = self.total + CHUNK
            self._report(self.total)


class _PipeReader(io.RawIOBase):
    """The consumer end of a _Pipe as a readable raw stream."""

    def __init__(self, pipe: _Pipe, counter: _Counter) -> None:
        self._pipe = pipe
        self._counter = counter
        self._buf = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if not self._buf:
            data = self._pipe.get()
            if not data:
                return 0
            self._buf = memoryview(data)
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        self._counter.add(n)
        return n

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        if not self._buf:
            data = self._pipe.get()
            if not data:
                return b""
            self._buf = memoryview(data)
        out = bytes(self._buf[:size])
        self._buf = self._buf[len(out):]
        self._counter.add(len(out))
        return out


class _FileReader(io.RawIOBase):
    """A blob file read forward, counted, and stopped when the run is cancelled."""

    def __init__(self, raw: IO[bytes], counter: _Counter, cancel: threading.Event) -> None:
        self._raw = raw
        self._counter = counter
        self._cancel = cancel

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self._cancel.is_set():
            raise _Cancelled()
        n = self._raw.readinto(b) or 0
        self._counter.add(n)
        return n

    def read(self, size: int = -1) -> bytes:
        if self._cancel.is_set():
            raise _Cancelled()
        data = self._raw.read(size)
        self._counter.add(len(data))
        return data
