"""Resolve a path inside a root the way the kernel would after chroot, so that no
symlink inside an untrusted root filesystem can send a mount outside it."""

from __future__ import annotations

import os

MAX_SYMLINKS = 255


def secure_join(root: str, unsafe: str) -> str:
    """``root`` + ``unsafe`` with every symlink resolved as if ``root`` were ``/``."""
    parts = [p for p in unsafe.split("/") if p and p != "."]
    resolved: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        try:
            target = os.readlink(candidate)
        except OSError:  # not a link, or does not exist yet
            resolved.append(part)
            continue
        links += 1
        if links > MAX_SYMLINKS:
            raise OSError(40, f"too many levels of symbolic links: {unsafe}")
        if target.startswith("/"):
            resolved = []
        parts[:0] = [p for p in target.split("/") if p and p != "."]
    return os.path.join(root, *resolved) if resolved else root
