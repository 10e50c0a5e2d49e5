"""Mount targets never leave the root filesystem, whatever symlinks it holds."""

import os

from berth.runtime.linux.mountopts import parse
from berth.runtime.linux.paths import secure_join
from berth._sys import libc


def test_plain_and_dotdot(tmp_path) -> None:
    root = str(tmp_path)
    assert secure_join(root, "/a/b") == os.path.join(root, "a/b")
    assert secure_join(root, "/../../etc") == os.path.join(root, "etc")


def test_symlinks_stay_inside(tmp_path) -> None:
    root = str(tmp_path)
    os.makedirs(tmp_path / "real")
    os.symlink("/etc", tmp_path / "abs")          # absolute: resolves inside root
    os.symlink("../../../..", tmp_path / "up")    # escapes upward: clamped at root
    os.symlink("real", tmp_path / "rel")
    assert secure_join(root, "/abs/passwd") == os.path.join(root, "etc/passwd")
    assert secure_join(root, "/up/etc") == os.path.join(root, "etc")
    assert secure_join(root, "/rel/x") == os.path.join(root, "real/x")


def test_symlink_loop_is_an_error(tmp_path) -> None:
    os.symlink("loop", tmp_path / "loop")
    try:
        secure_join(str(tmp_path), "/loop/x")
    except OSError as exc:
        assert exc.errno == 40
    else:
        raise AssertionError("a symlink loop must fail")


def test_mount_options() -> None:
    opts = parse(["rbind", "ro", "nosuid", "rprivate", "rro", "mode=755", "size=65536k"])
    assert opts.flags == libc.MS_BIND | libc.MS_REC | libc.MS_RDONLY | libc.MS_NOSUID
    assert opts.propagation == [libc.MS_PRIVATE | libc.MS_REC]
    assert opts.attr_set == libc.MOUNT_ATTR_RDONLY
    assert opts.data == ["mode=755", "size=65536k"]
    assert parse(["ro", "rw"]).flags == 0
