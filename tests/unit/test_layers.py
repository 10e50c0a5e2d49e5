"""berth.image.layers: applying layer tars, in overlay form and flat, and refusing escapes.

Tars are built here with tarfile. Tests that need root (whiteout device nodes, the
trusted.* opaque xattr, chown, device nodes) skip without it. Every escape test checks
that nothing appeared outside the target, next to it, in a sibling "outside" directory.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from berth.errors import FailedPrecondition, InvalidArgument
from berth.image.layers import (
    OPAQUE_XATTR,
    AppliedLayer,
    apply_layer,
    apply_layer_plain,
    inherit_from_lowers,
    privileged,
)
from tests.support.layertar import MTIME, d, entry, hard, make_tar, sym

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="needs root (mknod, trusted.* xattrs, chown)")


@pytest.fixture
def sandbox(tmp_path: Path) -> tuple[Path, Path]:
    """(target, outside): the layer goes to target; nothing may ever appear in outside."""
    target = tmp_path / "box" / "target"
    outside = tmp_path / "outside"
    target.mkdir(parents=True)
    outside.mkdir()
    return target, outside


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def apply(data: bytes, target: Path, plain: bool = False, **kw: object) -> AppliedLayer:
    fn = apply_layer_plain if plain else apply_layer
    return fn(io.BytesIO(data), str(target), **kw)  # type: ignore[operator]


# --- what a layer holds ------------------------------------------------------------------


def test_diff_id_and_size_cover_the_whole_stream_padding_included(sandbox: tuple[Path, Path]) -> None:
    target, _ = sandbox
    data = make_tar([d("etc/"), entry("etc/hostname", data=b"box\n")])
    assert len(data) % 10240 == 0  # tarfile pads to a record: the diff ID covers the padding
    applied = apply(data, target, plain=True)
    assert applied.diff_id == "sha256:" + hashlib.sha256(data).hexdigest()
    assert applied.size == len(data)
    assert applied.entries == 2


def test_files_dirs_symlinks_hardlinks_fifos_modes_and_times(sandbox: tuple[Path, Path]) -> None:
    target, _ = sandbox
    big = os.urandom(3 * 1024 * 1024 + 17)
    data = make_tar([
        d("./", mode=0o755),
        d("bin/", mode=0o711, mtime=1_500_000_000),
        entry("bin/tool", data=b"#!/bin/sh\n", mode=0o4755),
        entry("bin/big", data=big, mode=0o600),
        hard("bin/tool2", "bin/tool"),
        sym("bin/sh", "busybox"),
        sym("abs", "/etc/passwd"),
        d("tmp/", mode=0o1777),
        entry("tmp/fifo", tarfile.FIFOTYPE, mode=0o620),
    ])
    apply(data, target, plain=True)
    tool = (target / "bin/tool").stat()
    assert stat.S_IMODE(tool.st_mode) == 0o4755
    assert (target / "bin/big").read_bytes() == big
    assert stat.S_IMODE((target / "bin/big").stat().st_mode) == 0o600
    assert (target / "bin/tool2").stat().st_ino == tool.st_ino
    assert os.readlink(target / "bin/sh") == "busybox"
    assert os.readlink(target / "abs") == "/etc/passwd"  # kept as written, never followed
    assert stat.S_IMODE((target / "tmp").stat().st_mode) == 0o1777
    assert stat.S_ISFIFO((target / "tmp/fifo").lstat().st_mode)
    assert stat.S_IMODE((target / "tmp/fifo").lstat().st_mode) == 0o620
    # directory times are set after their contents, file times as recorded
    assert (target / "bin").stat().st_mtime == 1_500_000_000
    assert stat.S_IMODE((target / "bin").stat().st_mode) == 0o711
    assert tool.st_mtime == MTIME
    assert (target / "bin/sh").lstat().st_mtime == MTIME


def test_xattrs_from_pax_records(sandbox: tuple[Path, Path]) -> None:
    target, _ = sandbox
    raw = bytes([1, 0, 0, 2, 0, 0x20, 0, 0] + [0] * 12)  # a vfs_cap_data v2 header and zero masks
    pax = {"SCHILY.xattr.user.color": "blue"}
    if ROOT:
        pax["SCHILY.xattr.security.capability"] = raw.decode("utf-8", "surrogateescape")
    data = make_tar([entry("f", data=b"x", pax_headers=pax)])
    apply(data, target, plain=True)
    assert os.getxattr(target / "f", "user.color") == b"blue"
    if ROOT:
        assert os.getxattr(target / "f", "security.capability") == raw


@needs_root
def test_binary_xattr_survives_the_pax_round_trip(sandbox: tuple[Path, Path]) -> None:
    target, _ = sandbox
    value = bytes(range(256))  # every byte value, invalid utf-8 included
    data = make_tar([entry("f", data=b"x", pax_headers={"SCHILY.xattr.trusted.berth": value.decode("utf-8", "surrogateescape")})])
    apply(data, target, plain=True)
    assert os.getxattr(target / "f", "trusted.berth") == value


@needs_root
def test_overlay_xattrs_from_a_layer_are_dropped(sandbox: tuple[Path, Path]) -> None:
    target, _ = sandbox
    data = make_tar([d("dir/", pax_headers={"SCHILY.xattr.trusted.overlay.redirect": "/etc"})])
    apply(data, target)
    assert "trusted.overlay.redirect" not in os.listxattr(target / "dir")


@needs_root
def test_owners_are_kept_numerically(sandbox: tuple[Path, Path]) -> None:
    target, _ = sandbox
    data = make_tar([
        d("home/", uid=1000, gid=1000, uname="nobody-here", gname="nobody-here"),
        entry("home/f", data=b"x", uid=1234, gid=5678, mode=0o2755),
        sym("home/l", "f", uid=42, gid=43),
    ])
    apply(data, target, plain=True)
    st = (target / "home/f").stat()
    assert (st.st_uid, st.st_gid) == (1234, 5678)
    assert stat.S_IMODE(st.st_mode) == 0o2755  # setgid survives the chown
    assert ((target / "home").stat().st_uid, (target / "home").stat().st_gid) == (1000, 1000)
    assert ((target / "home/l").lstat().st_uid, (target / "home/l").lstat().st_gid) == (42, 43)


def test_later_entries_replace_earlier_ones(sandbox: tuple[Path, Path]) -> None:
    target, _ = sandbox
    data = make_tar([
        d("a/"), entry("a/x", data=b"1"),
        entry("a", data=b"now a file"),  # a file replaces the directory tree
        entry("b", data=b"file"), d("b/"),  # a directory replaces the file
        entry("c", data=b"one"), entry("c", data=b"two"),
    ])
    apply(data, target, plain=True)
    assert (target / "a").read_bytes() == b"now a file"
    assert (target / "b").is_dir()
    assert (target / "c").read_bytes() == b"two"


def test_empty_stream_is_an_empty_layer(sandbox: tuple[Path, Path]) -> None:
    target, _ = sandbox
    applied = apply(b"", target)
    assert applied.diff_id == "sha256:" + hashlib.sha256(b"").hexdigest()
    assert listing(target) == []


@pytest.mark.parametrize("data", [b"this is not a tar archive at all" * 40, b"\x00" * 100 + b"junk" * 200])
def test_garbage_is_refused_with_one_clear_line(sandbox: tuple[Path, Path], data: bytes) -> None:
    target, _ = sandbox
    with pytest.raises(InvalidArgument, match="not a valid tar"):
        apply(data, target)


def test_truncated_layer_is_refused(sandbox: tuple[Path, Path]) -> None:
    target, _ = sandbox
    data = make_tar([entry("f", data=os.urandom(100_000))])
    with pytest.raises(InvalidArgument, match="truncated|not a valid tar"):
        apply(data[:50_000], target)


# --- whiteouts ----------------------------------------------------------------------------

LOWER = [d("a/"), entry("a/keep", data=b"k"), entry("a/gone", data=b"g"),
         d("o/"), entry("o/old", data=b"o"), d("o/sub/"), entry("o/sub/deep", data=b"d")]
UPPER = [entry("a/.wh.gone"), d("o/"), entry("o/.wh..wh..opq"), entry("o/new", data=b"n"),
         d("o/sub/"), entry("o/sub/fresh", data=b"f")]


def test_plain_whiteouts_delete_lower_files_and_opaque_dirs_hide_lower_children(sandbox: tuple[Path, Path]) -> None:
    target, _ = sandbox
    apply(make_tar(LOWER), target, plain=True)
    apply(make_tar(UPPER), target, plain=True)
    assert listing(target) == ["a", "a/keep", "o", "o/new", "o/sub", "o/sub/fresh"]


def test_plain_opaque_marker_after_entries_spares_this_layers_own(sandbox: tuple[Path, Path]) -> None:
    target, _ = sandbox
    apply(make_tar(LOWER), target, plain=True)
    apply(make_tar([d("o/"), entry("o/new", data=b"n"), entry("o/.wh..wh..opq"), entry("a/.wh.keep")]), target, plain=True)
    assert listing(target) == ["a", "a/gone", "o", "o/new"]


def test_whiteout_never_hides_an_entry_of_the_same_layer(sandbox: tuple[Path, Path]) -> None:
    target, _ = sandbox
    apply(make_tar([entry("x", data=b"mine"), entry(".wh.x")]), target, plain=True)
    assert (target / "x").read_bytes() == b"mine"


@needs_root
def test_overlay_form_whiteout_is_a_0_0_char_device_and_opaque_an_xattr(sandbox: tuple[Path, Path]) -> None:
    target, _ = sandbox
    apply(make_tar(UPPER), target)
    st = (target / "a/gone").lstat()
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)
    assert not (target / "a/.wh.gone").exists()
    assert os.getxattr(target / "o", OPAQUE_XATTR) == b"y"
    assert not (target / "o/.wh..wh..opq").exists()
    assert OPAQUE_XATTR not in os.listxattr(target / "o/sub")
    assert listing(target) == ["a", "a/gone", "o", "o/new", "o/sub", "o/sub/fresh"]


@needs_root
def test_overlay_whiteout_then_directory_makes_an_opaque_directory(sandbox: tuple[Path, Path]) -> None:
    target, _ = sandbox
    apply(make_tar([entry(".wh.etc"), d("etc/"), entry("etc/new", data=b"n")]), target)
    assert (target / "etc").is_dir()
    assert os.getxattr(target / "etc", OPAQUE_XATTR) == b"y"


@needs_root
def test_overlay_implicit_parents_take_the_lower_layers_attributes(tmp_path: Path) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    lower.mkdir()
    upper.mkdir()
    apply(make_tar([d("./", mode=0o750), d("srv/", mode=0o700, uid=7, gid=8, mtime=1_400_000_000)]), lower)
    applied = apply(make_tar([entry("srv/new", data=b"n")]), upper, parents=[str(lower)])
    st = (upper / "srv").stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime) == (0o700, 7, 8, 1_400_000_000)
    assert stat.S_IMODE(upper.stat().st_mode) == 0o750  # no root entry: the lower root's mode
    assert applied.implicit_dirs == ("srv",) and not applied.root_listed
    # the same, after the fact, for a layer applied before its lowers existed
    staged = tmp_path / "staged"
    staged.mkdir()
    applied = apply(make_tar([entry("srv/new", data=b"n")]), staged)
    assert stat.S_IMODE((staged / "srv").stat().st_mode) == 0o755
    inherit_from_lowers(str(staged), [str(lower)], applied)
    assert stat.S_IMODE((staged / "srv").stat().st_mode) == 0o700
    assert (staged / "srv").stat().st_uid == 7


def test_a_directory_listed_after_its_children_keeps_its_own_attributes(tmp_path: Path) -> None:
    lower, staged = tmp_path / "lower", tmp_path / "staged"
    lower.mkdir()
    staged.mkdir()
    apply(make_tar([d("srv/", mode=0o755)]), lower)
    applied = apply(make_tar([entry("srv/new", data=b"n"), d("srv/", mode=0o711)]), staged)
    assert applied.implicit_dirs == ()                   # made for srv/new, then listed itself
    inherit_from_lowers(str(staged), [str(lower)], applied)
    assert stat.S_IMODE((staged / "srv").stat().st_mode) == 0o711


def test_aufs_metadata_is_skipped(sandbox: tuple[Path, Path]) -> None:
    target, _ = sandbox
    apply(make_tar([d(".wh..wh.plnk/"), entry(".wh..wh.plnk/123.4", data=b"x"), entry("ok", data=b"o")]), target, plain=True)
    assert listing(target) == ["ok"]


# --- hostile layers -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../../etc/x", "a/../../x", "../outside/pwned", "./../x"])
def test_dotdot_names_are_refused(sandbox: tuple[Path, Path], name: str) -> None:
    target, outside = sandbox
    with pytest.raises(InvalidArgument, match="escapes the layer"):
        apply(make_tar([entry(name, data=b"pwned")]), target)
    assert listing(outside) == []
    assert listing(target.parent) == ["target"]


@pytest.mark.parametrize("plain", [False, True])
def test_whiteout_named_dotdot_is_refused(sandbox: tuple[Path, Path], plain: bool) -> None:
    target, outside = sandbox
    (outside / "victim").write_bytes(b"v")
    with pytest.raises(InvalidArgument):
        apply(make_tar([d("a/"), entry("a/.wh..")]), target, plain=plain)
    with pytest.raises(InvalidArgument):
        apply(make_tar([entry("../outside/.wh.victim")]), target, plain=plain)
    assert (outside / "victim").exists()


def test_absolute_names_are_made_relative(sandbox: tuple[Path, Path]) -> None:
    target, _ = sandbox
    apply(make_tar([entry("/etc/berth-test-x", data=b"in the box")]), target, plain=True)
    assert (target / "etc/berth-test-x").read_bytes() == b"in the box"
    assert not Path("/etc/berth-test-x").exists()


@pytest.mark.parametrize("plain", [False, True])
def test_symlink_to_root_then_file_below_it_stays_inside(sandbox: tuple[Path, Path], plain: bool) -> None:
    target, outside = sandbox
    rel_outside = str(outside).lstrip("/")  # a/<path of outside>/pwned would land in outside if followed
    data = make_tar([sym("a", "/"), entry(f"a/{rel_outside}/pwned", data=b"pwned")])
    apply(data, target, plain=plain)
    assert listing(outside) == []
    assert (target / "a").is_dir() and not (target / "a").is_symlink()  # replaced, not followed
    assert (target / "a" / rel_outside / "pwned").read_bytes() == b"pwned"


def test_symlink_to_root_then_etc_passwd_never_touches_the_host(sandbox: tuple[Path, Path]) -> None:
    target, _ = sandbox
    before = Path("/etc/passwd").read_bytes()
    apply(make_tar([sym("a", "/"), entry("a/etc/passwd", data=b"root::0:0::/:/bin/sh\n")]), target, plain=True)
    assert Path("/etc/passwd").read_bytes() == before
    assert (target / "a/etc/passwd").read_bytes() == b"root::0:0::/:/bin/sh\n"


@pytest.mark.parametrize("link", ["../../outside", "/"])
def test_symlinked_parent_directory_is_replaced_not_followed(sandbox: tuple[Path, Path], link: str) -> None:
    target, outside = sandbox
    data = make_tar([d("d/"), sym("d/link", link), entry("d/link/pwned", data=b"pwned"),
                     d("d/link/sub/"), entry("d/link/sub/deeper", data=b"x")])
    apply(data, target)
    assert listing(outside) == []
    assert (target / "d/link").is_dir() and not (target / "d/link").is_symlink()
    assert (target / "d/link/sub/deeper").exists()


def test_symlink_written_over_an_existing_dir_then_used_as_parent(sandbox: tuple[Path, Path]) -> None:
    target, outside = sandbox
    data = make_tar([d("x/"), entry("x/f", data=b"1"), sym("x", str(outside)), entry("x/pwned", data=b"p")])
    apply(data, target, plain=True)
    assert listing(outside) == []
    assert (target / "x/pwned").exists()


def test_hardlink_to_an_absolute_host_path_is_refused(sandbox: tuple[Path, Path]) -> None:
    target, outside = sandbox
    with pytest.raises(InvalidArgument, match="not in the layer|not inside"):
        apply(make_tar([hard("shadow", "/etc/shadow")]), target)
    assert not (target / "shadow").exists()


def test_hardlink_to_an_absolute_path_links_inside_the_layer(sandbox: tuple[Path, Path]) -> None:
    target, _ = sandbox
    apply(make_tar([d("etc/"), entry("etc/shadow", data=b"layer's own"), hard("copy", "/etc/shadow")]), target)
    assert (target / "copy").stat().st_ino == (target / "etc/shadow").stat().st_ino
    assert (target / "copy").stat().st_ino != Path("/etc/shadow").stat().st_ino


def test_hardlink_through_a_symlink_or_dotdot_is_refused(sandbox: tuple[Path, Path]) -> None:
    target, outside = sandbox
    (outside / "secret").write_bytes(b"s")
    with pytest.raises(InvalidArgument):
        apply(make_tar([sym("out", str(outside)), hard("stolen", "out/secret")]), target)
    with pytest.raises(InvalidArgument, match="escapes the layer"):
        apply(make_tar([hard("stolen2", "../../outside/secret")]), target)
    assert not (target / "stolen").exists() and not (target / "stolen2").exists()
    assert (outside / "secret").stat().st_nlink == 1


def test_hardlink_to_a_directory_or_itself_is_refused(sandbox: tuple[Path, Path]) -> None:
    target, _ = sandbox
    with pytest.raises(InvalidArgument, match="directory"):
        apply(make_tar([d("dir/"), hard("dirlink", "dir")]), target)
    with pytest.raises(InvalidArgument, match="itself"):
        apply(make_tar([hard("self", "self")]), target)


def test_device_nodes_are_skipped_without_privilege(sandbox: tuple[Path, Path]) -> None:
    target, _ = sandbox
    data = make_tar([
        d("dev/"),
        entry("dev/sda", tarfile.BLKTYPE, devmajor=8, devminor=0, mode=0o666),
        entry("tmp-mem", tarfile.CHRTYPE, devmajor=1, devminor=1, mode=0o666),
        hard("dev/sda-again", "dev/sda"),
        entry("dev/ok", data=b"fine"),
    ])
    applied = apply(data, target, devices=False)
    assert set(applied.skipped) == {"dev/sda", "tmp-mem", "dev/sda-again"}
    assert listing(target) == ["dev", "dev/ok"]


@needs_root
def test_device_nodes_are_created_when_privileged(sandbox: tuple[Path, Path]) -> None:
    target, _ = sandbox
    if not privileged():
        pytest.skip("not root in the initial user namespace")
    data = make_tar([entry("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666, uid=0, gid=0)])
    applied = apply(data, target)
    st = (target / "dev/null").lstat()
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)
    assert stat.S_IMODE(st.st_mode) == 0o666
    assert applied.skipped == ()


def test_overlay_opaque_dirs_without_root_fail_clearly(sandbox: tuple[Path, Path]) -> None:
    target, _ = sandbox
    if ROOT:
        pytest.skip("root can set trusted.* xattrs")
    # (whiteouts themselves, 0/0 char devices, need no privilege since Linux 5.8)
    with pytest.raises(FailedPrecondition, match="root"):
        apply(make_tar([d("x/"), entry("x/.wh..wh..opq")]), target)


def test_progress_is_reported_in_uncompressed_bytes(sandbox: tuple[Path, Path]) -> None:
    target, _ = sandbox
    data = make_tar([entry("big", data=os.urandom(3 * 1024 * 1024))])
    seen: list[int] = []
    apply(data, target, on_progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == len(data) and len(seen) >= 3
