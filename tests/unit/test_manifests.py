"""berth.image.manifests: what a fetched manifest must satisfy; descriptors."""

from __future__ import annotations

import hashlib
import json

import pytest

from berth.errors import InvalidArgument
from berth.image import mediatypes
from berth.image.manifests import MAX_MANIFEST_SIZE, Descriptor, check_manifest, config, layers

D = "sha256:" + "a" * 64
OCI = {"schemaVersion": 2, "mediaType": mediatypes.OCI_MANIFEST,
       "config": {"mediaType": mediatypes.OCI_CONFIG, "digest": D, "size": 2},
       "layers": [{"mediaType": mediatypes.OCI_LAYER_GZIP, "digest": D, "size": 3}]}


def _body(doc: object) -> bytes:
    return json.dumps(doc).encode()


def test_ok_and_digest() -> None:
    body = _body(OCI)
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    assert check_manifest(body, mediatypes.OCI_MANIFEST) == (mediatypes.OCI_MANIFEST, digest)
    assert check_manifest(body, "application/json; charset=utf-8", digest) == (mediatypes.OCI_MANIFEST, digest)


def test_without_media_type_field() -> None:
    doc = {k: v for k, v in OCI.items() if k != "mediaType"}
    assert check_manifest(_body(doc), mediatypes.OCI_MANIFEST)[0] == mediatypes.OCI_MANIFEST
    assert check_manifest(_body(doc), "application/octet-stream")[0] == mediatypes.OCI_MANIFEST
    index = {"schemaVersion": 2, "manifests": []}
    assert check_manifest(_body(index), "")[0] == mediatypes.OCI_INDEX


@pytest.mark.parametrize(
    ("body", "content_type", "fragment"),
    [
        (b"x" * (MAX_MANIFEST_SIZE + 1), "", "manifest too large"),
        (b"not json", mediatypes.OCI_MANIFEST, "not valid JSON"),
        (b"[]", mediatypes.OCI_MANIFEST, "not a JSON object"),
        (_body({"schemaVersion": 1, "name": "x"}), mediatypes.DOCKER_SCHEMA1_SIGNED, "schema 1"),
        (_body({"schemaVersion": 1, "name": "x", "fsLayers": []}), "application/json", "schema 1"),
        (_body(OCI), mediatypes.DOCKER_MANIFEST, "wrong media type"),
        (_body(dict(OCI, schemaVersion=3)), mediatypes.OCI_MANIFEST, "schemaVersion"),
        (_body(dict(OCI, mediaType="application/vnd.example+json")), "", "unsupported manifest media type"),
        (_body({"schemaVersion": 2, "layers": []}), mediatypes.DOCKER_MANIFEST, "needs a 'config'"),
        (_body({"schemaVersion": 2, "config": {}, "layers": []}), mediatypes.OCI_INDEX, "'manifests' list"),
    ],
)
def test_refused(body: bytes, content_type: str, fragment: str) -> None:
    with pytest.raises(InvalidArgument, match=fragment):
        check_manifest(body, content_type)


def test_digest_mismatch() -> None:
    with pytest.raises(InvalidArgument, match="digest mismatch"):
        check_manifest(_body(OCI), mediatypes.OCI_MANIFEST, "sha256:" + "0" * 64)


def test_descriptors() -> None:
    assert config(_body(OCI)) == Descriptor(mediatypes.OCI_CONFIG, D, 2)
    assert [d.size for d in layers(OCI)] == [3]
    assert Descriptor.from_json(OCI["config"]).to_json() == OCI["config"]
    for bad in ({"digest": D, "size": 1}, {"mediaType": "x", "digest": "nope", "size": 1},
                {"mediaType": "x", "digest": D, "size": -1}, {"mediaType": "x", "digest": D, "size": True}):
        with pytest.raises(InvalidArgument):
            Descriptor.from_json(bad)


def test_layer_compression() -> None:
    assert mediatypes.layer_compression(mediatypes.OCI_LAYER) == "none"
    assert mediatypes.layer_compression(mediatypes.DOCKER_LAYER_GZIP) == "gzip"
    assert mediatypes.layer_compression(mediatypes.OCI_LAYER_ZSTD) == "zstd"
    with pytest.raises(InvalidArgument):
        mediatypes.layer_compression(mediatypes.OCI_CONFIG)
