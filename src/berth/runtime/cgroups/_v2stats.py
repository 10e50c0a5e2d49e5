"""Statistics from a cgroup v2 directory, mapped to the v1-shaped types.Stats as runc's fs2 does."""

from __future__ import annotations

from berth.runtime.cgroups import _fs, _stats


def _psi(d: str, name: str) -> dict | None:
    text = _fs.read_or_none(d, name)
    return _stats.parse_psi(text) if text else None


def cpu(d: str) -> dict:
    st = _fs.read_flat_keyed(d, "cpu.stat") or {}
    return _stats.cpu(
        total=st.get("usage_usec", 0) * 1000,
        kernel=st.get("system_usec", 0) * 1000,
        user=st.get("user_usec", 0) * 1000,
        periods=st.get("nr_periods", 0),
        throttled_periods=st.get("nr_throttled", 0),
        throttled_time=st.get("throttled_usec", 0) * 1000,
        psi=_psi(d, "cpu.pressure"),
    )


def memory(d: str) -> dict:
    raw = _fs.read_flat_keyed(d, "memory.stat")
    psi = _psi(d, "memory.pressure")
    if raw is None or not _fs.exists(d, "memory.current"):
        return _stats.memory(raw=raw or {}, psi=psi)  # memory controller not enabled here
    usage = _fs.read_uint(d, "memory.current", 0)
    limit = _fs.read_uint(d, "memory.max", 0)
    peak = _fs.read_uint(d, "memory.peak", 0)  # since 5.19
    swap_usage = swap_limit = 0
    if _fs.exists(d, "memory.swap.current"):
        swap_usage = _fs.read_uint(d, "memory.swap.current", 0)
        swap_limit = _fs.read_uint(d, "memory.swap.max", 0)
    # v1 reports swap as memory+swap: add memory in (runc does the same)
    combined_limit = swap_limit if swap_limit == _fs.MAX_UINT64 else min(swap_limit + limit, _fs.MAX_UINT64)
    return _stats.memory(
        cache=raw.get("file", 0),
        usage=_stats.memory_entry(limit=limit, usage=usage, max_=peak),
        swap=_stats.memory_entry(limit=combined_limit, usage=swap_usage + usage),
        raw=raw,
        psi=psi,
    )


def pids(d: str) -> dict:
    if _fs.exists(d, "pids.current"):
        current = _fs.read_uint(d, "pids.current", 0)
    else:
        current = len(_fs.walk_pids(d))  # pids controller not enabled: count cgroup.procs
    limit_text = (_fs.read_or_none(d, "pids.max") or "").strip()
    limit = int(limit_text) if limit_text and limit_text != "max" else 0
    return _stats.pids(current, limit)


_IO_OPS = {
    "rbytes": ("ioServiceBytesRecursive", "Read"),
    "wbytes": ("ioServiceBytesRecursive", "Write"),
    "rios": ("ioServicedRecursive", "Read"),
    "wios": ("ioServicedRecursive", "Write"),
}


def parse_io_stat(text: str) -> dict[str, list[dict]]:
    """io.stat ("8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0") as v1 blkio tables."""
    tables: dict[str, list[dict]] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        major, sep, minor = parts[0].partition(":")
        if not sep:
            continue
        for item in parts[1:]:
            key, _, value = item.partition("=")
            if key not in _IO_OPS:
                continue
            table, op = _IO_OPS[key]
            tables.setdefault(table, []).append(_stats.blkio_entry(int(major), int(minor), op, int(value)))
    return tables


def blkio(d: str) -> dict:
    text = _fs.read_or_none(d, "io.stat")
    return _stats.blkio(parse_io_stat(text) if text else {}, _psi(d, "io.pressure"))


def hugetlb(d: str) -> dict:
    out: dict = {}
    for size in _stats.hugepage_sizes():
        prefix = f"hugetlb.{size}."
        if not _fs.exists(d, prefix + "current"):
            continue
        events = _fs.read_flat_keyed(d, prefix + "events") or {}
        out[size] = _stats.hugetlb_entry(usage=_fs.read_uint(d, prefix + "current", 0), failcnt=events.get("max", 0))
    return out


def collect(d: str) -> dict:
    return _stats.stats(cpu(d), None, memory(d), pids(d), blkio(d), hugetlb(d))
