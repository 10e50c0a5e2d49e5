"""The shape of runc's ``events --stats`` data (runc/types/events.go, ``types.Stats``).

Builders emit exactly what Go's encoding/json emits for those structs: the same keys,
in struct order, with ``omitempty`` scalars, slices and maps left out when zero/empty
(``omitempty`` has no effect on struct-valued fields, so those are always present).
``intel_rdt`` is always ``{}`` and ``network_interfaces`` always ``null`` here, since
neither comes from cgroups.
"""

from __future__ import annotations

import os


def _put(obj: dict, key: str, value: object) -> None:
    """Set an ``omitempty`` field: skip 0, "", [] and {}."""
    if value:
        obj[key] = value


def memory_entry(limit: int = 0, usage: int = 0, max_: int = 0, failcnt: int = 0) -> dict:
    obj: dict = {"limit": limit}
    _put(obj, "usage", usage)
    _put(obj, "max", max_)
    obj["failcnt"] = failcnt
    return obj


def cpu(total: int = 0, percpu: list[int] | None = None, percpu_kernel: list[int] | None = None,
        percpu_user: list[int] | None = None, kernel: int = 0, user: int = 0, periods: int = 0,
        throttled_periods: int = 0, throttled_time: int = 0, psi: dict | None = None) -> dict:
    usage: dict = {}
    _put(usage, "total", total)
    _put(usage, "percpu", percpu)
    _put(usage, "percpu_kernel", percpu_kernel)
    _put(usage, "percpu_user", percpu_user)
    usage["kernel"] = kernel
    usage["user"] = user
    throttling: dict = {}
    _put(throttling, "periods", periods)
    _put(throttling, "throttledPeriods", throttled_periods)
    _put(throttling, "throttledTime", throttled_time)
    obj: dict = {"usage": usage, "throttling": throttling}
    _put(obj, "psi", psi)
    return obj


CPUSET_FLAGS = ("cpu_exclusive", "mem_hardwall", "mem_exclusive", "memory_migrate", "memory_spread_page",
                "memory_spread_slab", "memory_pressure", "sched_load_balance", "sched_relax_domain_level")


def cpuset(cpus: list[int] | None = None, mems: list[int] | None = None, flags: dict[str, int] | None = None) -> dict:
    flags = flags or {}
    obj: dict = {}
    _put(obj, "cpus", cpus)
    obj["cpu_exclusive"] = flags.get("cpu_exclusive", 0)
    _put(obj, "mems", mems)
    for key in CPUSET_FLAGS[1:]:
        obj[key] = flags.get(key, 0)
    return obj


def memory(cache: int = 0, usage: dict | None = None, swap: dict | None = None, kernel: dict | None = None,
           kernel_tcp: dict | None = None, raw: dict[str, int] | None = None, psi: dict | None = None) -> dict:
    obj: dict = {}
    _put(obj, "cache", cache)
    obj["usage"] = usage or memory_entry()
    obj["swap"] = swap or memory_entry()
    obj["kernel"] = kernel or memory_entry()
    obj["kernelTCP"] = kernel_tcp or memory_entry()
    _put(obj, "raw", raw)
    _put(obj, "psi", psi)
    return obj


def pids(current: int = 0, limit: int = 0) -> dict:
    obj: dict = {}
    _put(obj, "current", current)
    _put(obj, "limit", limit)
    return obj


def blkio_entry(major: int, minor: int, op: str, value: int) -> dict:
    obj: dict = {}
    _put(obj, "major", major)
    _put(obj, "minor", minor)
    _put(obj, "op", op)
    _put(obj, "value", value)
    return obj


# JSON keys of types.Blkio, in struct order (note "ioQueueRecursive", as runc spells it)
BLKIO_KEYS = ("ioServiceBytesRecursive", "ioServicedRecursive", "ioQueueRecursive", "ioServiceTimeRecursive",
              "ioWaitTimeRecursive", "ioMergedRecursive", "ioTimeRecursive", "sectorsRecursive")


def blkio(tables: dict[str, list[dict]] | None = None, psi: dict | None = None) -> dict:
    tables = tables or {}
    obj: dict = {}
    for key in BLKIO_KEYS:
        _put(obj, key, tables.get(key))
    _put(obj, "psi", psi)
    return obj


def hugetlb_entry(usage: int = 0, max_: int = 0, failcnt: int = 0) -> dict:
    obj: dict = {}
    _put(obj, "usage", usage)
    _put(obj, "max", max_)
    obj["failcnt"] = failcnt
    return obj


def stats(cpu_: dict | None = None, cpuset_: dict | None = None, memory_: dict | None = None,
          pids_: dict | None = None, blkio_: dict | None = None, hugetlb: dict | None = None) -> dict:
    return {
        "cpu": cpu_ if cpu_ is not None else cpu(),
        "cpuset": cpuset_ if cpuset_ is not None else cpuset(),
        "memory": memory_ if memory_ is not None else memory(),
        "pids": pids_ if pids_ is not None else pids(),
        "blkio": blkio_ if blkio_ is not None else blkio(),
        "hugetlb": hugetlb if hugetlb is not None else {},
        "intel_rdt": {},
        "network_interfaces": None,
    }


# --- parsers shared by v1 and v2 -----------------------------------------------------


def parse_psi(text: str) -> dict | None:
    """cpu.pressure / memory.pressure / io.pressure as types.PSIStats."""
    out: dict = {}
    for line in text.splitlines():
        parts = line.split()
        if not parts or parts[0] not in ("some", "full"):
            continue
        data = {"avg10": 0.0, "avg60": 0.0, "avg300": 0.0, "total": 0}
        for item in parts[1:]:
            key, _, value = item.partition("=")
            if key in ("avg10", "avg60", "avg300"):
                data[key] = float(value)
            elif key == "total":
                data[key] = int(value)
        out[parts[0]] = data
    if not out:
        return None
    return {"some": out.get("some", {"avg10": 0.0, "avg60": 0.0, "avg300": 0.0, "total": 0}),
            "full": out.get("full", {"avg10": 0.0, "avg60": 0.0, "avg300": 0.0, "total": 0})}


def parse_blkio_v1(text: str) -> list[dict]:
    """blkio.* stat files: "8:0 Read 1282048" (or "8:0 6792"); "Total N" lines skipped."""
    out: list[dict] = []
    for line in text.splitlines():
        fields = line.replace(":", " ").split()
        if not fields:
            continue
        if len(fields) < 3:
            if len(fields) == 2 and fields[0] == "Total":
                continue
            raise ValueError(f"invalid blkio line {line!r}")
        op = fields[2] if len(fields) == 4 else ""
        value = fields[3] if len(fields) == 4 else fields[2]
        out.append(blkio_entry(int(fields[0]), int(fields[1]), op, int(value)))
    return out


def parse_id_list(text: str) -> list[int]:
    """A cpuset list such as "0-3,8,10-11" as [0, 1, 2, 3, 8, 10, 11]."""
    out: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        if sep:
            out.extend(range(int(lo), int(hi) + 1))
        else:
            out.append(int(lo))
    return out


def hugepage_sizes() -> list[str]:
    """Page sizes as the hugetlb files name them ("2MB", "1GB"), from /sys/kernel/mm/hugepages."""
    try:
        names = os.listdir("/sys/kernel/mm/hugepages")
    except OSError:
        return []
    sizes = []
    for name in names:
        if not (name.startswith("hugepages-") and name.endswith("kB")):
            continue
        try:
            kb = int(name[len("hugepages-"):-2])
        except ValueError:
            continue
        if kb >= 1 << 20:
            sizes.append(f"{kb >> 20}GB")
        elif kb >= 1 << 10:
            sizes.append(f"{kb >> 10}MB")
        else:
            sizes.append(f"{kb}KB")
    return sorted(sizes)
