"""Linux capabilities of the container process (``process.capabilities``).

The order, as runc's finalizeNamespace and libcontainer/capabilities do it:

    validate_caps(caps)              in ``create``, before forking
    drop_bounding_set(bounding)      as root, before the uid/gid switch
    prctl(PR_SET_KEEPCAPS, 1); setgroups/setresgid/setresuid; prctl(PR_SET_KEEPCAPS, 0)
    apply_caps(caps)                 bounding again, capset, then ambient

runc's behaviour, mirrored:

- Names need the ``CAP_`` prefix. Unknown names, and names this kernel doesn't have
  (above /proc/sys/kernel/cap_last_cap), are ignored with a warning, not an error.
- ``process.capabilities`` absent (``None``) leaves the capabilities untouched
  (runc >= 1.2); a set missing from it is the empty set.
- The bounding set is only dropped while CAP_SETPCAP is effective, and EINVAL from
  PR_CAPBSET_DROP (a capability the kernel lacks) is ignored.
- Ambient capabilities are cleared, then raised one by one; a raise the kernel refuses
  (the capability is not in both permitted and inheritable) is a warning.

Errors: ``InvalidArgument`` for a malformed ``process.capabilities`` (or an effective
capability outside permitted, which the kernel always refuses), ``FailedPrecondition``
when the kernel refuses a change.

Import-light: the ctypes bindings of ``berth._sys.libc`` are imported on first use.
"""

from __future__ import annotations

import errno as _errno
import os
import sys

from berth.errors import FailedPrecondition, InvalidArgument

TYPE_CHECKING = False
if TYPE_CHECKING:  # without importing typing at run time
    from collections.abc import Callable, Iterable, Mapping

    Warn = Callable[[str], None]

# the capability numbers are the indexes (linux/capability.h)
CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)
CAP_NUMBERS: dict[str, int] = {name: number for number, name in enumerate(CAPABILITIES)}
CAP_SETPCAP = CAP_NUMBERS["CAP_SETPCAP"]

SETS: tuple[str, ...] = ("bounding", "effective", "inheritable", "permitted", "ambient")

_CAP_LAST_CAP = "/proc/sys/kernel/cap_last_cap"
_last_cap: int | None = None


def last_cap() -> int:
    """The highest capability number of the running kernel.

    The first call also loads the libc bindings, so that the container's init can call
    it before pivot_root and need no file afterwards.
    """
    global _last_cap
    if _last_cap is None:
        from berth._sys import libc  # noqa: F401 - loaded for the calls after pivot_root

        try:
            with open(_CAP_LAST_CAP, "rb") as f:
                _last_cap = int(f.read().strip())
        except (OSError, ValueError):
            _last_cap = _probe_last_cap()
    return _last_cap


def _probe_last_cap() -> int:
    from berth._sys import libc

    last = -1
    for number in range(64):
        try:
            libc.prctl(libc.PR_CAPBSET_READ, number)
        except OSError:
            break
        last = number
    return last if last >= 0 else len(CAPABILITIES) - 1


def known_capabilities() -> list[str]:
    """Every capability name Berth knows, in number order (``features``)."""
    return list(CAPABILITIES)


def _number(name: object) -> int | None:
    """The number of a capability this kernel has, else None (runc: ignored)."""
    number = CAP_NUMBERS.get(name) if isinstance(name, str) else None
    if number is None or number > last_cap():
        return None
    return number


def caps_mask(names: Iterable[str] | None) -> int:
    """The bit mask of ``names``; unknown and unavailable names are left out."""
    mask = 0
    for name in names or ():
        number = _number(name)
        if number is not None:
            mask |= 1 << number
    return mask


def ignored_caps(process_caps: Mapping[str, object] | None) -> list[str]:
    """The names in ``process_caps`` that are unknown or not in this kernel, sorted."""
    if not isinstance(process_caps, dict):
        return []
    ignored = set()
    for key in SETS:
        for name in process_caps.get(key) or ():
            if _number(name) is None:
                ignored.add(name)
    return sorted(ignored)


def _stderr_warn(message: str) -> None:
    sys.stderr.write(f"berth: warning: {message}\n")


def validate_caps(process_caps: Mapping[str, object] | None, warn: Warn | None = None) -> None:
    """Check ``process.capabilities`` before anything is forked.

    Unknown or unavailable names are not errors (runc): they are passed to ``warn``
    (default: a line on stderr) and ignored later.
    """
    if process_caps is None:
        return
    if not isinstance(process_caps, dict):
        raise InvalidArgument("capabilities: process.capabilities must be an object")
    for key in SETS:
        names = process_caps.get(key)
        if names is None:
            continue
        if not isinstance(names, list):
            raise InvalidArgument(f"capabilities: {key} must be a list of names")
        for name in names:
            if not isinstance(name, str):
                raise InvalidArgument(f"capabilities: {key} has {name!r}, not a capability name")
    effective = process_caps.get("effective") or []
    permitted = caps_mask(process_caps.get("permitted"))
    for name in effective:
        number = _number(name)
        if number is not None and not permitted & (1 << number):
            # the kernel refuses it (capset: effective must be a subset of permitted)
            raise InvalidArgument(f'capabilities: effective capability "{name}" is not in the permitted set')
    ignored = ignored_caps(process_caps)
    if ignored:
        (warn or _stderr_warn)("ignoring unknown or unavailable capabilities: [" + " ".join(ignored) + "]")


def drop_bounding_set(names: list[str] | None) -> None:
    """Drop every capability not in ``names`` from the bounding set (``None``: all).

    As runc (moby/sys/capability) does it: only while CAP_SETPCAP is effective,
    ignoring EINVAL for capabilities this kernel lacks.
    """
    from berth._sys import libc

    keep = caps_mask(names)
    effective = libc.capget()[0]
    if not effective & (1 << CAP_SETPCAP):
        return
    for number in range(last_cap() + 1):
        if keep & (1 << number):
            continue
        try:
            libc.prctl(libc.PR_CAPBSET_DROP, number)
        except OSError as e:
            if e.errno == _errno.EINVAL:
                continue
            name = CAPABILITIES[number] if number < len(CAPABILITIES) else str(number)
            raise FailedPrecondition(
                f"capabilities: can't drop {name} from the bounding set: {os.strerror(e.errno or 0)}"
            ) from None


def apply_caps(caps: Mapping[str, list[str] | None] | None, warn: Warn | None = None) -> None:
    """Set the process's capabilities from ``process.capabilities``.

    Call after the uid/gid switch (done with PR_SET_KEEPCAPS, cleared again). Does
    what runc's ApplyCaps does: the bounding set again (a no-op without CAP_SETPCAP),
    capset(effective, permitted, inheritable), then the ambient set: cleared and each
    capability raised; a refused raise goes to ``warn`` (default: stderr). ``None``
    leaves everything as it is.
    """
    if caps is None:
        return
    from berth._sys import libc

    drop_bounding_set(caps.get("bounding"))
    try:
        libc.capset(
            caps_mask(caps.get("effective")), caps_mask(caps.get("permitted")), caps_mask(caps.get("inheritable"))
        )
    except OSError as e:
        raise FailedPrecondition(f"capabilities: can't apply capabilities: {os.strerror(e.errno or 0)}") from None

    try:
        libc.prctl(libc.PR_CAP_AMBIENT, libc.PR_CAP_AMBIENT_CLEAR_ALL)
    except OSError as e:
        # EINVAL: a kernel without ambient capabilities (< 4.3); runc goes on
        if e.errno != _errno.EINVAL:
            raise FailedPrecondition(
                f"capabilities: can't clear the ambient set: {os.strerror(e.errno or 0)}"
            ) from None
    for name in caps.get("ambient") or ():
        number = _number(name)
        if number is None:
            continue
        try:
            libc.prctl(libc.PR_CAP_AMBIENT, libc.PR_CAP_AMBIENT_RAISE, number)
        except OSError as e:
            (warn or _stderr_warn)(f"can't raise ambient capability {name}: {os.strerror(e.errno or 0)}")
