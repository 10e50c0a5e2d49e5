"""RegistryClient against a real registry (Debian's docker-registry on 127.0.0.1).

Images are put there by skopeo from layouts built with umoci (tests/support/images.py),
never by our own push. Faults come from a proxy in front of the registry
(tests/support/proxy.py): a connection dropped mid-blob, a corrupted byte, a wrong
Content-Type, a huge manifest, 503s, a redirect to another host.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from berth.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from berth.image import manifests, mediatypes
from berth.image.auth import AuthProvider, Credentials, DockerConfigCredentials, StaticCredentials
from berth.image.content import ContentStore
from berth.image.registry import RegistryClient, resolve_platform
from tests.support.images import inspect_raw
from tests.support.proxy import FaultProxy
from tests.support.registry import free_port

pytestmark = pytest.mark.integration

REPO = "berth/busybox"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> ContentStore:
    return ContentStore(tmp_path / "content")


@pytest.fixture
def client(registry: Any) -> Iterator[RegistryClient]:
    with RegistryClient(registry.host, backoff=0.01) as c:
        yield c


@pytest.fixture
def proxied(proxy: FaultProxy) -> Iterator[RegistryClient]:
    with RegistryClient(proxy.host, backoff=0.01) as c:
        yield c


def pull_into(client: RegistryClient, store: ContentStore, repo: str, desc: manifests.Descriptor,
              progress: Any = None) -> str:
    with store.writer(f"test-{desc.digest}", desc.digest, desc.size) as w:
        client.fetch_blob(repo, desc.digest, w, progress=progress, size=desc.size)
        return w.commit()


def biggest_layer(client: RegistryClient, tag: str = "v1") -> manifests.Descriptor:
    _, _, body = client.get_manifest(REPO, tag)
    return max(manifests.layers(body), key=lambda d: d.size)


# --- manifests ----------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("repo_tag", "media_type"),
    [
        ("berth/busybox:v1", mediatypes.OCI_MANIFEST),
        ("berth/busybox:docker", mediatypes.DOCKER_MANIFEST),
        ("berth/busybox:plain", mediatypes.OCI_MANIFEST),
        ("berth/busybox:zstd", mediatypes.OCI_MANIFEST),
        ("berth/multi:latest", mediatypes.OCI_INDEX),
        ("berth/multi:docker", mediatypes.DOCKER_MANIFEST_LIST),
    ],
)
def test_manifest_kinds(registry: Any, client: RegistryClient, repo_tag: str, media_type: str) -> None:
    repo, tag = repo_tag.split(":")
    got_type, digest, body = client.get_manifest(repo, tag)
    assert got_type == media_type
    assert body == inspect_raw(f"{registry.host}/{repo_tag}")     # what skopeo sees
    assert digest == sha256(body)
    assert client.get_manifest(repo, digest) == (got_type, digest, body)  # by digest, verified


def test_manifest_digest_matches_the_layout(registry: Any, client: RegistryClient) -> None:
    assert client.get_manifest(REPO, "v1")[1] == registry.layout.entry("v1")["digest"]
    assert client.get_manifest("berth/multi", "latest")[1] == registry.layout.entry("multi")["digest"]


def test_manifest_layer_media_types(client: RegistryClient) -> None:
    kinds = {}
    for tag in ("v1", "docker", "plain", "zstd"):
        layers = manifests.layers(client.get_manifest(REPO, tag)[2])
        kinds[tag] = {mediatypes.layer_compression(d.media_type) for d in layers}
    assert kinds == {"v1": {"gzip"}, "docker": {"gzip"}, "plain": {"none"}, "zstd": {"zstd"}}


def test_manifest_not_found(client: RegistryClient) -> None:
    with pytest.raises(NotFound, match="MANIFEST_UNKNOWN|not found"):
        client.get_manifest(REPO, "no-such-tag")
    with pytest.raises(NotFound):
        client.get_manifest("berth/no-such-repo", "v1")
    with pytest.raises(InvalidArgument):
        client.get_manifest("Bad/Repo", "v1")


def test_list_tags(client: RegistryClient) -> None:
    assert sorted(client.list_tags(REPO)) == ["docker", "plain", "v1", "zstd"]


# --- platforms ------------------------------------------------------------------------------

@pytest.mark.parametrize("tag", ["latest", "docker"])
def test_platform_selection(registry: Any, client: RegistryClient, tag: str) -> None:
    _, _, index = client.get_manifest("berth/multi", tag)
    amd64 = resolve_platform(index, "linux/amd64")
    arm64 = resolve_platform(index, "linux/arm64")
    assert resolve_platform(index, "linux/arm64/v8") == arm64
    for desc, arch in ((amd64, "amd64"), (arm64, "arm64")):
        media_type, digest, body = client.get_manifest("berth/multi", desc.digest)
        assert digest == desc.digest and media_type == desc.media_type
        config = manifests.config(body)
        with RegistryClient(registry.host) as c2:  # the config says the same platform
            store_dir = Path(registry.process.workdir) / f"cfg-{tag}-{arch}"
            store = ContentStore(store_dir)
            cfg = json.loads(store.read_bytes(pull_into(c2, store, "berth/multi", config)))
        assert cfg["architecture"] == arch
    if tag == "latest":
        assert amd64.digest == registry.layout.entry("v1")["digest"]
        assert arm64.digest == registry.layout.entry("arm64")["digest"]
    with pytest.raises(NotFound, match=r"linux/s390x.*available: linux/amd64, linux/arm64/v8"):
        resolve_platform(index, "linux/s390x")


# --- blobs ----------------------------------------------------------------------------------

@pytest.mark.parametrize("tag", ["v1", "plain", "zstd", "docker"])
def test_fetch_blobs_into_store(registry: Any, client: RegistryClient, store: ContentStore, tag: str) -> None:
    _, _, body = client.get_manifest(REPO, tag)
    layout = registry.zstd_layout if tag == "zstd" else registry.layout
    for desc in [manifests.config(body), *manifests.layers(body)]:
        seen: list[tuple[int, int | None]] = []

        def progress(done: int, total: int | None, seen: list[tuple[int, int | None]] = seen) -> None:
            seen.append((done, total))

        digest = pull_into(client, store, REPO, desc, progress=progress)
        assert digest == desc.digest
        with store.open(digest) as f:
            data = f.read()
        assert sha256(data) == desc.digest and len(data) == desc.size
        if tag != "docker":
            assert data == layout.read_blob(desc.digest)
        assert seen[-1] == (desc.size, desc.size)
        assert [d for d, _ in seen] == sorted(d for d, _ in seen)
        compression = mediatypes.layer_compression(desc.media_type) if desc.media_type in mediatypes.LAYERS else None
        if compression == "gzip":
            assert data[:2] == b"\x1f\x8b"
        elif compression == "zstd":
            assert data[:4] == b"\x28\xb5\x2f\xfd"
        elif compression == "none":
            assert data[257:262] == b"ustar"
    assert store.ingests() == []


def test_blob_exists(client: RegistryClient) -> None:
    layer = biggest_layer(client)
    assert client.blob_exists(REPO, layer.digest)
    assert not client.blob_exists(REPO, sha256(b"nothing like this"))


def test_blob_not_found(client: RegistryClient, store: ContentStore) -> None:
    missing = sha256(b"missing blob")
    with store.writer("missing", missing, 12) as w, pytest.raises(NotFound, match="BLOB_UNKNOWN|not found"):
        client.fetch_blob(REPO, missing, w, size=12)


def test_parallel_fetch_with_one_client(client: RegistryClient, tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "parallel")
    _, _, body = client.get_manifest(REPO, "plain")
    descs = [manifests.config(body), *manifests.layers(body)]
    errors: list[BaseException] = []

    def one(desc: manifests.Descriptor) -> None:
        try:
            pull_into(client, store, REPO, desc)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=one, args=(d,)) for d in descs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert sorted(d for d, _ in store.list()) == sorted({d.digest for d in descs})


# --- broken registries ----------------------------------------------------------------------

def test_resume_after_dropped_connection(proxy: FaultProxy, proxied: RegistryClient, store: ContentStore) -> None:
    layer = biggest_layer(proxied)
    cut = layer.size // 3
    proxy.drop_blob_after = cut
    seen: list[int] = []
    assert pull_into(proxied, store, REPO, layer, progress=lambda d, t: seen.append(d)) == layer.digest
    gets = [(path, h.get("Range")) for m, path, h in proxy.requests if m == "GET" and layer.digest in path]
    assert gets == [(f"/v2/{REPO}/blobs/{layer.digest}", None),
                    (f"/v2/{REPO}/blobs/{layer.digest}", f"bytes={cut}-")]
    assert seen[-1] == layer.size and cut in seen


def test_resume_from_an_earlier_partial_ingest(proxy: FaultProxy, proxied: RegistryClient,
                                               store: ContentStore, client: RegistryClient) -> None:
    """A writer closed mid-download (a crash, a cancelled pull) is resumed by the next pull."""
    layer = biggest_layer(client)
    proxy.drop_blob_after = 1000
    with store.writer("pull", layer.digest, layer.size) as w:
        with RegistryClient(proxy.host, retries=0, backoff=0.01) as fragile:
            with pytest.raises(Unavailable, match="failed after 1 attempts"):
                fragile.fetch_blob(REPO, layer.digest, w, size=layer.size)
        assert w.offset == 1000
    with store.writer("pull", layer.digest, layer.size) as w:
        assert w.offset == 1000
        proxied.fetch_blob(REPO, layer.digest, w, size=layer.size)
        assert w.commit() == layer.digest
    ranges = [h.get("Range") for m, p, h in proxy.requests if m == "GET" and layer.digest in p]
    assert ranges == [None, "bytes=1000-"]


def test_range_ignored_restarts_from_zero(proxy: FaultProxy, proxied: RegistryClient, store: ContentStore) -> None:
    layer = biggest_layer(proxied)
    with store.writer("pull", layer.digest, layer.size) as w:
        w.write(b"\0" * 500)   # junk that a 200 must replace, not extend
    proxy.ignore_range = True
    assert pull_into_ref(proxied, store, layer, "pull") == layer.digest


def pull_into_ref(client: RegistryClient, store: ContentStore, desc: manifests.Descriptor, ref: str) -> str:
    with store.writer(ref, desc.digest, desc.size) as w:
        assert w.offset == 500
        client.fetch_blob(REPO, desc.digest, w, size=desc.size)
        return w.commit()


def test_digest_mismatch_is_rejected_and_nothing_stored(proxy: FaultProxy, proxied: RegistryClient,
                                                        client: RegistryClient, store: ContentStore) -> None:
    layer = biggest_layer(client)
    proxy.corrupt_blobs = True
    with pytest.raises(InvalidArgument, match="digest mismatch"):
        pull_into(proxied, store, REPO, layer)
    assert not store.exists(layer.digest)
    assert list(store.list()) == [] and store.ingests() == []
    assert pull_into(client, store, REPO, layer) == layer.digest   # a later pull succeeds


def test_manifest_too_large(proxy: FaultProxy, proxied: RegistryClient) -> None:
    proxy.huge_manifest = True
    with pytest.raises(InvalidArgument, match="manifest too large"):
        proxied.get_manifest(REPO, "v1")


def test_wrong_media_type(proxy: FaultProxy, proxied: RegistryClient) -> None:
    proxy.content_type = {"/manifests/docker": mediatypes.OCI_MANIFEST}
    with pytest.raises(InvalidArgument, match="wrong media type"):
        proxied.get_manifest(REPO, "docker")
    proxy.content_type = {"/manifests/latest": mediatypes.DOCKER_MANIFEST}
    with pytest.raises(InvalidArgument, match="wrong media type|needs a 'config'"):
        proxied.get_manifest("berth/multi", "latest")


def test_retries_on_503(proxy: FaultProxy, proxied: RegistryClient) -> None:
    proxy.fail_next = 2
    assert proxied.get_manifest(REPO, "v1")[0] == mediatypes.OCI_MANIFEST
    proxy.fail_next = 5
    with RegistryClient(proxy.host, retries=1, backoff=0.01) as impatient:
        with pytest.raises(Unavailable, match="UNAVAILABLE|503"):
            impatient.get_manifest(REPO, "v1")


def test_connection_refused() -> None:
    with RegistryClient(f"127.0.0.1:{free_port()}", retries=1, backoff=0.01) as c:
        with pytest.raises(Unavailable, match="connection refused"):
            c.get_manifest(REPO, "v1")


def test_redirect_does_not_forward_credentials(proxy: FaultProxy, store: ContentStore) -> None:
    proxy.require_basic = ("bob", "pw")
    proxy.redirect_blobs = True
    creds = StaticCredentials({proxy.host: Credentials("bob", "pw")})
    with RegistryClient(proxy.host, auth=AuthProvider(creds), backoff=0.01) as c:
        layer = biggest_layer(c)
        assert pull_into(c, store, REPO, layer) == layer.digest
    blob_gets = [(p, h) for m, p, h in proxy.requests if m == "GET" and layer.digest in p]
    assert [p.startswith("/redirected/") for p, _ in blob_gets] == [False, True]
    assert blob_gets[0][1].get("Authorization", "").startswith("Basic ")
    assert blob_gets[1][1].get("Host", "").startswith("localhost:")
    assert "Authorization" not in blob_gets[1][1]


def test_basic_auth_without_credentials(proxy: FaultProxy, proxied: RegistryClient) -> None:
    proxy.require_basic = ("bob", "pw")
    with pytest.raises(FailedPrecondition, match="no credentials found"):
        proxied.get_manifest(REPO, "v1")
    wrong = StaticCredentials({proxy.host: Credentials("bob", "nope")})
    with RegistryClient(proxy.host, auth=AuthProvider(wrong)) as c:
        with pytest.raises(FailedPrecondition, match="unauthorized"):
            c.get_manifest(REPO, "v1")


# --- token auth -------------------------------------------------------------------------------

def _docker_config(tmp_path: Path, host: str, user: str, password: str) -> DockerConfigCredentials:
    import base64

    path = tmp_path / "docker" / "config.json"
    path.parent.mkdir()
    encoded = base64.b64encode(f"{user}:{password}".encode()).decode()
    path.write_text(json.dumps({"auths": {f"http://{host}": {"auth": encoded}}}))
    return DockerConfigCredentials(path)


def test_token_auth_pull(token_registry: Any, tmp_path: Path, store: ContentStore) -> None:
    creds = _docker_config(tmp_path, token_registry.host, token_registry.USER, token_registry.PASSWORD)
    auth = AuthProvider(creds)
    before = len(token_registry.tokens.requests)
    with RegistryClient(token_registry.host, auth=auth) as c:
        media_type, digest, body = c.get_manifest("berth/private", "v1")
        assert media_type == mediatypes.OCI_MANIFEST
        for desc in [manifests.config(body), *manifests.layers(body)]:
            assert pull_into(c, store, "berth/private", desc) == desc.digest
    issued = token_registry.tokens.requests[before:]
    assert auth.token_requests == 1 and len(issued) == 1           # one scope, one token, cached
    assert issued[0]["user"] == token_registry.USER
    assert issued[0]["query"]["scope"] == ["repository:berth/private:pull"]


def test_token_auth_anonymous_is_refused(token_registry: Any) -> None:
    with RegistryClient(token_registry.host) as c:
        with pytest.raises(FailedPrecondition, match="unauthorized.*no credentials found") as info:
            c.get_manifest("berth/private", "v1")
    assert "\n" not in str(info.value)


def test_token_auth_wrong_password(token_registry: Any, tmp_path: Path) -> None:
    creds = _docker_config(tmp_path, token_registry.host, token_registry.USER, "wrong")
    with RegistryClient(token_registry.host, auth=AuthProvider(creds)) as c:
        with pytest.raises(FailedPrecondition, match="refused the stored credentials"):
            c.get_manifest("berth/private", "v1")


def test_token_auth_push(token_registry: Any, tmp_path: Path, store: ContentStore) -> None:
    creds = _docker_config(tmp_path, token_registry.host, token_registry.USER, token_registry.PASSWORD)
    with RegistryClient(token_registry.host, auth=AuthProvider(creds)) as c:
        media_type, digest, body = c.get_manifest("berth/private", "v1")
        descs = [manifests.config(body), *manifests.layers(body)]
        for desc in descs:
            pull_into(c, store, "berth/private", desc)
        results = [c.push_blob("berth/pushed", d.digest, d.size, lambda d=d: store.open(d.digest),
                               mount_from="berth/private") for d in descs]
        assert results == ["mounted"] * len(descs)
        assert c.put_manifest("berth/pushed", "v1", media_type, body) == digest
    raw = inspect_raw(f"{token_registry.host}/berth/pushed:v1",
                      creds=f"{token_registry.USER}:{token_registry.PASSWORD}")
    assert raw == body


# --- push ---------------------------------------------------------------------------------------

def test_push_and_read_back_with_skopeo(registry: Any, client: RegistryClient, store: ContentStore) -> None:
    media_type, digest, body = client.get_manifest(REPO, "v1")
    descs = [manifests.config(body), *manifests.layers(body)]
    for desc in descs:
        pull_into(client, store, REPO, desc)

    biggest = max(descs, key=lambda d: d.size)
    progress: list[tuple[int, int | None]] = []
    results = []
    for desc in descs:
        results.append(client.push_blob(
            "berth/pushed", desc.digest, desc.size, lambda d=desc: store.open(d.digest),
            progress=(lambda d, t: progress.append((d, t))) if desc is biggest else None,
            chunk_size=256 * 1024 if desc is biggest else None,
        ))
    assert results == ["uploaded"] * len(descs)
    assert progress[-1] == (biggest.size, biggest.size) and len(progress) > 2
    again = client.push_blob("berth/pushed", biggest.digest, biggest.size, lambda: store.open(biggest.digest))
    assert again == "exists"
    assert client.put_manifest("berth/pushed", "copy", media_type, body) == digest

    assert inspect_raw(f"{registry.host}/berth/pushed:copy") == body
    out = subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{registry.host}/berth/pushed:copy"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    info = json.loads(out)
    assert info["Digest"] == digest
    assert info["Layers"] == [d.digest for d in manifests.layers(body)]
    assert "copy" in client.list_tags("berth/pushed")


def test_push_cross_repository_mount(registry: Any, client: RegistryClient, store: ContentStore) -> None:
    layer = biggest_layer(client)
    pull_into(client, store, REPO, layer)
    assert client.push_blob("berth/mounted", layer.digest, layer.size, lambda: store.open(layer.digest),
                            mount_from=REPO) == "mounted"
    assert client.blob_exists("berth/mounted", layer.digest)


def test_push_index_by_digest(registry: Any, client: RegistryClient) -> None:
    media_type, digest, body = client.get_manifest("berth/multi", "latest")
    for child in manifests.children(body):
        child_type, _, child_body = client.get_manifest("berth/multi", child.digest)
        for desc in [manifests.config(child_body), *manifests.layers(child_body)]:
            client.push_blob("berth/multi-copy", desc.digest, desc.size, lambda: None,  # type: ignore[arg-type,return-value]
                             mount_from="berth/multi")
        assert client.put_manifest("berth/multi-copy", child.digest, child_type, child_body) == child.digest
    assert client.put_manifest("berth/multi-copy", "latest", media_type, body) == digest
    assert inspect_raw(f"{registry.host}/berth/multi-copy:latest") == body
    with pytest.raises(InvalidArgument, match="digest mismatch"):
        client.put_manifest("berth/multi-copy", "sha256:" + "0" * 64, media_type, body)


def test_error_messages_are_one_clear_line(proxy: FaultProxy, proxied: RegistryClient, client: RegistryClient,
                                           token_registry: Any, capsys: pytest.CaptureFixture[str]) -> None:
    failures: list[BaseException] = []
    for call in (
        lambda: client.get_manifest(REPO, "nope"),
        lambda: client.get_manifest("berth/none", "sha256:" + "0" * 64),
        lambda: RegistryClient(token_registry.host).get_manifest("berth/private", "v1"),
        lambda: RegistryClient(f"127.0.0.1:{free_port()}", retries=0).ping(),
    ):
        with pytest.raises(Exception) as info:
            call()
        failures.append(info.value)
    proxy.huge_manifest = True
    with pytest.raises(InvalidArgument) as info:
        proxied.get_manifest(REPO, "v1")
    failures.append(info.value)
    for error in failures:
        message = str(error)
        print(type(error).__name__, message)
        assert message and "\n" not in message and len(message) < 300
