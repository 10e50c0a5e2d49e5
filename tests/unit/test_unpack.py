"""berth.image.unpack: layers into committed snapshots named by chain ID.

Layers with whiteouts need root (overlay's opaque xattr); the rest runs anywhere.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest
import zstandard

from berth.errors import InvalidArgument
from berth.snapshots import Kind, Mount, OverlaySnapshotter, chain_id, chain_ids, mounted
from berth.image.unpack import _apply, unpack_layers
from tests.support.layertar import d, entry, make_tar, sym

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (overlay whiteouts)")

L1 = make_tar([d("./"), d("etc/", mode=0o750), entry("etc/a", data=b"a"), entry("etc/b", data=b"b"),
               d("var/"), d("var/cache/"), entry("var/cache/old", data=b"o"), sym("bin", "usr/bin")])
L2 = make_tar([entry("etc/.wh.a"), d("var/cache/"), entry("var/cache/.wh..wh..opq"),
               entry("var/cache/new", data=b"n"), entry("srv/data", data=b"d" * 5000)])
L3 = make_tar([entry("etc/c", data=b"c")])


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def sn(tmp_path: Path) -> OverlaySnapshotter:
    s = OverlaySnapshotter(str(tmp_path / "snapshots"))
    yield s
    s.close()


def fs_tree(sn: OverlaySnapshotter, chain: str, tmp_path: Path) -> dict[str, tuple[int, bytes | None]]:
    """What the chain's view shows: path -> (mode, content)."""
    out: dict[str, tuple[int, bytes | None]] = {}
    key = f"view-{os.urandom(4).hex()}"
    with mounted(sn.view(key, chain), dir=str(tmp_path)) as m:
        for dirpath, dirs, files in os.walk(m):
            for name in dirs + files:
                p = os.path.join(dirpath, name)
                st = os.lstat(p)
                content = None
                if os.path.isfile(p) and not os.path.islink(p):
                    with open(p, "rb") as f:
                        content = f.read()
                out[os.path.relpath(p, m)] = (st.st_mode, content)
    sn.remove(key)
    return out


def leftovers(sn: OverlaySnapshotter, tmp_path: Path) -> list[str]:
    keys = [i.name for i in sn.walk() if i.kind is not Kind.COMMITTED]
    stage = [n for n in os.listdir(tmp_path / "snapshots/snapshots") if not n.isdigit()]
    return keys + stage


@needs_root
@pytest.mark.parametrize("workers", [1, 2])
def test_unpack_gzip_zstd_and_plain_layers(sn: OverlaySnapshotter, tmp_path: Path, workers: int) -> None:
    blobs = [gzip.compress(L1), zstandard.ZstdCompressor().compress(L2), L3]
    ids = [digest(L1), digest(L2), digest(L3)]
    top = unpack_layers(sn, [io.BytesIO(b) for b in blobs], ids, workers=workers)
    assert top == chain_id(ids)
    assert [(i.name, i.parent) for i in sn.walk()] == list(zip(chain_ids(ids), [None, *chain_ids(ids)[:2]]))
    assert leftovers(sn, tmp_path) == []
    if not os.path.exists("/proc/filesystems") or "overlay" not in open("/proc/filesystems").read():
        pytest.skip("no overlayfs")
    tree = fs_tree(sn, top, tmp_path)
    assert sorted(tree) == ["bin", "etc", "etc/b", "etc/c", "srv", "srv/data", "var", "var/cache", "var/cache/new"]
    assert tree["etc"][0] & 0o777 == 0o750  # not listed in layers 2 and 3: kept from layer 1


@needs_root
def test_parallel_and_serial_unpacks_write_the_same_snapshots(tmp_path: Path) -> None:
    ids = [digest(L1), digest(L2), digest(L3)]
    trees = []
    for workers in (1, 2):
        sn = OverlaySnapshotter(str(tmp_path / f"s{workers}"))
        unpack_layers(sn, [io.BytesIO(x) for x in (L1, L2, L3)], ids, workers=workers)
        snap_dir = tmp_path / f"s{workers}/snapshots"
        trees.append({
            str(p.relative_to(snap_dir)): (p.lstat().st_mode, p.lstat().st_uid, sorted(os.listxattr(p, follow_symlinks=False)))
            for p in snap_dir.rglob("*")
        })
        sn.close()
    assert trees[0] == trees[1]


def test_a_shared_base_is_unpacked_once(sn: OverlaySnapshotter) -> None:
    opened: list[str] = []

    def opener(name: str, data: bytes) -> Callable[[], IO[bytes]]:
        def open_() -> IO[bytes]:
            opened.append(name)
            return io.BytesIO(gzip.compress(data))
        return open_

    ids_a = [digest(L1), digest(L3)]
    unpack_layers(sn, [opener("base", L1), opener("a", L3)], ids_a)
    other = make_tar([entry("other", data=b"o")])
    unpack_layers(sn, [opener("base", L1), opener("b", other)], [digest(L1), digest(other)])
    assert opened == ["base", "a", "b"]
    assert [i.name for i in sn.walk()].count(digest(L1)) == 1
    assert unpack_layers(sn, [opener("base", L1), opener("a", L3)], ids_a) == chain_id(ids_a)
    assert opened == ["base", "a", "b"]  # all there: nothing read


@pytest.mark.parametrize("workers", [1, 2])
def test_a_wrong_diff_id_is_refused_and_leaves_nothing_behind(sn: OverlaySnapshotter, tmp_path: Path, workers: int) -> None:
    ids = [digest(L1), digest(L3)[:-4] + "0000"]
    with pytest.raises(InvalidArgument, match="diff ID"):
        unpack_layers(sn, [io.BytesIO(L1), io.BytesIO(L3)], ids, workers=workers)
    assert leftovers(sn, tmp_path) == []
    assert [i.name for i in sn.walk()] == [digest(L1)]  # the good lower layer stays committed


def test_a_broken_layer_leaves_nothing_behind(sn: OverlaySnapshotter, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument):
        unpack_layers(sn, [io.BytesIO(make_tar([entry("../../escape", data=b"x")]))], [digest(b"")])
    assert leftovers(sn, tmp_path) == [] and list(sn.walk()) == []


def test_layers_and_diff_ids_must_match_in_number(sn: OverlaySnapshotter) -> None:
    with pytest.raises(InvalidArgument):
        unpack_layers(sn, [io.BytesIO(L1)], [])
    with pytest.raises(InvalidArgument):
        unpack_layers(sn, [], [])


def test_racing_unpacks_of_one_image_both_succeed(sn: OverlaySnapshotter, tmp_path: Path) -> None:
    layers = [make_tar([entry(f"f{i}", data=os.urandom(200_000))]) for i in range(3)]
    ids = [digest(x) for x in layers]
    results: list[object] = []

    def unpack() -> None:
        try:
            results.append(unpack_layers(sn, [io.BytesIO(x) for x in layers], ids, workers=1))
        except Exception as e:  # noqa: BLE001 - reported below
            results.append(e)

    threads = [threading.Thread(target=unpack) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [chain_id(ids)] * 3
    assert [i.name for i in sn.walk()] == chain_ids(ids)
    assert leftovers(sn, tmp_path) == []


def test_layer_from_a_file_path(sn: OverlaySnapshotter, tmp_path: Path) -> None:
    blob = tmp_path / "blob"
    blob.write_bytes(gzip.compress(L3))
    assert unpack_layers(sn, [str(blob)], [digest(L3)]) == digest(L3)


@pytest.mark.integration
def test_other_snapshotters_are_filled_through_their_mounts(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "lower").mkdir(parents=True)
    (src / "lower/old").write_bytes(b"o")
    # two stacked mounts: not an upper dir the applier could use directly
    mounts = [Mount("bind", str(src), ("rw", "rbind")), Mount("bind", str(src), ("rw", "rbind"))]
    applied = _apply(mounts, io.BytesIO(make_tar([entry("new", data=b"n"), entry("lower/.wh.old")])), None)
    assert applied.entries == 2
    assert sorted(os.listdir(src)) == ["lower", "new"] and os.listdir(src / "lower") == []
