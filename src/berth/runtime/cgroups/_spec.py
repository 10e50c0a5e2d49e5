"""Reading OCI ``linux.resources`` (runtime-spec config-linux.md) and runc's v1->v2 conversions.

Values are checked for type here so that a bad config gives one clear line
(``InvalidArgument``) instead of a traceback from deep inside a setter.
"""

from __future__ import annotations

from berth.errors import InvalidArgument

MAX_UINT64 = (1 << 64) - 1


def section(resources: dict, key: str) -> dict:
    value = resources.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidArgument(f"cgroup: linux.resources.{key} must be an object")
    return value


def get_int(sec: dict, key: str, where: str) -> int | None:
    value = sec.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"cgroup: linux.resources.{where}.{key} must be an integer, got {value!r}")
    return value


def get_uint(sec: dict, key: str, where: str) -> int | None:
    value = get_int(sec, key, where)
    if value is not None and value < 0:
        raise InvalidArgument(f"cgroup: linux.resources.{where}.{key} must not be negative, got {value}")
    return value


def get_bool(sec: dict, key: str, where: str) -> bool:
    value = sec.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidArgument(f"cgroup: linux.resources.{where}.{key} must be a boolean, got {value!r}")
    return value


def get_str(sec: dict, key: str, where: str) -> str:
    value = sec.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidArgument(f"cgroup: linux.resources.{where}.{key} must be a string, got {value!r}")
    return value


def get_list(sec: dict, key: str, where: str) -> list:
    value = sec.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidArgument(f"cgroup: linux.resources.{where}.{key} must be an array")
    for item in value:
        if not isinstance(item, dict):
            raise InvalidArgument(f"cgroup: linux.resources.{where}.{key} must be an array of objects")
    return value


def as_int64(value: int) -> int:
    """uint64 values that stand for -1 (2**64-1, as Docker sends swappiness) become -1."""
    return value - (1 << 64) if value > (1 << 63) - 1 else value


# --- memory --------------------------------------------------------------------------


class Memory:
    """linux.resources.memory, normalised. 0 means "not set", -1 "unlimited"."""

    __slots__ = ("limit", "reservation", "swap", "swappiness", "disable_oom_killer", "check_before_update")

    def __init__(self, resources: dict) -> None:
        m = section(resources, "memory")
        self.limit = as_int64(get_int(m, "limit", "memory") or 0)
        self.reservation = as_int64(get_int(m, "reservation", "memory") or 0)
        self.swap = as_int64(get_int(m, "swap", "memory") or 0)
        swappiness = get_int(m, "swappiness", "memory")
        self.swappiness = None if swappiness is None or as_int64(swappiness) == -1 else swappiness
        if self.swappiness is not None and not 0 <= self.swappiness <= 100:
            raise InvalidArgument(f"cgroup: invalid memory.swappiness {swappiness}: valid range is 0-100")
        self.disable_oom_killer = get_bool(m, "disableOOMKiller", "memory")
        self.check_before_update = get_bool(m, "checkBeforeUpdate", "memory")
        for name in ("limit", "reservation", "swap"):
            value = getattr(self, name)
            if value < -1:
                raise InvalidArgument(f"cgroup: invalid memory.{name} {value}")
        # memory.kernel and memory.kernelTCP are ignored, as runc does (deprecated in the kernel)

    def is_set(self) -> bool:
        return bool(self.limit or self.reservation or self.swap)


def swap_to_v2(swap: int, memory: int) -> int:
    """runc's ConvertMemorySwapToCgroupV2Value: OCI swap is memory+swap; v2 wants swap only."""
    if memory == -1 and swap == 0:
        return -1  # unlimited memory and unset swap: both unlimited, as on v1
    if swap in (-1, 0):
        return swap
    if memory == -1:
        return swap
    if memory == 0:
        raise InvalidArgument("cgroup: unable to set swap limit without memory limit")
    if memory < 0:
        raise InvalidArgument(f"cgroup: invalid memory value: {memory}")
    if swap < memory:
        raise InvalidArgument("cgroup: memory+swap limit should be >= memory limit")
    return swap - memory


def v2_limit(value: int) -> str:
    """runc's numToStr for v2 files ending in .max/.low/.high: 0 unset, -1 "max"."""
    if value == 0:
        return ""
    if value == -1:
        return "max"
    return str(value)


# --- cpu -----------------------------------------------------------------------------


def shares_to_weight(shares: int) -> int:
    """cpu.shares [2, 262144] to cgroup v2 cpu.weight [1, 10000].

    runc >= 1.3.2 (opencontainers/cgroups PR #20, the same formula as crun >= 1.23): a
    quadratic in log2 that maps the defaults onto each other (1024 -> 100), where the old
    linear formula (:func:`shares_to_weight_linear`) gave 39 for the default.
    """
    if shares == 0:
        return 0
    if shares <= 2:
        return 1
    if shares >= 262144:
        return 10000
    import math

    lg = math.log2(shares)
    exponent = (lg * lg + 125 * lg) / 612.0 - 7.0 / 34.0
    return int(math.ceil(10 ** exponent))


def shares_to_weight_linear(shares: int) -> int:
    """runc < 1.3.2: y = 1 + (x - 2) * 9999 / 262142."""
    if shares == 0:
        return 0
    return 1 + ((shares - 2) * 9999) // 262142


def cpu_max(quota: int, period: int) -> str:
    """v2 cpu.max from OCI quota/period (runc): quota <= 0 is "max", period 0 is 100000."""
    head = str(quota) if quota > 0 else "max"
    return f"{head} {period or 100000}"


# --- block io ------------------------------------------------------------------------


def blkio_to_io_weight(weight: int) -> int:
    """runc's ConvertBlkIOToIOWeightValue: [10, 1000] linearly onto [1, 10000]."""
    if weight == 0:
        return 0
    return 1 + (weight - 10) * 9999 // 990


def device_entries(sec: dict, key: str, field: str) -> list[tuple[int, int, int]]:
    """(major, minor, value) for blockIO.weightDevice / throttle*Device entries."""
    out = []
    for item in get_list(sec, key, "blockIO"):
        major = get_uint(item, "major", f"blockIO.{key}[]")
        minor = get_uint(item, "minor", f"blockIO.{key}[]")
        if major is None or minor is None:
            raise InvalidArgument(f"cgroup: linux.resources.blockIO.{key}[] needs major and minor")
        value = get_uint(item, field, f"blockIO.{key}[]")
        out.append((major, minor, value if value is not None else 0))
    return out


# --- pids ----------------------------------------------------------------------------


def pids_limit(resources: dict) -> str | None:
    """pids.max: None when not set; "max" for 0 or negative (runc treats 0 as unlimited)."""
    p = section(resources, "pids")
    if "limit" not in p:
        return None
    limit = get_int(p, "limit", "pids")
    if limit is None:
        return None
    limit = as_int64(limit)
    return str(limit) if limit > 0 else "max"


# --- hugetlb, rdma, network ----------------------------------------------------------


def hugepage_limits(resources: dict) -> list[tuple[str, int]]:
    out = []
    for item in get_list(resources, "hugepageLimits", "hugepageLimits"):
        size = get_str(item, "pageSize", "hugepageLimits[]")
        limit = get_uint(item, "limit", "hugepageLimits[]")
        if not size or "/" in size or limit is None:
            raise InvalidArgument("cgroup: linux.resources.hugepageLimits[] needs pageSize and limit")
        out.append((size, limit))
    return out


def rdma_lines(resources: dict) -> list[str]:
    rdma = section(resources, "rdma")
    out = []
    for device, limits in rdma.items():
        if not isinstance(limits, dict) or not device or " " in device:
            raise InvalidArgument(f"cgroup: invalid linux.resources.rdma entry {device!r}")
        line = device
        handles = get_uint(limits, "hcaHandles", "rdma")
        objects = get_uint(limits, "hcaObjects", "rdma")
        if handles is not None:
            line += f" hca_handle={handles}"
        if objects is not None:
            line += f" hca_object={objects}"
        out.append(line)
    return out


def net_priorities(resources: dict) -> list[str]:
    net = section(resources, "network")
    out = []
    for item in get_list(net, "priorities", "network"):
        name = get_str(item, "name", "network.priorities[]")
        prio = get_uint(item, "priority", "network.priorities[]")
        if not name or prio is None:
            raise InvalidArgument("cgroup: linux.resources.network.priorities[] needs name and priority")
        out.append(f"{name} {prio}")
    return out


# --- devices -------------------------------------------------------------------------


def device_rules(resources: dict) -> list[tuple[str, str]] | None:
    """The v1 writes for linux.resources.devices, or None when the key is absent.

    As runc, everything starts from deny-all ("a" to devices.deny); then each rule is
    written in order, allow rules to devices.allow and deny rules to devices.deny. The
    kernel's own semantics (a type "a" rule resets the whole list) make this equal to
    evaluating the ordered list.
    """
    if resources.get("devices") is None:
        return None
    writes: list[tuple[str, str]] = [("devices.deny", "a")]
    for rule in get_list(resources, "devices", "devices"):
        allow = rule.get("allow")
        if not isinstance(allow, bool):
            raise InvalidArgument("cgroup: linux.resources.devices[].allow must be a boolean")
        kind = get_str(rule, "type", "devices[]") or "a"
        if kind == "u":
            kind = "c"
        if kind not in ("a", "b", "c"):
            raise InvalidArgument(f"cgroup: invalid device type {kind!r} in linux.resources.devices")
        access = get_str(rule, "access", "devices[]") or "rwm"
        if any(ch not in "rwm" for ch in access):
            raise InvalidArgument(f"cgroup: invalid device access {access!r} in linux.resources.devices")
        major = get_int(rule, "major", "devices[]")
        minor = get_int(rule, "minor", "devices[]")
        if kind == "a":
            line = "a"
        else:
            maj = "*" if major is None or major < 0 else str(major)
            mnr = "*" if minor is None or minor < 0 else str(minor)
            line = f"{kind} {maj}:{mnr} {access}"
        writes.append(("devices.allow" if allow else "devices.deny", line))
    return writes


# The devices runc always allows (libcontainer/specconv AllowedDevices), for callers that
# want runc's defaults appended to linux.resources.devices.
DEFAULT_ALLOWED_DEVICES: list[dict] = [
    {"allow": True, "type": "c", "major": -1, "minor": -1, "access": "m"},
    {"allow": True, "type": "b", "major": -1, "minor": -1, "access": "m"},
    {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},  # /dev/null
    {"allow": True, "type": "c", "major": 1, "minor": 8, "access": "rwm"},  # /dev/random
    {"allow": True, "type": "c", "major": 1, "minor": 7, "access": "rwm"},  # /dev/full
    {"allow": True, "type": "c", "major": 5, "minor": 0, "access": "rwm"},  # /dev/tty
    {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "rwm"},  # /dev/zero
    {"allow": True, "type": "c", "major": 1, "minor": 9, "access": "rwm"},  # /dev/urandom
    {"allow": True, "type": "c", "major": 136, "minor": -1, "access": "rwm"},  # /dev/pts/*
    {"allow": True, "type": "c", "major": 5, "minor": 2, "access": "rwm"},  # /dev/ptmx
    {"allow": True, "type": "c", "major": 10, "minor": 200, "access": "rwm"},  # /dev/net/tun
]
