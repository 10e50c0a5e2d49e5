"""berth.image.platforms: parsing, normalization, picking a manifest from an index."""

from __future__ import annotations

import json

import pytest

from berth.errors import InvalidArgument, NotFound
from berth.image import mediatypes
from berth.image.platforms import Platform, host_platform, parse_platform, resolve_platform


def _desc(n: int, **platform: str) -> dict[str, object]:
    return {"mediaType": mediatypes.OCI_MANIFEST, "digest": "sha256:" + f"{n:x}" * 64, "size": 100 + n,
            "platform": platform}


INDEX = {
    "schemaVersion": 2,
    "mediaType": mediatypes.OCI_INDEX,
    "manifests": [
        _desc(1, os="linux", architecture="amd64"),
        _desc(2, os="linux", architecture="arm64", variant="v8"),
        _desc(3, os="linux", architecture="arm", variant="v6"),
        _desc(4, os="linux", architecture="arm", variant="v7"),
        _desc(5, os="windows", architecture="amd64"),
        _desc(6, os="unknown", architecture="unknown"),
    ],
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("linux/amd64", Platform("linux", "amd64")),
        ("linux/x86_64", Platform("linux", "amd64")),
        ("linux/aarch64", Platform("linux", "arm64", "v8")),
        ("linux/arm64", Platform("linux", "arm64", "v8")),
        ("linux/arm64/v8", Platform("linux", "arm64", "v8")),
        ("linux/arm", Platform("linux", "arm", "v7")),
        ("linux/arm/7", Platform("linux", "arm", "v7")),
        ("linux/armhf", Platform("linux", "arm", "v7")),
        ("Linux/ARM/V6", Platform("linux", "arm", "v6")),
    ],
)
def test_parse(text: str, expected: Platform) -> None:
    assert parse_platform(text) == expected


@pytest.mark.parametrize("text", ["", "linux", "linux/", "/amd64", "a/b/c/d"])
def test_parse_invalid(text: str) -> None:
    with pytest.raises(InvalidArgument, match="os/arch"):
        parse_platform(text)


def test_host_platform_is_normalized() -> None:
    host = host_platform()
    assert host.os == "linux"
    assert host.architecture in ("amd64", "arm64", "arm", "386", "ppc64le", "s390x", "riscv64")


@pytest.mark.parametrize(
    ("wanted", "digit"),
    [("linux/amd64", 1), ("linux/arm64", 2), ("linux/arm64/v8", 2), ("linux/arm/v7", 4),
     ("linux/arm/v6", 3), ("windows/amd64", 5)],
)
def test_resolve(wanted: str, digit: int) -> None:
    desc = resolve_platform(json.dumps(INDEX).encode(), wanted)
    assert desc.digest == "sha256:" + f"{digit:x}" * 64
    assert desc.size == 100 + digit


def test_resolve_arm_falls_back_to_lower_variant() -> None:
    index = dict(INDEX, manifests=[m for m in INDEX["manifests"] if m["digest"] != "sha256:" + "4" * 64])
    assert resolve_platform(index, "linux/arm/v7").digest == "sha256:" + "3" * 64
    with pytest.raises(NotFound):
        resolve_platform(index, "linux/arm/v5")


def test_resolve_default_is_host() -> None:
    if host_platform() != Platform("linux", "amd64"):
        pytest.skip("host is not linux/amd64")
    assert resolve_platform(INDEX).digest == "sha256:" + "1" * 64


def test_resolve_missing_lists_available() -> None:
    with pytest.raises(NotFound) as info:
        resolve_platform(INDEX, "linux/s390x")
    message = str(info.value)
    assert "linux/s390x" in message
    assert "linux/amd64, linux/arm64/v8, linux/arm/v6, linux/arm/v7, windows/amd64" in message
    assert "unknown" not in message


def test_resolve_bad_index() -> None:
    with pytest.raises(InvalidArgument):
        resolve_platform(b"not json", "linux/amd64")
    with pytest.raises(InvalidArgument):
        resolve_platform(b"{}", "linux/amd64")
