"""berth.daemon.services.volumes without a running daemon: records, filters, references,
prune, the local driver's options, and copy-up (modes, owners, links, xattrs)."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest

from berth.daemon.db import MetadataDB
from berth.daemon.events import EventBus
from berth.daemon.services import volumes as volumes_mod
from berth.errors import FailedPrecondition, InvalidArgument, NotFound


@pytest.fixture
def service(tmp_path: Path):  # noqa: ANN201
    root = tmp_path / "volumes"
    root.mkdir()
    db = MetadataDB(str(tmp_path / "metadata.db"))
    daemon = SimpleNamespace(db=db, events=EventBus(), config=SimpleNamespace(volumes_root=str(root)))
    svc = volumes_mod.build(daemon)
    yield svc
    db.close()


def test_create_get_list(service) -> None:  # noqa: ANN001
    vol, created = service.create("data", labels={"a": "1"})
    assert created and vol["Name"] == "data" and vol["Driver"] == "local" and vol["Scope"] == "local"
    assert vol["Mountpoint"].endswith("/volumes/data/_data") and os.path.isdir(vol["Mountpoint"])
    again, created = service.create("data", labels={"other": "x"})
    assert not created and again["Labels"] == {"a": "1"}
    anon, _ = service.create()
    assert len(anon["Name"]) == 64 and volumes_mod.ANONYMOUS_LABEL in anon["Labels"]
    assert [v["Name"] for v in service.list_volumes({"label": ["a=1"]})] == ["data"]
    assert [v["Name"] for v in service.list_volumes({"name": ["dat"]})] == ["data"]
    assert len(service.list_volumes({"dangling": ["true"]})) == 2
    with pytest.raises(InvalidArgument, match="invalid filter 'bogus'"):
        service.list_volumes({"bogus": ["1"]})
    with pytest.raises(NotFound, match="get nope: no such volume"):
        service.get("nope")
    for bad in ({"name": "x/y"}, {"name": "ok", "opts": {"bogus": "1"}}, {"name": "ok", "opts": {"type": "tmpfs"}}):
        with pytest.raises(InvalidArgument):
            service.create(**bad)
    with pytest.raises(NotFound, match="plugin"):
        service.create("p", driver="flocker")


def test_in_use_remove_and_prune(service) -> None:  # noqa: ANN001
    service.create("named")
    anon, _ = service.create()
    used = {"named": ["c1"]}
    service.set_users_checker(lambda name: used.get(name, []))
    with pytest.raises(FailedPrecondition, match=r"remove named: volume is in use - \[c1\]"):
        asyncio.run(service.remove("named", force=True))
    assert [v["Name"] for v in service.list_volumes({"dangling": ["false"]})] == ["named"]
    deleted, _ = asyncio.run(service.prune({}))
    assert deleted == [anon["Name"]] and not os.path.exists(os.path.dirname(anon["Mountpoint"]))
    used.clear()
    service.create("keep", labels={"keep": "yes"})
    deleted, _ = asyncio.run(service.prune({"all": ["true"], "label!": ["keep"]}))
    assert deleted == ["named"] and service.exists("keep")
    asyncio.run(service.remove("gone", force=True))  # forced: a missing volume is no error
    asyncio.run(service.remove("keep"))
    assert not service.exists("keep") and os.listdir(service.root) == []


def test_orphans_removed_on_start(service) -> None:  # noqa: ANN001
    os.makedirs(os.path.join(service.root, "crashed", "_data"))
    os.makedirs(os.path.join(service.root, ".removing-x-1234", "_data"))
    service.create("real")
    asyncio.run(service.start())
    assert sorted(os.listdir(service.root)) == ["real"]


def test_copy_tree(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "file").write_text("hello")
    os.chown(src / "file", 1234, 5678)
    os.chmod(src / "file", 0o4750)  # after chown, which clears setuid
    os.link(src / "file", src / "hard")
    os.symlink("file", src / "link")
    os.mkfifo(src / "fifo")
    os.chmod(src / "sub", 0o1777)
    os.chmod(src, 0o710)
    os.utime(src / "sub", (1_000_000, 1_000_000))
    try:
        os.setxattr(src / "file", "user.test", b"value")
        xattrs = True
    except OSError:
        xattrs = False
    dst = tmp_path / "dst"
    dst.mkdir()
    volumes_mod.copy_tree(str(src), str(dst))
    st = os.lstat(dst / "file")
    assert (dst / "file").read_text() == "hello"
    assert stat.S_IMODE(st.st_mode) == 0o4750 and (st.st_uid, st.st_gid) == (1234, 5678)
    assert os.lstat(dst / "hard").st_ino == st.st_ino
    assert os.readlink(dst / "link") == "file"
    assert stat.S_ISFIFO(os.lstat(dst / "fifo").st_mode)
    assert stat.S_IMODE(os.lstat(dst / "sub").st_mode) == 0o1777 and os.lstat(dst / "sub").st_mtime == 1_000_000
    assert stat.S_IMODE(os.lstat(dst).st_mode) == 0o710
    if xattrs:
        assert os.getxattr(dst / "file", "user.test") == b"value"
    assert volumes_mod.dir_size(str(dst)) == 5  # the hard link counts once
