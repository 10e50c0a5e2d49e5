"""The image store alone: names, IDs, lifecycle, inspect/history, gc (no registry, no root)."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from berth.errors import FailedPrecondition, InvalidArgument, NotFound
from berth.image import mediatypes
from berth.image.content import ContentStore
from berth.image.store import ImageStore
from berth.snapshots.base import Kind
from berth.snapshots.chain import chain_ids
from berth.snapshots.overlay import OverlaySnapshotter


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def config(seed: str, layers: int = 2, arch: str = "amd64") -> bytes:
    diff_ids = [sha(f"{seed}-{i}".encode()) for i in range(layers)]
    return json.dumps({
        "created": "2024-01-02T03:04:05.123456789Z",
        "architecture": arch, "os": "linux", "author": "tests",
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "2024-01-01T00:00:00Z", "created_by": f"layer {i}"} for i in range(layers)]
        + [{"created": "2024-01-02T00:00:00Z", "created_by": "CMD", "empty_layer": True}],
    }).encode()


@pytest.fixture
def images(tmp_path: Path) -> Iterator[ImageStore]:
    store = ImageStore(tmp_path)
    try:
        yield store
    finally:
        store.close()


def add(images: ImageStore, seed: str, names: list[str] = (), digests: list[str] = (), **kw: object):  # type: ignore[assignment]
    cfg = config(seed, **kw)  # type: ignore[arg-type]
    manifest = sha(b"manifest-" + seed.encode())
    layers = len(json.loads(cfg)["rootfs"]["diff_ids"])
    return images.add(manifest_digest=manifest, manifest_size=500, media_type=mediatypes.OCI_MANIFEST,
                      config=cfg, layer_sizes=[1000 * (i + 1) for i in range(layers)], names=names, digests=digests)


def test_add_and_lookups(images: ImageStore) -> None:
    rec = add(images, "a", ["busybox", "127.0.0.1:5000/x/y:v1"],
              [f"docker.io/library/busybox@{sha(b'index')}"])
    assert rec.names == ("127.0.0.1:5000/x/y:v1", "docker.io/library/busybox:latest")
    assert rec.repo_tags() == ["127.0.0.1:5000/x/y:v1", "busybox:latest"]
    assert rec.repo_digests() == [f"busybox@{sha(b'index')}"]
    assert rec.platform == "linux/amd64" and rec.size == 3000 and rec.created == "2024-01-02T03:04:05.123456789Z"
    assert rec.chain_id == chain_ids(rec.diff_ids)[-1]
    for text in ("busybox", "busybox:latest", "docker.io/library/busybox:latest", "127.0.0.1:5000/x/y:v1",
                 rec.id, rec.id[7:], rec.short_id, rec.id[:15], f"busybox@{sha(b'index')}",
                 f"busybox@{rec.manifest_digest}", rec.manifest_digest):
        assert images.get(text) == rec, text
    for missing in ("busybox:other", "alpine", "0123456789ab", f"alpine@{rec.manifest_digest}"):
        with pytest.raises(NotFound):
            images.get(missing)
    with pytest.raises(InvalidArgument):
        images.get("")


def test_ambiguous_short_id(images: ImageStore) -> None:
    ids = [add(images, s, [f"img{s}"]).id for s in map(str, range(40))]
    first = ids[0][7]
    same = [i for i in ids if i[7] == first]
    if len(same) > 1:
        with pytest.raises(InvalidArgument, match="ambiguous"):
            images.get(first)


def test_tag_moves_a_name_and_leaves_the_old_image_dangling(images: ImageStore) -> None:
    old = add(images, "old", ["app:v1"])
    new = add(images, "new", ["app:v2"])
    images.tag("app:v2", "app:v1")
    assert images.get("app:v1").id == new.id
    assert images.get(old.id).dangling
    assert [r.id for r in images.list(dangling=True)] == [old.id]
    with pytest.raises(InvalidArgument, match="digest"):
        images.tag(new.id, f"app@{sha(b'x')}")
    assert images.prune(in_use=lambda i: i == old.id) == []             # used: kept
    assert images.prune() == [old.id]
    assert [r.id for r in images.list()] == [new.id]
    assert images.prune(dangling_only=False, in_use=lambda i: True) == []
    assert images.prune(dangling_only=False) == [new.id] and images.list() == []


def test_untag_removes_the_image_with_its_last_tag(images: ImageStore) -> None:
    rec = add(images, "a", ["one:v1", "two:v1"], [f"one@{sha(b'i')}"])
    assert images.untag("one:v1") == [{"Untagged": "one:v1"}]
    assert images.untag("two:v1") == [{"Untagged": "two:v1"}, {"Untagged": f"one@{sha(b'i')}"},
                                      {"Deleted": rec.id}]
    assert images.list() == []
    with pytest.raises(NotFound):
        images.untag("two:v1")


def test_remove_refuses_while_in_use(images: ImageStore) -> None:
    rec = add(images, "a", ["one:v1", "one:v2"])
    used = lambda image_id: image_id == rec.id  # noqa: E731
    assert images.remove("one:v1", in_use=used) == [{"Untagged": "one:v1"}]   # not the last tag: fine
    with pytest.raises(FailedPrecondition, match="must force"):
        images.remove("one:v2", in_use=used)
    with pytest.raises(FailedPrecondition, match="must be forced"):
        images.remove(rec.short_id, in_use=used)
    assert images.remove(rec.short_id, force=True, in_use=used) == [{"Untagged": "one:v2"}, {"Deleted": rec.id}]
    assert images.list() == []


def test_remove_by_id_with_several_repositories(images: ImageStore) -> None:
    rec = add(images, "a", ["one:v1", "two:v1"])
    with pytest.raises(FailedPrecondition, match="multiple repositories"):
        images.remove(rec.id)
    report = images.remove(rec.id, force=True)
    assert report[-1] == {"Deleted": rec.id} and images.list() == []
    single = add(images, "b", ["three:v1", "three:v2"])
    assert images.remove(single.id)[-1] == {"Deleted": single.id}      # one repository: no force needed


def test_two_manifests_of_one_config_share_an_id(images: ImageStore) -> None:
    cfg = config("same")
    for i, name in enumerate(("oci:v1", "docker:v1")):
        images.add(manifest_digest=sha(f"m{i}".encode()), manifest_size=1, media_type=mediatypes.OCI_MANIFEST,
                   config=cfg, layer_sizes=[1, 2], names=[name])
    assert images.get("oci:v1").id == images.get("docker:v1").id
    assert len(images.list()) == 2
    with pytest.raises(FailedPrecondition, match="multiple repositories"):
        images.remove(images.get("oci:v1").id)
    assert images.remove(images.get("oci:v1").id, force=True)[-1]["Deleted"] == sha(cfg)
    assert images.list() == []


def test_inspect_and_history(images: ImageStore) -> None:
    rec = add(images, "a", ["busybox:v1"], [f"busybox@{sha(b'i')}"], arch="arm64")
    info = images.inspect("busybox:v1")
    assert info["Id"] == rec.id and info["RepoTags"] == ["busybox:v1"]
    assert info["RepoDigests"] == [f"busybox@{sha(b'i')}"]
    assert info["Architecture"] == "arm64" and info["Os"] == "linux" and info["Author"] == "tests"
    assert info["Config"]["Cmd"] == ["/bin/sh"] and info["Config"]["Tty"] is False
    assert info["RootFS"] == {"Type": "layers", "Layers": list(rec.diff_ids)}
    assert info["Size"] == 3000 and info["Created"] == "2024-01-02T03:04:05.123456789Z"
    assert info["Descriptor"]["digest"] == rec.manifest_digest
    history = images.history("busybox:v1")
    assert [h["CreatedBy"] for h in history] == ["CMD", "layer 1", "layer 0"]
    assert [h["Size"] for h in history] == [0, 2000, 1000]
    assert history[0]["Id"] == rec.id and history[0]["Tags"] == ["busybox:v1"]
    assert history[1]["Id"] == "<missing>" and history[1]["Tags"] is None
    assert history[0]["Created"] == 1704153600  # 2024-01-02T00:00:00Z


def test_records_survive_reopening(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    rec = add(store, "a", ["keep:v1"])
    assert store.layer_size(rec.diff_ids[0]) is None
    store.record_layer(rec.diff_ids[0], 4242)
    store.close()
    again = ImageStore(tmp_path)
    assert again.get("keep:v1") == rec and again.layer_size(rec.diff_ids[0]) == 4242
    assert json.loads(again.config_bytes(rec))["os"] == "linux"
    again.close()


# --- gc ---------------------------------------------------------------------------------------

def _stored_image(images: ImageStore, content: ContentStore, snaps: OverlaySnapshotter, seed: str,
                  name: str, shared: list[bytes] | None = None) -> tuple[object, list[str]]:
    layers = (shared or []) + [f"{seed}-layer-{i}".encode() for i in range(2 - len(shared or []))]
    diff_ids = [sha(b) for b in layers]
    blob_digests = [content.put_bytes(b) for b in layers]   # "compressed" blobs: here the same bytes
    cfg = json.dumps({"os": "linux", "architecture": "amd64", "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    config_digest = content.put_bytes(cfg)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": mediatypes.OCI_MANIFEST,
                           "config": {"mediaType": mediatypes.OCI_CONFIG, "digest": config_digest, "size": len(cfg)},
                           "layers": [{"mediaType": mediatypes.OCI_LAYER, "digest": d, "size": len(b)}
                                      for d, b in zip(blob_digests, layers)]}).encode()
    manifest_digest = content.put_bytes(manifest)
    parent = None
    for chain in chain_ids(diff_ids):
        if not snaps.exists(chain):
            snaps.prepare(f"k-{chain}", parent)
            snaps.commit(chain, f"k-{chain}")
        parent = chain
    rec = images.add(manifest_digest=manifest_digest, manifest_size=len(manifest), media_type=mediatypes.OCI_MANIFEST,
                     config=cfg, layer_sizes=[len(b) for b in layers], names=[name])
    return rec, [manifest_digest, config_digest, *blob_digests]


def test_gc_removes_only_what_nothing_references(tmp_path: Path) -> None:
    images = ImageStore(tmp_path)
    content = ContentStore(tmp_path / "content")
    snaps = OverlaySnapshotter(str(tmp_path / "snapshots"))
    try:
        a, a_blobs = _stored_image(images, content, snaps, "a", "a:v1")
        b, b_blobs = _stored_image(images, content, snaps, "b", "b:v1", shared=[b"a-layer-0"])
        stray = content.put_bytes(b"nobody refers to me")
        snaps.prepare("stray-active", None)
        snaps.prepare("orphan", None)
        snaps.commit("sha256:" + "1" * 64, "orphan")
        result = images.gc(content, snaps)
        assert result.blobs == [stray] and result.snapshots == ["sha256:" + "1" * 64]
        assert {i.name for i in snaps.walk()} == {*chain_ids(a.diff_ids), *chain_ids(b.diff_ids), "stray-active"}

        snaps.prepare("container-rw", a.chain_id)                       # a container on image a
        images.untag("a:v1")
        result = images.gc(content, snaps)
        assert set(result.blobs) == set(a_blobs) - set(b_blobs)
        assert result.snapshots == []                                     # a's chain is under the container
        snaps.remove("container-rw")
        result = images.gc(content, snaps)
        assert result.snapshots == [a.chain_id]                           # the shared base stays for b
        assert {i.name for i in snaps.walk() if i.kind is Kind.COMMITTED} == set(chain_ids(b.diff_ids))
        assert all(content.exists(d) for d in b_blobs)
    finally:
        images.close()
        snaps.close()


def test_gc_waits_for_a_lease(tmp_path: Path) -> None:
    images = ImageStore(tmp_path)
    content = ContentStore(tmp_path / "content")
    snaps = OverlaySnapshotter(str(tmp_path / "snapshots"))
    done = threading.Event()
    try:
        with images.lease():
            digest = content.put_bytes(b"just pulled, no record yet")
            t = threading.Thread(target=lambda: (images.gc(content, snaps), done.set()))
            t.start()
            time.sleep(0.2)
            assert not done.is_set() and content.exists(digest)
        t.join(5)
        assert done.is_set() and not content.exists(digest)
    finally:
        images.close()
        snaps.close()
