"""The test helpers themselves: bundles, config overrides, mountinfo parsing, recorded pids."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess

import pytest

from berth.runtime.spec_cmd import default_spec
from tests.support import cleanup
from tests.support.bundle import CGROUP_PARENT, make_bundle, make_rootfs, merge

needs_busybox = pytest.mark.skipif(not os.path.exists("/bin/busybox"), reason="busybox-static not installed")


@needs_busybox
def test_make_rootfs(tmp_path):
    root = tmp_path / "rootfs"
    make_rootfs(root)
    assert os.access(root / "bin/busybox", os.X_OK)
    assert os.readlink(root / "bin/sh") == "busybox"
    assert (root / "bin/id").is_symlink() and (root / "bin/ps").is_symlink()
    passwd = (root / "etc/passwd").read_text()
    assert "root:x:0:0:" in passwd and "nobody:x:65534:65534:" in passwd and "app:x:1000:1000:" in passwd
    assert "root:x:0:" in (root / "etc/group").read_text()
    assert stat.S_IMODE(os.stat(root / "tmp").st_mode) == 0o1777
    for d in ("proc", "sys", "dev"):
        assert (root / d).is_dir()


@needs_busybox
def test_make_bundle_config_and_save(tmp_path):
    b = make_bundle(tmp_path / "b1", ["/bin/echo", "hi"], hostname="box", linux={"resources": None})
    on_disk = json.loads((tmp_path / "b1/config.json").read_text())
    assert on_disk == b.config
    assert b.config["process"]["terminal"] is False
    assert b.config["process"]["args"] == ["/bin/echo", "hi"]
    assert b.config["hostname"] == "box"
    assert "resources" not in b.config["linux"]
    assert b.config["linux"]["namespaces"] == default_spec()["linux"]["namespaces"]
    assert b.cgroups_path is not None and b.cgroups_path.startswith(CGROUP_PARENT + "/b1-")
    assert os.path.isfile(os.path.join(b.rootfs, "bin/busybox"))

    b.config["process"]["env"].append("X=1")
    b.save()
    assert "X=1" in json.loads((tmp_path / "b1/config.json").read_text())["process"]["env"]

    other = make_bundle(tmp_path / "b2", ["true"])
    assert other.cgroups_path != b.cgroups_path
    old = other.cgroups_path
    assert other.new_cgroup() != old
    assert json.loads((tmp_path / "b2/config.json").read_text())["linux"]["cgroupsPath"] == other.cgroups_path


def test_bundle_fixture(bundle):
    if not os.path.exists("/bin/busybox"):
        pytest.skip("busybox-static not installed")
    a = bundle(["/bin/true"])
    b = bundle(["/bin/true"], process={"cwd": "/tmp"})
    assert a.path != b.path
    assert b.config["process"]["cwd"] == "/tmp"
    assert b.config["process"]["args"] == ["/bin/true"]


def test_merge():
    base = {"a": {"b": 1, "c": [1]}, "d": 2}
    merge(base, {"a": {"c": [2], "e": 3}, "d": None, "f": {"g": 1}})
    assert base == {"a": {"b": 1, "c": [2], "e": 3}, "f": {"g": 1}}


def test_parse_mountinfo_and_mounts_under():
    text = (
        "36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n"
        "37 36 0:5 / /mnt/parent/with\\040space rw - tmpfs tmpfs rw\n"
        "38 37 0:6 / /mnt/parent/with\\040space/deeper rw shared:2 - proc proc rw\n"
        "39 1 0:7 / /mnt/parentx rw - tmpfs tmpfs rw\n"
    )
    parsed = cleanup.parse_mountinfo(text)
    assert parsed[1] == ("/mnt/parent/with space", "tmpfs")
    assert parsed[2] == ("/mnt/parent/with space/deeper", "proc")
    assert cleanup.mounts_under(["/mnt/parent"], text) == [
        "/mnt/parent/with space/deeper",
        "/mnt/parent/with space",
        "/mnt/parent",
    ]


def test_recorded_pids(tmp_path):
    (tmp_path / "c1").mkdir()
    (tmp_path / "c1/state.json").write_text(json.dumps({"id": "c1", "init_process_pid": 4242, "init_process_start": 777}))
    (tmp_path / "c2").mkdir()
    (tmp_path / "c2/state.json").write_text(json.dumps({"pid": 4343, "start_time": "888", "config": {"pid": True}}))
    (tmp_path / "c3").mkdir()
    (tmp_path / "c3/state.json").write_text("not json")
    assert sorted(cleanup.recorded_pids(str(tmp_path))) == [(4242, 777), (4343, 888)]


def test_kill_recorded_by_pid_and_start_time():
    assert cleanup.kill_recorded([(os.getpid(), None), (os.getppid(), None)]) == []  # protected
    child = subprocess.Popen(["sleep", "30"])
    try:
        started = cleanup.start_time(child.pid)
        assert started is not None
        assert cleanup.kill_recorded([(child.pid, started + 1)]) == []  # a reused pid is spared
        assert child.poll() is None
        assert cleanup.kill_recorded([(child.pid, started)]) == [child.pid]
        assert child.wait(timeout=5) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
