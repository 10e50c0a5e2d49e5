"""Platforms (``os/arch[/variant]``) as containerd normalizes them, and picking one
manifest out of an index or a Docker manifest list.

    parse_platform("linux/arm64") -> Platform("linux", "arm64", "v8")
    host_platform()               -> the platform of this machine (os.uname)
    resolve_platform(index_bytes, "linux/arm/v7") -> Descriptor of the best match

Matching: os and architecture must be equal after normalization (x86_64 -> amd64,
aarch64 -> arm64, armhf -> arm/v7, ...). An exact variant wins; for arm, a lower variant
is accepted when the wanted one is missing (a v7 machine runs v6 and v5 code), as
containerd does; arm64 treats a missing variant as v8; amd64 ignores variants.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from berth.errors import InvalidArgument, NotFound
from berth.image import mediatypes
from berth.image.manifests import Descriptor

_ARCH_ALIASES: dict[str, tuple[str, str]] = {
    "x86_64": ("amd64", ""), "x86-64": ("amd64", ""), "amd64": ("amd64", ""),
    "i386": ("386", ""), "i486": ("386", ""), "i586": ("386", ""), "i686": ("386", ""), "386": ("386", ""),
    "aarch64": ("arm64", "v8"), "arm64": ("arm64", "v8"), "armv8l": ("arm64", "v8"),
    "armhf": ("arm", "v7"), "armel": ("arm", "v6"), "arm": ("arm", "v7"),
    "armv7l": ("arm", "v7"), "armv7": ("arm", "v7"), "armv6l": ("arm", "v6"), "armv6": ("arm", "v6"),
    "armv5tel": ("arm", "v5"), "armv5l": ("arm", "v5"), "armv5": ("arm", "v5"),
    "ppc64le": ("ppc64le", ""), "s390x": ("s390x", ""), "riscv64": ("riscv64", ""),
    "mips64le": ("mips64le", ""), "loong64": ("loong64", ""),
}
_ARM_VARIANTS = ("v8", "v7", "v6", "v5")


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        base = f"{self.os}/{self.architecture}"
        return f"{base}/{self.variant}" if self.variant else base


def normalize(os_name: str, arch: str, variant: str = "") -> Platform:
    os_name = os_name.lower()
    arch, variant = arch.lower(), variant.lower()
    if os_name == "macos":
        os_name = "darwin"
    base, default_variant = _ARCH_ALIASES.get(arch, (arch, ""))
    if base == "arm64":
        variant = variant or default_variant
        if variant == "8":
            variant = "v8"
    elif base == "arm":
        variant = variant or default_variant
        if variant in ("5", "6", "7", "8"):
            variant = "v" + variant
    elif base == "amd64":
        variant = variant if variant in ("v2", "v3", "v4") else ""
    return Platform(os_name, base, variant)


def parse_platform(text: str) -> Platform:
    """``linux/amd64``, ``linux/arm/v7``, ``linux/arm64/v8``; InvalidArgument otherwise."""
    parts = text.strip().split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise InvalidArgument(f"invalid platform {text!r}: expected os/arch[/variant], e.g. linux/amd64")
    return normalize(*parts)


def host_platform() -> Platform:
    uname = os.uname()
    return normalize(uname.sysname.lower(), uname.machine)


def _candidate_variants(wanted: Platform) -> list[str]:
    """Variants acceptable for ``wanted``, best first."""
    if wanted.architecture == "arm":
        start = _ARM_VARIANTS.index(wanted.variant) if wanted.variant in _ARM_VARIANTS else 1
        return list(_ARM_VARIANTS[start:])
    if wanted.architecture == "arm64":
        return [wanted.variant or "v8"]
    if wanted.architecture == "amd64":
        return [""]
    return [wanted.variant]


def _rank(wanted: Platform, have: Platform) -> int | None:
    """0 for the best match, larger for worse, None for no match."""
    if have.os != wanted.os or have.architecture != wanted.architecture:
        return None
    candidates = _candidate_variants(wanted)
    if have.variant in candidates:
        return candidates.index(have.variant)
    return None


def resolve_platform(index: bytes | dict[str, object], platform: str | Platform | None = None) -> Descriptor:
    """The manifest descriptor in an OCI index / Docker manifest list for ``platform``
    (default: the host's). NotFound, listing what the index has, when none matches."""
    if isinstance(index, (bytes, bytearray)):
        try:
            index = json.loads(index)
        except ValueError:
            raise InvalidArgument("image index is not valid JSON") from None
    entries = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(entries, list):
        raise InvalidArgument("image index has no 'manifests' list")
    wanted = host_platform() if platform is None else (
        platform if isinstance(platform, Platform) else parse_platform(platform)
    )
    wanted = normalize(wanted.os, wanted.architecture, wanted.variant)

    best: tuple[int, int, Descriptor] | None = None
    available: list[str] = []
    for position, raw in enumerate(entries):
        desc = Descriptor.from_json(raw)
        if desc.media_type not in mediatypes.MANIFESTS and desc.media_type not in mediatypes.INDEXES:
            continue
        plat = desc.platform or {}
        have = normalize(str(plat.get("os", "")), str(plat.get("architecture", "")), str(plat.get("variant", "")))
        if have.os and have.os != "unknown":
            available.append(str(have))
        rank = _rank(wanted, have)
        if rank is not None and (best is None or (rank, position) < best[:2]):
            best = (rank, position, desc)
    if best is None:
        listed = ", ".join(dict.fromkeys(available)) or "no platforms"
        raise NotFound(f"no image for platform {wanted} in the index (available: {listed})")
    return best[2]
