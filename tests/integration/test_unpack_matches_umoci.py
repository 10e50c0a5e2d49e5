"""Berth's overlay snapshots show exactly the tree that ``umoci unpack`` writes.

A fixture builds an OCI layout with umoci from Debian's busybox-static in three
layers: (1) busybox and its applet symlinks, a few files and directories with odd
modes and owners, a device node; (2) files with a hard link, a symlink, user and
security.capability xattrs, setuid, a non-root owner, a FIFO, a changed file; (3) a
layer written by hand and added with ``umoci raw add-layer``: a file whiteout, a
directory whiteout and an opaque directory. The layers are unpacked into overlay
snapshots, the final chain is mounted as a read-only view, and the tree is compared
with ``umoci unpack``'s rootfs: paths, types, modes, owners, symlink targets, file
contents, device numbers, xattrs (less overlay's own), hard-link groups, and the
mtimes of everything but directories (which whiteouts and overlay change).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from berth.image.compression import open_decompressed
from berth.image.layers import apply_layer_plain
from berth.snapshots import OverlaySnapshotter, mounted
from berth.image.unpack import unpack_layers
from tests.support.layertar import d, entry, make_tar

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("umoci") is None, reason="umoci not installed (scripts/setup.sh --with-peers)"),
]

CAPABILITY = bytes.fromhex("0100000200200000000000000000000000000000")  # v2: cap_net_bind_service


def run(*args: str) -> None:
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)


def build_layout(work: Path) -> Path:
    layout, bundle = work / "layout", work / "bundle"
    rootfs = bundle / "rootfs"
    run("umoci", "init", "--layout", str(layout))
    run("umoci", "new", "--image", f"{layout}:v1")
    run("umoci", "unpack", "--image", f"{layout}:v1", str(bundle))

    # layer 1: busybox, applet links, odd modes and owners, a device node
    for sub in ("bin", "etc", "dev", "tmp", "usr/share/doc/x", "var/lib/keep", "srv/private"):
        (rootfs / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy2("/bin/busybox", rootfs / "bin/busybox")
    for applet in ("sh", "ls", "cat", "echo", "true"):
        os.symlink("busybox", rootfs / "bin" / applet)
    (rootfs / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    for i in (1, 2, 3):
        (rootfs / f"usr/share/doc/x/f{i}").write_text(f"doc {i}\n")
    for name in ("old1", "old2"):
        (rootfs / "var/lib/keep" / name).write_text(name)
    os.chmod(rootfs / "tmp", 0o1777)
    os.chmod(rootfs / "srv/private", 0o700)
    os.chown(rootfs / "srv/private", 100, 101)
    os.mknod(rootfs / "dev/null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.chmod(rootfs / "dev/null", 0o666)
    run("umoci", "repack", "--refresh-bundle", "--image", f"{layout}:v2", str(bundle))

    # layer 2: hard link, symlink, xattrs, setuid, another owner, a FIFO, a change
    app = rootfs / "opt/app"
    app.mkdir(parents=True)
    (app / "data").write_text("data\n")
    os.link(app / "data", app / "data.hard")
    os.symlink("../app/data", app / "data.sym")
    os.setxattr(app / "data", "user.berth", b"hello")
    (app / "suid").write_text("s")
    os.chmod(app / "suid", 0o4755)
    os.setxattr(app / "suid", "security.capability", CAPABILITY)
    (app / "user").write_text("u")
    os.chown(app / "user", 1000, 1000)
    os.mkfifo(app / "fifo", 0o640)
    (rootfs / "opt/olddir").mkdir()
    (rootfs / "opt/olddir/inside").write_text("bye")
    with open(rootfs / "etc/passwd", "a") as f:
        f.write("app:x:1000:1000::/opt/app:/bin/sh\n")
    run("umoci", "repack", "--refresh-bundle", "--image", f"{layout}:v2", str(bundle))

    # layer 3, by hand: whiteouts of a file and a directory, an opaque directory
    layer3 = make_tar([
        d("usr/"), d("usr/share/"), d("usr/share/doc/"), d("usr/share/doc/x/"),
        entry("usr/share/doc/x/.wh.f2"),
        d("opt/"), entry("opt/.wh.olddir"),
        d("var/"), d("var/lib/"), d("var/lib/keep/", mode=0o750),
        entry("var/lib/keep/.wh..wh..opq"),
        entry("var/lib/keep/new", data=b"new\n", mode=0o600, uid=1000, gid=1000),
    ])
    (work / "layer3.tar").write_bytes(layer3)
    run("umoci", "raw", "add-layer", "--image", f"{layout}:v2", "--tag", "v3", str(work / "layer3.tar"))
    return layout


def read_image(layout: Path, tag: str) -> tuple[list[str], list[str]]:
    def blob(digest: str) -> Path:
        return layout / "blobs" / digest.replace(":", "/")

    index = json.loads((layout / "index.json").read_text())
    (desc,) = [m for m in index["manifests"] if m["annotations"]["org.opencontainers.image.ref.name"] == tag]
    manifest = json.loads(blob(desc["digest"]).read_text())
    config = json.loads(blob(manifest["config"]["digest"]).read_text())
    return [str(blob(layer["digest"])) for layer in manifest["layers"]], config["rootfs"]["diff_ids"]


def describe(root: str) -> tuple[dict[str, dict[str, Any]], set[frozenset[str]]]:
    """Every path under root (root itself as ".") -> its attributes; and the hard-link groups."""
    out: dict[str, dict[str, Any]] = {}
    inodes: dict[int, set[str]] = {}
    paths = ["."]
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            paths.append(os.path.relpath(os.path.join(dirpath, name), root))
    for rel in paths:
        full = os.path.join(root, rel)
        st = os.lstat(full)
        kind = stat.S_IFMT(st.st_mode)
        attrs: dict[str, Any] = {"type": kind, "uid": st.st_uid, "gid": st.st_gid}
        if kind != stat.S_IFLNK:
            attrs["mode"] = oct(stat.S_IMODE(st.st_mode))
        if kind != stat.S_IFDIR:
            attrs["mtime"] = int(st.st_mtime)
        if kind == stat.S_IFLNK:
            attrs["target"] = os.readlink(full)
        elif kind == stat.S_IFREG:
            with open(full, "rb") as f:
                attrs["sha256"] = hashlib.sha256(f.read()).hexdigest()
            if st.st_nlink > 1:
                inodes.setdefault(st.st_ino, set()).add(rel)
        elif kind in (stat.S_IFCHR, stat.S_IFBLK):
            attrs["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
        attrs["xattrs"] = {
            k: os.getxattr(full, k, follow_symlinks=False)
            for k in os.listxattr(full, follow_symlinks=False)
            if not k.startswith("trusted.overlay.")
        }
        out[rel] = attrs
    return out, {frozenset(group) for group in inodes.values()}


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(layout, umoci's rootfs of tag v3)."""
    work = tmp_path_factory.mktemp("umoci")
    layout = build_layout(work)
    run("umoci", "unpack", "--image", f"{layout}:v3", str(work / "reference"))
    return layout, work / "reference" / "rootfs"


@pytest.mark.parametrize("workers", [1, 2])
def test_unpacked_view_matches_umoci_unpack(image: tuple[Path, Path], tmp_path: Path, workers: int) -> None:
    layout, reference = image
    layers, diff_ids = read_image(layout, "v3")
    assert len(layers) == 3
    sn = OverlaySnapshotter(str(tmp_path / "snapshots"))
    try:
        top = unpack_layers(sn, layers, diff_ids, workers=workers)
        with mounted(sn.view("check", top), dir=str(tmp_path)) as view:
            ours, our_links = describe(view)
        sn.remove("check")
    finally:
        sn.close()
    theirs, their_links = describe(str(reference))

    # the fixture made what it meant to make
    assert "usr/share/doc/x/f2" not in theirs and "opt/olddir" not in theirs
    assert sorted(p for p in theirs if p.startswith("var/lib/keep/")) == ["var/lib/keep/new"]
    assert theirs["opt/app/suid"]["xattrs"] == {"security.capability": CAPABILITY}
    assert theirs["dev/null"]["rdev"] == (1, 3)

    assert sorted(ours) == sorted(theirs)
    differences = {p: (ours[p], theirs[p]) for p in theirs if ours[p] != theirs[p]}
    assert differences == {}
    assert our_links == their_links == {frozenset({"opt/app/data", "opt/app/data.hard"})}


def test_flat_unpack_matches_umoci_unpack(image: tuple[Path, Path], tmp_path: Path) -> None:
    layout, reference = image
    layers, _ = read_image(layout, "v3")
    flat = tmp_path / "flat"
    flat.mkdir()
    for path in layers:
        with open(path, "rb") as raw:
            apply_layer_plain(open_decompressed(raw), str(flat))
    ours, our_links = describe(str(flat))
    theirs, their_links = describe(str(reference))
    assert sorted(ours) == sorted(theirs)
    assert {p: (ours[p], theirs[p]) for p in theirs if ours[p] != theirs[p]} == {}
    assert our_links == their_links


def test_layer_shared_by_two_images_is_unpacked_once(image: tuple[Path, Path], tmp_path: Path) -> None:
    layout, _ = image
    layers, diff_ids = read_image(layout, "v3")
    sn = OverlaySnapshotter(str(tmp_path / "snapshots"))
    try:
        unpack_layers(sn, layers[:2], diff_ids[:2])  # tag v2: the first two layers
        before = sorted(os.listdir(tmp_path / "snapshots/snapshots"))
        opened: list[int] = []

        def opener(i: int):  # noqa: ANN202
            def open_() -> io.BufferedReader:
                opened.append(i)
                return open(layers[i], "rb")
            return open_

        unpack_layers(sn, [opener(i) for i in range(3)], diff_ids)
        assert opened == [2]
        assert len(os.listdir(tmp_path / "snapshots/snapshots")) == len(before) + 1
    finally:
        sn.close()


def test_the_layers_are_what_tarfile_reads_back(image: tuple[Path, Path]) -> None:
    # a sanity check of the fixture: layer 3 carries the opaque marker verbatim
    layout, _ = image
    layers, _ = read_image(layout, "v3")
    with gzip.open(layers[2]) as raw, tarfile.open(fileobj=raw, mode="r|") as tf:
        names = [m.name for m in tf]
    assert "var/lib/keep/.wh..wh..opq" in names
