"""What is particular to OverlaySnapshotter: its layout, its mounts, staging, chain IDs."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

import pytest

from berth.errors import FailedPrecondition, InvalidArgument
from berth.snapshots import Mount, OverlaySnapshotter, chain_id, chain_ids, mounted

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64
C = "sha256:" + "c" * 64


@pytest.fixture
def sn(tmp_path: Path) -> OverlaySnapshotter:
    s = OverlaySnapshotter(str(tmp_path / "root"))
    yield s
    s.close()


def commit_new(sn: OverlaySnapshotter, name: str, parent: str | None = None) -> None:
    sn.prepare(name + "-a", parent)
    sn.commit(name, name + "-a")


def test_layout_and_metadata(sn: OverlaySnapshotter, tmp_path: Path) -> None:
    root = tmp_path / "root"
    commit_new(sn, "base")
    sn.prepare("work", "base")
    assert sorted(os.listdir(root / "snapshots")) == ["1", "2"]
    assert (root / "snapshots/1/fs").is_dir() and not (root / "snapshots/1/work").exists()  # committed
    assert (root / "snapshots/2/fs").is_dir() and (root / "snapshots/2/work").is_dir()
    assert oct(os.stat(root).st_mode & 0o777) == "0o700"
    db = sqlite3.connect(root / "metadata.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_sequence_numbers_are_never_reused(sn: OverlaySnapshotter, tmp_path: Path) -> None:
    sn.prepare("a")
    sn.remove("a")
    sn.prepare("b")
    assert os.listdir(tmp_path / "root/snapshots") == ["2"]


def test_mount_shapes(sn: OverlaySnapshotter, tmp_path: Path) -> None:
    snaps = tmp_path / "root/snapshots"
    (m,) = sn.prepare("l1")
    assert (m.type, m.source, m.options) == ("bind", f"{snaps}/1/fs", ("rw", "rbind"))
    sn.commit("base", "l1")
    (m,) = sn.prepare("l2", "base")
    assert m.type == "overlay"
    assert m.option("upperdir") == f"{snaps}/2/fs" and m.option("workdir") == f"{snaps}/2/work"
    assert m.option("lowerdir") == f"{snaps}/1/fs"
    sn.commit("top", "l2")
    (m,) = sn.prepare("l3", "top")
    assert m.option("lowerdir") == f"{snaps}/2/fs:{snaps}/1/fs"  # nearest parent first
    (v,) = sn.view("v1", "base")
    assert (v.type, v.source, v.readonly) == ("bind", f"{snaps}/1/fs", True)
    (v,) = sn.view("v2", "top")
    assert v.type == "overlay" and v.readonly and v.option("upperdir") is None
    assert v.option("lowerdir") == f"{snaps}/2/fs:{snaps}/1/fs"


def test_remove_deletes_the_directory(sn: OverlaySnapshotter, tmp_path: Path) -> None:
    sn.prepare("a")
    (tmp_path / "root/snapshots/1/fs/file").write_bytes(b"x")
    assert sn.usage("a").inodes >= 1
    sn.remove("a")
    assert os.listdir(tmp_path / "root/snapshots") == []


def test_committed_usage_is_measured_once(sn: OverlaySnapshotter, tmp_path: Path) -> None:
    sn.prepare("a")
    (tmp_path / "root/snapshots/1/fs/file").write_bytes(b"x" * 10000)
    sn.commit("c", "a")
    first = sn.usage("c")
    assert first.inodes == 1 and first.size >= 10000
    assert sn.usage("c") == first


def test_cleanup_removes_orphans_only(sn: OverlaySnapshotter, tmp_path: Path) -> None:
    sn.prepare("a")
    (tmp_path / "root/snapshots/new-crashed").mkdir()
    (tmp_path / "root/snapshots/77").mkdir()
    assert sorted(sn.cleanup()) == ["77", "new-crashed"]
    assert os.listdir(tmp_path / "root/snapshots") == ["1"]


def test_staging_and_adopt(sn: OverlaySnapshotter, tmp_path: Path) -> None:
    staged = sn.staging_dir()
    Path(staged, "f").write_bytes(b"staged")
    sn.prepare("a")
    sn.adopt("a", staged)
    assert (tmp_path / "root/snapshots/1/fs/f").read_bytes() == b"staged"
    assert [n for n in os.listdir(tmp_path / "root/snapshots") if n.startswith("stage-")] == []
    with pytest.raises(InvalidArgument):
        sn.adopt("a", str(tmp_path))
    sn.commit("c", "a")
    with pytest.raises(FailedPrecondition):
        sn.adopt("c", sn.staging_dir())


@pytest.mark.integration
def test_a_chain_too_long_for_one_page_of_options_still_mounts(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 100) / ("e" * 100)
    sn = OverlaySnapshotter(str(deep))
    try:
        parent = None
        for i in range(30):
            mounts = sn.prepare(f"l{i}", parent)
            with mounted(mounts, dir=str(tmp_path)) as m:
                Path(m, f"f{i}").write_bytes(b"%d" % i)
            sn.commit(f"c{i}", f"l{i}")
            parent = f"c{i}"
        (view,) = sn.view("v", parent)
        assert len(",".join(view.options)) > os.sysconf("SC_PAGE_SIZE")
        with mounted([view], dir=str(tmp_path)) as m:
            assert sorted(os.listdir(m)) == sorted(f"f{i}" for i in range(30))
    finally:
        sn.close()


def test_mount_option_parsing() -> None:
    m = Mount("bind", "/src", ("ro", "rbind", "nosuid"))
    flags, data = m.flags_and_data()
    assert data == "" and m.readonly
    m = Mount("overlay", "overlay", ("index=off", "lowerdir=/a:/b", "ro"))
    flags, data = m.flags_and_data()
    assert data == "index=off,lowerdir=/a:/b" and m.option("lowerdir") == "/a:/b"


# --- chain IDs ---------------------------------------------------------------------------


def test_chain_id_per_the_image_spec() -> None:
    assert chain_id([A]) == A
    ab = "sha256:" + hashlib.sha256(f"{A} {B}".encode()).hexdigest()
    abc = "sha256:" + hashlib.sha256(f"{ab} {C}".encode()).hexdigest()
    assert chain_id([A, B]) == ab
    assert chain_ids([A, B, C]) == [A, ab, abc]


@pytest.mark.parametrize("bad", [[], ["sha256:xyz"], ["md5:" + "a" * 32], [A.upper()]])
def test_chain_id_refuses_bad_input(bad: list[str]) -> None:
    with pytest.raises(InvalidArgument):
        chain_id(bad)
