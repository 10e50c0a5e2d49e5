"""The v1 driver against fake hierarchies in a temporary directory (no root needed).

Ordering of writes (memory/memsw, cpu period/quota, devices) is checked by recording
every write; the integration tests check the same settings on the real kernel.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from berth.errors import FailedPrecondition, InvalidArgument
from berth.runtime.cgroups import _fs, from_state
from berth.runtime.cgroups.v1 import V1Cgroup

FILES = {
    "memory": ["cgroup.procs", "memory.limit_in_bytes", "memory.memsw.limit_in_bytes", "memory.soft_limit_in_bytes",
               "memory.oom_control", "memory.swappiness", "memory.usage_in_bytes", "memory.max_usage_in_bytes"],
    "cpu": ["cgroup.procs", "cpu.shares", "cpu.cfs_period_us", "cpu.cfs_quota_us", "cpu.cfs_burst_us",
            "cpu.rt_period_us", "cpu.rt_runtime_us", "cpu.idle"],
    "cpuset": ["cgroup.procs", "cpuset.cpus", "cpuset.mems"],
    "devices": ["cgroup.procs", "devices.allow", "devices.deny"],
    "pids": ["cgroup.procs", "pids.max"],
    "blkio": ["cgroup.procs", "blkio.bfq.weight", "blkio.bfq.weight_device", "blkio.leaf_weight",
              "blkio.throttle.read_bps_device", "blkio.throttle.write_iops_device"],
    "freezer": ["cgroup.procs", "freezer.state", "freezer.self_freezing"],
}


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    """One fake hierarchy per controller, each with the container's leaf /c1."""
    dirs = {}
    for controller, names in FILES.items():
        leaf = tmp_path / controller / "c1"
        leaf.mkdir(parents=True)
        for name in names:
            (leaf / name).write_text("")
        dirs[controller] = leaf
    (dirs["memory"] / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    return dirs


def cgroup(tree: dict[str, Path], **extra: Path) -> V1Cgroup:
    return V1Cgroup({k: str(v) for k, v in {**tree, **extra}.items()})


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    log: list[tuple[str, str]] = []
    real = _fs.write

    def record(directory: str, name: str, value: str) -> None:
        log.append((name, value))
        real(directory, name, value)

    monkeypatch.setattr(_fs, "write", record)
    return log


def read(d: Path, name: str) -> str:
    return (d / name).read_text()


def test_memory_raise_sets_swap_first(tree: dict, writes: list) -> None:
    (tree["memory"] / "memory.limit_in_bytes").write_text(str(64 << 20))
    cgroup(tree).set({"memory": {"limit": 128 << 20, "swap": 256 << 20}})
    assert writes == [("memory.memsw.limit_in_bytes", str(256 << 20)), ("memory.limit_in_bytes", str(128 << 20))]


def test_memory_lower_sets_limit_first(tree: dict, writes: list) -> None:
    (tree["memory"] / "memory.limit_in_bytes").write_text(str(512 << 20))
    cgroup(tree).set({"memory": {"limit": 32 << 20, "swap": 64 << 20}})
    assert writes == [("memory.limit_in_bytes", str(32 << 20)), ("memory.memsw.limit_in_bytes", str(64 << 20))]


def test_memory_unlimited_unlimits_swap_first(tree: dict, writes: list) -> None:
    (tree["memory"] / "memory.limit_in_bytes").write_text(str(64 << 20))
    cgroup(tree).set({"memory": {"limit": -1}})
    assert writes == [("memory.memsw.limit_in_bytes", "-1"), ("memory.limit_in_bytes", "-1")]


def test_memory_other_settings(tree: dict, writes: list) -> None:
    cgroup(tree).set({"memory": {"reservation": 1 << 20, "disableOOMKiller": True, "swappiness": 0,
                                 "kernel": 1 << 20, "kernelTCP": 1 << 20}})
    assert writes == [("memory.soft_limit_in_bytes", str(1 << 20)), ("memory.oom_control", "1"),
                      ("memory.swappiness", "0")]


def test_swap_without_swap_accounting(tree: dict) -> None:
    (tree["memory"] / "memory.memsw.limit_in_bytes").unlink()
    cg = cgroup(tree)
    cg.set({"memory": {"limit": -1}})
    assert read(tree["memory"], "memory.limit_in_bytes") == "-1"
    with pytest.raises(FailedPrecondition, match="swap accounting is disabled"):
        cg.set({"memory": {"limit": 1 << 20, "swap": 2 << 20}})


def test_memory_limit_busy_reports_usage(tree: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    (tree["memory"] / "memory.usage_in_bytes").write_text("100\n")
    (tree["memory"] / "memory.max_usage_in_bytes").write_text("200\n")

    def busy(directory: str, name: str, value: str) -> None:
        raise _fs.write_error(directory, name, value, OSError(errno.EBUSY, "busy"))

    monkeypatch.setattr(_fs, "write", busy)
    with pytest.raises(FailedPrecondition) as info:
        cgroup(tree).set({"memory": {"limit": 4096}})
    assert str(info.value) == (f"cgroup: write {tree['memory']}/memory.limit_in_bytes=4096: Device or resource "
                               "busy (current usage: 100, peak usage: 200)")


def test_cpu_settings_and_order(tree: dict, writes: list) -> None:
    cgroup(tree).set({"cpu": {"shares": 512, "quota": 50000, "period": 100000, "burst": 0,
                              "realtimeRuntime": 1000, "realtimePeriod": 1000000, "idle": 1,
                              "cpus": "0", "mems": "0"}})
    assert writes == [
        ("cpuset.cpus", "0"), ("cpuset.mems", "0"),
        ("cpu.shares", "512"), ("cpu.cfs_period_us", "100000"), ("cpu.cfs_burst_us", "0"),
        ("cpu.cfs_quota_us", "50000"), ("cpu.rt_period_us", "1000000"), ("cpu.rt_runtime_us", "1000"),
        ("cpu.idle", "1"),
    ]


def test_cpu_period_refused_before_quota_is_retried(tree: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    log: list[tuple[str, str]] = []
    real = _fs.write
    refused: list[int] = []

    def flaky(directory: str, name: str, value: str) -> None:
        log.append((name, value))
        if name == "cpu.cfs_period_us" and not refused:
            refused.append(1)
            raise _fs.write_error(directory, name, value, OSError(errno.EINVAL, "x"))
        real(directory, name, value)

    monkeypatch.setattr(_fs, "write", flaky)
    cgroup(tree).set({"cpu": {"quota": 1000, "period": 10000}})
    assert log == [("cpu.cfs_period_us", "10000"), ("cpu.cfs_quota_us", "1000"), ("cpu.cfs_period_us", "10000")]


def test_cpu_shares_clamped_by_kernel_is_an_error(tree: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    real = _fs.write

    def clamp(directory: str, name: str, value: str) -> None:
        real(directory, name, "2" if name == "cpu.shares" and int(value) < 2 else value)

    monkeypatch.setattr(_fs, "write", clamp)
    with pytest.raises(InvalidArgument, match="the minimum allowed cpu-shares is 2"):
        cgroup(tree).set({"cpu": {"shares": 1}})


def test_devices_start_from_deny_all(tree: dict, writes: list) -> None:
    cgroup(tree).set({"devices": [
        {"allow": False, "access": "rwm"},
        {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
    ]})
    assert writes == [("devices.deny", "a"), ("devices.deny", "a"), ("devices.allow", "c 1:3 rwm")]
    writes.clear()
    cgroup(tree).set({"memory": {}})  # no "devices" key: devices are left alone
    assert writes == []


def test_pids_blkio(tree: dict, writes: list) -> None:
    cgroup(tree).set({"pids": {"limit": 0}, "blockIO": {
        "weight": 300, "leafWeight": 200,
        "weightDevice": [{"major": 8, "minor": 0, "weight": 500}],
        "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1024}],
        "throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": 10}],
    }})
    assert writes == [
        ("pids.max", "max"),
        ("blkio.bfq.weight", "300"), ("blkio.leaf_weight", "200"), ("blkio.bfq.weight_device", "8:0 500"),
        ("blkio.throttle.read_bps_device", "8:0 1024"), ("blkio.throttle.write_iops_device", "8:0 10"),
    ]


def test_unmounted_controllers_and_unified(tree: dict) -> None:
    cg = cgroup(tree)
    with pytest.raises(FailedPrecondition, match="^cgroup: cannot set hugepageLimits: the hugetlb controller "
                                                 "is not mounted$"):
        cg.set({"hugepageLimits": [{"pageSize": "2MB", "limit": 0}]})
    with pytest.raises(FailedPrecondition, match="net_cls controller is not mounted"):
        cg.set({"network": {"classID": 1}})
    with pytest.raises(InvalidArgument, match="unified needs cgroup v2"):
        cg.set({"unified": {"memory.high": "1"}})
    cg.set({"unified": {}})
    cg.set({})


def test_freezer(tree: dict) -> None:
    d = tree["freezer"]
    cg = cgroup(tree)
    cg.freeze()
    assert read(d, "freezer.state") == "FROZEN"
    (d / "freezer.self_freezing").write_text("1\n")
    assert cg.frozen()
    (d / "freezer.self_freezing").write_text("0\n")  # frozen only through an ancestor
    assert not cg.frozen()
    cg.thaw()
    assert read(d, "freezer.state") == "THAWED" and not cg.frozen()
    no_freezer = V1Cgroup({"memory": str(tree["memory"])})
    with pytest.raises(FailedPrecondition, match="freezer controller is not mounted"):
        no_freezer.freeze()
    assert not no_freezer.frozen()


def test_create_copies_cpuset_down_the_chain(tmp_path: Path) -> None:
    root = tmp_path / "cpuset"
    for d, cpus, mems in ((root, "0-3", "0"), (root / "a", "", ""), (root / "a/c1", "", "")):
        d.mkdir(exist_ok=True)
        (d / "cpuset.cpus").write_text(cpus)
        (d / "cpuset.mems").write_text(mems)
    (root / "a/cpuset.mems").write_text("0\n")  # already set: kept
    V1Cgroup({"cpuset": str(root / "a/c1")}).create()
    assert read(root / "a", "cpuset.cpus") == "0-3" and read(root / "a", "cpuset.mems") == "0\n"
    assert read(root / "a/c1", "cpuset.cpus") == "0-3" and read(root / "a/c1", "cpuset.mems") == "0"


def test_create_and_destroy_track_created_parents(tmp_path: Path) -> None:
    (tmp_path / "memory/parent").mkdir(parents=True)
    (tmp_path / "cpu").mkdir()
    dirs = {"memory": f"{tmp_path}/memory/parent/x/c1", "cpu": f"{tmp_path}/cpu/parent/x/c1",
            "cpuacct": f"{tmp_path}/cpu/parent/x/c1"}
    cg = V1Cgroup(dirs)
    cg.create()
    paths = cg.paths()
    assert paths["created"] == f"{tmp_path}/memory/parent/x\n{tmp_path}/cpu/parent"
    assert cg.exists()
    again = from_state(json.loads(json.dumps(paths)))
    again.destroy()
    assert (tmp_path / "memory/parent").is_dir()
    assert not (tmp_path / "memory/parent/x").exists()
    assert not (tmp_path / "cpu/parent").exists()
    assert not again.exists()
    again.destroy()  # idempotent


def test_destroy_removes_sub_cgroups_and_reports_busy(tmp_path: Path) -> None:
    leaf = tmp_path / "memory/c1"
    (leaf / "sub/subsub").mkdir(parents=True)
    V1Cgroup({"memory": str(leaf)}).destroy()
    assert not leaf.exists()
    leaf.mkdir()
    (leaf / "a-file").write_text("")  # rmdir fails (ENOTEMPTY), like a busy cgroup
    with pytest.raises(FailedPrecondition, match=f"^cgroup: rmdir {leaf}: Directory not empty$"):
        V1Cgroup({"memory": str(leaf)}).destroy()


def test_add_pid_once_per_hierarchy_and_pids(tree: dict) -> None:
    shared = tree["cpu"]
    cg = V1Cgroup({"cpu": str(shared), "cpuacct": str(shared), "pids": str(tree["pids"])})
    cg.add_pid(77)
    assert read(shared, "cgroup.procs") == "77"
    assert read(tree["pids"], "cgroup.procs") == "77"
    (tree["pids"] / "cgroup.procs").write_text("77\n78\n")
    assert cg.pids() == [77, 78]


def test_oom_kill_count(tree: dict) -> None:
    (tree["memory"] / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n")
    assert cgroup(tree).oom_kill_count() == 3
    assert V1Cgroup({"cpu": str(tree["cpu"])}).oom_kill_count() == 0


def test_stats_shape(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from berth.runtime.cgroups import _stats

    monkeypatch.setattr(_stats, "hugepage_sizes", lambda: [])
    monkeypatch.setattr("os.sysconf", lambda name: 100)
    files = {
        "cpuacct": {"cpuacct.usage": "3000\n", "cpuacct.usage_percpu": "1000 2000 \n",
                    "cpuacct.usage_all": "cpu user system\n0 600 400\n1 1500 500\n",
                    "cpuacct.stat": "user 2\nsystem 1\n"},
        "cpu": {"cpu.stat": "nr_periods 4\nnr_throttled 1\nthrottled_time 999\n"},
        "cpuset": {"cpuset.cpus": "0-1\n", "cpuset.mems": "0\n", "cpuset.sched_load_balance": "1\n",
                   "cpuset.sched_relax_domain_level": "-1\n"},
        "memory": {"memory.stat": "cache 4096\nrss 8192\n", "memory.usage_in_bytes": "12288\n",
                   "memory.max_usage_in_bytes": "20480\n", "memory.limit_in_bytes": "67108864\n",
                   "memory.failcnt": "2\n"},
        "pids": {"pids.current": "1\n", "pids.max": "5\n"},
        "blkio": {"blkio.bfq.io_serviced_recursive": "8:0 Read 3\n8:0 Write 4\nTotal 7\n",
                  "blkio.bfq.io_service_bytes_recursive": "8:0 Read 300\n8:0 Write 400\nTotal 700\n"},
    }
    dirs = {}
    for controller, content in files.items():
        d = tmp_path / controller / "c1"
        d.mkdir(parents=True)
        for name, text in content.items():
            (d / name).write_text(text)
        dirs[controller] = str(d)
    st = V1Cgroup(dirs).stats()
    assert st["cpu"] == {
        "usage": {"total": 3000, "percpu": [1000, 2000], "percpu_kernel": [400, 500], "percpu_user": [600, 1500],
                  "kernel": 10000000, "user": 20000000},
        "throttling": {"periods": 4, "throttledPeriods": 1, "throttledTime": 999},
    }
    assert st["cpuset"] == {"cpus": [0, 1], "cpu_exclusive": 0, "mems": [0], "mem_hardwall": 0, "mem_exclusive": 0,
                            "memory_migrate": 0, "memory_spread_page": 0, "memory_spread_slab": 0,
                            "memory_pressure": 0, "sched_load_balance": 1, "sched_relax_domain_level": -1}
    assert st["memory"] == {
        "cache": 4096,
        "usage": {"limit": 67108864, "usage": 12288, "max": 20480, "failcnt": 2},
        "swap": {"limit": 0, "failcnt": 0},
        "kernel": {"limit": 0, "failcnt": 0},
        "kernelTCP": {"limit": 0, "failcnt": 0},
        "raw": {"cache": 4096, "rss": 8192},
    }
    assert st["pids"] == {"current": 1, "limit": 5}
    assert st["blkio"] == {
        "ioServiceBytesRecursive": [{"major": 8, "op": "Read", "value": 300}, {"major": 8, "op": "Write", "value": 400}],
        "ioServicedRecursive": [{"major": 8, "op": "Read", "value": 3}, {"major": 8, "op": "Write", "value": 4}],
    }
    assert st["hugetlb"] == {}
    json.dumps(st)


def test_stats_of_a_removed_cgroup_is_not_found(tmp_path: Path) -> None:
    from berth.errors import NotFound

    with pytest.raises(NotFound):
        V1Cgroup({"memory": str(tmp_path / "gone")}).stats()
    with pytest.raises(NotFound):
        V1Cgroup({"memory": str(tmp_path / "gone")}).pids()
