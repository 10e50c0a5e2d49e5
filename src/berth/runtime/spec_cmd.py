"""``berth-runtime spec``: the starter ``config.json`` that ``runc spec`` writes.

``default_spec()`` returns exactly what runc 1.1 writes (``runc spec`` and
``runc spec --rootless``), key order included, except ``ociVersion``, which is ours.
``write_spec()`` writes it the way runc does: tab-indented, no trailing newline,
mode 0666 less the umask, and never over an existing file.

Import-light on purpose: the CLI imports this module on every ``spec`` call.
"""

from __future__ import annotations

from berth._sys import jsonfast as json
import os

from berth import OCI_SPEC_VERSION
from berth.errors import AlreadyExists, NotFound

OCI_VERSION = OCI_SPEC_VERSION
SPEC_CONFIG = "config.json"

_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]

_MASKED_PATHS = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
]

_READONLY_PATHS = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
]


def default_spec(rootless: bool = False) -> dict:
    """A fresh copy of runc's starter spec (with ``rootless``, runc's ``ToRootless`` applied)."""
    spec: dict = {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": True,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "TERM=xterm",
            ],
            "cwd": "/",
            "capabilities": {
                "bounding": list(_CAPS),
                "effective": list(_CAPS),
                "permitted": list(_CAPS),
                "ambient": list(_CAPS),
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "runc",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {
                "destination": "/dev",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
            },
            {
                "destination": "/dev/pts",
                "type": "devpts",
                "source": "devpts",
                "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
            },
            {
                "destination": "/dev/shm",
                "type": "tmpfs",
                "source": "shm",
                "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
            },
            {
                "destination": "/dev/mqueue",
                "type": "mqueue",
                "source": "mqueue",
                "options": ["nosuid", "noexec", "nodev"],
            },
            {
                "destination": "/sys",
                "type": "sysfs",
                "source": "sysfs",
                "options": ["nosuid", "noexec", "nodev", "ro"],
            },
            {
                "destination": "/sys/fs/cgroup",
                "type": "cgroup",
                "source": "cgroup",
                "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
            },
        ],
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [
                {"type": "pid"},
                {"type": "network"},
                {"type": "ipc"},
                {"type": "uts"},
                {"type": "mount"},
            ],
            "maskedPaths": list(_MASKED_PATHS),
            "readonlyPaths": list(_READONLY_PATHS),
        },
    }
    if rootless:
        _to_rootless(spec)
    return spec


def _to_rootless(spec: dict) -> None:
    """runc's ``specconv.ToRootless``: user namespace, no network namespace, no resources."""
    linux = spec["linux"]
    namespaces = [ns for ns in linux["namespaces"] if ns["type"] not in ("network", "user")]
    namespaces.append({"type": "user"})
    # Go's struct field order puts the mappings first: rebuild the dict to match.
    rebuilt: dict = {
        "uidMappings": [{"containerID": 0, "hostID": os.geteuid(), "size": 1}],
        "gidMappings": [{"containerID": 0, "hostID": os.getegid(), "size": 1}],
    }
    for key, value in linux.items():
        if key == "resources":
            continue
        rebuilt[key] = namespaces if key == "namespaces" else value
    spec["linux"] = rebuilt

    mounts = []
    for mount in spec["mounts"]:
        if os.path.normpath(mount["destination"]) == "/sys":
            mounts.append(
                {
                    "destination": "/sys",
                    "type": "none",
                    "source": "/sys",
                    "options": ["rbind", "nosuid", "noexec", "nodev", "ro"],
                }
            )
            continue
        if "options" in mount:
            options = [o for o in mount["options"] if not o.startswith(("gid=", "uid="))]
            if options:
                mount["options"] = options
            else:
                del mount["options"]
        mounts.append(mount)
    spec["mounts"] = mounts


def write_spec(bundle: str, rootless: bool) -> None:
    """Write the starter spec to ``BUNDLE/config.json`` (``bundle`` empty: the current directory).

    Raises ``NotFound`` if the bundle directory does not exist and ``AlreadyExists``,
    with runc's words, if ``config.json`` is already there.
    """
    directory = bundle or "."
    if not os.path.isdir(directory):
        raise NotFound(f"chdir {bundle}: no such file or directory")
    path = os.path.join(directory, SPEC_CONFIG)
    data = json.dumps(default_spec(rootless), indent="\t").encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    except FileExistsError:
        raise AlreadyExists(f"File {SPEC_CONFIG} exists. Remove it first") from None
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
