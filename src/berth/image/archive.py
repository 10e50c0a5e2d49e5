"""Images in and out of tar archives and OCI layouts.

    save(["busybox:latest"], out, format="docker", store_root=root)     # docker save
    save([...], out, format="oci", store_root=root)                     # OCI image layout tar
    load(fileobj, store_root=root) -> ["busybox:latest", "sha256:..."]   # docker load (both formats)
    import_oci_layout(dir, "name:tag", store_root=root) -> ImageRecord
    import_rootfs(tar_fileobj, "name:tag", ["CMD /bin/sh"], store_root=root) -> ImageRecord

``docker`` format (what ``docker save`` writes and every ``docker load`` reads)::

    <diff id hex>/layer.tar     each layer, uncompressed (blobs decompressed on the fly,
                                their diff IDs checked as they stream)
    <config hex>.json           each image config
    manifest.json               [{"Config", "RepoTags", "Layers"}]
    repositories                {"repo": {"tag": "<top layer dir>"}}

``oci`` format: an OCI image layout (``oci-layout``, ``index.json`` with one entry per
tag, annotated ``org.opencontainers.image.ref.name`` (the tag) and
``io.containerd.image.name`` (the full name), ``blobs/sha256/...`` as stored: the
manifests keep their digests), plus a ``manifest.json`` pointing at the compressed
layer blobs, as Docker 25's ``docker save`` writes, so that ``docker load`` reads it too.

``load`` reads the archive (plain, gzip, bzip2 or xz) once, front to back: blobs under
``blobs/`` and layer tars go straight into the content store's ingest area, hashed on
the way (a ``blobs/<alg>/<hex>`` that does not hash to its name is refused), other
files stay in memory. Then the OCI index (if there is ``oci-layout``) or
``manifest.json`` decides what the images are; a Docker-format image gets a Docker
schema 2 manifest over its layer blobs as they came (uncompressed, usually). Layers
are unpacked like a pull's (diff IDs verified) and the records named. It returns
Docker's familiar names, or ``sha256:<id>`` for an image without one. If anything
fails, nothing from the archive is kept but blobs already verified.

``import_oci_layout`` copies one image of a layout directory (``tag``, or its only one)
into the stores in one pass per layer (hash, keep, unpack). ``import_rootfs`` is
``docker import``: a tarball (plain, gzip or zstd) becomes a one-layer image, read once:
applied to a snapshot while gzip-compressed into the content store.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import re
import secrets
import tarfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import IO, Any, Literal

from berth.errors import InvalidArgument, NotFound
from berth.image import manifests, mediatypes
from berth.image._unpacker import LayerJob, LayerRunner, Progress, StagedLayer, plan_layers
from berth.image.changes import apply_changes
from berth.image.compression import Compression, detect, open_compressor, open_decompressed
from berth.image.content import Writer
from berth.image.digest import CHUNK, Digester, compute_digest, parse_digest
from berth.image.layers import apply_layer
from berth.image.manifests import Descriptor
from berth.image.platforms import Platform, host_platform, parse_platform, resolve_platform
from berth.image.reference import parse_reference
from berth.image.store import ImageRecord, Stores, familiar, open_stores, parse_config, tag_name

REF_NAME = "org.opencontainers.image.ref.name"
IMAGE_NAME = "io.containerd.image.name"
SMALL_FILE = 1 << 20  # archive members up to this size (but blobs and layers) stay in memory
_BLOB_PATH = re.compile(r"blobs/([a-z0-9]+)/([a-f0-9]+)")

__all__ = ["save", "load", "import_oci_layout", "import_rootfs"]


# --- save ----------------------------------------------------------------------------------------


def save(names: Sequence[str], out: IO[bytes], format: Literal["docker", "oci"] = "docker", *,
         store_root: str | os.PathLike[str] | Stores) -> None:
    """Write the images ``names`` name (names or IDs) to ``out`` as one tar stream."""
    if format not in ("docker", "oci"):
        raise InvalidArgument(f"unknown archive format {format!r} (docker or oci)")
    if not names:
        raise InvalidArgument("save needs at least one image")
    with open_stores(store_root) as stores:
        images = _select(stores, names)
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, copybufsize=CHUNK) as tar:
            if format == "docker":
                _save_docker(stores, images, tar)
            else:
                _save_oci(stores, images, tar)


@dataclass
class _Saved:
    record: ImageRecord
    manifest: bytes
    tags: list[str]


def _select(stores: Stores, names: Sequence[str]) -> list[_Saved]:
    """The records to save, each once, with the tags asked for (none for an ID)."""
    chosen: dict[str, _Saved] = {}
    for name in names:
        record = stores.images.get(name)
        saved = chosen.get(record.manifest_digest)
        if saved is None:
            try:
                body = stores.content.read_bytes(record.manifest_digest)
            except NotFound:
                raise NotFound(f"the manifest of {name} is not in the content store: pull it again") from None
            saved = chosen[record.manifest_digest] = _Saved(record, body, [])
        try:
            tag = tag_name(name)
        except InvalidArgument:
            tag = None
        if tag is not None and tag in record.names and tag not in saved.tags:
            saved.tags.append(tag)
    return list(chosen.values())


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
    tar.addfile(info)


def _save_docker(stores: Stores, images: list[_Saved], tar: tarfile.TarFile) -> None:
    entries = []
    repositories: dict[str, dict[str, str]] = {}
    written: set[str] = set()
    for saved in images:
        layers = manifests.layers(saved.manifest)
        diff_ids = list(saved.record.diff_ids)
        paths = []
        for desc, diff_id in zip(layers, diff_ids):
            directory = diff_id.split(":", 1)[1]
            if diff_id not in written:
                _add_dir(tar, directory)
                _add_layer_tar(stores, tar, f"{directory}/layer.tar", desc, diff_id)
                written.add(diff_id)
            paths.append(f"{directory}/layer.tar")
        config_name = saved.record.id.split(":", 1)[1] + ".json"
        if config_name not in written:
            _add_bytes(tar, config_name, stores.images.config_bytes(saved.record))
            written.add(config_name)
        repo_tags = [familiar(t) for t in saved.tags]
        entries.append({"Config": config_name, "RepoTags": repo_tags or None, "Layers": paths})
        for tag in repo_tags:
            repo, _, tagname = tag.rpartition(":")
            if paths:
                repositories.setdefault(repo, {})[tagname] = paths[-1].split("/", 1)[0]
    _add_bytes(tar, "manifest.json", json.dumps(entries).encode())
    if repositories:
        _add_bytes(tar, "repositories", json.dumps(repositories).encode())


def _add_layer_tar(stores: Stores, tar: tarfile.TarFile, name: str, desc: Descriptor, diff_id: str) -> None:
    """A layer blob decompressed into the archive, its diff ID checked on the way."""
    size = stores.images.layer_size(diff_id)
    if size is None:  # not recorded: one counting pass over the decompressed stream
        with stores.content.open(desc.digest) as raw:
            stream = open_decompressed(raw)
            size = 0
            while chunk := stream.read(CHUNK):
                size += len(chunk)
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, 0
    with stores.content.open(desc.digest) as raw:
        reader = _HashingReader(open_decompressed(raw))
        tar.addfile(info, reader)
        if reader.read(1):
            raise InvalidArgument(f"layer {desc.digest} is longer than its recorded size {size}")
    if reader.digester.digest() != diff_id:
        raise InvalidArgument(f"layer {desc.digest} decompresses to {reader.digester.digest()}, not {diff_id}")


def _save_oci(stores: Stores, images: list[_Saved], tar: tarfile.TarFile) -> None:
    written: set[str] = set()
    index_entries = []
    docker_entries = []

    def blob(digest: str, data: bytes | None = None) -> str:
        algorithm, encoded = parse_digest(digest)
        path = f"blobs/{algorithm}/{encoded}"
        if path not in written:
            if not written:
                _add_dir(tar, "blobs")
                _add_dir(tar, "blobs/sha256")
            if data is not None:
                _add_bytes(tar, path, data)
            else:
                info = tarfile.TarInfo(path)
                info.size, info.mode, info.mtime = stores.content.info(digest), 0o644, 0
                with stores.content.open(digest) as f:
                    tar.addfile(info, f)
            written.add(path)
        return path

    for saved in images:
        record = saved.record
        layer_paths = [blob(d.digest) for d in manifests.layers(saved.manifest)]
        config_path = blob(record.config_digest, stores.images.config_bytes(record))
        blob(record.manifest_digest, saved.manifest)
        descriptor = {"mediaType": record.media_type, "digest": record.manifest_digest, "size": len(saved.manifest)}
        for tag in saved.tags:
            ref = parse_reference(tag)
            index_entries.append(dict(descriptor, annotations={IMAGE_NAME: tag, REF_NAME: ref.tag or "latest"}))
        if not saved.tags:
            index_entries.append(descriptor)
        docker_entries.append({"Config": config_path, "RepoTags": [familiar(t) for t in saved.tags] or None,
                               "Layers": layer_paths})
    index = {"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX, "manifests": index_entries}
    _add_bytes(tar, "index.json", json.dumps(index).encode())
    _add_bytes(tar, "manifest.json", json.dumps(docker_entries).encode())
    _add_bytes(tar, "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())


class _HashingReader(io.RawIOBase):
    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.digester = Digester()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.digester.update(data)
        return data

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


# --- load ----------------------------------------------------------------------------------------


class _Members:
    """What one pass over an archive kept: small files, blobs being ingested, links."""

    def __init__(self, stores: Stores) -> None:
        self.stores = stores
        self.files: dict[str, bytes] = {}
        self.writers: dict[str, Writer] = {}
        self.links: dict[str, str] = {}
        self.committed: dict[str, str] = {}  # path -> digest

    def resolve(self, path: str) -> str:
        seen = 0
        while path in self.links and seen < 40:
            path = self.links[path]
            seen += 1
        return path

    def has(self, path: str) -> bool:
        path = self.resolve(path)
        return path in self.files or path in self.writers or path in self.committed

    def read(self, path: str, limit: int = 64 << 20) -> bytes:
        path = self.resolve(path)
        if path in self.files:
            return self.files[path]
        return self.stores.content.read_bytes(self.blob(path), limit)

    def blob(self, path: str) -> str:
        """The member as a blob in the content store (committed now if it was pending)."""
        path = self.resolve(path)
        if path in self.committed:
            return self.committed[path]
        if path in self.writers:
            digest = self.writers.pop(path).commit()
        elif path in self.files:
            digest = self.stores.content.put_bytes(self.files[path])
        else:
            raise InvalidArgument(f"the archive has no {path}")
        self.committed[path] = digest
        return digest

    def read_digest(self, digest: str) -> bytes:
        return self.stores.content.read_bytes(self.blob_by_digest(digest), 16 << 20)

    def blob_by_digest(self, digest: str) -> str:
        algorithm, encoded = parse_digest(digest)
        path = f"blobs/{algorithm}/{encoded}"
        if self.has(path):
            return self.blob(path)
        if self.stores.content.exists(digest):
            return digest
        raise InvalidArgument(f"the archive lacks blob {digest}")

    def abort(self) -> None:
        for writer in self.writers.values():
            writer.abort()
        self.writers.clear()


def load(fileobj: IO[bytes], *, store_root: str | os.PathLike[str] | Stores, progress: Progress | None = None,
         workers: int = 4) -> list[str]:
    """``docker load``: the images of a docker-save or OCI-layout tar; returns their names."""
    with open_stores(store_root) as stores, stores.images.lease():
        members = _Members(stores)
        try:
            _read_archive(fileobj, members)
            if "oci-layout" in members.files and "index.json" in members.files:
                loaded = _load_oci(stores, members, progress, workers)
            elif "manifest.json" in members.files:
                loaded = _load_docker(stores, members, progress, workers)
            else:
                raise InvalidArgument("not an image archive: it has neither manifest.json nor oci-layout/index.json")
        finally:
            members.abort()
    return loaded


def _read_archive(fileobj: IO[bytes], members: _Members) -> None:
    token = secrets.token_hex(6)
    try:
        tar = tarfile.open(fileobj=fileobj, mode="r|*", bufsize=CHUNK)
    except tarfile.TarError as e:
        raise InvalidArgument(f"not a tar archive: {e}") from None
    try:
        for info in _members(tar):
            name = _clean(info.name)
            if not name:
                continue
            if info.issym() or info.islnk():
                target = info.linkname if info.islnk() else posixpath.join(posixpath.dirname(name), info.linkname)
                target = _clean(posixpath.normpath("/" + target))  # a link may not leave the archive
                members.links[name] = target
                continue
            if not info.isfile():
                continue
            source = tar.extractfile(info)
            assert source is not None
            match = _BLOB_PATH.fullmatch(name)
            if match is None and info.size <= SMALL_FILE and not name.endswith("layer.tar"):
                members.files[name] = source.read()
                continue
            expected = f"{match.group(1)}:{match.group(2)}" if match else None
            if expected is not None:
                parse_digest(expected)
                if members.stores.content.exists(expected):
                    members.committed[name] = expected  # already stored: not read at all
                    continue
            writer = members.stores.content.writer(f"load-{token}-{name}", None, info.size)
            members.writers[name] = writer
            while chunk := source.read(CHUNK):
                writer.write(chunk)
            if expected is not None and writer.digest() != expected:
                raise InvalidArgument(f"archive member {name}: digest mismatch: it hashes to {writer.digest()}")
    except tarfile.TarError as e:
        raise InvalidArgument(f"corrupt image archive: {e}") from None
    finally:
        tar.close()


def _members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    while True:
        info = tar.next()
        if info is None:
            return
        tar.members.clear()
        yield info


def _clean(name: str) -> str:
    parts = [p for p in name.split("/") if p and p != "."]
    if ".." in parts:
        raise InvalidArgument(f"archive member {name!r} has a '..' component")
    return "/".join(parts)


def _json(members: _Members, path: str) -> Any:
    try:
        return json.loads(members.read(path))
    except ValueError:
        raise InvalidArgument(f"archive member {path} is not valid JSON") from None


def _load_oci(stores: Stores, members: _Members, progress: Progress | None, workers: int) -> list[str]:
    index = _json(members, "index.json")
    loaded: list[str] = []
    for entry in manifests.children(index):
        annotations = entry.annotations or {}
        name = annotations.get(IMAGE_NAME) or _full_name(annotations.get(REF_NAME))
        media_type, digest, body = _oci_manifest(members.read_digest, entry, None)
        record = _import_manifest(stores, media_type, digest, body, [name] if name else [], progress, workers,
                                  blob=members.blob_by_digest)
        loaded.append(familiar(tag_name(name)) if name else record.id)
    return loaded


def _full_name(ref_name: str | None) -> str | None:
    """An index entry's ref.name if it is a whole reference (``repo:tag``), not just a tag."""
    if not ref_name or ("/" not in ref_name and ":" not in ref_name):
        return None
    try:
        return tag_name(ref_name)
    except InvalidArgument:
        return None


def _load_docker(stores: Stores, members: _Members, progress: Progress | None, workers: int) -> list[str]:
    entries = _json(members, "manifest.json")
    if not isinstance(entries, list):
        raise InvalidArgument("manifest.json is not a list")
    loaded: list[str] = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str) or not isinstance(entry.get("Layers"), list):
            raise InvalidArgument("manifest.json: an entry lacks Config or Layers")
        config = members.read(entry["Config"], 16 << 20)
        config_digest = compute_digest(config)
        stem = posixpath.basename(entry["Config"]).removesuffix(".json")
        if re.fullmatch(r"[a-f0-9]{64}", stem) and f"sha256:{stem}" != config_digest:
            raise InvalidArgument(f"archive member {entry['Config']}: digest mismatch: it hashes to {config_digest}")
        parse_config(config)
        layers = []
        for path in entry["Layers"]:
            digest = members.blob(path)
            with stores.content.open(digest) as f:
                kind = detect(f.read(4))
            layers.append({"mediaType": _DOCKER_LAYER[kind], "digest": digest, "size": stores.content.info(digest)})
        manifest = {
            "schemaVersion": 2, "mediaType": mediatypes.DOCKER_MANIFEST,
            "config": {"mediaType": mediatypes.DOCKER_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": layers,
        }
        body = json.dumps(manifest, separators=(",", ":")).encode()
        stores.content.put_bytes(config)
        names = [tag_name(t) for t in entry.get("RepoTags") or []]
        record = _import_manifest(stores, mediatypes.DOCKER_MANIFEST, compute_digest(body), body, names,
                                  progress, workers, blob=lambda d: d)
        loaded.extend([familiar(n) for n in names] or [record.id])
    return loaded


_DOCKER_LAYER = {
    Compression.PLAIN: mediatypes.DOCKER_LAYER,
    Compression.GZIP: mediatypes.DOCKER_LAYER_GZIP,
    Compression.ZSTD: mediatypes.DOCKER_LAYER_ZSTD,
}


def _oci_manifest(read: Callable[[str], bytes], entry: Descriptor,
                  platform: Platform | None) -> tuple[str, str, bytes]:
    """The image manifest an index entry leads to (through nested indexes, by platform)."""
    for _ in range(3):
        body = read(entry.digest)
        media_type, digest = manifests.check_manifest(body, entry.media_type, entry.digest)
        if not mediatypes.is_index(media_type):
            return media_type, digest, body
        entry = resolve_platform(body, platform)
    raise InvalidArgument("indexes nested too deep")


def _import_manifest(stores: Stores, media_type: str, digest: str, body: bytes, names: list[str],
                     progress: Progress | None, workers: int, *, blob: Callable[[str], str]) -> ImageRecord:
    """Record an image whose blobs are in the store, unpacking its layers; ``blob(digest)``
    makes sure a blob is stored (committing it from the archive)."""
    config_desc = manifests.config(body)
    config = stores.content.read_bytes(blob(config_desc.digest), 16 << 20)
    return _finish(stores, media_type, digest, body, config_desc, config, names, progress, workers, blob, None)


def _finish(stores: Stores, media_type: str, digest: str, body: bytes, config_desc: Descriptor, config: bytes,
            names: list[str], progress: Progress | None, workers: int, blob: Callable[[str], str],
            fetch: Callable[[LayerJob, Any], None] | None) -> ImageRecord:
    if compute_digest(config, parse_digest(config_desc.digest)[0]) != config_desc.digest:
        raise InvalidArgument(f"image config {config_desc.digest}: digest mismatch")
    diff_ids = parse_config(config)["rootfs"]["diff_ids"]
    layers = manifests.layers(body)
    for layer in layers:
        mediatypes.layer_compression(layer.media_type)
        if fetch is None:
            blob(layer.digest)
            if stores.content.info(layer.digest) != layer.size:
                raise InvalidArgument(f"layer {layer.digest}: size mismatch with the manifest")
    runner = LayerRunner(stores, progress, workers)
    staged = runner.run(plan_layers(stores, layers, diff_ids), fetch)
    sizes = runner.store(staged, [(config, config_desc.digest), (body, digest)])
    return stores.images.add(manifest_digest=digest, manifest_size=len(body), media_type=media_type,
                             config=config, layer_sizes=sizes, names=names)


# --- import an OCI layout directory ------------------------------------------------------------


def import_oci_layout(path: str | os.PathLike[str], name: str | None, *,
                      store_root: str | os.PathLike[str] | Stores, tag: str | None = None,
                      platform: str | Platform | None = None, progress: Progress | None = None,
                      workers: int = 4) -> ImageRecord:
    """Copy one image of an OCI layout directory (``tag``, or its only one) into the stores."""
    root = os.fspath(path)
    wanted = parse_platform(platform) if isinstance(platform, str) else platform

    def blob_path(digest: str) -> str:
        algorithm, encoded = parse_digest(digest)
        return os.path.join(root, "blobs", algorithm, encoded)

    def read(digest: str, limit: int = 16 << 20) -> bytes:
        try:
            with open(blob_path(digest), "rb") as f:
                data = f.read(limit + 1)
        except FileNotFoundError:
            raise InvalidArgument(f"the layout {root} lacks blob {digest}") from None
        if len(data) > limit:
            raise InvalidArgument(f"blob {digest} of {root} is too large")
        return data

    try:
        with open(os.path.join(root, "index.json"), "rb") as f:
            index = json.loads(f.read(4 << 20))
    except FileNotFoundError:
        raise NotFound(f"{root} is not an OCI image layout (no index.json)") from None
    except ValueError:
        raise InvalidArgument(f"{root}/index.json is not valid JSON") from None
    entries = manifests.children(index)
    if tag is not None:
        entries = [e for e in entries if (e.annotations or {}).get(REF_NAME) == tag]
        if not entries:
            raise NotFound(f"no image tagged {tag!r} in {root}")
    if len(entries) != 1:
        tags = sorted(str((e.annotations or {}).get(REF_NAME)) for e in manifests.children(index))
        raise InvalidArgument(f"{root} holds {len(entries)} images: name one by tag ({', '.join(tags)})")
    media_type, digest, body = _oci_manifest(read, entries[0], wanted)
    config_desc = manifests.config(body)
    config = read(config_desc.digest)

    def fetch(job: LayerJob, sink: Any) -> None:
        try:
            f = open(blob_path(job.digest), "rb", buffering=0)
        except FileNotFoundError:
            raise InvalidArgument(f"the layout {root} lacks layer {job.digest}") from None
        with f:
            f.seek(sink.offset)
            while chunk := f.read(CHUNK):
                sink.write(chunk)

    with open_stores(store_root) as stores, stores.images.lease():
        return _finish(stores, media_type, digest, body, config_desc, config,
                       [name] if name else [], progress, workers, lambda d: d, fetch)


# --- import a root filesystem tarball (docker import) ------------------------------------------


class _Tee(io.RawIOBase):
    """Reads ``raw``; everything read is also written to ``sink``."""

    def __init__(self, raw: IO[bytes], sink: IO[bytes]) -> None:
        self._raw = raw
        self._sink = sink

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        if data:
            self._sink.write(data)
        return data

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


def import_rootfs(tar_fileobj: IO[bytes], name: str | None = None, changes: Sequence[str] | None = None, *,
                  store_root: str | os.PathLike[str] | Stores, message: str | None = None,
                  platform: str | Platform | None = None) -> ImageRecord:
    """``docker import``: a root filesystem tarball as a one-layer image named ``name``."""
    plat = parse_platform(platform) if isinstance(platform, str) else (platform or host_platform())
    now = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
    container_config = apply_changes({}, changes or [])
    with open_stores(store_root) as stores, stores.images.lease():
        writer = stores.content.writer(f"import-{secrets.token_hex(8)}")
        staged: str | None = stores.snapshotter.staging_dir()
        try:
            compressor = open_compressor(writer, Compression.GZIP)  # type: ignore[arg-type]
            applied = apply_layer(_Tee(open_decompressed(tar_fileobj), compressor), staged)
            compressor.close()
            layer = Descriptor(mediatypes.OCI_LAYER_GZIP, writer.digest(), writer.offset)
            config: dict[str, Any] = {
                "created": now,
                "architecture": plat.architecture,
                "os": plat.os,
                **({"variant": plat.variant} if plat.variant else {}),
                "config": container_config,
                "rootfs": {"type": "layers", "diff_ids": [applied.diff_id]},
                "history": [{"created": now, "created_by": "berth import",
                             "comment": message if message is not None else "Imported from tarball"}],
            }
            config_bytes = json.dumps(config, separators=(",", ":")).encode()
            config_desc = Descriptor(mediatypes.OCI_CONFIG, compute_digest(config_bytes), len(config_bytes))
            manifest = {"schemaVersion": 2, "mediaType": mediatypes.OCI_MANIFEST,
                        "config": config_desc.to_json(), "layers": [layer.to_json()]}
            body = json.dumps(manifest, separators=(",", ":")).encode()
            writer.commit()
            stores.content.put_bytes(config_bytes)
            stores.content.put_bytes(body)
            job = plan_layers(stores, [layer], [applied.diff_id])[0]
            runner = LayerRunner(stores)
            if job.need_unpack:
                runner.commit([StagedLayer(job, None, staged, applied)])
                staged = None
            stores.images.record_layer(applied.diff_id, applied.size)
            return stores.images.add(manifest_digest=compute_digest(body), manifest_size=len(body),
                                     media_type=mediatypes.OCI_MANIFEST, config=config_bytes,
                                     layer_sizes=[applied.size], names=[name] if name else [])
        finally:
            if not writer.closed:
                writer.abort()
            if staged is not None:
                stores.snapshotter.discard_staging(staged)

