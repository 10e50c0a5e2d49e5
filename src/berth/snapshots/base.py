"""The snapshotter interface, in containerd's model.

A snapshot is a filesystem state with a parent (or none: the empty directory).

- ``prepare(key, parent)`` makes an *active* snapshot: mounts that start with the
  parent's content and capture changes. ``commit(name, key)`` turns it into a
  *committed* snapshot called ``name`` (the active one is gone): only committed
  snapshots can be parents. Image layers are committed under their chain IDs.
- ``view(key, parent)`` makes a read-only *view* of a committed snapshot; it can never
  be committed.
- ``remove(key)`` drops any snapshot without children.

Keys and names share one namespace. Errors: ``NotFound`` (no such key or parent),
``AlreadyExists`` (key or name taken), ``FailedPrecondition`` (the wrong kind of
snapshot for the call, or it still has children), ``InvalidArgument`` (a malformed key).
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from berth.errors import InvalidArgument
from berth.snapshots.mount import Mount


class Kind(str, enum.Enum):
    ACTIVE = "active"
    VIEW = "view"
    COMMITTED = "committed"


@dataclass(frozen=True)
class Info:
    kind: Kind
    name: str  # the key of an active or view snapshot, the name of a committed one
    parent: str | None
    labels: Mapping[str, str] = field(default_factory=dict)
    created: float = 0.0  # seconds since the epoch
    updated: float = 0.0


@dataclass(frozen=True)
class Usage:
    """Disk used by the snapshot itself (not its parents)."""

    size: int  # bytes (allocated blocks)
    inodes: int


class Snapshotter(abc.ABC):
    """What every snapshotter offers; the conformance suite in tests/unit checks it."""

    @abc.abstractmethod
    def prepare(self, key: str, parent: str | None = None, labels: Mapping[str, str] | None = None) -> list[Mount]:
        """An active snapshot ``key`` on top of committed ``parent``; its mounts."""

    @abc.abstractmethod
    def view(self, key: str, parent: str | None = None, labels: Mapping[str, str] | None = None) -> list[Mount]:
        """A read-only view ``key`` of committed ``parent``; its mounts."""

    @abc.abstractmethod
    def mounts(self, key: str) -> list[Mount]:
        """The mounts of active or view snapshot ``key`` again."""

    @abc.abstractmethod
    def commit(self, name: str, key: str, labels: Mapping[str, str] | None = None) -> None:
        """Turn active snapshot ``key`` into committed snapshot ``name``."""

    @abc.abstractmethod
    def remove(self, key: str) -> None:
        """Remove snapshot ``key`` (of any kind) and its files; refused while it has children."""

    @abc.abstractmethod
    def stat(self, key: str) -> Info:
        """What snapshot ``key`` is."""

    @abc.abstractmethod
    def walk(self) -> Iterator[Info]:
        """Every snapshot, parents before children."""

    @abc.abstractmethod
    def usage(self, key: str) -> Usage:
        """Disk used by snapshot ``key`` alone."""

    def exists(self, key: str) -> bool:
        from berth.errors import NotFound

        try:
            self.stat(key)
        except NotFound:
            return False
        return True

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the snapshotter holds open (a database connection)."""


def check_key(key: str, what: str = "key") -> str:
    """A snapshot key or name: non-empty printable text without NUL or newline."""
    if not isinstance(key, str) or not key or len(key) > 1024 or any(c in key for c in "\0\n\r"):
        raise InvalidArgument(f"invalid snapshot {what}: {key!r}")
    return key
