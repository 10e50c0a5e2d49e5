"""Image references: Docker's normalization and the distribution/reference grammar."""

from __future__ import annotations

import pytest

from berth.errors import InvalidArgument
from berth.image.reference import Reference, parse_reference

D64 = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "domain", "path", "tag", "digest"),
    [
        ("busybox", "docker.io", "library/busybox", "latest", None),
        ("busybox:1.36", "docker.io", "library/busybox", "1.36", None),
        ("library/busybox", "docker.io", "library/busybox", "latest", None),
        ("docker.io/busybox", "docker.io", "library/busybox", "latest", None),
        ("index.docker.io/library/busybox", "docker.io", "library/busybox", "latest", None),
        ("user/app:v1", "docker.io", "user/app", "v1", None),
        ("host:5000/a/b:tag", "host:5000", "a/b", "tag", None),
        ("host:5000/a/b", "host:5000", "a/b", "latest", None),
        ("localhost/x", "localhost", "x", "latest", None),
        ("localhost:5000/x:y", "localhost:5000", "x", "y", None),
        ("quay.io/org/sub/image:1.0-rc.1", "quay.io", "org/sub/image", "1.0-rc.1", None),
        ("127.0.0.1:5000/berth/busybox:v1", "127.0.0.1:5000", "berth/busybox", "v1", None),
        ("[::1]:5000/foo:bar", "[::1]:5000", "foo", "bar", None),
        ("Registry.Example.com/foo", "Registry.Example.com", "foo", "latest", None),
        (f"busybox@{D64}", "docker.io", "library/busybox", None, D64),
        (f"busybox:1.36@{D64}", "docker.io", "library/busybox", "1.36", D64),
        (f"host:5000/a@{D64}", "host:5000", "a", None, D64),
        ("a/b__c/d-e.f_g--h:TAG_1", "docker.io", "a/b__c/d-e.f_g--h", "TAG_1", None),
        ("localhost:5000", "docker.io", "library/localhost", "5000", None),
    ],
)
def test_parse(text: str, domain: str, path: str, tag: str | None, digest: str | None) -> None:
    ref = parse_reference(text)
    assert (ref.domain, ref.path, ref.tag, ref.digest) == (domain, path, tag, digest)


@pytest.mark.parametrize(
    ("text", "full", "familiar"),
    [
        ("busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("user/app:v1", "docker.io/user/app:v1", "user/app:v1"),
        ("docker.io/library/a/b", "docker.io/library/a/b:latest", "library/a/b:latest"),
        ("host:5000/a/b:tag", "host:5000/a/b:tag", "host:5000/a/b:tag"),
        (f"busybox@{D64}", f"docker.io/library/busybox@{D64}", f"busybox@{D64}"),
        (f"busybox:1@{D64}", f"docker.io/library/busybox:1@{D64}", f"busybox:1@{D64}"),
    ],
)
def test_str_and_familiar(text: str, full: str, familiar: str) -> None:
    ref = parse_reference(text)
    assert str(ref) == full
    assert ref.familiar() == familiar
    assert parse_reference(str(ref)) == ref


def test_reference_property_prefers_digest() -> None:
    assert parse_reference("busybox").reference == "latest"
    assert parse_reference(f"busybox:1@{D64}").reference == D64
    assert parse_reference("busybox").name == "docker.io/library/busybox"


def test_default_tag_none_keeps_bare_name() -> None:
    assert parse_reference("busybox", default_tag=None).tag is None
    assert str(parse_reference("busybox", default_tag=None)) == "docker.io/library/busybox"


def test_with_tag_and_digest() -> None:
    ref = parse_reference("busybox")
    assert str(ref.with_tag("x")) == "docker.io/library/busybox:x"
    assert ref.with_digest(D64).digest == D64
    with pytest.raises(InvalidArgument):
        ref.with_tag("-bad")
    with pytest.raises(InvalidArgument):
        ref.with_digest("sha256:short")
    assert isinstance(ref, Reference)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        ("Busybox", "must be lowercase"),
        ("user/App", "must be lowercase"),
        ("host:5000/A/b", "must be lowercase"),
        ("busybox:", "empty tag"),
        ("busybox:bad/tag", "invalid registry host"),  # a ":" makes the first component a host
        ("busybox:-x", "invalid tag"),
        ("busybox:.x", "invalid tag"),
        ("busybox:a!b", "invalid tag"),
        ("busybox:" + "a" * 129, "longer than 128"),
        ("busybox@", "empty digest"),
        ("busybox@sha256:abc", "64 lowercase hex"),
        ("busybox@sha256:" + "AB" * 32, "64 lowercase hex"),
        ("busybox@md5:" + "a" * 32, "unsupported digest algorithm"),
        ("busybox@notadigest", "invalid digest"),
        ("a" * 64, "image ID"),
        ("bad host!/x", "whitespace"),
        ("-host.com/x", "invalid registry host"),
        ("host.com/-x", "must be lowercase letters"),
        ("host.com/x//y", "must be lowercase letters"),
        ("host.com/x_-y", "must be lowercase letters"),
        ("host.com/", "empty repository"),
        ("a/" * 130 + "b", "longer than 255"),
        (" busybox", "whitespace"),
    ],
)
def test_invalid(text: str, fragment: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_reference(text)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message


def test_tag_of_128_is_fine() -> None:
    assert parse_reference("busybox:" + "a" * 128).tag == "a" * 128
