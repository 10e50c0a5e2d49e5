"""berth.image.digest."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from berth.errors import InvalidArgument
from berth.image.digest import Digester, compute_digest, digest_file, is_digest, parse_digest

H256 = hashlib.sha256(b"abc").hexdigest()
H512 = hashlib.sha512(b"abc").hexdigest()


def test_parse() -> None:
    assert parse_digest(f"sha256:{H256}") == ("sha256", H256)
    assert parse_digest(f"sha512:{H512}") == ("sha512", H512)


@pytest.mark.parametrize("bad", ["", "sha256", "sha256:", f"sha256:{H256[:-1]}", f"sha256:{H256.upper()}",
                                 f"sha512:{H256}", f"md5:{H256[:32]}", f"SHA256:{H256}", f" sha256:{H256}"])
def test_parse_invalid(bad: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_digest(bad)
    assert not is_digest(bad)


def test_compute_and_stream(tmp_path: Path) -> None:
    assert compute_digest(b"abc") == f"sha256:{H256}"
    assert compute_digest(b"abc", "sha512") == f"sha512:{H512}"
    d = Digester()
    d.update(b"a")
    snapshot = d.copy()
    d.update(memoryview(b"bc"))
    assert (d.digest(), d.size) == (f"sha256:{H256}", 3)
    assert snapshot.size == 1
    (tmp_path / "f").write_bytes(b"abc")
    assert digest_file(tmp_path / "f") == (f"sha256:{H256}", 3)
