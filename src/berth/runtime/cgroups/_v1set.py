"""Applying OCI linux.resources to cgroup v1 hierarchies, in runc's order and manner.

Order (runc's subsystem list): cpuset, devices, memory, cpu, pids, blkio, hugetlb,
net_cls, net_prio, rdma. A resource asked for in a hierarchy that is not mounted is an
error (runc: "cannot set X limit: container could not join or create cgroup").
"""

from __future__ import annotations

import errno
import time

from berth.errors import BerthError, FailedPrecondition, InvalidArgument
from berth.runtime.cgroups import _fs, _spec

MEMSW = "memory.memsw.limit_in_bytes"


def _need(dirs: dict[str, str], controller: str, what: str) -> str:
    d = dirs.get(controller)
    if not d:
        raise FailedPrecondition(f"cgroup: cannot set {what}: the {controller} controller is not mounted")
    return d


# --- cpuset --------------------------------------------------------------------------


def set_cpuset(dirs: dict[str, str], r: dict) -> None:
    c = _spec.section(r, "cpu")
    cpus = _spec.get_str(c, "cpus", "cpu")
    mems = _spec.get_str(c, "mems", "cpu")
    if not cpus and not mems:
        return
    d = _need(dirs, "cpuset", "cpu.cpus/cpu.mems")
    if cpus:
        _fs.write(d, "cpuset.cpus", cpus)
    if mems:
        _fs.write(d, "cpuset.mems", mems)


# --- devices -------------------------------------------------------------------------


def set_devices(dirs: dict[str, str], r: dict) -> None:
    writes = _spec.device_rules(r)
    if writes is None:
        return
    d = _need(dirs, "devices", "devices")
    for name, line in writes:
        _fs.write(d, name, line)


# --- memory --------------------------------------------------------------------------


def _set_limit(d: str, value: int) -> None:
    if value == 0:
        return
    try:
        _fs.write(d, "memory.limit_in_bytes", str(value))
    except BerthError as err:
        if getattr(err, "errno", None) != errno.EBUSY:
            raise
        # the new limit is below what the cgroup uses and cannot be reclaimed
        usage = _fs.read_uint(d, "memory.usage_in_bytes", 0)
        peak = _fs.read_uint(d, "memory.max_usage_in_bytes", 0)
        raise FailedPrecondition(f"{err} (current usage: {usage}, peak usage: {peak})") from None


def _set_swap(d: str, value: int) -> None:
    if value == 0:
        return
    if not _fs.exists(d, MEMSW):
        if value == -1:
            return  # unlimited is all there is without swap accounting
        raise FailedPrecondition("cgroup: cannot set memory.swap: swap accounting is disabled in this kernel "
                                 f"(no {MEMSW})")
    _fs.write(d, MEMSW, str(value))


def _check_usage(d: str, mem: _spec.Memory) -> None:
    if not mem.check_before_update or (mem.limit <= 0 and mem.swap <= 0):
        return
    try:
        usage = _fs.read_uint(d, "memory.usage_in_bytes")
    except BerthError:
        return  # best effort, as runc
    if mem.swap > 0 and mem.swap <= usage:
        raise FailedPrecondition(f"cgroup: rejecting memory+swap limit {mem.swap} <= usage {usage}")
    if mem.limit > 0 and mem.limit <= usage:
        raise FailedPrecondition(f"cgroup: rejecting memory limit {mem.limit} <= usage {usage}")


def set_memory(dirs: dict[str, str], r: dict) -> None:
    mem = _spec.Memory(r)
    if not (mem.is_set() or mem.disable_oom_killer or mem.swappiness is not None):
        return
    d = _need(dirs, "memory", "memory")
    _check_usage(d, mem)
    limit, swap = mem.limit, mem.swap
    if limit == -1 and swap == 0 and _fs.exists(d, MEMSW):
        swap = -1  # unlimited memory with unset swap: unlimited swap too (runc)
    # memsw must stay >= memory at every step: raise swap first when it grows (or is
    # unlimited), lower memory first otherwise.
    if limit != 0 and swap != 0:
        current = _fs.read_uint(d, "memory.limit_in_bytes")
        if swap == -1 or current < swap:
            _set_swap(d, swap)
            _set_limit(d, limit)
            swap = limit = 0
    _set_limit(d, limit)
    _set_swap(d, swap)
    # memory.kernel / kernelTCP: ignored, as runc does
    if mem.reservation:
        _fs.write(d, "memory.soft_limit_in_bytes", str(mem.reservation))
    if mem.disable_oom_killer:
        _fs.write(d, "memory.oom_control", "1")
    if mem.swappiness is not None:
        _fs.write(d, "memory.swappiness", str(mem.swappiness))


# --- cpu -----------------------------------------------------------------------------


def _write_before_quota(d: str, name: str, value: str, quota: int) -> str:
    """Write ``value``; return it if it must wait for the new ``quota`` ('' if written):
    a shorter period, or a burst, can be refused (EINVAL) until the quota is lowered."""
    try:
        _fs.write(d, name, value)
    except BerthError as err:
        if getattr(err, "errno", None) != errno.EINVAL or not quota:
            raise
        return value
    return ""


def set_cpu(dirs: dict[str, str], r: dict) -> None:
    c = _spec.section(r, "cpu")
    shares = _spec.get_uint(c, "shares", "cpu") or 0
    quota = _spec.get_int(c, "quota", "cpu") or 0
    period = _spec.get_uint(c, "period", "cpu") or 0
    burst = _spec.get_uint(c, "burst", "cpu")
    rt_runtime = _spec.get_int(c, "realtimeRuntime", "cpu") or 0
    rt_period = _spec.get_uint(c, "realtimePeriod", "cpu") or 0
    idle = _spec.get_int(c, "idle", "cpu")
    if not (shares or quota or period or burst is not None or rt_runtime or rt_period or idle is not None):
        return
    d = _need(dirs, "cpu", "cpu")
    if shares:
        _fs.write(d, "cpu.shares", str(shares))
        got = _fs.read_uint(d, "cpu.shares")
        if shares > got:
            raise InvalidArgument(f"cgroup: the maximum allowed cpu-shares is {got}")
        if shares < got:
            raise InvalidArgument(f"cgroup: the minimum allowed cpu-shares is {got}")
    pending_period = _write_before_quota(d, "cpu.cfs_period_us", str(period), quota) if period else ""
    pending_burst = _write_before_quota(d, "cpu.cfs_burst_us", str(burst), quota) if burst is not None else ""
    if quota:
        _fs.write(d, "cpu.cfs_quota_us", str(quota))
        if pending_period:
            _fs.write(d, "cpu.cfs_period_us", pending_period)
        if pending_burst:
            _fs.write(d, "cpu.cfs_burst_us", pending_burst)
    if rt_period:
        _fs.write(d, "cpu.rt_period_us", str(rt_period))
    if rt_runtime:
        _fs.write(d, "cpu.rt_runtime_us", str(rt_runtime))
    if idle is not None:
        _fs.write(d, "cpu.idle", str(idle))


# --- pids, blkio, hugetlb, network, rdma ---------------------------------------------


def set_pids(dirs: dict[str, str], r: dict) -> None:
    limit = _spec.pids_limit(r)
    if limit is not None:
        _fs.write(_need(dirs, "pids", "pids.limit"), "pids.max", limit)


def set_blkio(dirs: dict[str, str], r: dict) -> None:
    b = _spec.section(r, "blockIO")
    weight = _spec.get_uint(b, "weight", "blockIO") or 0
    leaf = _spec.get_uint(b, "leafWeight", "blockIO") or 0
    weights = _spec.device_entries(b, "weightDevice", "weight")
    leaves = _spec.device_entries(b, "weightDevice", "leafWeight")
    throttles = [(name, _spec.device_entries(b, key, "rate")) for key, name in (
        ("throttleReadBpsDevice", "blkio.throttle.read_bps_device"),
        ("throttleWriteBpsDevice", "blkio.throttle.write_bps_device"),
        ("throttleReadIOPSDevice", "blkio.throttle.read_iops_device"),
        ("throttleWriteIOPSDevice", "blkio.throttle.write_iops_device"),
    )]
    if not (weight or leaf or weights or any(t for _, t in throttles)):
        return
    d = _need(dirs, "blkio", "blockIO")
    # CFQ's blkio.weight, or BFQ's blkio.bfq.weight on kernels without CFQ (runc does the same)
    prefix = "blkio." if _fs.exists(d, "blkio.weight") else "blkio.bfq."
    if weight:
        _fs.write(d, prefix + "weight", str(weight))
    if leaf:
        _fs.write(d, "blkio.leaf_weight", str(leaf))
    for major, minor, value in weights:
        if value:
            _fs.write(d, prefix + "weight_device", f"{major}:{minor} {value}")
    for major, minor, value in leaves:
        if value:
            _fs.write(d, "blkio.leaf_weight_device", f"{major}:{minor} {value}")
    for name, entries in throttles:
        for major, minor, rate in entries:
            _fs.write(d, name, f"{major}:{minor} {rate}")


def set_hugetlb(dirs: dict[str, str], r: dict) -> None:
    limits = _spec.hugepage_limits(r)
    if not limits:
        return
    d = _need(dirs, "hugetlb", "hugepageLimits")
    for size, limit in limits:
        _fs.write(d, f"hugetlb.{size}.limit_in_bytes", str(limit))
        rsvd = f"hugetlb.{size}.rsvd.limit_in_bytes"
        if _fs.exists(d, rsvd):
            _fs.write(d, rsvd, str(limit))


def set_network(dirs: dict[str, str], r: dict) -> None:
    net = _spec.section(r, "network")
    class_id = _spec.get_uint(net, "classID", "network")
    if class_id:
        _fs.write(_need(dirs, "net_cls", "network.classID"), "net_cls.classid", str(class_id))
    _write_lines(dirs, "net_prio", "network.priorities", "net_prio.ifpriomap", _spec.net_priorities(r))


def set_rdma(dirs: dict[str, str], r: dict) -> None:
    _write_lines(dirs, "rdma", "rdma", "rdma.max", _spec.rdma_lines(r))


def _write_lines(dirs: dict[str, str], controller: str, what: str, name: str, lines: list[str]) -> None:
    """Each of ``lines`` written to ``name`` (one write a line), if there are any."""
    if lines:
        d = _need(dirs, controller, what)
        for line in lines:
            _fs.write(d, name, line)


def apply(dirs: dict[str, str], r: dict) -> None:
    if r.get("unified"):
        raise InvalidArgument("cgroup: linux.resources.unified needs cgroup v2 (this host runs cgroup v1)")
    for setter in (set_cpuset, set_devices, set_memory, set_cpu, set_pids, set_blkio, set_hugetlb,
                   set_network, set_rdma):
        setter(dirs, r)


# --- freezer -------------------------------------------------------------------------


def freeze(d: str) -> None:
    """runc's loop: v1 can stay FREEZING while tasks fork, so retry, thawing now and then."""
    try:
        delay = 0.1
        for i in range(1000):
            if i % 50 == 49:
                _fs.write(d, "freezer.state", "THAWED")
                time.sleep(0.01)
            _fs.write(d, "freezer.state", "FROZEN")
            if i % 25 == 24:
                time.sleep(0.00001)
            if i % 200 == 199:
                time.sleep(delay)
                delay *= 2
            state = _fs.read(d, "freezer.state").strip()
            if state == "FROZEN":
                return
            if state != "FREEZING":
                raise FailedPrecondition(f"cgroup: unexpected freezer state {state!r} while freezing {d}")
        raise FailedPrecondition(f"cgroup: unable to freeze {d}: still FREEZING")
    except BaseException:
        try:
            _fs.write(d, "freezer.state", "THAWED")  # never leave it half frozen
        except BerthError:
            pass
        raise


def frozen(d: str) -> bool:
    for _ in range(10000):
        try:
            state = _fs.read(d, "freezer.state").strip()
        except FileNotFoundError:
            return False
        if state == "THAWED":
            return False
        if state == "FROZEN":
            # frozen by us, or only through a frozen ancestor? (runc: the latter is "thawed")
            own = _fs.read_or_none(d, "freezer.self_freezing")
            return own is None or own.strip() == "1"
        time.sleep(0.001)  # FREEZING: wait for a stable state
    return True
