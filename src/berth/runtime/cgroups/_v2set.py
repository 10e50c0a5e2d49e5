"""Applying OCI linux.resources to a cgroup v2 directory, with runc's conversions.

Order (runc's fs2): pids, memory, io, cpu, devices, cpuset, hugetlb, rdma, unified.

Not applied on v2, without error (runc's fs2 ignores them too): memory.swappiness,
memory.disableOOMKiller, memory.kernel/kernelTCP, blockIO.leafWeight and the leafWeight
of weightDevice, network (net_cls/net_prio have no v2 equivalent), and devices (v2
device control is an eBPF program attached to the cgroup, which Berth does not load).
cpu.realtimeRuntime/realtimePeriod are refused: v2 has no RT group scheduling files.
"""

from __future__ import annotations

import errno

from berth.errors import BerthError, FailedPrecondition, InvalidArgument
from berth.runtime.cgroups import _fs, _spec


def _write(d: str, name: str, value: str) -> None:
    """A write whose ENOENT says which controller is missing."""
    try:
        _fs.write(d, name, value)
    except BerthError as err:
        if getattr(err, "errno", None) != errno.ENOENT:
            raise
        controller = name.split(".", 1)[0]
        available = (_fs.read_or_none(d, "cgroup.controllers") or "").split()
        if controller != "cgroup" and controller not in available:
            raise FailedPrecondition(f"{err} (the {controller} controller is not enabled for this cgroup)") from None
        raise


def set_pids(d: str, r: dict) -> None:
    limit = _spec.pids_limit(r)
    if limit is not None:
        _write(d, "pids.max", limit)


def set_memory(d: str, r: dict) -> None:
    mem = _spec.Memory(r)
    if not mem.is_set():
        return
    if mem.check_before_update and (mem.limit > 0 or mem.swap > 0):
        try:
            usage = _fs.read_uint(d, "memory.current")
        except BerthError:
            usage = None
        if usage is not None and 0 < mem.swap <= usage:
            raise FailedPrecondition(f"cgroup: rejecting memory+swap limit {mem.swap} <= usage {usage}")
        if usage is not None and 0 < mem.limit <= usage:
            raise FailedPrecondition(f"cgroup: rejecting memory limit {mem.limit} <= usage {usage}")
    swap = _spec.swap_to_v2(mem.swap, mem.limit)
    swap_str = _spec.v2_limit(swap)
    if swap_str == "" and swap == 0 and mem.swap > 0:
        swap_str = "0"  # memory == memory+swap: no swap at all
    if swap_str:
        try:
            _fs.write(d, "memory.swap.max", swap_str)
        except BerthError as err:
            # without swap accounting, "unlimited" and "none" are what we have anyway
            if not (getattr(err, "errno", None) == errno.ENOENT and swap_str in ("max", "0")):
                raise
    limit = _spec.v2_limit(mem.limit)
    if limit:
        _write(d, "memory.max", limit)
    low = _spec.v2_limit(mem.reservation)
    if low:
        _write(d, "memory.low", low)


def set_io(d: str, r: dict) -> None:
    b = _spec.section(r, "blockIO")
    weight = _spec.get_uint(b, "weight", "blockIO") or 0
    weights = _spec.device_entries(b, "weightDevice", "weight")
    throttles = [(key, _spec.device_entries(b, name, "rate")) for name, key in (
        ("throttleReadBpsDevice", "rbps"),
        ("throttleWriteBpsDevice", "wbps"),
        ("throttleReadIOPSDevice", "riops"),
        ("throttleWriteIOPSDevice", "wiops"),
    )]
    bfq = _fs.exists(d, "io.bfq.weight")
    # BFQ takes the v1 value range as is; io.weight needs runc's conversion
    if weight:
        if bfq:
            _write(d, "io.bfq.weight", str(weight))
        else:
            _write(d, "io.weight", str(_spec.blkio_to_io_weight(weight)))
    for major, minor, value in weights:
        if not value:
            continue
        if bfq:
            _write(d, "io.bfq.weight", f"{major}:{minor} {value}")
        else:
            _write(d, "io.weight", f"{major}:{minor} {_spec.blkio_to_io_weight(value)}")
    for key, entries in throttles:
        for major, minor, rate in entries:
            _write(d, "io.max", f"{major}:{minor} {key}={rate}")


def set_cpu(d: str, r: dict) -> None:
    c = _spec.section(r, "cpu")
    shares = _spec.get_uint(c, "shares", "cpu") or 0
    quota = _spec.get_int(c, "quota", "cpu") or 0
    period = _spec.get_uint(c, "period", "cpu") or 0
    burst = _spec.get_uint(c, "burst", "cpu")
    idle = _spec.get_int(c, "idle", "cpu")
    if _spec.get_int(c, "realtimeRuntime", "cpu") or _spec.get_uint(c, "realtimePeriod", "cpu"):
        raise InvalidArgument("cgroup: cpu.realtimeRuntime and cpu.realtimePeriod are not supported on cgroup v2")
    if idle is not None:
        _write(d, "cpu.idle", str(idle))
    if shares:
        _write(d, "cpu.weight", str(_spec.shares_to_weight(shares)))
    pending_burst = ""
    if burst is not None:
        try:
            _write(d, "cpu.max.burst", str(burst))
        except BerthError as err:
            # a burst above the current quota is refused until cpu.max is written
            if getattr(err, "errno", None) != errno.EINVAL or not quota:
                raise
            pending_burst = str(burst)
    if quota or period:
        _write(d, "cpu.max", _spec.cpu_max(quota, period))
        if pending_burst:
            _write(d, "cpu.max.burst", pending_burst)


def set_cpuset(d: str, r: dict) -> None:
    c = _spec.section(r, "cpu")
    cpus = _spec.get_str(c, "cpus", "cpu")
    mems = _spec.get_str(c, "mems", "cpu")
    if cpus:
        _write(d, "cpuset.cpus", cpus)
    if mems:
        _write(d, "cpuset.mems", mems)


def set_hugetlb(d: str, r: dict) -> None:
    for size, limit in _spec.hugepage_limits(r):
        _write(d, f"hugetlb.{size}.max", str(limit))
        if _fs.exists(d, f"hugetlb.{size}.rsvd.max"):
            _write(d, f"hugetlb.{size}.rsvd.max", str(limit))


def set_rdma(d: str, r: dict) -> None:
    for line in _spec.rdma_lines(r):
        _write(d, "rdma.max", line)


def set_unified(d: str, r: dict) -> None:
    unified = r.get("unified")
    if not unified:
        return
    if not isinstance(unified, dict):
        raise InvalidArgument("cgroup: linux.resources.unified must be an object of strings")
    for key, value in unified.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise InvalidArgument("cgroup: linux.resources.unified must be an object of strings")
        if "/" in key or key in ("", ".", ".."):
            raise InvalidArgument(f"cgroup: unified resource {key!r} must be a file name (no slashes)")
        if "." not in key:
            raise InvalidArgument(f"cgroup: unified resource {key!r} must be in the form CONTROLLER.PARAMETER")
        # multi-line values (io.max with several devices) go in one write per line
        for line in [part for part in value.split("\n") if part] or [value]:
            _write(d, key, line)


def apply(d: str, r: dict) -> None:
    for setter in (set_pids, set_memory, set_io, set_cpu, set_cpuset, set_hugetlb, set_rdma, set_unified):
        setter(d, r)
