"""The images service: berthd's side of ``berth.image``, one set of stores per data root.

    images = daemon.services["images"]          # built by build(daemon)

For the containers service (synchronous, cheap, safe on the event loop):

    image = images.resolve("busybox")          # Image; NotFound "No such image: busybox:latest"
    image.id                                   # "sha256:<config digest>"
    image.config                               # the image config's "config" object, Docker's keys:
                                               # Entrypoint, Cmd, Env, WorkingDir, User, ExposedPorts,
                                               # Volumes, Labels, StopSignal, Healthcheck... ({} if none)
    image.record                               # berth.image.store.ImageRecord
    image.document                             # the whole image config (os, architecture, rootfs...)
    images.snapshot_parent(image)              # top chain id: parent of the container's snapshot
                                               # (None for an image without layers)
    images.snapshotter                         # the shared OverlaySnapshotter
    images.set_in_use_checker(fn)              # fn(image_id) -> ids of containers using the image

For the API (``berth.daemon.api.images``), coroutines; blocking library work runs in
threads (``asyncio.to_thread``). Progress streams are async iterators of Docker's
JSON-message dicts; the first ``__anext__`` raises the errors found before any progress
(an unknown image, a manifest that is not there), later errors end the stream:

    pull(ref, platform=, auth=)  -> AsyncIterator[dict]   # {"status": "Downloading", ...}
    push(name, tag, auth=)       -> AsyncIterator[dict]
    import_image(chunks, repo=, tag=, changes=, message=, platform=) -> Image
    load(chunks)                 -> list[str]              # familiar names or sha256 IDs
    save(names)                  -> AsyncIterator[bytes]   # a docker-format tar
    list(filters)  inspect(name)  history(name)  tag(name, repo, tag)  remove(name, force=)
    prune(filters) -> {"ImagesDeleted": [...], "SpaceReclaimed": n}
    login(auth)    -> dict                                 # /auth

For ``/info`` and ``/system/df``: ``count()``, ``layers_size()``, ``summaries()``.

Events (``daemon.events``): image pull, push, tag, untag, delete, import, load, save.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import io
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from berth._sys.units import progress_text
from berth.errors import BerthError, FailedPrecondition, InvalidArgument, NotFound
from berth.image.auth import AuthProvider, Credentials, StaticCredentials
from berth.image.reference import parse_reference
from berth.image.store import ImageRecord, Stores, familiar, tag_name
from berth.snapshots.chain import chain_ids

InUseChecker = Callable[[str], "builtins.list[str]"]


@dataclass(frozen=True)
class Image:
    """An image as the containers service uses it: its record and its config."""

    record: ImageRecord
    document: dict[str, Any]  # the image config document
    name: str = ""  # what it was asked for by (familiar form), or its ID
    config: dict[str, Any] = field(default_factory=dict)  # document["config"]

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def short_id(self) -> str:
        return self.record.short_id

    @property
    def chain_id(self) -> str | None:
        return self.record.chain_id

    @property
    def platform(self) -> str:
        return self.record.platform

    @property
    def size(self) -> int:
        return self.record.size

    def repo_tags(self) -> list[str]:
        return self.record.repo_tags()

    def repo_digests(self) -> list[str]:
        return self.record.repo_digests()


def build(daemon: Any) -> ImagesService:
    return ImagesService(daemon)


class ImagesService:
    """See the module docstring."""

    def __init__(self, daemon: Any) -> None:
        self.daemon = daemon
        self.daemon_config = daemon.config
        self.stores = Stores(self.daemon_config.data_root)  # metadata.db, content/, snapshots/overlay/
        self._in_use: InUseChecker | None = None
        self._gc_lock = threading.Lock()

    # --- the containers service's surface ----------------------------------------------

    @property
    def snapshotter(self) -> Any:
        return self.stores.snapshotter

    @property
    def content(self) -> Any:
        return self.stores.content

    @property
    def store(self) -> Any:
        return self.stores.images

    def set_in_use_checker(self, fn: InUseChecker) -> None:
        """``fn(image_id)`` -> the containers using the image: rmi refuses to delete it
        (409, unless forced) and prune keeps it."""
        self._in_use = fn

    def resolve(self, name_or_id: str) -> Image:
        """The image a name, ID or ID prefix names; NotFound as Docker words it."""
        try:
            record = self.stores.images.get(name_or_id)
        except NotFound:
            raise NotFound(f"No such image: {_display(name_or_id)}") from None
        document = self.stores.images.config(record)
        config = document.get("config") if isinstance(document.get("config"), dict) else {}
        return Image(record, document, _display(name_or_id) if _is_name(name_or_id) else record.id, dict(config))

    def snapshot_parent(self, image: Image | ImageRecord) -> str | None:
        """The committed snapshot (top chain id) a container's snapshot is prepared on."""
        record = image.record if isinstance(image, Image) else image
        chain = record.chain_id
        if chain is not None and not self.stores.snapshotter.exists(chain):
            raise FailedPrecondition(f"the layers of image {record.short_id} are not unpacked: pull it again")
        return chain

    def config(self, image: Image | ImageRecord | str) -> dict[str, Any]:
        """The image config document (os, architecture, config, rootfs, history)."""
        if isinstance(image, Image):
            return image.document
        return self.stores.images.config(image if isinstance(image, ImageRecord) else self.resolve(image).record)

    def users_of(self, image_id: str) -> builtins.list[str]:
        """The containers using ``image_id``, as the in-use checker reports them."""
        return list(self._in_use(image_id)) if self._in_use is not None else []

    async def stop(self) -> None:
        """Nothing to stop: the stores stay open until the process ends, since the
        containers service (stopped after this one) and late requests still use them;
        SQLite in WAL mode needs no close to be consistent."""

    # --- reading -----------------------------------------------------------------------

    def count(self) -> int:
        return len({r.id for r in self.stores.images.list()})

    def layers_size(self) -> int:
        sizes: dict[str, int] = {}
        for record in self.stores.images.list():
            sizes.update(zip(chain_ids(record.diff_ids), record.layer_sizes))
        return sum(sizes.values())

    def summaries(self, filters: dict[str, builtins.list[str]] | None = None) -> builtins.list[dict[str, Any]]:
        """``GET /images/json``: one entry per image ID (its records merged), newest first."""
        by_id: dict[str, builtins.list[ImageRecord]] = {}
        for record in self.stores.images.list():
            by_id.setdefault(record.id, []).append(record)
        out = []
        for image_id, records in by_id.items():
            first = records[0]
            tags = [t for r in records for t in r.repo_tags()]
            digests = [d for r in records for d in r.repo_digests()]
            config = self.stores.images.config(first).get("config") or {}
            summary = {
                "Id": image_id, "ParentId": "", "RepoTags": _unique(tags), "RepoDigests": _unique(digests),
                "Created": _unix(first.created), "Size": first.size, "SharedSize": -1, "VirtualSize": first.size,
                "Labels": config.get("Labels") or {}, "Containers": len(self.users_of(image_id)),
            }
            if _matches(summary, first, filters or {}, by_id, self):
                out.append(summary)
        return out

    async def list(self, filters: dict[str, builtins.list[str]] | None = None) -> builtins.list[dict[str, Any]]:
        return await asyncio.to_thread(self.summaries, filters)

    async def inspect(self, name: str) -> dict[str, Any]:
        image = self.resolve(name)
        doc = await asyncio.to_thread(self.stores.images.inspect, image.record.manifest_digest)
        tags = []
        digests = []
        for record in self.stores.images.list():
            if record.id == image.id:
                tags += record.repo_tags()
                digests += record.repo_digests()
        doc.update(RepoTags=_unique(tags), RepoDigests=_unique(digests), Container="",
                   ContainerConfig=doc.get("Config"))
        return doc

    async def history(self, name: str) -> builtins.list[dict[str, Any]]:
        image = self.resolve(name)
        return await asyncio.to_thread(self.stores.images.history, image.record.manifest_digest)

    # --- names -------------------------------------------------------------------------

    async def tag(self, name: str, repo: str, tag: str = "") -> None:
        image = self.resolve(name)
        if not repo:
            raise InvalidArgument("repository name must have at least one component")
        target = f"{repo}:{tag}" if tag else repo
        ref = parse_reference(target)
        if ref.digest is not None:
            raise InvalidArgument("refusing to create a tag with a digest reference")
        await asyncio.to_thread(self.stores.images.tag, image.record.manifest_digest, target)
        self.daemon.events.publish("image", "tag", image.id, {"name": ref.familiar()})

    async def remove(self, name: str, force: bool = False, noprune: bool = False) -> builtins.list[dict[str, str]]:
        """``docker rmi``: Docker's report of what was untagged and deleted."""
        image = self.resolve(name)
        record = image.record
        stored = _stored_name(name)
        by_name = stored is not None and (stored in record.names or stored in record.digests)
        deletes = not by_name or not [n for n in record.names if n != stored]
        if deletes and not force:
            users = self.users_of(image.id)
            if users:
                who = f"container {users[0][:12]}" if users[0] else "a container"
                if by_name:
                    raise FailedPrecondition(
                        f'conflict: unable to remove repository reference "{name}" (must force) - {who} is using '
                        f"its referenced image {image.short_id}")
                raise FailedPrecondition(f"conflict: unable to delete {image.short_id} (must be forced) - image is "
                                         f"being used by {'stopped ' if users[0] else ''}{who}")
        try:
            report = await asyncio.to_thread(self.stores.images.remove, name, force, lambda _id: False)
        except FailedPrecondition as e:
            raise FailedPrecondition(f"conflict: {e}") from None
        except NotFound:
            raise NotFound(f"No such image: {_display(name)}") from None
        for item in report:
            if "Untagged" in item:
                self.daemon.events.publish("image", "untag", image.id, {"name": item["Untagged"]})
        if any("Deleted" in item for item in report):
            self.daemon.events.publish("image", "delete", image.id, {"name": image.id})
            if not noprune:
                report += [{"Deleted": chain} for chain in await self._gc()]
        return report

    async def prune(self, filters: dict[str, builtins.list[str]] | None = None) -> dict[str, Any]:
        filters = filters or {}
        dangling_only = (filters.get("dangling") or ["true"])[-1].lower() not in ("false", "0")
        keep_labels = filters.get("label") or []
        drop_labels = filters.get("label!") or []
        until = _until(filters.get("until"))
        records = self.stores.images.list()
        sizes: dict[str, int] = {}
        for record in records:
            sizes.update(zip(chain_ids(record.diff_ids), record.layer_sizes))
        spared = set()
        for record in records:
            labels = (self.stores.images.config(record).get("config") or {}).get("Labels") or {}
            if keep_labels and not all(_label_matches(labels, item) for item in keep_labels):
                spared.add(record.id)
            if drop_labels and any(_label_matches(labels, item) for item in drop_labels):
                spared.add(record.id)
            if until is not None and _unix(record.created) >= until:
                spared.add(record.id)

        def in_use(image_id: str) -> bool:
            return image_id in spared or bool(self.users_of(image_id))

        await asyncio.to_thread(self.stores.images.prune, dangling_only, in_use)
        left = {r.manifest_digest: r for r in self.stores.images.list()}
        left_ids = {r.id for r in left.values()}
        deleted: builtins.list[dict[str, str]] = []
        gone_ids: builtins.list[str] = []
        for record in records:
            if record.manifest_digest in left:
                continue
            deleted += [{"Untagged": familiar(n)} for n in (*record.names, *record.digests)]
            if record.id not in left_ids and record.id not in gone_ids:
                gone_ids.append(record.id)
        for image_id in gone_ids:
            deleted.append({"Deleted": image_id})
            self.daemon.events.publish("image", "delete", image_id, {"name": image_id})
        chains = await self._gc() if len(left) < len(records) else []
        deleted += [{"Deleted": c} for c in chains]
        return {"ImagesDeleted": deleted or None, "SpaceReclaimed": sum(sizes.get(c, 0) for c in chains)}

    async def _gc(self) -> builtins.list[str]:
        def run() -> builtins.list[str]:
            with self._gc_lock:
                return list(self.stores.gc().snapshots)

        return await asyncio.to_thread(run)

    # --- registries ----------------------------------------------------------------------

    def auth_provider(self, auth: dict[str, Any] | None, domain: str) -> AuthProvider:
        """Credentials from an X-Registry-Auth document (none: anonymous). dockerd reads no
        config.json; the client sends what it has."""
        if not auth:
            return AuthProvider(StaticCredentials({}))
        creds = _credentials(auth)
        server = str(auth.get("serveraddress") or "") or domain
        mapping = {server: creds}
        if creds is not None:
            mapping.setdefault(domain, creds)
        return AuthProvider(StaticCredentials({k: v for k, v in mapping.items() if v is not None}))

    async def pull(self, ref: str, *, platform: str = "", auth: dict[str, Any] | None = None) -> AsyncIterator[dict]:
        """Pull ``ref``; Docker's progress messages. Errors before the first one raise."""
        from berth.image.pull import pull

        reference = parse_reference(ref)
        familiar_ref = reference.familiar()
        try:
            before = self.stores.images.get(str(reference)).manifest_digest
        except (NotFound, InvalidArgument):
            before = None
        progress = _PullProgress(reference.digest or reference.tag or "latest", reference.path)
        provider = self.auth_provider(auth, reference.domain)

        def work(report: Callable[[dict], None]) -> ImageRecord:
            progress.report = report
            return pull(str(reference), store_root=self.stores, platform=platform or None, auth=provider,
                        insecure=self.daemon_config.insecure_registries, progress=progress)

        stream = _threaded(work)
        try:
            async for message in stream:
                yield message
        except BerthError as e:
            if not progress.started:
                raise _pull_error(e, reference) from None
            raise
        record: ImageRecord = stream.result
        if not progress.started:
            yield progress.header()
        digest = next((d.rsplit("@", 1)[1] for d in record.digests if d.startswith(reference.name + "@")),
                      record.manifest_digest)
        yield {"status": f"Digest: {digest}"}
        fresh = before != record.manifest_digest
        word = "Downloaded newer image for" if fresh else "Image is up to date for"
        yield {"status": f"Status: {word} {familiar_ref}"}
        self.daemon.events.publish("image", "pull", familiar_ref, {"name": familiar_ref})

    async def push(self, name: str, tag: str = "", *, auth: dict[str, Any] | None = None) -> AsyncIterator[dict]:
        """Push ``name`` (``tag``: one tag; none: every local tag of the repository)."""
        from berth.image.push import push

        base = parse_reference(name, default_tag=None)
        if tag:
            targets = [f"{base.name}:{tag}"]
        elif base.tag or base.digest:
            targets = [str(base)]
        else:
            targets = sorted({n for r in self.stores.images.list() for n in r.names
                              if n.rsplit(":", 1)[0] == base.name})
        if not targets:
            raise NotFound(f"An image does not exist locally with the tag: {base.familiar()}")
        for target in targets:
            try:
                self.stores.images.get(target)
            except NotFound:
                raise NotFound(f"An image does not exist locally with the tag: {familiar(target)}") from None
        provider = self.auth_provider(auth, base.domain)
        yield {"status": f"The push refers to repository [{base.familiar_name()}]"}
        for target in targets:
            ref = parse_reference(target)
            record = self.stores.images.get(target)
            progress = _PushProgress()

            def work(report: Callable[[dict], None], target: str = target) -> str:
                progress.report = report
                return push(target, target, store_root=self.stores, auth=provider,
                            insecure=self.daemon_config.insecure_registries, progress=progress)

            stream = _threaded(work)
            async for message in stream:
                yield message
            digest = stream.result
            shown = ref.tag or ref.digest or "latest"
            yield {"status": f"{shown}: digest: {digest} size: {record.manifest_size}"}
            yield {"progressDetail": {}, "aux": {"Tag": shown, "Digest": digest, "Size": record.manifest_size}}
            self.daemon.events.publish("image", "push", ref.familiar(), {"name": ref.familiar()})

    async def login(self, auth: dict[str, Any]) -> dict[str, Any]:
        """``POST /auth``: check the credentials against the registry's /v2/."""
        from berth.image.registry import RegistryClient

        server = str(auth.get("serveraddress") or "docker.io")
        from berth.image.auth import normalize_registry

        domain = normalize_registry(server)
        if _credentials(auth) is None:
            raise InvalidArgument("a username and a password are needed")

        def check() -> None:
            client = RegistryClient(domain, insecure=self.daemon_config.insecure_registries,
                                    auth=self.auth_provider(auth, domain))
            try:
                client.ping()
            finally:
                client.close()

        try:
            await asyncio.to_thread(check)
        except FailedPrecondition as e:
            raise _Unauthorized(f"login attempt to {server} failed: {e}") from None
        return {"Status": "Login Succeeded", "IdentityToken": ""}

    # --- archives --------------------------------------------------------------------------

    async def import_image(self, chunks: AsyncIterator[bytes], *, repo: str = "", tag: str = "",
                           changes: builtins.list[str] | None = None, message: str = "",
                           platform: str = "") -> Image:
        """``docker import``: a root filesystem tar (plain, gzip or zstd) as a one-layer image."""
        from berth.image.archive import import_rootfs

        name = None
        if repo:
            name = tag_name(f"{repo}:{tag}" if tag else repo)
        loop = asyncio.get_running_loop()
        reader = _BodyReader(chunks, loop)
        try:
            record = await asyncio.to_thread(
                import_rootfs, io.BufferedReader(reader, 1 << 20), name, changes or [], store_root=self.stores,
                message=message or None, platform=platform or None)
        finally:
            await reader.drain()
        shown = familiar(name) if name else record.id
        self.daemon.events.publish("image", "import", record.id, {"name": shown})
        document = self.stores.images.config(record)
        return Image(record, document, shown, dict(document.get("config") or {}))

    async def load(self, chunks: AsyncIterator[bytes]) -> builtins.list[str]:
        from berth.image.archive import load

        loop = asyncio.get_running_loop()
        reader = _BodyReader(chunks, loop)
        try:
            loaded = await asyncio.to_thread(load, io.BufferedReader(reader, 1 << 20), store_root=self.stores)
        finally:
            await reader.drain()
        for name in loaded:
            self.daemon.events.publish("image", "load", name, {"name": name})
        return loaded

    async def save(self, names: builtins.list[str]) -> AsyncIterator[bytes]:
        """A docker-format tar of the images, streamed; unknown names raise before it starts."""
        from berth.image.archive import save

        if not names:
            raise InvalidArgument("no image names given")
        for name in names:
            self.resolve(name)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(maxsize=8)
        writer = _QueueWriter(queue, loop)

        def work() -> None:
            try:
                save(names, writer, "docker", store_root=self.stores)
                writer.flush()
                asyncio.run_coroutine_threadsafe(queue.put(None), loop).result()
            except BaseException as e:  # noqa: BLE001 - handed to the stream
                if not writer.closed_by_reader:
                    asyncio.run_coroutine_threadsafe(queue.put(e), loop).result()

        task = asyncio.ensure_future(asyncio.to_thread(work))
        try:
            while True:
                item = await queue.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            writer.closed_by_reader = True
            while not queue.empty():  # unblock a writer waiting for room; it stops at its next write
                queue.get_nowait()
            del task
        for name in names:
            self.daemon.events.publish("image", "save", name, {"name": name})


# --- progress ------------------------------------------------------------------------------


class _Threaded:
    """Run ``work(report)`` in a thread; iterate the messages it reports, then ``result``."""

    def __init__(self, work: Callable[[Callable[[dict], None]], Any]) -> None:
        self._work = work
        self.result: Any = None

    def __aiter__(self) -> AsyncIterator[dict]:
        return self._run()

    async def _run(self) -> AsyncIterator[dict]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        def report(message: dict) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, ("message", message))

        def run() -> None:
            try:
                result = self._work(report)
            except BaseException as e:  # noqa: BLE001
                loop.call_soon_threadsafe(queue.put_nowait, ("error", e))
            else:
                loop.call_soon_threadsafe(queue.put_nowait, ("done", result))

        thread = threading.Thread(target=run, name="berth-images", daemon=True)
        thread.start()
        while True:
            kind, value = await queue.get()
            if kind == "message":
                yield value
            elif kind == "error":
                raise value
            else:
                self.result = value
                return


def _threaded(work: Callable[[Callable[[dict], None]], Any]) -> _Threaded:
    return _Threaded(work)


THROTTLE = 0.1  # seconds between two progress messages of one layer and phase


class _PullProgress:
    """``pull``'s progress callback as Docker's messages: Pulling fs layer, Waiting,
    Downloading, Download complete, Extracting, Pull complete, Already exists."""

    def __init__(self, tag: str, repo: str) -> None:
        self.tag = tag
        self.repo = repo
        self.report: Callable[[dict], None] = lambda m: None
        self.started = False
        self._lock = threading.Lock()
        self._seen: set[str] = set()
        self._downloaded: set[str] = set()
        self._last: dict[tuple[str, str], float] = {}

    def header(self) -> dict:
        self.started = True
        return {"status": f"Pulling from {self.repo}", "id": self.tag}

    def __call__(self, layer: str, phase: str, done: int, total: int) -> None:
        with self._lock:
            if not self.started:
                self.report(self.header())
            if phase == "Already exists":
                self._seen.add(layer)
                self.report({"status": "Already exists", "progressDetail": {}, "id": layer})
                return
            if layer not in self._seen:
                self._seen.add(layer)
                self.report({"status": "Pulling fs layer", "progressDetail": {}, "id": layer})
            if phase == "Waiting":
                self.report({"status": "Waiting", "progressDetail": {}, "id": layer})
            elif phase in ("Downloading", "Extracting"):
                if phase == "Extracting" and layer not in self._downloaded:
                    self._download_complete(layer, total)
                if phase == "Downloading" and layer in self._downloaded:
                    return
                now = time.monotonic()
                key = (layer, phase)
                if done < total and now - self._last.get(key, 0.0) < THROTTLE:
                    return
                self._last[key] = now
                self.report(progress_message(phase, layer, done, total))
                if phase == "Downloading" and total and done >= total:
                    self._download_complete(layer, total)
            elif phase == "Pull complete":
                if layer not in self._downloaded:
                    self._download_complete(layer, total)
                self.report({"status": "Pull complete", "progressDetail": {}, "id": layer})

    def _download_complete(self, layer: str, total: int) -> None:
        self._downloaded.add(layer)
        self.report({"status": "Verifying Checksum", "progressDetail": {}, "id": layer})
        self.report({"status": "Download complete", "progressDetail": {}, "id": layer})


class _PushProgress:
    """``push``'s progress callback as Docker's messages."""

    def __init__(self) -> None:
        self.report: Callable[[dict], None] = lambda m: None
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}

    def __call__(self, layer: str, phase: str, done: int, total: int) -> None:
        with self._lock:
            if phase == "Pushing":
                now = time.monotonic()
                if done < total and now - self._last.get(layer, 0.0) < THROTTLE:
                    return
                self._last[layer] = now
                self.report(progress_message("Pushing", layer, done, total))
            else:
                self.report({"status": phase, "progressDetail": {}, "id": layer})


def progress_message(status: str, layer: str, done: int, total: int) -> dict:
    return {"status": status, "progressDetail": {"current": done, "total": total},
            "progress": progress_bar(done, total), "id": layer}


def progress_bar(done: int, total: int) -> str:
    """Docker's JSONProgress.String(): ``[=====>      ]   1.2MB/2.3MB``."""
    return progress_text(done, total)


# --- bridges between the event loop and the library's file objects -------------------------


class _BodyReader(io.RawIOBase):
    """A blocking reader (for a worker thread) of a request body's async chunks."""

    def __init__(self, chunks: AsyncIterator[bytes], loop: asyncio.AbstractEventLoop) -> None:
        self._it = chunks.__aiter__()
        self._loop = loop
        self._buf = b""
        self._eof = False
        self._lock = threading.Lock()

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        with self._lock:
            while not self._buf and not self._eof:
                try:
                    self._buf = asyncio.run_coroutine_threadsafe(self._it.__anext__(), self._loop).result()
                except StopAsyncIteration:
                    self._eof = True
            n = min(len(b), len(self._buf))
            b[:n] = self._buf[:n]
            self._buf = self._buf[n:]
            return n

    async def drain(self) -> None:
        """Read what the library left of the body, so the connection stays in step."""
        with self._lock:
            if self._eof:
                return
            self._eof = True
        async for _ in self._it:
            pass


class _QueueWriter(io.RawIOBase):
    """A blocking writer (for a worker thread) into an asyncio queue, with back-pressure."""

    CHUNK = 256 << 10

    def __init__(self, queue: asyncio.Queue, loop: asyncio.AbstractEventLoop) -> None:
        self._queue = queue
        self._loop = loop
        self._buf = bytearray()
        self.closed_by_reader = False

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if self.closed_by_reader:
            raise BrokenPipeError("the client went away")
        self._buf += data
        if len(self._buf) >= self.CHUNK:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if self._buf and not self.closed_by_reader:
            chunk = bytes(self._buf)
            self._buf.clear()
            asyncio.run_coroutine_threadsafe(self._queue.put(chunk), self._loop).result()


# --- helpers -------------------------------------------------------------------------------


class _Unauthorized(BerthError):
    http_status = 401


def _pull_error(error: BerthError, reference: Any) -> BerthError:
    """Docker's wording for a pull that found nothing."""
    import re

    text = str(error)
    m = re.search(r"\((\w+): (.*)\)$", text)
    code, detail = (m.group(1), m.group(2)) if m else ("", "")
    shown = reference.familiar() if reference.digest else f"{reference.familiar_name()}:{reference.tag or 'latest'}"
    if isinstance(error, NotFound) and code == "NAME_UNKNOWN":
        return NotFound(f"repository {reference.familiar_name()} not found: name unknown: {detail}")
    if isinstance(error, NotFound) and "platform" not in text:
        return NotFound(f"manifest for {shown} not found: manifest unknown: {detail or 'manifest unknown'}")
    if isinstance(error, FailedPrecondition) and ("unauthorized" in text or "denied" in text):
        return NotFound(f"pull access denied for {reference.familiar_name()}, repository does not exist or may "
                        f"require 'docker login': {text}")
    return error


def decode_auth(header: str) -> dict[str, Any] | None:
    """An X-Registry-Auth header: base64url JSON; {} or garbage is no credentials."""
    if not header:
        return None
    raw = header.strip()
    try:
        data = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (ValueError, TypeError):
        try:
            data = json.loads(base64.b64decode(raw + "=" * (-len(raw) % 4)))
        except (ValueError, TypeError):
            return None
    return data if isinstance(data, dict) and data else None


def _credentials(auth: dict[str, Any]) -> Credentials | None:
    username = str(auth.get("username") or "")
    password = str(auth.get("password") or "")
    token = auth.get("identitytoken") or None
    if not username and auth.get("auth"):
        try:
            username, _, password = base64.b64decode(str(auth["auth"])).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            pass
    if not username and not token:
        return None
    return Credentials(username, password, token)


def _is_name(text: str) -> bool:
    return _stored_name(text) is not None


def _stored_name(text: str) -> str | None:
    """The stored form of a name (``repo:tag`` or ``repo@digest``), None for an ID."""
    import re

    if re.fullmatch(r"(?:sha256:)?[0-9a-f]{64}", text) or re.fullmatch(r"[0-9a-f]{1,63}", text):
        return None
    try:
        ref = parse_reference(text)
    except InvalidArgument:
        return None
    return f"{ref.name}@{ref.digest}" if ref.digest else f"{ref.name}:{ref.tag}"


def _display(text: str) -> str:
    """``busybox`` -> ``busybox:latest``, as Docker's "No such image" says; IDs as given."""
    stored = _stored_name(text)
    return familiar(stored) if stored else text


def _unique(items: Iterable[str]) -> builtins.list[str]:
    return builtins.list(dict.fromkeys(items))


def _unix(created: str | None) -> int:
    if not created:
        return 0
    text = created.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    if "." in text:  # nanoseconds: fromisoformat takes at most microseconds
        head, _, rest = text.partition(".")
        digits = "".join(c for c in rest if c.isdigit())
        zone = rest[len(digits):]
        text = f"{head}.{digits[:6]}{zone}"
    try:
        return int(datetime.fromisoformat(text).timestamp())
    except ValueError:
        return 0


def _until(values: builtins.list[str] | None) -> float | None:
    if not values:
        return None
    raw = values[-1]
    try:
        return float(raw)
    except ValueError:
        pass
    units = {"s": 1, "m": 60, "h": 3600}
    if raw and raw[-1] in units:
        try:
            return time.time() - float(raw[:-1]) * units[raw[-1]]
        except ValueError:
            pass
    stamp = _unix(raw)
    if not stamp:
        raise InvalidArgument(f"invalid until filter: {raw}")
    return stamp


def _repository(name: str) -> str:
    """``busybox:latest`` / ``busybox@sha256:..`` -> ``busybox`` (a registry port stays)."""
    if "@" in name:
        return name.split("@", 1)[0]
    head, _, last = name.rpartition("/")
    if ":" in last:
        last = last.rsplit(":", 1)[0]
    return f"{head}/{last}" if head else last


def _path_match(pattern: str, name: str) -> bool:
    """Go's path.Match, as Docker's reference filter uses it: ``*`` stops at ``/``."""
    import re

    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                return False
            body = pattern[i + 1:end]
            out.append("[" + ("^" + body[1:] if body.startswith("^") else body) + "]")
            i = end
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return re.fullmatch("".join(out), name) is not None


def _label_matches(labels: dict[str, str], item: str) -> bool:
    key, eq, value = item.partition("=")
    return key in labels and (not eq or labels[key] == value)


def _matches(summary: dict[str, Any], record: ImageRecord, filters: dict[str, builtins.list[str]],
             by_id: dict[str, builtins.list[ImageRecord]], service: ImagesService) -> bool:
    for key, wanted in filters.items():
        if not wanted:
            continue
        if key == "dangling":
            want = wanted[-1].lower() in ("true", "1")
            if (not summary["RepoTags"]) != want:
                return False
        elif key == "label":
            if not all(_label_matches(summary["Labels"], w) for w in wanted):
                return False
        elif key == "reference":  # as dockerd: only the names that match stay in the summary
            def keep(name: str) -> bool:
                return any(_path_match(pattern, candidate) for pattern in wanted
                           for candidate in (name, _repository(name)))

            summary["RepoTags"] = [n for n in summary["RepoTags"] if keep(n)]
            summary["RepoDigests"] = [n for n in summary["RepoDigests"] if keep(n)]
            if not summary["RepoTags"] and not summary["RepoDigests"]:
                return False
        elif key in ("before", "since"):
            try:
                other = service.resolve(wanted[-1]).record
            except NotFound:
                raise InvalidArgument(f"No such image: {wanted[-1]}") from None
            mine, theirs = _unix(record.created), _unix(other.created)
            if key == "before" and not mine < theirs:
                return False
            if key == "since" and not mine > theirs:
                return False
        elif key == "until":
            until = _until(wanted)
            if until is not None and _unix(record.created) >= until:
                return False
        else:
            raise InvalidArgument(f"invalid filter '{key}'")
    return True
