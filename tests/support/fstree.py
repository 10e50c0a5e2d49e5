"""File trees as comparable data: what two unpacks of one image must agree on.

    tree = read_tree(root)             # {relpath: Entry}, "." for the root itself
    problems = diff_trees(expected, got)   # [] when they agree, else one line per difference
    snapshot_tree(snapshotter, chain_id)   # the tree of a committed snapshot chain,
                                           # read through a read-only view mounted briefly

An entry holds the file type, permission bits (setuid/setgid/sticky included), owner,
the sha256 of a regular file's content, a symlink's target, a device's numbers, the
xattrs (but ``trusted.overlay.*``, overlayfs' own bookkeeping) and, for files with
several links, the first path of their hardlink group. mtimes of non-directories are
kept too; directory mtimes are left out (unpackers differ in whether they restore a
directory's mtime after a later layer changed its content).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Entry:
    kind: str
    mode: int
    uid: int
    gid: int
    content: str | None = None  # sha256 of a file, target of a symlink, "major,minor" of a device
    xattrs: tuple[tuple[str, bytes], ...] = ()
    link_group: str | None = None  # first path (sorted) sharing this file's inode
    mtime: int | None = None  # seconds, non-directories only


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "dir"), (stat.S_ISREG, "file"), (stat.S_ISLNK, "symlink"),
                       (stat.S_ISCHR, "char"), (stat.S_ISBLK, "block"), (stat.S_ISFIFO, "fifo"),
                       (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "unknown"


def _xattrs(path: str) -> tuple[tuple[str, bytes], ...]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return ()
    out = []
    for name in sorted(names):
        if name.startswith("trusted.overlay."):
            continue
        try:
            out.append((name, os.getxattr(path, name, follow_symlinks=False)))
        except OSError:
            continue
    return tuple(out)


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def read_tree(root: str) -> dict[str, Entry]:
    tree: dict[str, Entry] = {}
    inodes: dict[tuple[int, int], str] = {}
    paths = ["."]
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = os.path.relpath(dirpath, root)
        for name in sorted(dirnames + filenames):
            paths.append(os.path.normpath(os.path.join(rel, name)))
    for rel in sorted(paths):
        full = os.path.join(root, rel) if rel != "." else root
        st = os.lstat(full)
        kind = _kind(st.st_mode)
        content: str | None = None
        group: str | None = None
        if kind == "file":
            content = _sha256(full)
            if st.st_nlink > 1:
                group = inodes.setdefault((st.st_dev, st.st_ino), rel)
        elif kind == "symlink":
            content = os.readlink(full)
        elif kind in ("char", "block"):
            content = f"{os.major(st.st_rdev)},{os.minor(st.st_rdev)}"
        tree[rel] = Entry(
            kind=kind, mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid, content=content,
            xattrs=_xattrs(full), link_group=group,
            mtime=None if kind == "dir" else int(st.st_mtime),
        )
    return tree


def diff_trees(expected: dict[str, Entry], got: dict[str, Entry], *, ignore: tuple[str, ...] = ()) -> list[str]:
    """Differences, one line each: missing, extra, or which fields differ."""
    problems = []
    for path in sorted(set(expected) | set(got)):
        if any(path == i or path.startswith(i + "/") for i in ignore):
            continue
        a, b = expected.get(path), got.get(path)
        if a is None:
            problems.append(f"extra: {path} ({b.kind})")  # type: ignore[union-attr]
        elif b is None:
            problems.append(f"missing: {path} ({a.kind})")
        elif a != b:
            fields = [f"{k}: {getattr(a, k)!r} != {getattr(b, k)!r}" for k in a.__dataclass_fields__
                      if getattr(a, k) != getattr(b, k)]
            problems.append(f"differs: {path}: {'; '.join(fields)}")
    return problems


def snapshot_tree(snapshotter: Any, chain_id: str) -> dict[str, Entry]:
    """Mount a read-only view of committed snapshot ``chain_id``, read it, undo the view."""
    from berth.snapshots.mount import mounted

    key = f"view-{secrets.token_hex(4)}"
    mounts = snapshotter.view(key, chain_id)
    try:
        with mounted(mounts) as target:
            return read_tree(target)
    finally:
        snapshotter.remove(key)


_UMOCI_TREES: dict[tuple[str, str], dict[str, Entry]] = {}


def umoci_tree(layout: str | os.PathLike[str], tag: str, workdir: str | os.PathLike[str]) -> dict[str, Entry]:
    """``umoci unpack`` of ``layout:tag`` (as root: owners kept), read as a tree; cached
    per (layout, tag) for the session. The bundle is deleted afterwards."""
    import shutil
    import subprocess

    key = (os.fspath(layout), tag)
    if key not in _UMOCI_TREES:
        bundle = os.path.join(os.fspath(workdir), f"umoci-{secrets.token_hex(4)}")
        subprocess.run(["umoci", "unpack", "--image", f"{key[0]}:{tag}", bundle],
                       check=True, capture_output=True, timeout=120)
        try:
            _UMOCI_TREES[key] = read_tree(os.path.join(bundle, "rootfs"))
        finally:
            shutil.rmtree(bundle, ignore_errors=True)
    return _UMOCI_TREES[key]
