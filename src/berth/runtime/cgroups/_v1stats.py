"""Statistics from cgroup v1 hierarchies, read as runc's fs driver reads them."""

from __future__ import annotations

import os

from berth.runtime.cgroups import _fs, _stats


def _ints(text: str | None) -> list[int]:
    return [int(x) for x in text.split()] if text else []


def cpu(cpuacct: str | None, cpu_dir: str | None) -> dict:
    total = kernel = user = 0
    percpu: list[int] = []
    percpu_kernel: list[int] = []
    percpu_user: list[int] = []
    if cpuacct:
        total = _fs.read_uint(cpuacct, "cpuacct.usage", 0)
        percpu = _ints(_fs.read_or_none(cpuacct, "cpuacct.usage_percpu"))
        usage_all = _fs.read_or_none(cpuacct, "cpuacct.usage_all")
        if usage_all:
            # "cpu user system" header, then one line per cpu
            for line in usage_all.splitlines()[1:]:
                parts = line.split()
                if len(parts) == 3:
                    percpu_user.append(int(parts[1]))
                    percpu_kernel.append(int(parts[2]))
        ticks = _fs.read_flat_keyed(cpuacct, "cpuacct.stat") or {}
        hz = os.sysconf("SC_CLK_TCK") or 100
        user = ticks.get("user", 0) * 1_000_000_000 // hz
        kernel = ticks.get("system", 0) * 1_000_000_000 // hz
    throttle = (_fs.read_flat_keyed(cpu_dir, "cpu.stat") or {}) if cpu_dir else {}
    return _stats.cpu(total, percpu, percpu_kernel, percpu_user, kernel, user,
                      throttle.get("nr_periods", 0), throttle.get("nr_throttled", 0),
                      throttle.get("throttled_time", 0))


def cpuset(d: str | None) -> dict:
    if not d:
        return _stats.cpuset()
    cpus = _fs.read_or_none(d, "cpuset.cpus")
    mems = _fs.read_or_none(d, "cpuset.mems")
    flags: dict[str, int] = {}
    for key in _stats.CPUSET_FLAGS:
        text = _fs.read_or_none(d, "cpuset." + key)
        if text is not None and text.strip():
            flags[key] = int(text)  # sched_relax_domain_level may be -1
    return _stats.cpuset(_stats.parse_id_list(cpus) if cpus else None,
                         _stats.parse_id_list(mems) if mems else None, flags)


def _memory_entry(d: str, prefix: str, optional: bool) -> dict:
    if optional and not _fs.exists(d, prefix + ".usage_in_bytes"):
        return _stats.memory_entry()  # swap or kmem accounting is off in this kernel
    return _stats.memory_entry(
        limit=_fs.read_uint(d, prefix + ".limit_in_bytes", 0),
        usage=_fs.read_uint(d, prefix + ".usage_in_bytes", 0),
        max_=_fs.read_uint(d, prefix + ".max_usage_in_bytes", 0),
        failcnt=_fs.read_uint(d, prefix + ".failcnt", 0),
    )


def memory(d: str | None) -> dict:
    if not d:
        return _stats.memory()
    raw = _fs.read_flat_keyed(d, "memory.stat") or {}
    return _stats.memory(
        cache=raw.get("cache", 0),
        usage=_memory_entry(d, "memory", False),
        swap=_memory_entry(d, "memory.memsw", True),
        kernel=_memory_entry(d, "memory.kmem", True),
        kernel_tcp=_memory_entry(d, "memory.kmem.tcp", True),
        raw=raw,
    )


def pids(d: str | None) -> dict:
    if not d:
        return _stats.pids()
    current = _fs.read_uint(d, "pids.current", 0)
    limit_text = (_fs.read_or_none(d, "pids.max") or "").strip()
    limit = int(limit_text) if limit_text and limit_text != "max" else 0  # "max": no limit, 0 as runc
    return _stats.pids(current, limit)


# runc's order: the first group whose first file has entries wins
_BLKIO_GROUPS = (
    (("blkio.bfq.sectors_recursive", "sectorsRecursive"),
     ("blkio.bfq.io_service_time_recursive", "ioServiceTimeRecursive"),
     ("blkio.bfq.io_wait_time_recursive", "ioWaitTimeRecursive"),
     ("blkio.bfq.io_merged_recursive", "ioMergedRecursive"),
     ("blkio.bfq.io_queued_recursive", "ioQueueRecursive"),
     ("blkio.bfq.time_recursive", "ioTimeRecursive"),
     ("blkio.bfq.io_serviced_recursive", "ioServicedRecursive"),
     ("blkio.bfq.io_service_bytes_recursive", "ioServiceBytesRecursive")),
    (("blkio.bfq.io_serviced_recursive", "ioServicedRecursive"),
     ("blkio.bfq.io_service_bytes_recursive", "ioServiceBytesRecursive")),
    (("blkio.sectors_recursive", "sectorsRecursive"),
     ("blkio.io_service_time_recursive", "ioServiceTimeRecursive"),
     ("blkio.io_wait_time_recursive", "ioWaitTimeRecursive"),
     ("blkio.io_merged_recursive", "ioMergedRecursive"),
     ("blkio.io_queued_recursive", "ioQueueRecursive"),
     ("blkio.time_recursive", "ioTimeRecursive"),
     ("blkio.io_serviced_recursive", "ioServicedRecursive"),
     ("blkio.io_service_bytes_recursive", "ioServiceBytesRecursive")),
    (("blkio.throttle.io_serviced_recursive", "ioServicedRecursive"),
     ("blkio.throttle.io_service_bytes_recursive", "ioServiceBytesRecursive")),
    (("blkio.throttle.io_serviced", "ioServicedRecursive"),
     ("blkio.throttle.io_service_bytes", "ioServiceBytesRecursive")),
)


def blkio(d: str | None) -> dict:
    if not d:
        return _stats.blkio()
    for group in _BLKIO_GROUPS:
        tables: dict[str, list[dict]] = {}
        for i, (name, key) in enumerate(group):
            text = _fs.read_or_none(d, name)
            entries = _stats.parse_blkio_v1(text) if text else []
            if not entries and i == 0:
                break
            tables[key] = entries
        else:
            return _stats.blkio(tables)
    return _stats.blkio()


def hugetlb(d: str | None) -> dict:
    out: dict = {}
    if not d:
        return out
    for size in _stats.hugepage_sizes():
        prefix = f"hugetlb.{size}."
        if not _fs.exists(d, prefix + "usage_in_bytes"):
            continue
        out[size] = _stats.hugetlb_entry(
            usage=_fs.read_uint(d, prefix + "usage_in_bytes", 0),
            max_=_fs.read_uint(d, prefix + "max_usage_in_bytes", 0),
            failcnt=_fs.read_uint(d, prefix + "failcnt", 0),
        )
    return out


def collect(dirs: dict[str, str]) -> dict:
    def get(key: str) -> str | None:
        d = dirs.get(key)
        return d if d and os.path.isdir(d) else None

    return _stats.stats(
        cpu(get("cpuacct"), get("cpu")),
        cpuset(get("cpuset")),
        memory(get("memory")),
        pids(get("pids")),
        blkio(get("blkio")),
        hugetlb(get("hugetlb")),
    )
