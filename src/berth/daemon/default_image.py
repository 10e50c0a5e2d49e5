"""The embedded default image: ``busybox:latest`` made offline from Debian's busybox-static.

    python -m berth.daemon.default_image [--data-root /var/lib/berth] [--force]

The root filesystem is built in memory and imported with ``berth.image.archive.import_rootfs``
as ``docker.io/library/busybox:latest`` (so ``busybox`` names it):

    /bin/busybox              the static binary
    /bin/sh, /bin/ls, ...     every applet of ``busybox --list-full``, a symlink to /bin/busybox
    /etc/passwd, /etc/group   root and nobody
    /tmp (1777), /root (0700), /dev /proc /sys /home /var ... (empty)

with Docker's busybox config: ``Cmd ["sh"]`` and the usual PATH. The entries carry a
fixed time, so the layer (its diff ID) is the same for the same busybox binary.
Idempotent: when the image exists (and its snapshot is unpacked), nothing is done.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tarfile

NAME = "docker.io/library/busybox:latest"
BUSYBOX = "/bin/busybox"
MTIME = 946684800  # 2000-01-01T00:00:00Z
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CHANGES = ['CMD ["sh"]', f"ENV PATH={PATH}"]
DIRS = {"bin": 0o755, "dev": 0o755, "etc": 0o755, "home": 0o755, "proc": 0o555, "root": 0o700, "sbin": 0o755,
        "sys": 0o555, "tmp": 0o1777, "usr": 0o755, "usr/bin": 0o755, "usr/sbin": 0o755, "var": 0o755,
        "var/spool": 0o755, "var/spool/mail": 0o755, "var/www": 0o755}
PASSWD = b"root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/bin/false\n" \
         b"nobody:x:65534:65534:nobody:/home:/bin/false\n"
GROUP = b"root:x:0:\ndaemon:x:1:\nnobody:x:65534:\n"


def rootfs_tar(busybox: str = BUSYBOX) -> bytes:
    """The image's root filesystem as an uncompressed tar."""
    out = subprocess.run([busybox, "--list-full"], capture_output=True, text=True, check=True).stdout
    applets = sorted({line.strip() for line in out.splitlines() if "/" in line.strip()})
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        def add(info: tarfile.TarInfo, data: bytes | None = None) -> None:
            info.mtime, info.uid, info.gid, info.uname, info.gname = MTIME, 0, 0, "root", "root"
            tar.addfile(info, io.BytesIO(data) if data is not None else None)

        for path, mode in DIRS.items():
            info = tarfile.TarInfo(path)
            info.type, info.mode = tarfile.DIRTYPE, mode
            add(info)
        with open(busybox, "rb") as f:
            data = f.read()
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(data), 0o755
        add(info, data)
        for path, content in (("etc/passwd", PASSWD), ("etc/group", GROUP)):
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(content), 0o644
            add(info, content)
        for applet in applets:
            if applet == "bin/busybox" or os.path.dirname(applet) not in DIRS:
                continue
            info = tarfile.TarInfo(applet)
            info.type, info.linkname, info.mode = tarfile.SYMTYPE, "/bin/busybox", 0o777
            add(info)
    return buf.getvalue()


def ensure(data_root: str = "/var/lib/berth", *, force: bool = False, busybox: str = BUSYBOX) -> tuple[str, bool]:
    """Make sure ``busybox:latest`` exists under ``data_root``: (image ID, whether it was made)."""
    from berth.errors import NotFound
    from berth.image.store import Stores

    with Stores(data_root) as stores:
        if not force:
            try:
                record = stores.images.get(NAME)
            except NotFound:
                record = None
            if record is not None and (record.chain_id is None or stores.snapshotter.exists(record.chain_id)):
                return record.id, False
        if not os.path.exists(busybox):
            raise NotFound(f"{busybox} is missing (apt-get install busybox-static)")
        from berth.image.archive import import_rootfs

        record = import_rootfs(io.BytesIO(rootfs_tar(busybox)), NAME, CHANGES, store_root=stores,
                               message="busybox-static from the host, imported by berth")
        return record.id, True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m berth.daemon.default_image",
                                     description="create the default image busybox:latest offline")
    parser.add_argument("--data-root", default="/var/lib/berth")
    parser.add_argument("--force", action="store_true", help="import it again even if it exists")
    parser.add_argument("--busybox", default=BUSYBOX, help="the static busybox binary (default %(default)s)")
    args = parser.parse_args(argv)
    from berth.errors import BerthError

    try:
        image_id, made = ensure(args.data_root, force=args.force, busybox=args.busybox)
    except (BerthError, OSError, subprocess.CalledProcessError) as e:
        sys.stderr.write(f"default image: {e}\n")
        return 1
    print(f"busybox:latest {'created' if made else 'present'}: {image_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
