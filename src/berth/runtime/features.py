"""The runtime-spec "features" document (``berth-runtime features``, as ``runc features``).

Keys and their order follow runtime-spec's specs-go/features (what runc prints);
lists are sorted where runc sorts them. Everything is what Berth recognises, not what
the host has, except the recursive mount options (``rro`` and the like need
mount_setattr, Linux 5.12) and the seccomp ``supportedFlags`` and libseccomp version,
which are read from the host as runc does.
"""

from __future__ import annotations

import os

from berth import OCI_SPEC_VERSION

TYPE_CHECKING = False
if TYPE_CHECKING:  # without importing typing at run time
    from typing import Any

OCI_VERSION_MIN = "1.0.0"

HOOKS: tuple[str, ...] = (
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
)

NAMESPACES: tuple[str, ...] = ("cgroup", "ipc", "mount", "network", "pid", "user", "uts")

LIBSECCOMP_VERSION_ANNOTATION = "io.github.seccomp.libseccomp.version"


def _kernel_at_least(major: int, minor: int, release: str | None = None) -> bool:
    """Whether the running kernel (``uname -r``) is at least ``major.minor``."""
    parts = (release if release is not None else os.uname().release).split(".")
    numbers = []
    for part in parts[:2]:
        digits = ""
        for ch in part:
            if not ch.isdigit():
                break
            digits += ch
        numbers.append(int(digits) if digits else 0)
    while len(numbers) < 2:
        numbers.append(0)
    return (numbers[0], numbers[1]) >= (major, minor)


def mount_options() -> list[str]:
    """The mount options the runtime implements, sorted as runc does.

    Taken from the runtime's own table (``linux.mountopts``); the recursive ones
    (``rro``, ``rnosuid``, ...) need mount_setattr(2), so only on Linux 5.12 and later.
    Options that are accepted but ignored (``tmpcopyup``) are left out.
    """
    from berth.runtime.linux import mountopts

    options = set(mountopts.FLAG_OPTIONS) | set(mountopts.PROPAGATION_OPTIONS)
    if _kernel_at_least(5, 12):
        options |= set(mountopts.RECURSIVE_OPTIONS)
    return sorted(options)


def features_json() -> dict[str, Any]:
    """The features document, ready for ``json.dumps(..., indent=4)``."""
    from berth.errors import Unavailable
    from berth.runtime.linux import capabilities, seccomp

    annotations: dict[str, str] = {}
    seccomp_features: dict[str, object]
    try:
        version = seccomp.libseccomp_version()
        flags = seccomp.supported_flags()
    except Unavailable:
        seccomp_features = {"enabled": False}
    else:
        seccomp_features = {
            "enabled": True,
            "actions": list(seccomp.SUPPORTED_ACTIONS),
            "operators": list(seccomp.SUPPORTED_OPERATORS),
            "archs": list(seccomp.SUPPORTED_ARCHES),
            "knownFlags": list(seccomp.KNOWN_FLAGS),
            "supportedFlags": flags,
        }
        annotations[LIBSECCOMP_VERSION_ANNOTATION] = version

    return {
        "ociVersionMin": OCI_VERSION_MIN,
        "ociVersionMax": OCI_SPEC_VERSION,
        "hooks": list(HOOKS),
        "mountOptions": mount_options(),
        "linux": {
            "namespaces": list(NAMESPACES),
            "capabilities": capabilities.known_capabilities(),
            "cgroup": {"v1": True, "v2": True, "systemd": False, "systemdUser": False},
            "seccomp": seccomp_features,
            "apparmor": {"enabled": False},
            "selinux": {"enabled": False},
            "intelRdt": {"enabled": False},
            "mountExtensions": {"idmap": {"enabled": False}},
        },
        "annotations": dict(sorted(annotations.items())),
        "potentiallyUnsafeConfigAnnotations": [],
    }
