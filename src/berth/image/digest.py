"""Content digests: ``<algorithm>:<lowercase hex>``, sha256 (the default) and sha512.

    parse_digest(d) -> (algorithm, hex)     InvalidArgument when malformed or unsupported
    validate_digest(d) -> d
    compute_digest(data, algorithm="sha256") -> "sha256:..."
    Digester(algorithm)                      streaming: update(bytes), digest(), copy()
    digest_file(path) -> (digest, size)
"""

from __future__ import annotations

import hashlib
import os
import re

from berth.errors import InvalidArgument

SHA256 = "sha256"
SHA512 = "sha512"
ALGORITHMS: dict[str, int] = {SHA256: 64, SHA512: 128}  # algorithm -> hex length
CHUNK = 1 << 20

_HEX = re.compile(r"[a-f0-9]+")
# the digest grammar of the image spec, for telling "malformed" from "unsupported"
_GRAMMAR = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")


def parse_digest(digest: str) -> tuple[str, str]:
    """Split and check a digest; one clear InvalidArgument line if it is not usable."""
    if not isinstance(digest, str) or not _GRAMMAR.fullmatch(digest):
        raise InvalidArgument(f"invalid digest {digest!r}: expected <algorithm>:<hex>, e.g. sha256:<64 hex>")
    algorithm, _, encoded = digest.partition(":")
    length = ALGORITHMS.get(algorithm)
    if length is None:
        raise InvalidArgument(f"unsupported digest algorithm {algorithm!r} in {digest!r} (sha256 or sha512)")
    if len(encoded) != length or not _HEX.fullmatch(encoded):
        raise InvalidArgument(f"invalid digest {digest!r}: {algorithm} needs {length} lowercase hex characters")
    return algorithm, encoded


def validate_digest(digest: str) -> str:
    parse_digest(digest)
    return digest


def is_digest(value: str) -> bool:
    try:
        parse_digest(value)
    except InvalidArgument:
        return False
    return True


def new_hasher(algorithm: str = SHA256) -> "hashlib._Hash":
    if algorithm not in ALGORITHMS:
        raise InvalidArgument(f"unsupported digest algorithm {algorithm!r} (sha256 or sha512)")
    return hashlib.new(algorithm)


def compute_digest(data: bytes | bytearray | memoryview, algorithm: str = SHA256) -> str:
    hasher = new_hasher(algorithm)
    hasher.update(data)
    return f"{algorithm}:{hasher.hexdigest()}"


class Digester:
    """Streaming digest: feed bytes with update(), read ``"<alg>:<hex>"`` with digest()."""

    __slots__ = ("algorithm", "_hasher", "size")

    def __init__(self, algorithm: str = SHA256) -> None:
        self.algorithm = algorithm
        self._hasher = new_hasher(algorithm)
        self.size = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._hasher.update(data)
        self.size += len(data)

    def digest(self) -> str:
        return f"{self.algorithm}:{self._hasher.hexdigest()}"

    def copy(self) -> "Digester":
        clone = Digester.__new__(Digester)
        clone.algorithm = self.algorithm
        clone._hasher = self._hasher.copy()
        clone.size = self.size
        return clone


def digest_file(path: str | os.PathLike[str], algorithm: str = SHA256) -> tuple[str, int]:
    """Digest and size of a file, read in 1 MiB chunks."""
    digester = Digester(algorithm)
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            digester.update(view[:n])
    return digester.digest(), digester.size
