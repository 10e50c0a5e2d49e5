"""The one interface that the v1 and v2 drivers implement (see the package docstring)."""

from __future__ import annotations


class Cgroup:
    """A container's cgroup, in every hierarchy of one cgroup mode.

    ``mode`` is "v1" or "v2". Methods raise ``berth.errors.InvalidArgument`` for a
    value the spec or the kernel refuses, ``FailedPrecondition`` for a state that
    prevents the operation (busy, controller missing, cgroup gone).
    """

    mode = ""

    def create(self) -> None:
        """mkdir -p the cgroup in every hierarchy (idempotent)."""
        raise NotImplementedError

    def add_pid(self, pid: int) -> None:
        """Move a process (all its threads) into the cgroup, in every hierarchy."""
        raise NotImplementedError

    def set(self, resources: dict) -> None:
        """Apply OCI ``linux.resources``."""
        raise NotImplementedError

    def freeze(self) -> None:
        """Freeze every process; returns once the kernel reports the cgroup frozen."""
        raise NotImplementedError

    def thaw(self) -> None:
        raise NotImplementedError

    def frozen(self) -> bool:
        """True if this cgroup itself is frozen (not merely an ancestor, as runc)."""
        raise NotImplementedError

    def pids(self) -> list[int]:
        """Every pid in the cgroup and its sub-cgroups."""
        raise NotImplementedError

    def stats(self) -> dict:
        """runc's ``events --stats`` "data" object (types.Stats), as it appears in JSON."""
        raise NotImplementedError

    def oom_kill_count(self) -> int:
        """Processes killed by the OOM killer in this cgroup (0 without a memory controller)."""
        raise NotImplementedError

    def destroy(self) -> None:
        """Remove the cgroup (and the parents create() made). Kills nothing."""
        raise NotImplementedError

    def paths(self) -> dict[str, str]:
        """What from_state() needs to re-open the cgroup (for state.json)."""
        raise NotImplementedError

    def exists(self) -> bool:
        """True while the cgroup directory exists."""
        raise NotImplementedError
