"""Pulls from a real registry (Debian's docker-registry on 127.0.0.1, images pushed by
skopeo) into fresh stores; each pulled image is compared, through a read-only view of
its top snapshot, with what ``umoci unpack`` makes of the same OCI layout.
"""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest

from berth.errors import InvalidArgument, NotFound, Unavailable
from berth.image import mediatypes
from berth.image.auth import AuthProvider, Credentials, StaticCredentials
from berth.image.pull import pull
from berth.image.registry import RegistryClient
from berth.image.store import Stores
from tests.support.fstree import Entry, diff_trees, snapshot_tree
from tests.support.images import Layout, push
from tests.support.proxy import FaultProxy
from tests.support.imagetest import committed, fast_client

pytestmark = pytest.mark.integration


def one_try_client(domain: str) -> RegistryClient:
    return RegistryClient(domain, backoff=0.01, retries=0)


class Events:
    """A progress callback that records (layer, phase) as they come, from any thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: list[tuple[str, str, int, int]] = []

    def __call__(self, layer: str, phase: str, done: int, total: int) -> None:
        with self.lock:
            self.seen.append((layer, phase, done, total))

    def phases(self, layer: str) -> list[str]:
        out: list[str] = []
        for lid, phase, _, _ in self.seen:
            if lid == layer and (not out or out[-1] != phase):
                out.append(phase)
        return out

    def final(self) -> dict[str, str]:
        return {lid: phase for lid, phase, _, _ in self.seen}


# --- every kind of image, compared with umoci --------------------------------------------

@pytest.mark.parametrize(
    ("repo_tag", "media_type"),
    [
        ("berth/busybox:v1", mediatypes.OCI_MANIFEST),
        ("berth/busybox:docker", mediatypes.DOCKER_MANIFEST),
        ("berth/busybox:plain", mediatypes.OCI_MANIFEST),
        ("berth/busybox:zstd", mediatypes.OCI_MANIFEST),
        ("berth/multi:latest", mediatypes.OCI_MANIFEST),
        ("berth/multi:docker", mediatypes.DOCKER_MANIFEST),
    ],
)
def test_pull_unpacks_like_umoci(registry: Any, stores: Stores, umoci_ref: dict[str, Entry],
                                 repo_tag: str, media_type: str) -> None:
    events = Events()
    record = pull(f"{registry.host}/{repo_tag}", store_root=stores, progress=events, client_factory=fast_client)
    assert record.media_type == media_type
    assert record.platform == "linux/amd64"
    assert len(record.diff_ids) == 3 and len(committed(stores)) == 3
    assert record.chain_id is not None
    assert diff_trees(umoci_ref, snapshot_tree(stores.snapshotter, record.chain_id)) == []
    assert set(events.final().values()) == {"Pull complete"}
    info = stores.images.inspect(f"{registry.host}/{repo_tag}")
    assert info["RepoTags"] == [f"{registry.host}/{repo_tag}"]
    assert info["Id"] == record.id and info["RootFS"]["Layers"] == list(record.diff_ids)


# --- an image forked from v1: two shared base layers and a third of its own ----------------

def _tar(*entries: tuple[str, bytes]) -> bytes:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1704067200
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture(scope="module")
def forks(registry: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """berth/fork:{v1,baddiff,evil} pushed by skopeo from a copy of the test layout:
    v1 shares v1's first two layers; baddiff's config has a wrong third diff ID; evil's
    third layer holds ``../escape``."""
    import gzip
    import hashlib

    from tests.support.images import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST

    layout = Layout(tmp_path_factory.mktemp("forks") / "layout")
    shutil.copytree(registry.layout.path, layout.path)
    base = layout.manifest("v1")
    config = json.loads(layout.read_blob(base["config"]["digest"]))
    config.pop("history", None)
    out = {}
    for tag, tar, claimed in (
        ("v1", _tar(("fork/hello.txt", b"hello from the fork\n")), None),
        ("baddiff", _tar(("fork/other.txt", b"other\n")), "sha256:" + "0" * 64),
        ("evil", _tar(("fork/ok.txt", b"ok\n"), ("../escape", b"out\n")), None),
    ):
        layer = layout.add_blob(gzip.compress(tar, mtime=0), OCI_LAYER_GZIP)
        diff_id = claimed or "sha256:" + hashlib.sha256(tar).hexdigest()
        cfg = dict(config, rootfs={"type": "layers", "diff_ids": config["rootfs"]["diff_ids"][:2] + [diff_id]})
        cfg_blob = layout.add_blob(json.dumps(cfg).encode(), OCI_CONFIG)
        manifest = dict(base, config=cfg_blob.descriptor(), layers=base["layers"][:2] + [layer.descriptor()])
        layout.tag(f"fork-{tag}", layout.add_blob(json.dumps(manifest).encode(), OCI_MANIFEST))
        push(layout, f"fork-{tag}", f"{registry.host}/berth/fork:{tag}", "--preserve-digests")
        out[tag] = f"{registry.host}/berth/fork:{tag}"
    return out


def test_shared_base_is_unpacked_once(registry: Any, stores: Stores, forks: dict[str, str]) -> None:
    first = pull(f"{registry.host}/berth/busybox:v1", store_root=stores, client_factory=fast_client)
    assert len(committed(stores)) == 3
    events = Events()
    fork = pull(forks["v1"], store_root=stores, progress=events, client_factory=fast_client)
    assert len(committed(stores)) == 4                                  # one new snapshot, not three
    assert fork.diff_ids[:2] == first.diff_ids[:2]
    finals = list(events.final().values())
    assert finals.count("Already exists") == 2 and finals.count("Pull complete") == 1
    tree = snapshot_tree(stores.snapshotter, fork.chain_id)
    assert tree["fork/hello.txt"].kind == "file" and "bin/busybox" in tree
    assert "data/remove-me" in tree                                      # v1's third layer is not in the fork
    # a second pull of an image fully there downloads nothing
    again = Events()
    assert pull(forks["v1"], store_root=stores, progress=again, client_factory=fast_client) == \
        stores.images.get(forks["v1"])
    assert set(again.final().values()) == {"Already exists"}


def test_progress_phases(registry: Any, stores: Stores) -> None:
    events = Events()
    record = pull(f"{registry.host}/berth/busybox:v1", store_root=stores, progress=events, client_factory=fast_client)
    layers = {d for d, *_ in events.seen}
    assert len(layers) == 3
    for layer in layers:
        phases = events.phases(layer)
        assert phases[0] == "Waiting" and phases[-1] == "Pull complete", phases
        assert "Downloading" in phases
        assert phases.index("Downloading") < len(phases) - 1
    totals = {d: t for d, _, _, t in events.seen}
    blobs = json.loads(stores.content.read_bytes(record.manifest_digest))["layers"]
    assert totals == {b["digest"][7:19]: b["size"] for b in blobs}


# --- platforms -----------------------------------------------------------------------------

def test_platform_selection_from_index(registry: Any, stores: Stores) -> None:
    amd = pull(f"{registry.host}/berth/multi:latest", store_root=stores, platform="linux/amd64",
               client_factory=fast_client)
    events = Events()
    arm = pull(f"{registry.host}/berth/multi:latest", store_root=stores, platform="linux/arm64",
               progress=events, client_factory=fast_client)
    assert (amd.platform, arm.platform) == ("linux/amd64", "linux/arm64/v8")
    assert amd.id != arm.id and amd.chain_id == arm.chain_id
    assert set(events.final().values()) == {"Already exists"}       # same layers, unpacked once
    assert len(committed(stores)) == 3
    # the tag and the repository digest (the index's) moved to arm64: amd64 is left dangling
    index_digest = registry.layout.entry("multi")["digest"]
    assert arm.names == (f"{registry.host}/berth/multi:latest",)
    assert arm.digests == (f"{registry.host}/berth/multi@{index_digest}",)
    assert stores.images.get(amd.id).dangling
    assert stores.content.exists(index_digest)
    with pytest.raises(NotFound, match="platform"):
        pull(f"{registry.host}/berth/multi:latest", store_root=stores, platform="linux/s390x",
             client_factory=fast_client)


def test_platform_mismatch_on_a_plain_manifest(registry: Any, stores: Stores) -> None:
    with pytest.raises(NotFound, match="does not match the platform"):
        pull(f"{registry.host}/berth/busybox:v1", store_root=stores, platform="linux/arm64",
             client_factory=fast_client)
    assert stores.images.list() == [] and committed(stores) == []


def test_pull_by_digest(registry: Any, stores: Stores) -> None:
    digest = registry.layout.entry("v1")["digest"]
    record = pull(f"{registry.host}/berth/busybox@{digest}", store_root=stores, client_factory=fast_client)
    assert record.manifest_digest == digest
    assert record.names == () and record.digests == (f"{registry.host}/berth/busybox@{digest}",)
    assert stores.images.get(f"{registry.host}/berth/busybox@{digest}") == record


# --- broken and malicious inputs -------------------------------------------------------------

def _prefetch_config(stores: Stores, host: str, repo_tag: str) -> None:
    """Put the image's config in the content store, so that the first blob GET of a pull
    is a layer (the fault proxy breaks the first one it sees)."""
    from berth.image import manifests

    repo, tag = repo_tag.split(":")
    with RegistryClient(host) as client:
        body = client.get_manifest(repo, tag)[2]
        desc = manifests.config(body)
        with stores.content.writer("test-config", desc.digest, desc.size) as w:
            client.fetch_blob(repo, desc.digest, w, size=desc.size)
            w.commit()


def _range_requests(proxy: FaultProxy) -> list[str]:
    return [path for method, path, headers in proxy.requests if method == "GET" and "Range" in headers]


def test_connection_dropped_mid_blob_resumes(registry: Any, proxy: FaultProxy, stores: Stores,
                                             umoci_ref: dict[str, Entry]) -> None:
    _prefetch_config(stores, registry.host, "berth/busybox:v1")
    proxy.drop_blob_after = 100
    record = pull(f"{proxy.host}/berth/busybox:v1", store_root=stores, client_factory=fast_client)
    assert len(_range_requests(proxy)) == 1                             # resumed, not restarted
    assert diff_trees(umoci_ref, snapshot_tree(stores.snapshotter, record.chain_id)) == []


def test_failed_pull_leaves_a_resumable_ingest(registry: Any, proxy: FaultProxy, stores: Stores,
                                               umoci_ref: dict[str, Entry]) -> None:
    _prefetch_config(stores, registry.host, "berth/busybox:v1")
    proxy.drop_blob_after = 100
    with pytest.raises(Unavailable, match="failed after 1 attempts"):
        pull(f"{proxy.host}/berth/busybox:v1", store_root=stores, client_factory=one_try_client)
    assert stores.images.list() == [] and committed(stores) == []
    partial = [i for i in stores.content.ingests() if i.ref.startswith("layer-") and 0 < i.offset]
    assert any(i.offset == 100 for i in partial), partial
    # the next pull resumes that blob with a Range request, and unpacks it from byte 0
    record = pull(f"{proxy.host}/berth/busybox:v1", store_root=stores, client_factory=fast_client)
    assert any("bytes=100-" == h.get("Range") for _, _, h in proxy.requests)
    assert diff_trees(umoci_ref, snapshot_tree(stores.snapshotter, record.chain_id)) == []
    assert [i for i in stores.content.ingests() if i.ref.startswith("layer-")] == []


def test_resume_refused_by_the_registry_restarts_the_layer(registry: Any, proxy: FaultProxy, stores: Stores,
                                                           umoci_ref: dict[str, Entry]) -> None:
    _prefetch_config(stores, registry.host, "berth/busybox:v1")
    proxy.drop_blob_after = 100
    with pytest.raises(Unavailable):
        pull(f"{proxy.host}/berth/busybox:v1", store_root=stores, client_factory=one_try_client)
    proxy.ignore_range = True                                            # 200 with the whole blob
    record = pull(f"{proxy.host}/berth/busybox:v1", store_root=stores, client_factory=fast_client)
    assert diff_trees(umoci_ref, snapshot_tree(stores.snapshotter, record.chain_id)) == []


def test_corrupted_blob_is_rejected_and_nothing_stored(registry: Any, proxy: FaultProxy, stores: Stores) -> None:
    _prefetch_config(stores, registry.host, "berth/busybox:v1")
    before = set(stores.content.list())
    proxy.corrupt_blobs = True
    with pytest.raises(InvalidArgument, match="digest mismatch"):
        pull(f"{proxy.host}/berth/busybox:v1", store_root=stores, client_factory=fast_client)
    assert set(stores.content.list()) == before                          # no layer, no manifest
    assert stores.images.list() == [] and committed(stores) == []
    assert [i for i in stores.content.ingests() if i.ref.startswith("layer-")] == []
    assert list(stores.snapshotter.walk()) == []
    proxy.corrupt_blobs = False
    assert pull(f"{proxy.host}/berth/busybox:v1", store_root=stores, client_factory=fast_client).chain_id


def test_wrong_diff_id_commits_nothing(stores: Stores, forks: dict[str, str]) -> None:
    with pytest.raises(InvalidArgument, match="diff ID"):
        pull(forks["baddiff"], store_root=stores, client_factory=fast_client)
    assert committed(stores) == [] and stores.images.list() == []       # not even the two good layers
    assert list(stores.snapshotter.walk()) == []
    pull(forks["v1"], store_root=stores, client_factory=fast_client)    # the store is still usable


def test_path_traversal_layer_is_refused(stores: Stores, forks: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="escapes the layer"):
        pull(forks["evil"], store_root=stores, client_factory=fast_client)
    assert committed(stores) == [] and stores.images.list() == []
    assert not (tmp_path / "escape").exists() and not (tmp_path / "root" / "escape").exists()


def test_unknown_image_and_bad_reference(registry: Any, stores: Stores) -> None:
    with pytest.raises(NotFound):
        pull(f"{registry.host}/berth/busybox:nope", store_root=stores, client_factory=fast_client)
    with pytest.raises(InvalidArgument):
        pull("Bad Ref", store_root=stores)


# --- token auth ----------------------------------------------------------------------------------

def test_token_auth_pull(token_registry: Any, stores: Stores, umoci_ref: dict[str, Entry]) -> None:
    from berth.errors import FailedPrecondition

    ref = f"{token_registry.host}/berth/private:v1"
    with pytest.raises(FailedPrecondition):
        pull(ref, store_root=stores, auth=AuthProvider(StaticCredentials({})))
    creds = StaticCredentials({token_registry.host: Credentials(token_registry.USER, token_registry.PASSWORD)})
    record = pull(ref, store_root=stores, auth=AuthProvider(creds))
    assert diff_trees(umoci_ref, snapshot_tree(stores.snapshotter, record.chain_id)) == []


def test_concurrent_pulls_of_one_image(registry: Any, tmp_path: Path, umoci_ref: dict[str, Entry]) -> None:
    """Two pulls (as two daemons would, each with its own Stores) race on one root: both
    succeed, each layer is stored and committed once."""
    root = tmp_path / "shared"
    Stores(root).close()
    results: list[Any] = []
    errors: list[BaseException] = []

    def one() -> None:
        try:
            results.append(pull(f"{registry.host}/berth/busybox:v1", store_root=root, client_factory=fast_client))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and len(results) == 2 and results[0].id == results[1].id
    with Stores(root) as stores:
        assert len(committed(stores)) == 3 and len(list(stores.snapshotter.walk())) == 3
        assert diff_trees(umoci_ref, snapshot_tree(stores.snapshotter, results[0].chain_id)) == []
        assert stores.content.ingests() == []
