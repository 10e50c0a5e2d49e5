"""save / load round trips (docker-save and OCI layout tars), archives made by skopeo,
OCI layout directories and root filesystem tarballs, compared with umoci's unpack.

``docker load`` of our archives is not run here: the dockerd of tests/integration/
test_clients.py is tied to its containerd and module fixtures (see the report)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from berth.errors import InvalidArgument, NotFound
from berth.image import mediatypes
from berth.image.archive import import_oci_layout, import_rootfs, load, save
from berth.image.pull import pull
from berth.image.store import Stores
from tests.support.fstree import Entry, diff_trees, read_tree, snapshot_tree, umoci_tree
from tests.support.images import Layout
from tests.support.imagetest import committed, fast_client

pytestmark = pytest.mark.integration


@pytest.fixture
def other(tmp_path: Path) -> Iterator[Stores]:
    s = Stores(tmp_path / "other")
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def pulled(registry: Any, stores: Stores) -> Any:
    return pull(f"{registry.host}/berth/busybox:v1", store_root=stores, client_factory=fast_client)


def tar_members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


# --- round trips -----------------------------------------------------------------------------

def test_docker_save_load_round_trip(registry: Any, stores: Stores, other: Stores, pulled: Any,
                                     umoci_ref: dict[str, Entry]) -> None:
    name = f"{registry.host}/berth/busybox:v1"
    stores.images.tag(name, "saved/busybox:v1")
    out = io.BytesIO()
    save([name, "saved/busybox:v1"], out, "docker", store_root=stores)
    members = tar_members(out.getvalue())
    manifest = json.loads(members["manifest.json"])
    assert manifest == [{"Config": pulled.id[7:] + ".json",
                         "RepoTags": [name, "saved/busybox:v1"],
                         "Layers": [f"{d[7:]}/layer.tar" for d in pulled.diff_ids]}]
    for diff_id in pulled.diff_ids:                                     # uncompressed, matching the config
        assert "sha256:" + hashlib.sha256(members[f"{diff_id[7:]}/layer.tar"]).hexdigest() == diff_id
    assert json.loads(members["repositories"])["saved/busybox"] == {"v1": pulled.diff_ids[-1][7:]}

    names = load(io.BytesIO(out.getvalue()), store_root=other)
    assert names == [name, "saved/busybox:v1"]
    loaded = other.images.get(name)
    assert (loaded.id, loaded.diff_ids, loaded.chain_id) == (pulled.id, pulled.diff_ids, pulled.chain_id)
    assert loaded.media_type == mediatypes.DOCKER_MANIFEST             # a docker archive has no manifest
    assert other.images.config_bytes(loaded) == stores.images.config_bytes(pulled)
    assert diff_trees(umoci_ref, snapshot_tree(other.snapshotter, loaded.chain_id)) == []
    # loading again: nothing new, same answer
    assert load(io.BytesIO(out.getvalue()), store_root=other) == names
    assert len(committed(other)) == 3


def test_oci_save_load_round_trip(registry: Any, stores: Stores, other: Stores, pulled: Any, tmp_path: Path,
                                  umoci_ref: dict[str, Entry]) -> None:
    name = f"{registry.host}/berth/busybox:v1"
    path = tmp_path / "image.tar"
    with open(path, "wb") as f:
        save([pulled.id[7:19], name], f, "oci", store_root=stores)      # an ID (no tag) and a name
    members = tar_members(path.read_bytes())
    index = json.loads(members["index.json"])
    assert [m["digest"] for m in index["manifests"]] == [pulled.manifest_digest]
    assert index["manifests"][0]["annotations"] == {"io.containerd.image.name": name,
                                                    "org.opencontainers.image.ref.name": "v1"}
    assert json.loads(members["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    for member, data in members.items():
        if member.startswith("blobs/sha256/"):
            assert hashlib.sha256(data).hexdigest() == member.rsplit("/", 1)[1]
    # skopeo reads it as an OCI archive, and umoci unpacks what it copied out like the original
    layout = tmp_path / "copied"
    subprocess.run(["skopeo", "copy", "-q", f"oci-archive:{path}:v1", f"oci:{layout}:v1"],
                   check=True, capture_output=True, timeout=60)
    assert Layout(layout).entry("v1")["digest"] == pulled.manifest_digest
    assert diff_trees(umoci_ref, umoci_tree(layout, "v1", tmp_path)) == []
    # and we load it back with every digest unchanged
    with open(path, "rb") as f:
        assert load(f, store_root=other) == [name]
    loaded = other.images.get(name)
    assert (loaded.manifest_digest, loaded.id, loaded.chain_id) == (pulled.manifest_digest, pulled.id, pulled.chain_id)
    assert other.content.read_bytes(loaded.manifest_digest) == stores.content.read_bytes(pulled.manifest_digest)


def test_oci_save_of_a_docker_manifest_and_zstd_layers(registry: Any, stores: Stores, other: Stores) -> None:
    docker = pull(f"{registry.host}/berth/busybox:docker", store_root=stores, client_factory=fast_client)
    zstd = pull(f"{registry.host}/berth/busybox:zstd", store_root=stores, client_factory=fast_client)
    for fmt in ("oci", "docker"):
        out = io.BytesIO()
        save([f"{registry.host}/berth/busybox:docker", f"{registry.host}/berth/busybox:zstd"], out, fmt,
             store_root=stores)
        load(io.BytesIO(out.getvalue()), store_root=other)
        assert other.images.get(f"{registry.host}/berth/busybox:zstd").chain_id == zstd.chain_id
        assert other.images.get(f"{registry.host}/berth/busybox:docker").id == docker.id
    assert other.images.get(f"{registry.host}/berth/busybox:zstd").manifest_digest != zstd.manifest_digest


# --- archives written by skopeo ------------------------------------------------------------------

@pytest.mark.parametrize("transport", ["docker-archive", "oci-archive"])
def test_load_skopeo_archives(image_layout: Layout, other: Stores, tmp_path: Path, transport: str,
                              umoci_ref: dict[str, Entry]) -> None:
    path = tmp_path / "skopeo.tar"
    dest = f"{transport}:{path}:berth/fromskopeo:v1"
    subprocess.run(["skopeo", "copy", "-q", f"oci:{image_layout.path}:v1", dest], check=True, capture_output=True,
                   timeout=60)
    with open(path, "rb") as f:
        names = load(f, store_root=other)
    assert names == ["berth/fromskopeo:v1"]
    record = other.images.get("berth/fromskopeo:v1")
    assert diff_trees(umoci_ref, snapshot_tree(other.snapshotter, record.chain_id)) == []


# --- broken archives ------------------------------------------------------------------------------

def _rewrite(data: bytes, change: Any) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(data)) as src, tarfile.open(fileobj=out, mode="w") as dst:
        for m in src.getmembers():
            body = src.extractfile(m).read() if m.isfile() else None  # type: ignore[union-attr]
            if body is not None:
                body = change(m.name, body)
                m.size = len(body)
            dst.addfile(m, io.BytesIO(body) if body is not None else None)
    return out.getvalue()


def _flip_last_byte_of_biggest(members: dict[str, bytes]) -> Any:
    biggest = max((n for n in members if n.endswith("layer.tar") or n.startswith("blobs/")), key=lambda n: len(members[n]))

    def change(name: str, body: bytes) -> bytes:
        if name != biggest:
            return body
        i = len(body) // 2
        return body[:i] + bytes([body[i] ^ 1]) + body[i + 1:]
    return change


@pytest.mark.parametrize("fmt", ["docker", "oci"])
def test_corrupt_archive_is_refused_and_nothing_kept(stores: Stores, other: Stores, pulled: Any, fmt: str) -> None:
    out = io.BytesIO()
    save([pulled.id], out, fmt, store_root=stores)  # type: ignore[arg-type]
    bad = _rewrite(out.getvalue(), _flip_last_byte_of_biggest(tar_members(out.getvalue())))
    with pytest.raises(InvalidArgument, match="diff ID|digest mismatch"):
        load(io.BytesIO(bad), store_root=other)
    assert other.images.list() == [] and committed(other) == []
    assert [i for i in other.content.ingests()] == []
    assert load(io.BytesIO(out.getvalue()), store_root=other) == [pulled.id]   # unnamed: its ID


def test_load_refuses_what_is_no_image_archive(other: Stores) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    with pytest.raises(InvalidArgument, match="not an image archive"):
        load(io.BytesIO(buf.getvalue()), store_root=other)
    with pytest.raises(InvalidArgument):
        load(io.BytesIO(b"definitely not a tar" * 100), store_root=other)


# --- OCI layout directories and root filesystem tarballs -----------------------------------------

def test_import_oci_layout(image_layout: Layout, stores: Stores, umoci_ref: dict[str, Entry]) -> None:
    record = import_oci_layout(image_layout.path, "imported/busybox:v1", store_root=stores, tag="v1")
    assert record.manifest_digest == image_layout.entry("v1")["digest"]
    assert record.names == ("docker.io/imported/busybox:v1",)
    assert diff_trees(umoci_ref, snapshot_tree(stores.snapshotter, record.chain_id)) == []
    for desc in image_layout.manifest("v1")["layers"]:
        assert stores.content.exists(desc["digest"])                     # kept for push and save
    multi = import_oci_layout(image_layout.path, "imported/multi:arm", store_root=stores, tag="multi",
                              platform="linux/arm64")
    assert multi.platform == "linux/arm64/v8" and multi.chain_id == record.chain_id
    with pytest.raises(InvalidArgument, match="name one by tag"):
        import_oci_layout(image_layout.path, "x", store_root=stores)
    with pytest.raises(NotFound):
        import_oci_layout(image_layout.path, "x", store_root=stores, tag="nope")


@pytest.mark.parametrize("compress", [False, True])
def test_import_rootfs_like_umoci(image_layout: Layout, stores: Stores, tmp_path: Path, compress: bool,
                                  umoci_ref: dict[str, Entry]) -> None:
    bundle = tmp_path / "bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{image_layout.path}:v1", bundle], check=True,
                   capture_output=True, timeout=60)
    rootfs = bundle / "rootfs"
    tarball = subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-C", rootfs, "-cf", "-",
                              "."], check=True, capture_output=True, timeout=60).stdout
    data = gzip.compress(tarball) if compress else tarball
    record = import_rootfs(io.BytesIO(data), "imported/rootfs:v1", ['CMD ["/bin/sh", "-l"]', "ENV A=1 B=two",
                                                                     "EXPOSE 8080", "WORKDIR /data"],
                           store_root=stores, message="from a test")
    assert diff_trees(read_tree(str(rootfs)), snapshot_tree(stores.snapshotter, record.chain_id)) == []
    assert diff_trees(umoci_ref, snapshot_tree(stores.snapshotter, record.chain_id)) == []
    assert record.diff_ids == ("sha256:" + hashlib.sha256(tarball).hexdigest(),)
    info = stores.images.inspect("imported/rootfs:v1")
    assert info["Config"]["Cmd"] == ["/bin/sh", "-l"] and info["Config"]["Env"] == ["A=1", "B=two"]
    assert info["Config"]["ExposedPorts"] == {"8080/tcp": {}} and info["Config"]["WorkingDir"] == "/data"
    assert stores.images.history("imported/rootfs:v1")[0]["Comment"] == "from a test"
    layer = json.loads(stores.content.read_bytes(record.manifest_digest))["layers"][0]
    assert layer["mediaType"] == mediatypes.OCI_LAYER_GZIP
    assert gzip.decompress(stores.content.read_bytes(layer["digest"], 64 << 20)) == tarball


def test_import_rootfs_refuses_bad_input(stores: Stores) -> None:
    with pytest.raises(InvalidArgument, match="not a valid change"):
        import_rootfs(io.BytesIO(b""), "x:y", ["RUN rm -rf /"], store_root=stores)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("../../escape")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(InvalidArgument, match="escapes"):
        import_rootfs(io.BytesIO(buf.getvalue()), "x:y", store_root=stores)
    assert stores.images.list() == [] and list(stores.content.list()) == []
    assert list(stores.snapshotter.walk()) == []
