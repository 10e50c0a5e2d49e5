"""berthd's image endpoints driven by real clients: the docker CLI (28.x, API 1.43) and
docker-py, against one berthd with temporary roots, pulling from and pushing to the
session's docker-registry on 127.0.0.1 (images put there by skopeo), checked with skopeo.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import Berthd

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def berthd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Berthd]:
    if shutil.which("docker") is None:
        pytest.skip("the docker CLI is not installed (scripts/setup.sh --with-peers)")
    d = Berthd(tmp_path_factory.mktemp("berthd-images"))
    try:
        d.start()
        yield d
    finally:
        d.cleanup()


def docker(d: Berthd, *args: str, check: bool = True, **kw: Any) -> Any:
    return d.docker(*args, check=check, **kw)


def inspect(d: Berthd, name: str) -> dict[str, Any]:
    return json.loads(docker(d, "image", "inspect", name).stdout)[0]


def v1_ids(registry: Any) -> tuple[str, str]:
    """(image ID = config digest, manifest digest) of berth/busybox:v1 in the layout."""
    entry = registry.layout.entry("v1")
    return registry.layout.manifest("v1")["config"]["digest"], entry["digest"]


def test_version_and_info(berthd: Berthd) -> None:
    out = docker(berthd, "version", "--format", "{{.Server.Version}} {{.Server.APIVersion}}").stdout.split()
    assert out[1] == "1.43"
    info = json.loads(docker(berthd, "info", "--format", "{{json .}}").stdout)
    assert info["OSType"] == "linux"
    assert info["DockerRootDir"] == str(berthd.data_root)
    assert isinstance(info["Images"], int)


def test_pull_images_inspect_history(berthd: Berthd, registry: Any) -> None:
    ref = f"{registry.host}/berth/busybox:v1"
    image_id, manifest_digest = v1_ids(registry)
    first = docker(berthd, "pull", ref)
    assert "v1: Pulling from berth/busybox" in first.stdout
    assert first.stdout.count(": Pull complete") == 3
    assert f"Digest: {manifest_digest}" in first.stdout
    assert f"Status: Downloaded newer image for {ref}" in first.stdout
    assert first.stdout.rstrip().endswith(ref)
    again = docker(berthd, "pull", ref)
    assert f"Status: Image is up to date for {ref}" in again.stdout
    assert again.stdout.count("Already exists") == 3

    listed = docker(berthd, "images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}").stdout.splitlines()
    assert f"{ref} {image_id[7:19]}" in listed
    doc = inspect(berthd, ref)
    assert doc["Id"] == image_id
    assert doc["RepoTags"] == [ref]
    assert doc["RepoDigests"] == [f"{registry.host}/berth/busybox@{manifest_digest}"]
    assert doc["Config"]["Cmd"] == ["/bin/sh"]
    assert doc["Os"] == "linux" and doc["Architecture"] == "amd64"
    assert len(doc["RootFS"]["Layers"]) == 3
    history = docker(berthd, "history", "--format", "{{.CreatedBy}}|{{.Size}}", ref).stdout.splitlines()
    created_by = [line.split("|")[0] for line in history]
    assert [c for c in created_by if c != "umoci config"] == ["whiteout and opaque dir", "add files", "busybox base"]
    by_id = docker(berthd, "image", "inspect", "--format", "{{.Id}}", image_id[7:19]).stdout.strip()
    assert by_id == image_id


def test_pull_index_and_docker_manifest(berthd: Berthd, registry: Any) -> None:
    image_id, _ = v1_ids(registry)
    for tag in ("multi", "docker"):
        ref = f"{registry.host}/berth/{'multi:latest' if tag == 'multi' else 'busybox:docker'}"
        out = docker(berthd, "pull", ref).stdout
        assert "Digest: sha256:" in out
        doc = inspect(berthd, ref)
        assert doc["Architecture"] == "amd64"
        assert doc["Id"] == image_id  # the same config under an index and a Docker manifest
    arm = docker(berthd, "pull", "--platform", "linux/arm64", f"{registry.host}/berth/multi:latest")
    assert arm.returncode == 0, arm.stderr
    assert inspect(berthd, f"{registry.host}/berth/multi:latest")["Architecture"] == "arm64"


def test_pull_errors(berthd: Berthd, registry: Any) -> None:
    missing_tag = docker(berthd, "pull", f"{registry.host}/berth/busybox:nope", check=False)
    assert missing_tag.returncode == 1
    assert f"manifest for {registry.host}/berth/busybox:nope not found" in missing_tag.stderr
    assert missing_tag.stderr.startswith("Error response from daemon: ")
    bad = docker(berthd, "pull", "UPPER/case", check=False)
    assert bad.returncode != 0
    unknown = docker(berthd, "image", "inspect", "nope:nope", check=False)
    assert unknown.returncode == 1 and "No such image: nope:nope" in unknown.stderr


def test_tag_and_rmi(berthd: Berthd, registry: Any) -> None:
    src = f"{registry.host}/berth/busybox:v1"
    docker(berthd, "pull", "-q", src)
    image_id, _ = v1_ids(registry)
    docker(berthd, "tag", src, "berthtest/tagged:one")
    docker(berthd, "tag", src, "berthtest/tagged:two")
    assert inspect(berthd, "berthtest/tagged:one")["Id"] == image_id
    listed = docker(berthd, "images", "--format", "{{.Repository}}:{{.Tag}}", "--filter",
                    "reference=berthtest/tagged").stdout.split()
    assert sorted(listed) == ["berthtest/tagged:one", "berthtest/tagged:two"]  # not the image's other names
    out = docker(berthd, "rmi", "berthtest/tagged:one").stdout
    assert out.strip() == "Untagged: berthtest/tagged:one"
    conflict = docker(berthd, "rmi", image_id[7:19], check=False)
    assert conflict.returncode == 1
    assert "conflict: unable to delete" in conflict.stderr and "must be forced" in conflict.stderr
    assert docker(berthd, "rmi", "berthtest/tagged:two").stdout.strip() == "Untagged: berthtest/tagged:two"
    missing = docker(berthd, "rmi", "berthtest/tagged:two", check=False)
    assert missing.returncode == 1
    assert "No such image: berthtest/tagged:two" in missing.stderr


def test_rmi_refuses_an_image_a_container_uses(berthd: Berthd, registry: Any) -> None:
    src = f"{registry.host}/berth/busybox:plain"
    docker(berthd, "pull", "-q", src)
    docker(berthd, "tag", src, "berthtest/used:1")
    docker(berthd, "rmi", src)  # berthtest/used:1 is now its only tag
    created = docker(berthd, "create", "--name", "uses-image", "berthtest/used:1", "true", check=False)
    if created.returncode != 0:
        pytest.skip(f"containers cannot be created yet: {created.stderr.strip()}")
    try:
        refused = docker(berthd, "rmi", "berthtest/used:1", check=False)
        assert refused.returncode == 1, refused.stdout
        assert 'conflict: unable to remove repository reference "berthtest/used:1" (must force)' in refused.stderr
        assert "is using its referenced image" in refused.stderr
        assert inspect(berthd, "berthtest/used:1")
    finally:
        docker(berthd, "rm", "-f", "uses-image", check=False)
    assert "Untagged: berthtest/used:1" in docker(berthd, "rmi", "berthtest/used:1").stdout


def test_push_then_skopeo_inspect(berthd: Berthd, registry: Any) -> None:
    src = f"{registry.host}/berth/busybox:v1"
    docker(berthd, "pull", "-q", src)
    target = f"{registry.host}/pushed/busybox:p1"
    docker(berthd, "tag", src, target)
    out = docker(berthd, "push", target).stdout
    assert f"The push refers to repository [{registry.host}/pushed/busybox]" in out
    digest_line = [line for line in out.splitlines() if line.startswith("p1: digest: ")]
    assert digest_line, out
    digest = digest_line[0].split()[2]
    _, manifest_digest = v1_ids(registry)
    assert digest == manifest_digest  # pushed byte for byte
    from tests.support.images import run

    seen = json.loads(run("skopeo", "inspect", "--tls-verify=false", f"docker://{target}"))
    assert seen["Digest"] == digest
    assert seen["Layers"] == [d["digest"] for d in registry.layout.manifest("v1")["layers"]]
    again = docker(berthd, "push", target).stdout
    assert again.count("Layer already exists") == 3
    assert f"{registry.host}/pushed/busybox@{digest}" in inspect(berthd, target)["RepoDigests"]


def test_save_load_round_trip(berthd: Berthd, registry: Any, tmp_path: Path) -> None:
    src = f"{registry.host}/berth/busybox:v1"
    docker(berthd, "pull", "-q", src)
    docker(berthd, "tag", src, "berthtest/saved:1")
    before = inspect(berthd, "berthtest/saved:1")
    archive = tmp_path / "saved.tar"
    docker(berthd, "save", "-o", str(archive), "berthtest/saved:1")
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert "manifest.json" in names and "repositories" in names
    assert manifest[0]["RepoTags"] == ["berthtest/saved:1"]
    docker(berthd, "rmi", "berthtest/saved:1")
    loaded = docker(berthd, "load", "-i", str(archive)).stdout
    assert "Loaded image: berthtest/saved:1" in loaded
    after = inspect(berthd, "berthtest/saved:1")
    assert after["Id"] == before["Id"]
    assert after["RootFS"]["Layers"] == before["RootFS"]["Layers"]
    bad = docker(berthd, "load", input="this is not a tar archive", check=False)
    assert bad.returncode == 1 and bad.stderr.strip()  # in the stream, as dockerd: no "Error response" prefix


def _rootfs_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("bin")
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
        data = b"hello from an imported rootfs\n"
        info = tarfile.TarInfo("etc/hello.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_import_and_prune(berthd: Berthd, tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs.tar"
    rootfs.write_bytes(_rootfs_tar())
    out = docker(berthd, "import", "--change", 'CMD ["/bin/sh"]', "--change", "ENV A=1", "-m", "from a test",
                 str(rootfs), "berthtest/imported:1").stdout.strip()
    assert out.startswith("sha256:")
    doc = inspect(berthd, "berthtest/imported:1")
    assert doc["Id"] == out
    assert doc["Config"]["Cmd"] == ["/bin/sh"] and "A=1" in doc["Config"]["Env"]
    history = docker(berthd, "history", "--format", "{{.Comment}}", "berthtest/imported:1").stdout
    assert "from a test" in history
    piped = docker(berthd, "import", "-", input=_rootfs_tar().decode("latin-1")).stdout.strip()
    assert piped.startswith("sha256:")
    dangling = docker(berthd, "images", "-q", "--filter", "dangling=true", "--no-trunc").stdout.split()
    assert piped in dangling
    pruned = docker(berthd, "image", "prune", "-f").stdout
    assert f"deleted: {piped}" in pruned
    assert piped not in docker(berthd, "images", "-q", "-a", "--no-trunc").stdout
    assert inspect(berthd, "berthtest/imported:1")["Id"] == out


def test_login_and_pull_with_credentials(berthd: Berthd, token_registry: Any, tmp_path: Path) -> None:
    ref = f"{token_registry.host}/berth/private:v1"
    anonymous = docker(berthd, "pull", ref, check=False)
    assert anonymous.returncode == 1
    wrong = docker(berthd, "login", "-u", token_registry.USER, "--password-stdin", token_registry.host,
                   input="wrong\n", check=False)
    assert wrong.returncode == 1
    ok = docker(berthd, "login", "-u", token_registry.USER, "--password-stdin", token_registry.host,
                input=token_registry.PASSWORD + "\n")
    assert "Login Succeeded" in ok.stdout
    pulled = docker(berthd, "pull", ref)
    assert f"Status: Downloaded newer image for {ref}" in pulled.stdout


def test_events_of_image_operations(berthd: Berthd, registry: Any) -> None:
    src = f"{registry.host}/berth/busybox:v1"
    docker(berthd, "pull", "-q", src)
    docker(berthd, "tag", src, "berthtest/evented:1")
    docker(berthd, "rmi", "berthtest/evented:1")
    time.sleep(1.05)  # docker sends --until in whole seconds
    out = docker(berthd, "events", "--since", "5m", "--until", "0s", "--filter", "type=image",
                 "--format", "{{.Action}} {{.Actor.Attributes.name}}").stdout.splitlines()
    assert f"pull {src}" in out
    assert "tag berthtest/evented:1" in out
    assert "untag berthtest/evented:1" in out


def test_docker_py(berthd: Berthd, registry: Any) -> None:
    docker_py = pytest.importorskip("docker")
    client = docker_py.DockerClient(base_url=f"unix://{berthd.socket}", version="1.43")
    try:
        assert client.version()["ApiVersion"] == "1.43"
        image = client.images.pull(f"{registry.host}/berth/busybox", tag="zstd")
        image_id, _ = v1_ids(registry)
        assert image.id == image_id
        assert f"{registry.host}/berth/busybox:zstd" in image.tags
        assert any(image_id == i.id for i in client.images.list())
        got = client.images.get(f"{registry.host}/berth/busybox:zstd")
        assert got.attrs["Config"]["Cmd"] == ["/bin/sh"]
        assert got.tag("berthtest/py", "one") is True
        assert "berthtest/py:one" in client.images.get("berthtest/py:one").tags
        assert got.history()[0]["Id"] == image_id
        client.images.remove("berthtest/py:one")
        with pytest.raises(docker_py.errors.ImageNotFound):
            client.images.get("berthtest/py:one")
        with pytest.raises(docker_py.errors.NotFound):
            client.images.pull(f"{registry.host}/berth/busybox", tag="nope")
        saved = b"".join(got.save(named=True))
        assert len(client.images.load(saved)) == 1
        assert client.images.prune(filters={"dangling": True}) is not None
    finally:
        client.close()


def test_default_image_is_made_offline(tmp_path: Path) -> None:
    from berth.daemon.default_image import NAME, ensure
    from berth.image.store import Stores

    root = tmp_path / "root"
    image_id, made = ensure(str(root))
    assert made
    again, made_again = ensure(str(root))
    assert (again, made_again) == (image_id, False)
    with Stores(root) as stores:
        record = stores.images.get("busybox")
        assert record.names == (NAME,)
        config = stores.images.config(record)
        assert config["config"]["Cmd"] == ["sh"]
        (mount,) = stores.snapshotter.view("check-default-image", record.chain_id)
        fs = mount.source  # a one-layer view: a read-only bind of the layer's own directory
        assert os.readlink(os.path.join(fs, "bin", "sh")) == "/bin/busybox"
        assert os.stat(os.path.join(fs, "bin", "busybox")).st_size == os.stat("/bin/busybox").st_size
        assert os.stat(os.path.join(fs, "tmp")).st_mode & 0o7777 == 0o1777
        assert b"root:x:0:0" in open(os.path.join(fs, "etc", "passwd"), "rb").read()
