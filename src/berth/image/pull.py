"""Pull an image from a registry into the stores: content, snapshots, image record.

    record = pull("127.0.0.1:5000/berth/busybox:v1", store_root="/var/lib/berth",
                  platform="linux/arm64", progress=cb)

1. The manifest is resolved: a tag or digest, then, for an OCI index or a Docker
   manifest list, the entry for ``platform`` (default: this machine's). A plain manifest
   pulled with an explicit ``platform`` must match it.
2. The config is fetched and verified; its ``rootfs.diff_ids`` must match the layers.
3. The layers, in parallel (``workers`` threads), each in one pass over the network
   bytes: the content store's writer hashes and keeps the compressed blob while the
   decompressor feeds ``apply_layer`` in a staging directory (see ``_unpacker``). Layers
   whose snapshot is committed and whose blob is stored are skipped ("Already exists").
4. Only when every layer has verified (digest and size, then diff ID) are the blobs,
   the config and the manifests committed, then the snapshots bottom up by chain ID,
   then the image record with its names: the tag, and ``repo@digest`` of what the tag
   resolved to (the index's digest for an index), as Docker's RepoDigests.

``progress(layer, phase, done, total)``: ``layer`` is the blob digest's first 12 hex
digits, ``phase`` one of Waiting / Downloading / Extracting / Pull complete / Already
exists, ``done``/``total`` compressed bytes: what the Engine API's pull stream shows.

``store_root`` is a data root path (``Stores`` are opened and closed here) or an open
``Stores``. ``auth`` defaults to the credentials of Docker's config.json.
``client_factory(domain)`` replaces the RegistryClient (tests: fewer retries).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection

from berth.errors import InvalidArgument, NotFound
from berth.image import manifests, mediatypes
from berth.image._unpacker import LayerJob, LayerRunner, Progress, plan_layers
from berth.image.auth import AuthProvider, DockerConfigCredentials
from berth.image.digest import compute_digest, parse_digest
from berth.image.manifests import Descriptor
from berth.image.platforms import Platform, normalize, parse_platform, resolve_platform
from berth.image.reference import Reference, parse_reference
from berth.image.registry import RegistryClient
from berth.image.store import ImageRecord, Stores, digest_name, open_stores, parse_config

MAX_CONFIG_SIZE = 16 << 20
MAX_INDEX_DEPTH = 2

__all__ = ["pull", "Progress"]


def pull(
    ref: str,
    *,
    store_root: str | os.PathLike[str] | Stores,
    platform: str | Platform | None = None,
    auth: AuthProvider | None = None,
    insecure: Collection[str] = (),
    progress: Progress | None = None,
    workers: int = 4,
    client_factory: Callable[[str], RegistryClient] | None = None,
) -> ImageRecord:
    """Pull ``ref`` (Docker's reference syntax) and return its image record."""
    reference = parse_reference(ref)
    wanted = parse_platform(platform) if isinstance(platform, str) else platform
    with open_stores(store_root) as stores:
        if client_factory is not None:
            client = client_factory(reference.domain)
        else:
            client = RegistryClient(reference.domain, insecure=insecure,
                                    auth=auth if auth is not None else AuthProvider(DockerConfigCredentials()))
        try:
            with stores.images.lease():
                return _pull(stores, client, reference.path, reference, wanted, progress, workers)
        finally:
            client.close()


def _pull(stores: Stores, client: RegistryClient, repo: str, reference: Reference, wanted: Platform | None,
          progress: Progress | None, workers: int) -> ImageRecord:
    media_type, top_digest, body = client.get_manifest(repo, reference.reference)
    blobs: list[tuple[bytes, str]] = [(body, top_digest)]  # committed with the layers
    digest = top_digest
    depth = 0
    while mediatypes.is_index(media_type):
        depth += 1
        if depth > MAX_INDEX_DEPTH:
            raise InvalidArgument(f"{reference}: indexes nested more than {MAX_INDEX_DEPTH} deep")
        entry = resolve_platform(body, wanted)
        media_type, digest, body = client.get_manifest(repo, entry.digest)
        blobs.append((body, digest))

    config_desc = manifests.config(body)
    if config_desc.media_type not in mediatypes.CONFIGS:
        raise InvalidArgument(f"{reference} is not a container image (config media type {config_desc.media_type})")
    layers = manifests.layers(body)
    for layer in layers:
        mediatypes.layer_compression(layer.media_type)  # InvalidArgument for what is no layer
    config = _config(stores, client, repo, config_desc)
    doc = parse_config(config)
    if wanted is not None and depth == 0:
        _check_platform(reference, doc, wanted)
    diff_ids = doc["rootfs"]["diff_ids"]

    jobs = plan_layers(stores, layers, diff_ids)
    runner = LayerRunner(stores, progress, workers)

    def fetch(job: LayerJob, sink: object) -> None:
        client.fetch_blob(repo, job.digest, sink, size=job.size)  # type: ignore[arg-type]

    staged = runner.run(jobs, fetch)
    sizes = runner.store(staged, [(config, config_desc.digest), *blobs])
    names = [] if reference.digest else [f"{reference.name}:{reference.tag}"]
    return stores.images.add(
        manifest_digest=digest, manifest_size=len(body), media_type=media_type, config=config,
        layer_sizes=sizes, names=names, digests=[digest_name(reference, top_digest)],
    )


def _config(stores: Stores, client: RegistryClient, repo: str, desc: Descriptor) -> bytes:
    """The config blob, from the store or the registry, verified; not committed yet."""
    if desc.size > MAX_CONFIG_SIZE:
        raise InvalidArgument(f"image config {desc.digest} is too large: {desc.size} bytes")
    if stores.content.exists(desc.digest):
        return stores.content.read_bytes(desc.digest)
    sink = _MemorySink()
    client.fetch_blob(repo, desc.digest, sink, size=desc.size)
    data = bytes(sink.data)
    got = compute_digest(data, parse_digest(desc.digest)[0])
    if len(data) != desc.size or got != desc.digest:
        raise InvalidArgument(f"image config {desc.digest}: digest mismatch: got {got} ({len(data)} bytes)")
    return data


def _check_platform(reference: Reference, config: dict[str, object], wanted: Platform) -> None:
    have = normalize(str(config.get("os") or ""), str(config.get("architecture") or ""), str(config.get("variant") or ""))
    want = normalize(wanted.os, wanted.architecture, wanted.variant)
    if (have.os, have.architecture) != (want.os, want.architecture) or (
        want.variant and have.variant and want.variant != have.variant
    ):
        raise NotFound(f"image {reference} was found but does not match the platform: wanted {want}, it is {have}")


class _MemorySink:
    """A BlobSink for small blobs (configs), kept in memory."""

    def __init__(self) -> None:
        self.data = bytearray()

    @property
    def offset(self) -> int:
        return len(self.data)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if len(self.data) + len(data) > MAX_CONFIG_SIZE:
            raise InvalidArgument(f"image config larger than {MAX_CONFIG_SIZE} bytes")
        self.data += data

    def reset(self) -> None:
        self.data.clear()

