"""Namespace kinds, their clone flags and /proc names, and joining by path."""

from __future__ import annotations

import os

from berth._sys import libc

FLAGS = {
    "pid": libc.CLONE_NEWPID,
    "network": libc.CLONE_NEWNET,
    "mount": libc.CLONE_NEWNS,
    "ipc": libc.CLONE_NEWIPC,
    "uts": libc.CLONE_NEWUTS,
    "user": libc.CLONE_NEWUSER,
    "cgroup": libc.CLONE_NEWCGROUP,
    "time": libc.CLONE_NEWTIME,
}
PROC_NAMES = {
    "pid": "pid", "network": "net", "mount": "mnt", "ipc": "ipc",
    "uts": "uts", "user": "user", "cgroup": "cgroup", "time": "time",
}
# join order: user first (it grants the rights for the rest), mount last (it moves the root)
JOIN_ORDER = ("user", "cgroup", "ipc", "uts", "network", "pid", "time", "mount")


def configured(config: dict) -> dict[str, str]:
    """{kind: path-or-""} from linux.namespaces."""
    return {ns["type"]: ns.get("path") or "" for ns in (config.get("linux") or {}).get("namespaces") or []}


def open_paths(paths: dict[str, str]) -> list[tuple[str, int]]:
    """Open every namespace file to join, before joining any (paths are host paths)."""
    opened = []
    for kind in JOIN_ORDER:
        path = paths.get(kind)
        if path:
            try:
                opened.append((kind, os.open(path, os.O_RDONLY | os.O_CLOEXEC)))
            except OSError as exc:
                raise OSError(exc.errno, f"open namespace {kind} {path}: {exc.strerror}") from None
    return opened


def join(opened: list[tuple[str, int]]) -> None:
    for kind, fd in opened:
        try:
            libc.setns(fd, FLAGS[kind])
        except OSError as exc:
            raise OSError(exc.errno, f"join {kind} namespace: {os.strerror(exc.errno)}") from None
        os.close(fd)


def unshare_flags(kinds: dict[str, str], exclude: tuple[str, ...] = ()) -> int:
    flags = 0
    for kind, path in kinds.items():
        if not path and kind not in exclude:
            flags |= FLAGS[kind]
    return flags


def write_id_maps(pid: int, linux: dict, deny_setgroups: bool) -> None:
    """Write uid_map/gid_map of a child that just unshared its user namespace."""
    def fmt(entries: list[dict]) -> bytes:
        return "".join(f"{m['containerID']} {m['hostID']} {m['size']}\n" for m in entries).encode()

    with open(f"/proc/{pid}/uid_map", "wb") as f:
        f.write(fmt(linux.get("uidMappings") or []))
    if deny_setgroups:
        with open(f"/proc/{pid}/setgroups", "wb") as f:
            f.write(b"deny")
    with open(f"/proc/{pid}/gid_map", "wb") as f:
        f.write(fmt(linux.get("gidMappings") or []))


def loopback_up() -> None:
    """Bring up ``lo`` in a new network namespace, as runc does (its "loopback" network)."""
    import _socket  # not ``socket``: it imports enum (~5 ms on every container start)
    import fcntl

    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        ifreq = fcntl.ioctl(sock.fileno(), siocgifflags, b"lo".ljust(40, b"\0"))
        flags = int.from_bytes(ifreq[16:18], "little")
        if not flags & iff_up:
            fcntl.ioctl(sock.fileno(), siocsifflags, ifreq[:16] + (flags | iff_up).to_bytes(2, "little") + ifreq[18:])
    finally:
        sock.close()
