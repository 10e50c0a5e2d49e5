"""cgroupsPath resolution, mountinfo parsing and mode detection (no root needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from berth.errors import FailedPrecondition, InvalidArgument
from berth.runtime.cgroups import _paths, detect_mode, from_state, open_cgroup

KNOWN = {"cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "net_cls", "net_prio",
         "hugetlb", "perf_event", "misc"}

# a hybrid host with cpu,cpuacct co-mounted, plus unrelated mounts
MOUNTINFO_HYBRID = """\
22 1 0:21 / /proc rw,nosuid - proc proc rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset,clone_children
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,release_agent=/x,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
50 1 0:40 / /mnt/other\\040dir rw - cgroup cgroup rw,freezer
"""

# the machine this was written on: cpu and cpuacct on separate mounts
MOUNTINFO_SPLIT = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
"""

# inside a container: the hierarchy's root is the container's own cgroup
MOUNTINFO_NESTED = """\
31 23 0:28 / /sys/fs/cgroup ro - tmpfs tmpfs rw
35 31 0:32 /docker/abc /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory
"""


def test_parse_mountinfo_finds_cgroup_mounts_and_controllers() -> None:
    mounts = _paths.parse_mountinfo(MOUNTINFO_HYBRID, KNOWN)
    by_mp = {m.mountpoint: m for m in mounts}
    assert by_mp["/sys/fs/cgroup/cpu,cpuacct"].controllers == ["cpu", "cpuacct"]
    assert by_mp["/sys/fs/cgroup/cpuset"].controllers == ["cpuset"]  # clone_children is an option
    assert by_mp["/sys/fs/cgroup/systemd"].controllers == ["name=systemd"]
    assert by_mp["/sys/fs/cgroup/unified"].fstype == "cgroup2"
    assert "/mnt/other dir" in by_mp  # octal escape decoded
    assert "/proc" not in by_mp and "/sys/fs/cgroup" not in by_mp


def test_known_controllers_from_proc_cgroups() -> None:
    text = "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t1\t1\t1\nrdma\t0\t1\t0\n"
    assert _paths.known_v1_controllers(text) == {"cpu"}


def test_v1_hierarchies_keys_under_root_only() -> None:
    mounts = _paths.parse_mountinfo(MOUNTINFO_HYBRID, KNOWN)
    keys = [k for k, _ in _paths.v1_hierarchies(mounts, "/sys/fs/cgroup")]
    assert keys == ["cpu", "cpuacct", "cpuset", "memory", "pids", "name=systemd", ""]


def test_clean_path_matches_runc() -> None:
    assert _paths.clean_path("") == ""
    assert _paths.clean_path("/a/b/../c") == "/a/c"
    assert _paths.clean_path("/a/../../b") == "/b"
    assert _paths.clean_path("a/../../b") == "b"
    assert _paths.clean_path("../../x") == "x"
    assert _paths.clean_path("..") == "."
    assert _paths.clean_path("//a//b/") == "/a/b"
    assert _paths.clean_path("./a/./b") == "a/b"


def test_resolve_v1_absolute_is_under_each_mountpoint() -> None:
    mounts = _paths.parse_mountinfo(MOUNTINFO_HYBRID, KNOWN)
    dirs = _paths.resolve_v1("/berth/c1", "c1", "/sys/fs/cgroup", mounts, own={})
    assert dirs["cpu"] == dirs["cpuacct"] == "/sys/fs/cgroup/cpu,cpuacct/berth/c1"
    assert dirs["memory"] == "/sys/fs/cgroup/memory/berth/c1"
    assert dirs["name=systemd"] == "/sys/fs/cgroup/systemd/berth/c1"
    assert dirs[""] == "/sys/fs/cgroup/unified/berth/c1"
    assert "freezer" not in dirs  # mounted, but not under the root


def test_resolve_v1_absolute_cannot_escape() -> None:
    mounts = _paths.parse_mountinfo(MOUNTINFO_SPLIT, KNOWN)
    dirs = _paths.resolve_v1("/../../etc/c1", "c1", "/sys/fs/cgroup", mounts, own={})
    assert dirs["cpu"] == "/sys/fs/cgroup/cpu/etc/c1"


def test_resolve_v1_relative_is_under_own_cgroup_per_hierarchy() -> None:
    mounts = _paths.parse_mountinfo(MOUNTINFO_SPLIT, KNOWN)
    own = _paths.parse_proc_cgroup("3:memory:/user/session\n2:cpuacct:/\n1:cpu:/other\n0::/\n")
    dirs = _paths.resolve_v1("berth/c1", "c1", "/sys/fs/cgroup", mounts, own)
    assert dirs == {
        "cpu": "/sys/fs/cgroup/cpu/other/berth/c1",
        "cpuacct": "/sys/fs/cgroup/cpuacct/berth/c1",
        "memory": "/sys/fs/cgroup/memory/user/session/berth/c1",
    }


def test_resolve_v1_empty_path_is_relative_container_id() -> None:
    mounts = _paths.parse_mountinfo(MOUNTINFO_SPLIT, KNOWN)
    own = _paths.parse_proc_cgroup("3:memory:/parent\n2:cpuacct:/\n1:cpu:/\n")
    dirs = _paths.resolve_v1("", "ctr-1", "/sys/fs/cgroup", mounts, own)
    assert dirs["memory"] == "/sys/fs/cgroup/memory/parent/ctr-1"
    assert dirs["cpu"] == "/sys/fs/cgroup/cpu/ctr-1"


def test_resolve_v1_relative_strips_the_mount_root() -> None:
    mounts = _paths.parse_mountinfo(MOUNTINFO_NESTED, KNOWN)
    own = _paths.parse_proc_cgroup("4:memory:/docker/abc/sub\n")
    dirs = _paths.resolve_v1("c1", "c1", "/sys/fs/cgroup", mounts, own)
    assert dirs == {"memory": "/sys/fs/cgroup/memory/sub/c1"}


def test_resolve_v1_without_hierarchies_fails() -> None:
    with pytest.raises(FailedPrecondition, match="no cgroup hierarchies"):
        _paths.resolve_v1("/x", "x", "/nowhere", _paths.parse_mountinfo(MOUNTINFO_SPLIT, KNOWN), own={})


def test_resolve_v2_rules() -> None:
    own = _paths.parse_proc_cgroup("0::/user.slice/user-1000.slice/session-1.scope\n")
    assert _paths.resolve_v2("/berth/c1", "c1", "/sys/fs/cgroup", own=own) == "/sys/fs/cgroup/berth/c1"
    # relative: under the parent of our own cgroup (runc's fs2)
    assert _paths.resolve_v2("c1", "c1", "/sys/fs/cgroup", own=own) == \
        "/sys/fs/cgroup/user.slice/user-1000.slice/c1"
    assert _paths.resolve_v2("", "c2", "/sys/fs/cgroup", own=own) == "/sys/fs/cgroup/user.slice/user-1000.slice/c2"
    assert _paths.resolve_v2("c1", "c1", "/sys/fs/cgroup", own={"": "/"}) == "/sys/fs/cgroup/c1"
    # the cgroup2 mount shows /ns/x: own path is taken relative to it
    assert _paths.resolve_v2("c1", "c1", "/sys/fs/cgroup", "/ns", own={"": "/ns/init/leaf"}) == \
        "/sys/fs/cgroup/init/c1"


def test_systemd_form_is_refused() -> None:
    for path in ("system.slice:docker:abc", ":docker:abc"):
        with pytest.raises(InvalidArgument, match="^systemd cgroup driver is not supported$"):
            _paths.inner_path(path, "abc")
    assert _paths.inner_path("/a:b:c", "x") == "/a:b:c"  # absolute: a plain directory name


def test_paths_naming_an_existing_parent_are_refused() -> None:
    for path in ("/", "..", "/a/.."):
        with pytest.raises(InvalidArgument, match="existing parent"):
            _paths.inner_path(path, "x")
    with pytest.raises(InvalidArgument):
        _paths.inner_path("", "")


def test_detect_mode_on_fake_trees(tmp_path: Path) -> None:
    assert detect_mode(str(tmp_path)) == "v1"
    (tmp_path / "cgroup.controllers").write_text("cpu memory\n")
    assert detect_mode(str(tmp_path)) == "v2"
    assert detect_mode(str(tmp_path) + "/") == "v2"
    assert detect_mode(str(tmp_path / "missing")) == "v1"


def test_open_cgroup_v2_on_fake_tree(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("")
    cg = open_cgroup("/berth/c1", "c1", root=str(tmp_path))
    assert cg.mode == "v2"
    assert cg.paths() == {"mode": "v2", "": f"{tmp_path}/berth/c1"}
    with pytest.raises(InvalidArgument, match="systemd"):
        open_cgroup("system.slice:berth:c1", "c1", root=str(tmp_path))


def test_from_state_round_trip_and_validation() -> None:
    v1 = from_state({"mode": "v1", "memory": "/sys/fs/cgroup/memory/x", "cpu": "/sys/fs/cgroup/cpu/x",
                     "created": "/sys/fs/cgroup/memory/a\n/sys/fs/cgroup/cpu/a"})
    assert v1.mode == "v1"
    assert v1.paths()["created"] == "/sys/fs/cgroup/memory/a\n/sys/fs/cgroup/cpu/a"
    v2 = from_state({"": "/sys/fs/cgroup/x"})  # no mode: one "" key means v2
    assert v2.mode == "v2" and v2.paths() == {"mode": "v2", "": "/sys/fs/cgroup/x"}
    with pytest.raises(InvalidArgument):
        from_state({})
    with pytest.raises(InvalidArgument):
        from_state({"mode": "v3", "": "/x"})
    with pytest.raises(InvalidArgument):
        from_state({"mode": "v1", "memory": "relative/x"})
    with pytest.raises(InvalidArgument):
        from_state({"mode": "v2", "memory": "/x"})
