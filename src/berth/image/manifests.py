"""Descriptors and the checks a fetched manifest must pass before anything uses it.

    Descriptor.from_json(obj) / .to_json()
    check_manifest(body, content_type, expected_digest=None) -> (media_type, digest)
    layers(manifest_bytes) -> list[Descriptor]; config(manifest_bytes) -> Descriptor

``check_manifest`` refuses: more than MAX_MANIFEST_SIZE bytes ("manifest too large"),
a body that is not a JSON object, Docker schema 1, a schemaVersion other than 2, a body
whose ``mediaType`` contradicts the Content-Type the registry sent, an unsupported media
type, and a digest that does not match the one asked for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from berth.errors import InvalidArgument
from berth.image import mediatypes
from berth.image.digest import compute_digest, parse_digest

MAX_MANIFEST_SIZE = 4 << 20
# Content-Types that say nothing about the manifest kind: then the body decides
_GENERIC_TYPES = frozenset({"", "application/json", "text/plain", "application/octet-stream"})


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: dict[str, Any] | None = None
    annotations: dict[str, str] | None = None
    urls: tuple[str, ...] = field(default=())

    @classmethod
    def from_json(cls, obj: object) -> Descriptor:
        if not isinstance(obj, dict):
            raise InvalidArgument("descriptor is not a JSON object")
        media_type, digest, size = obj.get("mediaType"), obj.get("digest"), obj.get("size")
        if not isinstance(media_type, str) or not media_type:
            raise InvalidArgument("descriptor has no mediaType")
        if not isinstance(digest, str):
            raise InvalidArgument(f"descriptor of {media_type} has no digest")
        parse_digest(digest)
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidArgument(f"descriptor {digest} has an invalid size {size!r}")
        platform = obj.get("platform")
        annotations = obj.get("annotations")
        urls = obj.get("urls") or ()
        return cls(
            media_type, digest, size,
            platform if isinstance(platform, dict) else None,
            annotations if isinstance(annotations, dict) else None,
            tuple(u for u in urls if isinstance(u, str)) if isinstance(urls, list) else (),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.urls:
            out["urls"] = list(self.urls)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform:
            out["platform"] = dict(self.platform)
        return out


def detect_media_type(doc: dict[str, Any], content_type: str = "") -> str:
    """The manifest kind, from its ``mediaType``, else the Content-Type, else its shape."""
    declared = doc.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    content_type = mediatypes.strip_parameters(content_type)
    if content_type and content_type not in _GENERIC_TYPES:
        return content_type
    if "manifests" in doc:
        return mediatypes.OCI_INDEX
    if "config" in doc and "layers" in doc:
        return mediatypes.OCI_MANIFEST
    if doc.get("schemaVersion") == 1:
        return mediatypes.DOCKER_SCHEMA1
    raise InvalidArgument("manifest has no mediaType and is neither an index nor an image manifest")


def check_manifest(body: bytes, content_type: str = "", expected_digest: str | None = None) -> tuple[str, str]:
    """Validate a fetched manifest; returns (media_type, digest)."""
    if len(body) > MAX_MANIFEST_SIZE:
        raise InvalidArgument(f"manifest too large: {len(body)} bytes, the limit is {MAX_MANIFEST_SIZE}")
    algorithm = parse_digest(expected_digest)[0] if expected_digest else "sha256"
    digest = compute_digest(body, algorithm)
    if expected_digest is not None and digest != expected_digest:
        raise InvalidArgument(f"manifest digest mismatch: expected {expected_digest}, got {digest}")
    header_type = mediatypes.strip_parameters(content_type)
    if header_type in mediatypes.SCHEMA1:
        raise InvalidArgument(_SCHEMA1_MESSAGE)
    try:
        doc = json.loads(body)
    except ValueError:
        raise InvalidArgument("manifest is not valid JSON") from None
    if not isinstance(doc, dict):
        raise InvalidArgument("manifest is not a JSON object")
    if doc.get("schemaVersion") == 1:
        raise InvalidArgument(_SCHEMA1_MESSAGE)
    media_type = detect_media_type(doc, header_type)
    if media_type in mediatypes.SCHEMA1:
        raise InvalidArgument(_SCHEMA1_MESSAGE)
    declared = doc.get("mediaType")
    if isinstance(declared, str) and declared and header_type not in _GENERIC_TYPES and declared != header_type:
        raise InvalidArgument(
            f"wrong media type: the registry sent Content-Type {header_type}, the manifest says {declared}"
        )
    if media_type not in mediatypes.SUPPORTED_MANIFESTS:
        raise InvalidArgument(f"unsupported manifest media type {media_type!r}")
    if doc.get("schemaVersion") != 2:
        raise InvalidArgument(f"unsupported manifest schemaVersion {doc.get('schemaVersion')!r} (expected 2)")
    if mediatypes.is_index(media_type):
        if not isinstance(doc.get("manifests"), list):
            raise InvalidArgument(f"{media_type} has no 'manifests' list")
    elif not isinstance(doc.get("config"), dict) or not isinstance(doc.get("layers"), list):
        raise InvalidArgument(f"{media_type} needs a 'config' object and a 'layers' list")
    return media_type, digest


_SCHEMA1_MESSAGE = (
    "Docker image manifest schema 1 is not supported (deprecated): "
    "push the image again with a current client to get schema 2 or OCI"
)


def _load(manifest: bytes | dict[str, Any]) -> dict[str, Any]:
    if isinstance(manifest, dict):
        return manifest
    doc = json.loads(manifest)
    if not isinstance(doc, dict):
        raise InvalidArgument("manifest is not a JSON object")
    return doc


def config(manifest: bytes | dict[str, Any]) -> Descriptor:
    return Descriptor.from_json(_load(manifest).get("config"))


def layers(manifest: bytes | dict[str, Any]) -> list[Descriptor]:
    raw = _load(manifest).get("layers")
    if not isinstance(raw, list):
        raise InvalidArgument("manifest has no 'layers' list")
    return [Descriptor.from_json(item) for item in raw]


def children(index: bytes | dict[str, Any]) -> list[Descriptor]:
    raw = _load(index).get("manifests")
    if not isinstance(raw, list):
        raise InvalidArgument("index has no 'manifests' list")
    return [Descriptor.from_json(item) for item in raw]
