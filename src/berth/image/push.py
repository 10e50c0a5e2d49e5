"""Push an image from the stores to a registry.

    digest = push("busybox:latest", "127.0.0.1:5000/copies/busybox:v1", store_root=root, progress=cb)

The image's own blobs go up from the content store (its layers as pulled, compressed
as they were, and its config), then its manifest, byte for byte: the pushed image has
the digests of the local one. Blobs the registry already has in the repository are
skipped ("Layer already exists"); with ``cross_mount``, a blob is first offered as a
cross-repository mount from another repository of the same registry that the image is
known by (a tag or digest it was pulled or pushed under), as Docker does ("Mounted
from ..."). Layers go up in parallel (``workers``); ``chunk_size`` switches from one
PUT per blob to PATCH chunks. After the manifest, the pushed ``repo@digest`` is added to
the image's repository digests.

``progress(layer, phase, done, total)``: ``layer`` is the blob digest's first 12 hex
digits, ``phase`` Preparing / Waiting / Pushing / Pushed / Layer already exists /
Mounted from <repo>, bytes of the blob; the config is not reported (Docker does not
either). ``ref`` defaults to ``image`` (which must then be a name).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Collection
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

from berth.errors import FailedPrecondition, InvalidArgument, NotFound
from berth.image import manifests
from berth.image.auth import AuthProvider, DockerConfigCredentials
from berth.image.manifests import Descriptor
from berth.image.reference import Reference, parse_reference
from berth.image.registry import RegistryClient
from berth.image.store import ImageRecord, Stores, digest_name, open_stores

Progress = Callable[[str, str, int, int], None]

__all__ = ["push", "Progress"]


def push(
    image: str,
    ref: str | None = None,
    *,
    store_root: str | os.PathLike[str] | Stores,
    auth: AuthProvider | None = None,
    insecure: Collection[str] = (),
    progress: Progress | None = None,
    workers: int = 3,
    chunk_size: int | None = None,
    cross_mount: bool = True,
    client_factory: Callable[[str], RegistryClient] | None = None,
) -> str:
    """Push ``image`` (a name or ID in the store) to ``ref``; returns the manifest digest."""
    with open_stores(store_root) as stores:
        record = stores.images.get(image)
        target = _target(image, ref, record)
        if target.digest is not None and target.digest != record.manifest_digest:
            raise InvalidArgument(f"cannot push {image} as {target}: its manifest digest is {record.manifest_digest}")
        try:
            body = stores.content.read_bytes(record.manifest_digest)
        except NotFound:
            raise FailedPrecondition(f"the manifest of {image} is not in the content store: pull it again") from None
        layers = manifests.layers(body)
        config = manifests.config(body)
        for desc in (*layers, config):
            if not stores.content.exists(desc.digest):
                raise FailedPrecondition(
                    f"blob {desc.digest} of {image} is not in the content store: pull the image again"
                )
        mount_from = _mount_source(record, target) if cross_mount else None
        if client_factory is not None:
            client = client_factory(target.domain)
        else:
            client = RegistryClient(target.domain, insecure=insecure,
                                    auth=auth if auth is not None else AuthProvider(DockerConfigCredentials()))
        try:
            _push_blobs(stores, client, target.path, layers, config, mount_from, progress, workers, chunk_size)
            digest = client.put_manifest(target.path, target.digest or target.tag or "latest",
                                         record.media_type, body)
        finally:
            client.close()
        stores.images.set_names(record.manifest_digest, digests=[digest_name(target, digest)])
        return digest


def _target(image: str, ref: str | None, record: ImageRecord) -> Reference:
    if ref is not None:
        return parse_reference(ref)
    try:
        target = parse_reference(image)
    except InvalidArgument:
        target = None
    if target is None or (f"{target.name}:{target.tag}" not in record.names
                          and digest_name(target, target.digest or "") not in record.digests):
        raise InvalidArgument(f"{image} is not a name of a local image: push needs a repository name (tag it first)")
    return target


def _mount_source(record: ImageRecord, target: Reference) -> str | None:
    """Another repository of the target's registry that the image is known by."""
    for name in (*record.names, *record.digests):
        ref = parse_reference(name, default_tag=None)
        if ref.domain == target.domain and ref.path != target.path:
            return ref.path
    return None


def _push_blobs(stores: Stores, client: RegistryClient, repo: str, layers: list[Descriptor], config: Descriptor,
                mount_from: str | None, progress: Progress | None, workers: int, chunk_size: int | None) -> None:
    unique = list({d.digest: d for d in layers}.values())
    lock = threading.Lock()

    def report(desc: Descriptor, phase: str, done: int) -> None:
        if progress is not None and desc is not config:
            with lock:
                progress(desc.digest.split(":", 1)[1][:12], phase, done, desc.size)

    for desc in unique:
        report(desc, "Preparing", 0)
    for desc in unique:
        report(desc, "Waiting", 0)

    def one(desc: Descriptor) -> None:
        result = client.push_blob(
            repo, desc.digest, desc.size, lambda: stores.content.open(desc.digest),
            progress=lambda done, _total: report(desc, "Pushing", done),
            chunk_size=chunk_size, mount_from=mount_from,
        )
        if result == "exists":
            report(desc, "Layer already exists", desc.size)
        elif result == "mounted":
            report(desc, f"Mounted from {mount_from}", desc.size)
        else:
            report(desc, "Pushed", desc.size)

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(unique) + 1)), thread_name_prefix="berth-push") as pool:
        futures = [pool.submit(one, d) for d in (*unique, config)]
        wait(futures, return_when=FIRST_EXCEPTION)
        for f in futures:
            if f.done() and f.exception() is not None:
                for other in futures:
                    other.cancel()
                raise f.exception()  # type: ignore[misc]
        for f in futures:
            f.result()
