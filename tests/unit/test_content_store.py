"""berth.image.content.ContentStore: the conformance suite plus its on-disk layout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from berth.image.content import ContentStore
from tests.support.content_suite import BLOB, SMALL, ContentStoreConformance, sha256


class TestContentStore(ContentStoreConformance):
    @pytest.fixture
    def store(self, tmp_path: Path) -> ContentStore:
        return ContentStore(tmp_path / "content")


@pytest.fixture
def store(tmp_path: Path) -> ContentStore:
    return ContentStore(tmp_path / "content")


def test_layout(store: ContentStore) -> None:
    digest = store.put_bytes(SMALL)
    path = Path(store.root) / "blobs" / "sha256" / digest.split(":")[1]
    assert store.path(digest) == str(path)
    assert path.read_bytes() == SMALL
    assert path.stat().st_mode & 0o777 == 0o444
    with store.writer("my-ref", sha256(BLOB), len(BLOB)) as w:
        w.write(BLOB[:10])
    ingest = Path(store.ingest_path("my-ref"))
    assert ingest.parent == Path(store.root) / "ingest"
    assert (ingest / "data").read_bytes() == BLOB[:10]
    meta = json.loads((ingest / "meta").read_text())
    assert meta["ref"] == "my-ref" and meta["expected"] == sha256(BLOB) and meta["size"] == len(BLOB)


def test_commit_leaves_nothing_in_ingest(store: ContentStore) -> None:
    w = store.writer("x", sha256(SMALL), len(SMALL))
    w.write(SMALL)
    w.commit()
    assert os.listdir(store.ingest_dir) == []


def test_resume_rehashes_what_is_on_disk(store: ContentStore) -> None:
    """The bytes on disk are what counts: a partial file damaged while nobody held it
    (a torn write at a crash) makes the commit fail rather than store a bad blob."""
    with store.writer("torn", sha256(BLOB), len(BLOB)) as w:
        w.write(BLOB[:1000])
    data = Path(store.ingest_path("torn")) / "data"
    data.write_bytes(b"\0" * 1000)
    w = store.writer("torn", sha256(BLOB), len(BLOB))
    assert w.offset == 1000
    w.write(BLOB[1000:])
    with pytest.raises(Exception, match="digest mismatch"):
        w.commit()
    assert not store.exists(sha256(BLOB))


def test_partial_longer_than_expected_restarts(store: ContentStore) -> None:
    with store.writer("long", sha256(SMALL), len(SMALL)) as w:
        w.write(SMALL[:4])
    (Path(store.ingest_path("long")) / "data").write_bytes(SMALL + b"extra")
    w = store.writer("long", sha256(SMALL), len(SMALL))
    assert w.offset == 0


def test_survives_a_killed_writer(store: ContentStore, tmp_path: Path) -> None:
    """A process killed mid-ingest leaves data that the next writer resumes."""
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {os.getcwd() + '/src'!r})
        from berth.image.content import ContentStore
        s = ContentStore({store.root!r})
        w = s.writer("crash", {sha256(BLOB)!r}, {len(BLOB)})
        w.write(bytes.fromhex({BLOB[:5000].hex()!r}))
        os._exit(9)   # no close, no commit: the lock dies with the process
    """)
    proc = subprocess.run([sys.executable, "-c", script], timeout=60)
    assert proc.returncode == 9
    w = store.writer("crash", sha256(BLOB), len(BLOB))
    assert w.offset == 5000
    w.write(BLOB[5000:])
    assert w.commit() == sha256(BLOB)


def test_cleanup_stale_ingests(store: ContentStore) -> None:
    with store.writer("old", sha256(SMALL), len(SMALL)) as w:
        w.write(SMALL[:2])
    held = store.writer("old-but-held", sha256(BLOB), len(BLOB))
    with store.writer("fresh", sha256(BLOB), len(BLOB)) as w:
        w.write(BLOB[:2])
    past = time.time() - 7200
    for ref in ("old", "old-but-held"):
        directory = store.ingest_path(ref)
        for name in os.listdir(directory):
            os.utime(os.path.join(directory, name), (past, past))
        os.utime(directory, (past, past))
    stray = Path(store.ingest_dir) / ".put-stray"
    stray.write_bytes(b"x")
    os.utime(stray, (past, past))
    removed = store.cleanup_ingests(older_than=3600)
    assert sorted(removed) == [".put-stray", "old"]
    assert sorted(s.ref for s in store.ingests()) == ["fresh", "old-but-held"]
    held.close()


def test_list_ignores_foreign_files(store: ContentStore) -> None:
    digest = store.put_bytes(SMALL)
    Path(store.blobs_dir, "sha256", "not-a-digest").write_bytes(b"x")
    assert list(store.list()) == [(digest, len(SMALL))]
