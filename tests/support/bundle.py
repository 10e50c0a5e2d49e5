"""OCI bundles for tests and benchmarks: a busybox root filesystem and a runc-style config.

    make_rootfs(path)                      build a busybox root filesystem at ``path``
    make_bundle(dir, args=[...], **over)   a bundle at ``dir``: ``rootfs/`` (a copy of one
                                           rootfs built once per process) + ``config.json``
    Bundle.path / .rootfs / .config / .save()

The config is ``default_spec()`` (what ``runc spec`` writes) with ``process.terminal``
false, the given ``args``, and a unique ``linux.cgroupsPath`` under ``CGROUP_PARENT``,
a cgroup parent private to this process (so one test session, or one xdist worker).
Keyword overrides are merged into the config: dicts merge recursively, any other value
replaces, and ``None`` removes the key, e.g.
``make_bundle(d, ["sh"], hostname="box", linux={"resources": None})``.
"""

from __future__ import annotations

import atexit
import copy
import itertools
import json
import os
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Any

from berth.runtime.spec_cmd import default_spec

BUSYBOX = "/bin/busybox"

#: cgroup parent of every bundle made by this process, e.g. ``/berth-test-1a2b3c4d``.
CGROUP_PARENT = f"/berth-test-{secrets.token_hex(4)}"

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
app:x:1000:1000:app:/home/app:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""

GROUP = """\
root:x:0:
tty:x:5:
app:x:1000:
nogroup:x:65534:
"""

_counter = itertools.count(1)
_template: str | None = None


def make_rootfs(path: str | os.PathLike[str]) -> None:
    """A minimal root filesystem: static busybox and its applets in /bin, users, empty mount points."""
    root = os.fspath(path)
    if not os.path.exists(BUSYBOX):
        raise FileNotFoundError(f"{BUSYBOX} not found: install Debian's busybox-static (scripts/setup.sh)")
    os.makedirs(root, exist_ok=True)
    for d in ("bin", "etc", "proc", "sys", "dev", "root", "home/app", "var", "run"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    os.chmod(os.path.join(root, "root"), 0o700)
    if os.geteuid() == 0:
        os.chown(os.path.join(root, "home/app"), 1000, 1000)

    tmp = os.path.join(root, "tmp")
    os.makedirs(tmp, exist_ok=True)
    os.chmod(tmp, 0o1777)

    bindir = os.path.join(root, "bin")
    shutil.copy2(BUSYBOX, os.path.join(bindir, "busybox"))
    applets = subprocess.run([BUSYBOX, "--list"], check=True, capture_output=True, text=True).stdout.split()
    for applet in applets:
        if applet == "busybox" or "/" in applet:
            continue
        link = os.path.join(bindir, applet)
        if not os.path.lexists(link):
            os.symlink("busybox", link)

    etc = os.path.join(root, "etc")
    _write(os.path.join(etc, "passwd"), PASSWD, 0o644)
    _write(os.path.join(etc, "group"), GROUP, 0o644)
    _write(os.path.join(etc, "hostname"), "berth\n", 0o644)


def _write(path: str, text: str, mode: int) -> None:
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def rootfs_template() -> str:
    """The one rootfs built by this process (lazily, removed at exit); bundles copy it."""
    global _template
    if _template is None or not os.path.isdir(_template):
        base = tempfile.mkdtemp(prefix="berth-rootfs-")
        atexit.register(shutil.rmtree, base, True)
        path = os.path.join(base, "rootfs")
        make_rootfs(path)
        _template = path
    return _template


def unique_cgroup_path(name: str = "c") -> str:
    """A cgroupsPath under this process's ``CGROUP_PARENT`` that no other bundle uses."""
    return f"{CGROUP_PARENT}/{name}-{next(_counter)}"


def merge(base: dict, overrides: dict) -> dict:
    """Merge ``overrides`` into ``base`` in place: dicts recursively, None deletes, else replace."""
    for key, value in overrides.items():
        if value is None:
            base.pop(key, None)
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


@dataclass
class Bundle:
    path: str
    config: dict

    @property
    def rootfs(self) -> str:
        return os.path.join(self.path, self.config.get("root", {}).get("path", "rootfs"))

    @property
    def config_path(self) -> str:
        return os.path.join(self.path, "config.json")

    @property
    def cgroups_path(self) -> str | None:
        return self.config.get("linux", {}).get("cgroupsPath")

    def new_cgroup(self, name: str | None = None) -> str:
        """Give the next container from this bundle its own cgroupsPath, and save."""
        path = unique_cgroup_path(name or os.path.basename(self.path))
        self.config.setdefault("linux", {})["cgroupsPath"] = path
        self.save()
        return path

    def save(self) -> None:
        """Rewrite config.json from ``self.config``."""
        tmp = self.config_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.config, f, indent="\t")
        os.replace(tmp, self.config_path)


def make_bundle(
    dir: str | os.PathLike[str],
    args: list[str] | None = None,
    *,
    name: str | None = None,
    rootless: bool = False,
    **overrides: Any,
) -> Bundle:
    """Create (or reuse the rootfs of) the bundle at ``dir`` and write its config.json.

    ``name`` names the cgroup leaf (default: the directory's name); a counter keeps it unique.
    """
    path = os.path.abspath(os.fspath(dir))
    os.makedirs(path, exist_ok=True)
    rootfs = os.path.join(path, "rootfs")
    if not os.path.exists(rootfs):
        subprocess.run(["cp", "-a", rootfs_template(), rootfs], check=True)
    config = default_spec(rootless=rootless)
    config["process"]["terminal"] = False
    if args is not None:
        config["process"]["args"] = list(args)
    config["linux"]["cgroupsPath"] = unique_cgroup_path(name or os.path.basename(path))
    merge(config, overrides)
    bundle = Bundle(path=path, config=config)
    bundle.save()
    return bundle
