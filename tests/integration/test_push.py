"""Push what we pulled to other repositories of the real registry, and read it back with
skopeo (not with our own pull): same manifest bytes, same digests."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from berth.errors import FailedPrecondition, InvalidArgument, NotFound
from berth.image.auth import AuthProvider, Credentials, StaticCredentials
from berth.image.pull import pull
from berth.image.push import push
from berth.image.store import Stores
from tests.support.images import Layout, inspect_raw
from tests.support.imagetest import fast_client

pytestmark = pytest.mark.integration


class Events:
    def __init__(self) -> None:
        self.final: dict[str, str] = {}

    def __call__(self, layer: str, phase: str, done: int, total: int) -> None:
        self.final[layer] = phase


def skopeo_copy_out(ref: str, dest: Path, tag: str = "t") -> Layout:
    subprocess.run(["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{ref}", f"oci:{dest}:{tag}"],
                   check=True, capture_output=True, timeout=120)
    return Layout(dest)


def test_push_our_pull_and_copy_it_back_with_skopeo(registry: Any, stores: Stores, tmp_path: Path) -> None:
    source = f"{registry.host}/berth/busybox:v1"
    record = pull(source, store_root=stores, client_factory=fast_client)
    events = Events()
    target = f"{registry.host}/berth/copy:v1"
    digest = push(source, target, store_root=stores, progress=events, client_factory=fast_client)
    assert digest == record.manifest_digest
    # same registry: every layer was mounted from the repository we pulled from
    assert set(events.final.values()) == {"Mounted from berth/busybox"}
    assert inspect_raw(target) == stores.content.read_bytes(record.manifest_digest)
    copied = skopeo_copy_out(target, tmp_path / "out")
    assert copied.entry("t")["digest"] == record.manifest_digest
    original = registry.layout.manifest("v1")
    assert copied.manifest("t") == original
    for desc in original["layers"] + [original["config"]]:
        assert copied.read_blob(desc["digest"]) == registry.layout.read_blob(desc["digest"])
    # the pushed name is now one of the image's repository digests
    assert f"{registry.host}/berth/copy@{digest}" in stores.images.get(record.id).digests
    # a second push finds everything there
    again = Events()
    push(source, target, store_root=stores, progress=again, client_factory=fast_client)
    assert set(again.final.values()) == {"Layer already exists"}


def test_chunked_upload_without_mount(registry: Any, stores: Stores, tmp_path: Path) -> None:
    record = pull(f"{registry.host}/berth/busybox:zstd", store_root=stores, client_factory=fast_client)
    stores.images.tag(record.id, f"{registry.host}/berth/chunked:z1")
    events = Events()
    digest = push(f"{registry.host}/berth/chunked:z1", store_root=stores, progress=events, chunk_size=64 << 10,
                  cross_mount=False, client_factory=fast_client)
    assert digest == record.manifest_digest
    assert set(events.final.values()) == {"Pushed"}
    copied = skopeo_copy_out(f"{registry.host}/berth/chunked:z1", tmp_path / "out")
    assert copied.entry("t")["digest"] == digest
    for desc in copied.manifest("t")["layers"]:
        assert copied.read_blob(desc["digest"]) == stores.content.read_bytes(desc["digest"], max_size=64 << 20)


def test_push_docker_schema2_and_index_child(registry: Any, stores: Stores) -> None:
    docker = pull(f"{registry.host}/berth/busybox:docker", store_root=stores, client_factory=fast_client)
    assert push(docker.id, f"{registry.host}/berth/copy:docker", store_root=stores,
                client_factory=fast_client) == docker.manifest_digest
    assert json.loads(inspect_raw(f"{registry.host}/berth/copy:docker"))["mediaType"] == docker.media_type
    arm = pull(f"{registry.host}/berth/multi:latest", store_root=stores, platform="linux/arm64",
               client_factory=fast_client)
    assert push(arm.id, f"{registry.host}/berth/copy:arm64", store_root=stores,
                client_factory=fast_client) == arm.manifest_digest


def test_push_errors(registry: Any, stores: Stores, token_registry: Any) -> None:
    with pytest.raises(NotFound):
        push("nothing:here", store_root=stores)
    record = pull(f"{registry.host}/berth/busybox:v1", store_root=stores, client_factory=fast_client)
    with pytest.raises(InvalidArgument):
        push(record.id[7:19], store_root=stores)                       # an ID is no place to push to
    with pytest.raises(FailedPrecondition):                             # token registry, no credentials
        push(record.id, f"{token_registry.host}/berth/mine:v1", store_root=stores,
             auth=AuthProvider(StaticCredentials({})))
    creds = StaticCredentials({token_registry.host: Credentials(token_registry.USER, token_registry.PASSWORD)})
    assert push(record.id, f"{token_registry.host}/berth/mine:v1", store_root=stores,
                auth=AuthProvider(creds)) == record.manifest_digest
    stores.content.delete(json.loads(stores.content.read_bytes(record.manifest_digest))["layers"][0]["digest"])
    with pytest.raises(FailedPrecondition, match="not in the content store"):
        push(record.id, f"{registry.host}/berth/copy:broken", store_root=stores, client_factory=fast_client)
