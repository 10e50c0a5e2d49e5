"""The snapshotter conformance suite: what every Snapshotter must do, in containerd's model.

Runs against each implementation in IMPLEMENTATIONS (today: overlay). The metadata
rules need no root; the tests that mount (marked ``integration``) need root and check
what the mounts show: a parent's files through a child, changes captured per snapshot,
read-only views. Mounts are made with ``mounted()``, which unmounts also on failure
(and conftest unmounts anything left under tmp_path).
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from berth.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from berth.snapshots import Kind, OverlaySnapshotter, Snapshotter, mounted

IMPLEMENTATIONS: dict[str, Callable[[Path], Snapshotter]] = {
    "overlay": lambda root: OverlaySnapshotter(str(root)),
}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Snapshotter]]:
    """Opens the implementation on this test's root (again, for persistence checks)."""
    opened: list[Snapshotter] = []

    def factory() -> Snapshotter:
        s = IMPLEMENTATIONS[request.param](tmp_path / "snapshots")
        opened.append(s)
        return s

    yield factory
    for s in opened:
        s.close()


@pytest.fixture
def sn(make: Callable[[], Snapshotter]) -> Snapshotter:
    return make()


def committed(sn: Snapshotter, name: str, parent: str | None = None) -> str:
    sn.prepare(f"{name}-active", parent)
    sn.commit(name, f"{name}-active")
    return name


# --- lifecycle and metadata (no root) -----------------------------------------------------


def test_prepare_makes_an_active_snapshot_with_mounts(sn: Snapshotter) -> None:
    mounts = sn.prepare("a", labels={"x": "1"})
    assert mounts and mounts == sn.mounts("a")
    info = sn.stat("a")
    assert (info.kind, info.name, info.parent, dict(info.labels)) == (Kind.ACTIVE, "a", None, {"x": "1"})
    assert info.created > 0


def test_keys_are_unique_across_kinds(sn: Snapshotter) -> None:
    committed(sn, "base")
    sn.prepare("a")
    sn.view("v", "base")
    for key in ("a", "base", "v"):
        with pytest.raises(AlreadyExists):
            sn.prepare(key)
        with pytest.raises(AlreadyExists):
            sn.view(key, "base")
    sn.prepare("b")
    with pytest.raises(AlreadyExists):
        sn.commit("base", "b")
    assert sn.stat("b").kind is Kind.ACTIVE  # a refused commit leaves the active snapshot


def test_parent_must_exist_and_be_committed(sn: Snapshotter) -> None:
    with pytest.raises(NotFound):
        sn.prepare("a", "missing")
    sn.prepare("active")
    with pytest.raises(FailedPrecondition):
        sn.prepare("child", "active")
    committed(sn, "base")
    sn.view("view", "base")
    with pytest.raises(FailedPrecondition):
        sn.view("v2", "view")
    assert not sn.exists("a") and not sn.exists("child") and not sn.exists("v2")


def test_commit_turns_active_into_committed_under_the_new_name(sn: Snapshotter) -> None:
    committed(sn, "base")
    sn.prepare("work", "base")
    sn.commit("top", "work", labels={"l": "v"})
    with pytest.raises(NotFound):
        sn.stat("work")
    info = sn.stat("top")
    assert (info.kind, info.parent, dict(info.labels)) == (Kind.COMMITTED, "base", {"l": "v"})
    with pytest.raises(FailedPrecondition):
        sn.mounts("top")  # committed snapshots are used through a child or a view


def test_commit_refuses_what_is_not_active(sn: Snapshotter) -> None:
    committed(sn, "base")
    sn.view("v", "base")
    with pytest.raises(FailedPrecondition):
        sn.commit("from-view", "v")
    with pytest.raises(FailedPrecondition):
        sn.commit("from-committed", "base")
    with pytest.raises(NotFound):
        sn.commit("x", "missing")


def test_remove_refuses_parents_then_works_bottom_up(sn: Snapshotter) -> None:
    committed(sn, "base")
    committed(sn, "mid", "base")
    sn.prepare("leaf", "mid")
    sn.view("v", "base")
    for key in ("base", "mid"):
        with pytest.raises(FailedPrecondition):
            sn.remove(key)
    for key in ("leaf", "v", "mid", "base"):
        sn.remove(key)
        assert not sn.exists(key)
    with pytest.raises(NotFound):
        sn.remove("base")
    assert list(sn.walk()) == []


def test_walk_lists_every_snapshot_parents_first(sn: Snapshotter) -> None:
    committed(sn, "base")
    committed(sn, "top", "base")
    sn.prepare("c", "top")
    sn.view("v", "top")
    infos = {i.name: i for i in sn.walk()}
    assert {n: (i.kind, i.parent) for n, i in infos.items()} == {
        "base": (Kind.COMMITTED, None),
        "top": (Kind.COMMITTED, "base"),
        "c": (Kind.ACTIVE, "top"),
        "v": (Kind.VIEW, "top"),
    }
    order = [i.name for i in sn.walk()]
    assert order.index("base") < order.index("top") < min(order.index("c"), order.index("v"))


def test_state_survives_reopening(make: Callable[[], Snapshotter]) -> None:
    first = make()
    committed(first, "base")
    first.prepare("work", "base")
    first.close()
    again = make()
    assert again.stat("base").kind is Kind.COMMITTED
    assert again.stat("work").parent == "base"
    assert again.mounts("work")


def test_usage_counts_the_snapshot_alone(sn: Snapshotter) -> None:
    committed(sn, "base")
    sn.prepare("a", "base")
    u = sn.usage("a")
    assert u.size >= 0 and u.inodes >= 0
    assert sn.usage("base").inodes >= 0
    with pytest.raises(NotFound):
        sn.usage("missing")


@pytest.mark.parametrize("bad", ["", "a\nb", "nul\0"])
def test_malformed_keys_are_refused(sn: Snapshotter, bad: str) -> None:
    with pytest.raises(InvalidArgument):
        sn.prepare(bad)


def test_racing_commits_of_one_name_keep_exactly_one(sn: Snapshotter) -> None:
    for i in range(8):
        sn.prepare(f"k{i}")
    results: list[str] = []

    def commit(i: int) -> None:
        try:
            sn.commit("shared", f"k{i}")
            results.append("ok")
        except AlreadyExists:
            results.append("exists")

    threads = [threading.Thread(target=commit, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["exists"] * 7 + ["ok"]
    assert sn.stat("shared").kind is Kind.COMMITTED


# --- what the mounts show (root) -----------------------------------------------------------


def write(root: str, rel: str, data: bytes) -> None:
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def tree(root: str) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    for d, dirs, files in os.walk(root):
        for name in dirs:
            out[os.path.relpath(os.path.join(d, name), root)] = None
        for name in files:
            with open(os.path.join(d, name), "rb") as f:
                out[os.path.relpath(os.path.join(d, name), root)] = f.read()
    return out


@pytest.mark.integration
def test_layers_stack_and_changes_stay_in_their_snapshot(sn: Snapshotter, tmp_path: Path) -> None:
    with mounted(sn.prepare("l1"), dir=str(tmp_path)) as m:
        assert tree(m) == {}
        write(m, "etc/base", b"1")
        write(m, "etc/gone", b"2")
    sn.commit("base", "l1")
    with mounted(sn.prepare("l2", "base"), dir=str(tmp_path)) as m:
        assert tree(m) == {"etc": None, "etc/base": b"1", "etc/gone": b"2"}
        os.unlink(os.path.join(m, "etc/gone"))
        write(m, "etc/base", b"changed")
        write(m, "new/file", b"3")
    sn.commit("top", "l2")
    with mounted(sn.view("v-top", "top"), dir=str(tmp_path)) as m:
        assert tree(m) == {"etc": None, "etc/base": b"changed", "new": None, "new/file": b"3"}
        with pytest.raises(OSError) as err:
            write(m, "etc/x", b"ro")
        assert err.value.errno == errno.EROFS
    with mounted(sn.view("v-base", "base"), dir=str(tmp_path)) as m:  # one layer: a read-only bind
        assert tree(m) == {"etc": None, "etc/base": b"1", "etc/gone": b"2"}
        with pytest.raises(OSError) as err:
            write(m, "x", b"ro")
        assert err.value.errno == errno.EROFS


@pytest.mark.integration
def test_two_children_of_one_parent_do_not_see_each_other(sn: Snapshotter, tmp_path: Path) -> None:
    with mounted(sn.prepare("l1"), dir=str(tmp_path)) as m:
        write(m, "shared", b"s")
    sn.commit("base", "l1")
    mounts_a, mounts_b = sn.prepare("a", "base"), sn.prepare("b", "base")
    with mounted(mounts_a, dir=str(tmp_path)) as ma, mounted(mounts_b, dir=str(tmp_path)) as mb:
        write(ma, "only-a", b"a")
        os.unlink(os.path.join(mb, "shared"))
        assert tree(ma) == {"shared": b"s", "only-a": b"a"}
        assert tree(mb) == {}
    with mounted(sn.mounts("a"), dir=str(tmp_path)) as ma:  # mounts() gives the same snapshot again
        assert tree(ma) == {"shared": b"s", "only-a": b"a"}


@pytest.mark.integration
def test_a_view_of_nothing_is_empty_and_read_only(sn: Snapshotter, tmp_path: Path) -> None:
    with mounted(sn.view("empty"), dir=str(tmp_path)) as m:
        assert tree(m) == {}
        with pytest.raises(OSError):
            write(m, "x", b"ro")
