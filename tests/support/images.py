"""Test images: OCI layouts built from Debian's busybox-static with umoci, pushed with skopeo.

    layout = build_layout(workdir)        # one OCI layout, tags below
    push(layout, "v1", "127.0.0.1:PORT/berth/busybox:v1")

Tags in the layout (all linux/amd64 unless said):
    v1     OCI manifest, three gzip layers:
             1. busybox, its applet symlinks, /etc/passwd, /data/{keep,remove-me}, /opq/{old1,sub/old2}
             2. adds files: a hardlink, a setuid file, a file owned by 1000:1000, a dangling
                symlink, an empty dir, a user.* xattr, /etc/hello.txt
             3. hand-made: whiteout of /data/remove-me, opaque /opq with /opq/fresh.txt
    plain  the same image with uncompressed layers (config and diff_ids identical)
    arm64  the v1 layers under a config saying linux/arm64/v8 (metadata only)
    multi  an OCI index of v1 (linux/amd64) and arm64 (linux/arm64/v8)
zstd layers live in a second layout made by skopeo (``zstd_layout``).

Everything runs umoci/skopeo as subprocesses; nothing here uses Berth's own code.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BUSYBOX = "/bin/busybox"
APPLETS = ("sh", "ls", "cat", "echo", "true", "false", "sleep", "id", "env", "mkdir", "rm", "touch")
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
FIXED_TIME = "2024-01-01T00:00:00Z"


def run(*argv: str | os.PathLike[str], timeout: float = 120) -> str:
    proc = subprocess.run([os.fspath(a) for a in argv], capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(str(a) for a in argv)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


@dataclass(frozen=True)
class Blob:
    media_type: str
    digest: str
    size: int

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size, **extra}


class Layout:
    """Read and extend an OCI image layout directory."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def blob_path(self, digest: str) -> Path:
        algorithm, encoded = digest.split(":", 1)
        return self.path / "blobs" / algorithm / encoded

    def read_blob(self, digest: str) -> bytes:
        return self.blob_path(digest).read_bytes()

    def add_blob(self, data: bytes, media_type: str) -> Blob:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        path = self.blob_path(digest)
        if not path.exists():
            path.write_bytes(data)
        return Blob(media_type, digest, len(data))

    def index(self) -> dict[str, Any]:
        return json.loads((self.path / "index.json").read_text())

    def entry(self, tag: str) -> dict[str, Any]:
        for desc in self.index()["manifests"]:
            if desc.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
                return desc
        raise KeyError(tag)

    def manifest(self, tag: str) -> dict[str, Any]:
        return json.loads(self.read_blob(self.entry(tag)["digest"]))

    def tag(self, tag: str, blob: Blob) -> None:
        index = self.index()
        index["manifests"] = [
            d for d in index["manifests"]
            if d.get("annotations", {}).get("org.opencontainers.image.ref.name") != tag
        ]
        index["manifests"].append(blob.descriptor(annotations={"org.opencontainers.image.ref.name": tag}))
        (self.path / "index.json").write_text(json.dumps(index))


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def _tar_entry(tar: tarfile.TarFile, name: str, *, data: bytes | None = None, dir: bool = False,
               mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.mtime = 1704067200
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    if dir:
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        tar.addfile(info)
        return
    info.mode = mode
    info.size = len(data or b"")
    tar.addfile(info, io.BytesIO(data or b""))


def whiteout_layer() -> bytes:
    """Layer 3: a whiteout for /data/remove-me and an opaque /opq holding fresh.txt."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _tar_entry(tar, "data/", dir=True)
        _tar_entry(tar, "data/.wh.remove-me", data=b"", mode=0o000)
        _tar_entry(tar, "opq/", dir=True)
        _tar_entry(tar, "opq/.wh..wh..opq", data=b"", mode=0o000)
        _tar_entry(tar, "opq/fresh.txt", data=b"fresh after the opaque whiteout\n")
    return buf.getvalue()


def _fill_base(rootfs: Path) -> None:
    (rootfs / "bin").mkdir(mode=0o755, exist_ok=True)
    shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
    for applet in APPLETS:
        os.symlink("busybox", rootfs / "bin" / applet)
    (rootfs / "etc").mkdir(mode=0o755, exist_ok=True)
    (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n")
    (rootfs / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    for d in ("data", "opq/sub", "root", "tmp"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    os.chmod(rootfs / "tmp", 0o1777)
    (rootfs / "data" / "keep.txt").write_text("kept in every layer\n")
    (rootfs / "data" / "remove-me").write_text("deleted by layer 3\n")
    (rootfs / "opq" / "old1.txt").write_text("hidden by the opaque dir\n")
    (rootfs / "opq" / "sub" / "old2.txt").write_text("hidden too\n")


def _fill_second(rootfs: Path) -> None:
    (rootfs / "etc" / "hello.txt").write_text("hello from layer 2\n")
    (rootfs / "data" / "new.txt").write_text("added by layer 2\n")
    os.link(rootfs / "data" / "new.txt", rootfs / "data" / "new-hardlink.txt")
    suid = rootfs / "bin" / "suid-tool"
    suid.write_bytes(b"#!/bin/sh\necho suid\n")
    os.chmod(suid, 0o4755)
    owned = rootfs / "data" / "owned-by-1000"
    owned.write_text("uid 1000\n")
    os.chown(owned, 1000, 1000)
    os.symlink("/nonexistent/target", rootfs / "data" / "dangling")
    (rootfs / "empty").mkdir(mode=0o700)
    xattr_file = rootfs / "data" / "xattr.txt"
    xattr_file.write_text("has a user xattr\n")
    try:
        os.setxattr(xattr_file, "user.berth", b"test")
    except OSError:
        pass  # a filesystem without user xattrs: the file stays, without one


def build_layout(workdir: Path) -> Layout:
    """Build the OCI layout described in the module docstring under ``workdir/layout``."""
    layout_dir = workdir / "layout"
    bundle = workdir / "bundle"
    rootless = ["--rootless"] if os.geteuid() != 0 else []
    run("umoci", "init", "--layout", layout_dir)
    run("umoci", "new", "--image", f"{layout_dir}:v1")
    run("umoci", "unpack", *rootless, "--image", f"{layout_dir}:v1", bundle)
    rootfs = bundle / "rootfs"
    _fill_base(rootfs)
    run("umoci", "repack", "--refresh-bundle", "--history.created", FIXED_TIME,
        "--history.created_by", "busybox base", "--image", f"{layout_dir}:v1", bundle)
    _fill_second(rootfs)
    run("umoci", "repack", "--refresh-bundle", "--history.created", FIXED_TIME,
        "--history.created_by", "add files", "--image", f"{layout_dir}:v1", bundle)
    layer3 = workdir / "layer3.tar"
    layer3.write_bytes(whiteout_layer())
    run("umoci", "raw", "add-layer", "--history.created", FIXED_TIME,
        "--history.created_by", "whiteout and opaque dir", "--image", f"{layout_dir}:v1", layer3)
    run("umoci", "config", "--image", f"{layout_dir}:v1", "--created", FIXED_TIME,
        "--os", "linux", "--architecture", "amd64", "--config.cmd", "/bin/sh",
        "--config.env", "PATH=/bin", "--config.workingdir", "/")
    shutil.rmtree(bundle, ignore_errors=True)

    layout = Layout(layout_dir)
    _add_plain(layout)
    _add_arm64_and_index(layout)
    return layout


def _add_plain(layout: Layout) -> None:
    manifest = layout.manifest("v1")
    layers = []
    for desc in manifest["layers"]:
        raw = gzip.decompress(layout.read_blob(desc["digest"]))
        layers.append(layout.add_blob(raw, OCI_LAYER).descriptor())
    plain = dict(manifest, layers=layers)
    layout.tag("plain", layout.add_blob(_json(plain), OCI_MANIFEST))


def _add_arm64_and_index(layout: Layout) -> None:
    amd64_entry = layout.entry("v1")
    manifest = layout.manifest("v1")
    config = json.loads(layout.read_blob(manifest["config"]["digest"]))
    config.update(architecture="arm64", variant="v8")
    arm_config = layout.add_blob(_json(config), OCI_CONFIG)
    arm_manifest = layout.add_blob(_json(dict(manifest, config=arm_config.descriptor())), OCI_MANIFEST)
    layout.tag("arm64", arm_manifest)
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": amd64_entry["digest"], "size": amd64_entry["size"],
             "platform": {"os": "linux", "architecture": "amd64"}},
            arm_manifest.descriptor(platform={"os": "linux", "architecture": "arm64", "variant": "v8"}),
        ],
    }
    layout.tag("multi", layout.add_blob(_json(index), OCI_INDEX))


def zstd_layout(layout: Layout, workdir: Path) -> Layout:
    """skopeo's zstd recompression of ``v1`` into a second layout, tag ``zstd``."""
    dest = workdir / "layout-zstd"
    run("skopeo", "copy", "-q", "--dest-compress", "--dest-compress-format", "zstd",
        f"oci:{layout.path}:v1", f"oci:{dest}:zstd")
    return Layout(dest)


def push(layout: Layout, tag: str, dest: str, *extra: str, creds: str | None = None) -> None:
    """skopeo copy oci:LAYOUT:TAG docker://DEST (plain HTTP, digests preserved)."""
    argv = ["skopeo", "copy", "-q", "--dest-tls-verify=false", *extra]
    if creds:
        argv += ["--dest-creds", creds]
    run(*argv, f"oci:{layout.path}:{tag}", f"docker://{dest}")


def inspect_raw(ref: str, creds: str | None = None) -> bytes:
    argv = ["skopeo", "inspect", "--raw", "--tls-verify=false"]
    if creds:
        argv += ["--creds", creds]
    proc = subprocess.run([*argv, f"docker://{ref}"], capture_output=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"skopeo inspect {ref} failed: {proc.stderr.decode().strip()}")
    return proc.stdout
