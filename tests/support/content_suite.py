"""A conformance suite for content stores (containerd's content/testsuite, in pytest form).

Subclass ``ContentStoreConformance`` in a test module and provide a ``store`` fixture
that returns an empty store; every implementation of the ContentStore interface must
pass every test here. Tests that depend on the on-disk layout of ``berth.image.content``
live in tests/unit/test_content_store.py instead.
"""

from __future__ import annotations

import hashlib
import os
import threading
from typing import Any

import pytest

from berth.errors import AlreadyExists, InvalidArgument, NotFound, Unavailable


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha512(data: bytes) -> str:
    return "sha512:" + hashlib.sha512(data).hexdigest()


BLOB = os.urandom(3 * (1 << 20) + 12345)  # larger than one chunk, not a multiple of it
SMALL = b'{"schemaVersion":2}'


class ContentStoreConformance:
    """Behaviour every content store must have. Needs a ``store`` fixture."""

    store: Any

    # --- write, commit, read ------------------------------------------------------------

    def test_write_commit_read(self, store: Any) -> None:
        digest = sha256(BLOB)
        with store.writer("ref-1", digest, len(BLOB)) as w:
            for i in range(0, len(BLOB), 777_777):
                w.write(BLOB[i:i + 777_777])
            assert w.offset == len(BLOB)
            assert w.commit() == digest
        assert store.exists(digest)
        assert store.info(digest) == len(BLOB)
        with store.open(digest) as f:
            assert f.read() == BLOB
        assert (digest, len(BLOB)) in list(store.list())
        assert store.ingests() == []

    def test_commit_without_expectations(self, store: Any) -> None:
        w = store.writer("no-expectations")
        w.write(SMALL)
        assert w.commit() == sha256(SMALL)
        assert store.read_bytes(sha256(SMALL)) == SMALL

    def test_sha512(self, store: Any) -> None:
        digest = sha512(SMALL)
        w = store.writer("sha512", digest, len(SMALL))
        w.write(SMALL)
        assert w.commit() == digest
        assert store.read_bytes(digest) == SMALL
        assert store.put_bytes(SMALL, digest) == digest

    def test_empty_blob(self, store: Any) -> None:
        w = store.writer("empty", sha256(b""), 0)
        assert w.commit() == sha256(b"")
        assert store.info(sha256(b"")) == 0

    def test_put_bytes(self, store: Any) -> None:
        assert store.put_bytes(SMALL) == sha256(SMALL)
        assert store.put_bytes(SMALL, sha256(SMALL)) == sha256(SMALL)  # idempotent
        assert store.read_bytes(sha256(SMALL)) == SMALL

    def test_read_bytes_limit(self, store: Any) -> None:
        digest = store.put_bytes(SMALL)
        with pytest.raises(InvalidArgument):
            store.read_bytes(digest, max_size=4)

    # --- verification ---------------------------------------------------------------------

    def test_digest_mismatch_rejected_and_ingest_deleted(self, store: Any) -> None:
        wrong = sha256(b"something else")
        w = store.writer("bad-digest", wrong, len(SMALL))
        w.write(SMALL)
        with pytest.raises(InvalidArgument, match="digest mismatch"):
            w.commit()
        assert not store.exists(wrong)
        assert not store.exists(sha256(SMALL))
        assert store.ingests() == []
        assert list(store.list()) == []

    def test_size_mismatch_short(self, store: Any) -> None:
        w = store.writer("short", sha256(SMALL), len(SMALL))
        w.write(SMALL[:-1])
        with pytest.raises(InvalidArgument, match="size mismatch"):
            w.commit()
        assert list(store.list()) == [] and store.ingests() == []

    def test_size_mismatch_long_fails_on_write(self, store: Any) -> None:
        w = store.writer("long", sha256(SMALL), len(SMALL))
        with pytest.raises(InvalidArgument, match="more data than expected"):
            w.write(SMALL + b"x")
        assert list(store.list()) == [] and store.ingests() == []

    def test_put_bytes_mismatch(self, store: Any) -> None:
        with pytest.raises(InvalidArgument, match="digest mismatch"):
            store.put_bytes(SMALL, sha256(b"other"))
        assert list(store.list()) == []

    @pytest.mark.parametrize("bad", ["sha256:abc", "md5:" + "a" * 32, "nonsense", "sha256:" + "A" * 64])
    def test_bad_digests(self, store: Any, bad: str) -> None:
        with pytest.raises(InvalidArgument):
            store.exists(bad)
        with pytest.raises(InvalidArgument):
            store.writer("r", bad, 1)

    # --- resume ---------------------------------------------------------------------------

    def test_resume_after_close(self, store: Any) -> None:
        digest = sha256(BLOB)
        half = len(BLOB) // 2
        with store.writer("resume", digest, len(BLOB)) as w:
            w.write(BLOB[:half])
        [status] = store.ingests()
        assert (status.ref, status.offset, status.expected_digest) == ("resume", half, digest)
        w2 = store.writer("resume", digest, len(BLOB))
        assert w2.offset == half
        w2.write(BLOB[half:])
        assert w2.commit() == digest
        assert store.read_bytes(digest) == BLOB

    def test_resume_with_other_expectations_restarts(self, store: Any) -> None:
        with store.writer("changed", sha256(BLOB), len(BLOB)) as w:
            w.write(BLOB[:100])
        w2 = store.writer("changed", sha256(SMALL), len(SMALL))
        assert w2.offset == 0
        w2.write(SMALL)
        assert w2.commit() == sha256(SMALL)

    def test_reset(self, store: Any) -> None:
        w = store.writer("reset", sha256(SMALL), len(SMALL))
        w.write(b"garbage")
        w.reset()
        assert w.offset == 0
        w.write(SMALL)
        assert w.commit() == sha256(SMALL)

    def test_abort(self, store: Any) -> None:
        w = store.writer("abort", sha256(SMALL), len(SMALL))
        w.write(SMALL[:3])
        w.abort()
        assert store.ingests() == []
        assert store.writer("abort", sha256(SMALL), len(SMALL)).offset == 0

    def test_abort_by_ref(self, store: Any) -> None:
        with store.writer("left", sha256(SMALL), len(SMALL)) as w:
            w.write(SMALL[:3])
        store.abort("left")
        assert store.ingests() == []
        with pytest.raises(NotFound):
            store.abort("left")

    # --- exclusivity ----------------------------------------------------------------------

    def test_one_writer_per_ref(self, store: Any) -> None:
        w = store.writer("locked", sha256(SMALL), len(SMALL))
        with pytest.raises(Unavailable, match="in use"):
            store.writer("locked", sha256(SMALL), len(SMALL))
        with pytest.raises(Unavailable):
            store.abort("locked")
        w.close()
        store.writer("locked", sha256(SMALL), len(SMALL)).close()

    def test_writer_for_existing_blob(self, store: Any) -> None:
        digest = store.put_bytes(SMALL)
        with pytest.raises(AlreadyExists):
            store.writer("again", digest, len(SMALL))

    def test_two_refs_same_blob_both_commit(self, store: Any) -> None:
        digest = sha256(SMALL)
        a = store.writer("a", digest, len(SMALL))
        b = store.writer("b", digest, len(SMALL))
        a.write(SMALL)
        b.write(SMALL)
        assert a.commit() == digest
        assert b.commit() == digest  # already there: the ingest is dropped quietly
        assert store.ingests() == []
        assert [d for d, _ in store.list()] == [digest]

    def test_parallel_writers(self, store: Any) -> None:
        blobs = [os.urandom(200_000 + i) for i in range(6)]
        errors: list[BaseException] = []

        def put(data: bytes) -> None:
            try:
                with store.writer(f"p-{len(data)}", sha256(data), len(data)) as w:
                    for i in range(0, len(data), 65536):
                        w.write(data[i:i + 65536])
                    w.commit()
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=put, args=(b,)) for b in blobs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert sorted(d for d, _ in store.list()) == sorted(sha256(b) for b in blobs)

    def test_closed_writer_refuses(self, store: Any) -> None:
        w = store.writer("closed", sha256(SMALL), len(SMALL))
        w.close()
        with pytest.raises(InvalidArgument):
            w.write(SMALL)
        with pytest.raises(InvalidArgument):
            w.commit()

    # --- not found, delete, gc --------------------------------------------------------------

    def test_not_found(self, store: Any) -> None:
        missing = sha256(b"missing")
        assert not store.exists(missing)
        for call in (store.info, store.open, store.read_bytes, store.delete, store.path):
            with pytest.raises(NotFound):
                call(missing)
        with pytest.raises(NotFound):
            store.status("no-such-ref")

    def test_delete(self, store: Any) -> None:
        digest = store.put_bytes(SMALL)
        store.delete(digest)
        assert not store.exists(digest)
        with pytest.raises(NotFound):
            store.delete(digest)

    def test_gc_keeps_only_referenced(self, store: Any) -> None:
        a, b, c = (store.put_bytes(x) for x in (b"a", b"b", b"c"))
        removed = store.gc({a, c})
        assert removed == [b]
        assert sorted(d for d, _ in store.list()) == sorted([a, c])
        assert store.gc({a, c}) == []
        assert sorted(store.gc(set())) == sorted([a, c])
