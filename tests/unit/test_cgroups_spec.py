"""OCI resource parsing and runc's v1 -> v2 conversions (pure functions)."""

from __future__ import annotations

import pytest

from berth.errors import InvalidArgument
from berth.runtime.cgroups import _spec


@pytest.mark.parametrize("shares,weight", [
    (0, 0), (1, 1), (2, 1), (1024, 100), (262144, 10000), (300000, 10000),
])
def test_shares_to_weight_fixed_points(shares: int, weight: int) -> None:
    assert _spec.shares_to_weight(shares) == weight


def test_shares_to_weight_is_monotonic_and_in_range() -> None:
    prev = 0
    for shares in range(2, 262145, 97):
        w = _spec.shares_to_weight(shares)
        assert 1 <= w <= 10000 and w >= prev
        prev = w


def test_shares_to_weight_linear_is_runcs_old_formula() -> None:
    assert _spec.shares_to_weight_linear(0) == 0
    assert _spec.shares_to_weight_linear(2) == 1
    assert _spec.shares_to_weight_linear(1024) == 39
    assert _spec.shares_to_weight_linear(262144) == 10000


@pytest.mark.parametrize("swap,memory,expected", [
    (0, -1, -1),  # unlimited memory, unset swap: unlimited swap
    (-1, 100, -1),
    (0, 100, 0),
    (300, -1, 300),
    (300, 100, 200),
    (100, 100, 0),
])
def test_swap_to_v2(swap: int, memory: int, expected: int) -> None:
    assert _spec.swap_to_v2(swap, memory) == expected


@pytest.mark.parametrize("swap,memory,message", [
    (300, 0, "without memory limit"),
    (50, 100, "should be >= memory"),
])
def test_swap_to_v2_errors(swap: int, memory: int, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        _spec.swap_to_v2(swap, memory)


def test_blkio_to_io_weight() -> None:
    assert _spec.blkio_to_io_weight(0) == 0
    assert _spec.blkio_to_io_weight(10) == 1
    assert _spec.blkio_to_io_weight(500) == 1 + 490 * 9999 // 990
    assert _spec.blkio_to_io_weight(1000) == 10000


def test_cpu_max_and_v2_limits() -> None:
    assert _spec.cpu_max(50000, 100000) == "50000 100000"
    assert _spec.cpu_max(-1, 0) == "max 100000"
    assert _spec.cpu_max(0, 20000) == "max 20000"
    assert _spec.v2_limit(0) == ""
    assert _spec.v2_limit(-1) == "max"
    assert _spec.v2_limit(4096) == "4096"


def test_pids_limit() -> None:
    assert _spec.pids_limit({}) is None
    assert _spec.pids_limit({"pids": {"limit": 5}}) == "5"
    assert _spec.pids_limit({"pids": {"limit": 0}}) == "max"
    assert _spec.pids_limit({"pids": {"limit": -1}}) == "max"


def test_memory_normalisation() -> None:
    m = _spec.Memory({"memory": {"limit": 1 << 26, "swappiness": (1 << 64) - 1, "kernel": 5}})
    assert m.limit == 1 << 26 and m.swappiness is None and m.is_set()
    with pytest.raises(InvalidArgument, match="swappiness"):
        _spec.Memory({"memory": {"swappiness": 101}})
    with pytest.raises(InvalidArgument, match="must be an integer"):
        _spec.Memory({"memory": {"limit": "64M"}})
    with pytest.raises(InvalidArgument, match="must be an object"):
        _spec.Memory({"memory": 5})
    with pytest.raises(InvalidArgument):
        _spec.Memory({"memory": {"limit": True}})


def test_device_rules() -> None:
    assert _spec.device_rules({}) is None
    assert _spec.device_rules({"devices": []}) == [("devices.deny", "a")]
    rules = _spec.device_rules({"devices": [
        {"allow": False, "access": "rwm"},
        {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
        {"allow": True, "type": "c", "major": 136, "access": "rw"},
        {"allow": False, "type": "b", "major": 8, "minor": -1, "access": "m"},
        {"allow": True},
    ]})
    assert rules == [
        ("devices.deny", "a"),
        ("devices.deny", "a"),
        ("devices.allow", "c 1:3 rwm"),
        ("devices.allow", "c 136:* rw"),
        ("devices.deny", "b 8:* m"),
        ("devices.allow", "a"),
    ]
    with pytest.raises(InvalidArgument, match="device type"):
        _spec.device_rules({"devices": [{"allow": True, "type": "x"}]})
    with pytest.raises(InvalidArgument, match="access"):
        _spec.device_rules({"devices": [{"allow": True, "type": "c", "access": "rx"}]})
    with pytest.raises(InvalidArgument, match="allow"):
        _spec.device_rules({"devices": [{"type": "c"}]})


def test_default_allowed_devices_format() -> None:
    writes = _spec.device_rules({"devices": _spec.DEFAULT_ALLOWED_DEVICES})
    assert writes is not None
    assert ("devices.allow", "c *:* m") in writes
    assert ("devices.allow", "c 1:3 rwm") in writes
    assert ("devices.allow", "c 10:200 rwm") in writes


def test_other_sections() -> None:
    assert _spec.hugepage_limits({"hugepageLimits": [{"pageSize": "2MB", "limit": 1 << 21}]}) == [("2MB", 1 << 21)]
    with pytest.raises(InvalidArgument):
        _spec.hugepage_limits({"hugepageLimits": [{"pageSize": "../x", "limit": 1}]})
    assert _spec.rdma_lines({"rdma": {"mlx5_1": {"hcaHandles": 3, "hcaObjects": 10000}}}) == \
        ["mlx5_1 hca_handle=3 hca_object=10000"]
    assert _spec.net_priorities({"network": {"priorities": [{"name": "eth0", "priority": 5}]}}) == ["eth0 5"]
    assert _spec.device_entries({"throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 600}]},
                                "throttleReadBpsDevice", "rate") == [(8, 0, 600)]
    with pytest.raises(InvalidArgument, match="major and minor"):
        _spec.device_entries({"weightDevice": [{"major": 8}]}, "weightDevice", "weight")
