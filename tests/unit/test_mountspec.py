"""berth.daemon.mountspec: -v, --mount and --volumes-from parsed as dockerd parses them, the
mount points a container gets, and their OCI mounts (no root needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from berth.daemon import mountspec, specgen
from berth.errors import InvalidArgument


def test_parse_bind() -> None:
    bind = mountspec.parse_bind("/a:/b")
    assert (bind["Type"], bind["Source"], bind["Destination"], bind["RW"], bind["Propagation"], bind["Mode"]) == \
        ("bind", "/a", "/b", True, "rprivate", "")
    assert bind["CreateSource"]
    ro = mountspec.parse_bind("/a/../c:/b/:ro,rslave")
    assert (ro["Source"], ro["Destination"], ro["RW"], ro["Propagation"], ro["Mode"]) == \
        ("/c", "/b", False, "rslave", "ro,rslave")
    anon = mountspec.parse_bind("/anon")
    assert (anon["Type"], anon["Name"], anon["Anonymous"], anon["CopyData"]) == ("volume", "", True, True)
    named = mountspec.parse_bind("named:/x")
    assert (named["Type"], named["Name"], named["Mode"], named["CopyData"], named["Driver"]) == \
        ("volume", "named", "z", True, "local")
    assert mountspec.parse_bind("named:/x:nocopy,ro")["CopyData"] is False
    for bad, message in (("/a:b", "mount path must be absolute"), ("/a:/b:bogus", "invalid mode: bogus"),
                         ("/a:/", "destination can't be '/'"), ("a:b:c:d", "invalid volume specification"),
                         ("/foo:rw", "invalid volume specification"), (":/x", "invalid volume specification"),
                         ("/a:/b:ro,rw", "invalid mode"), ("bad/name:/x", "includes invalid characters"),
                         ("/h:/c:nocopy", "VolumeOptions must not be specified"),
                         ("vol:/c:rshared", "BindOptions must not be specified")):
        with pytest.raises(InvalidArgument, match=message):
            mountspec.parse_bind(bad)


def test_parse_mount(tmp_path: Path) -> None:
    bind = mountspec.parse_mount({"Type": "bind", "Source": str(tmp_path), "Target": "/t", "ReadOnly": True,
                                  "BindOptions": {"Propagation": "rshared"}})
    assert (bind["RW"], bind["Propagation"], bind["CreateSource"]) == (False, "rshared", False)
    vol = mountspec.parse_mount({"Type": "volume", "Source": "v1", "Target": "/v",
                                 "VolumeOptions": {"NoCopy": True, "Labels": {"a": "b"}}})
    assert (vol["Name"], vol["CopyData"], vol["Mode"], vol["Spec"]["VolumeOptions"]["Labels"]) == \
        ("v1", False, "z", {"a": "b"})
    tmpfs = mountspec.parse_mount({"Type": "tmpfs", "Target": "/t",
                                   "TmpfsOptions": {"SizeBytes": 64 << 20, "Mode": 0o1770}})
    assert mountspec.tmpfs_options(tmpfs["Spec"]) == "mode=1770,size=64m"
    for bad, message in (({"Type": "bind", "Source": str(tmp_path / "nope"), "Target": "/x"},
                          "bind source path does not exist"),
                         ({"Type": "bind", "Target": "/x"}, "field Source must not be empty"),
                         ({"Type": "tmpfs", "Source": "x", "Target": "/x"}, "field Source must not be specified"),
                         ({"Type": "volume", "Target": "/x", "ReadOnly": True}, "anonymous volumes"),
                         ({"Type": "volume", "Target": "/x", "BindOptions": {"Propagation": "shared"}},
                          "BindOptions must not be specified"),
                         ({"Type": "npipe", "Target": "/x"}, "mount type unknown"),
                         ({"Type": "bind", "Source": "/", "Target": "/x", "BindOptions": {"Propagation": "bogus"}},
                          "invalid propagation mode"),
                         ({"Type": "volume", "Target": "rel"}, "must be absolute"),
                         ({"Type": "volume", "Source": "v", "Target": "/x",
                           "VolumeOptions": {"DriverConfig": {"Name": "nfs-plugin"}}}, "plugin")):
        with pytest.raises(InvalidArgument, match=message):
            mountspec.parse_mount(bad)


def test_volumes_from() -> None:
    assert mountspec.parse_volumes_from("data") == ("data", "rw")
    assert mountspec.parse_volumes_from("data:ro") == ("data", "ro")
    for bad in ("", "data:rshared", "data:nocopy", "data:bogus"):
        with pytest.raises(InvalidArgument):
            mountspec.parse_volumes_from(bad)
    source = [mountspec.parse_bind("vv:/v"), mountspec.parse_bind("/h:/h:ro")]
    copied = mountspec.inherit(source, "ro")
    assert [p["RW"] for p in copied] == [False, False]
    assert all(not p["CopyData"] for p in copied)
    assert [p["RW"] for p in mountspec.inherit(source, "rw")] == [True, False]


def test_plan_precedence(tmp_path: Path) -> None:
    inherited = mountspec.inherit([mountspec.parse_bind("shared:/data")], "rw")
    hc = {"Binds": ["/h:/bind", "named:/data"], "Tmpfs": {"/run": ""},
          "Mounts": [{"Type": "tmpfs", "Target": "/scratch"}]}
    points = {p["Destination"]: p for p in mountspec.plan({"Volumes": {"/bind": {}, "/img": {}, "/run": {}}}, hc,
                                                          inherited)}
    assert set(points) == {"/bind", "/data", "/scratch", "/img"}
    assert points["/data"]["Name"] == "named"  # Binds win over --volumes-from
    assert points["/bind"]["Type"] == "bind"  # and over the image's VOLUME
    assert points["/img"]["Anonymous"] and points["/img"]["Mode"] == ""
    for hc in ({"Binds": ["/a:/x", "/b:/x"]}, {"Binds": ["/a:/x"], "Mounts": [{"Type": "tmpfs", "Target": "/x"}]},
               {"Binds": ["/a:/run"], "Tmpfs": {"/run": ""}}):
        with pytest.raises(InvalidArgument, match="Duplicate mount point"):
            mountspec.plan({}, hc)


def test_oci_mounts_and_order(tmp_path: Path) -> None:
    points = mountspec.plan({}, {"Binds": ["/h:/a/b:ro", "/h2:/a"], "Mounts": [
        {"Type": "tmpfs", "Target": "/t", "ReadOnly": True, "TmpfsOptions": {"SizeBytes": 1024}},
        {"Type": "bind", "Source": str(tmp_path), "Target": "/nr", "BindOptions": {"NonRecursive": True}}]})
    mounts = {m["destination"]: m for m in mountspec.oci_mounts(points)}
    assert mounts["/a/b"]["options"] == ["rbind", "ro", "rprivate"]
    assert mounts["/nr"]["options"][0] == "bind"
    assert mounts["/t"]["type"] == "tmpfs" and {"ro", "size=1k", "noexec"} <= set(mounts["/t"]["options"])
    order = [m["destination"] for m in mountspec.by_depth(list(mounts.values()))]
    assert order.index("/a") < order.index("/a/b")
    view = mountspec.view(points[0])
    assert set(view) == {"Type", "Source", "Destination", "Mode", "RW", "Propagation"}


def test_generate_without_resolved_points(tmp_path: Path) -> None:
    """Without the containers service, generate mounts host binds and tmpfs, never volumes,
    and puts /etc/hosts after a mount at /etc."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (tmp_path / "etc" / "group").write_text("root:x:0:\n")
    config = specgen.merge_config({}, {"Cmd": ["true"], "Volumes": {"/anon": {}}})
    spec = specgen.generate(specgen.SpecInput("f" * 64, config, {"Binds": [f"{tmp_path}:/etc"]}, str(tmp_path),
                                              etc_files={"/etc/hosts": "/h/hosts"}))
    dests = [m["destination"] for m in spec["mounts"]]
    assert "/anon" not in dests and dests.index("/etc") < dests.index("/etc/hosts")
