"""The v2 driver against a fake cgroup2 tree in a temporary directory.

Real cgroup v2 controllers are not available on the development host (hybrid mode with
an empty cgroup2), so resource writes and conversions are checked here; the integration
tests exercise create/add_pid/freeze/pids/destroy on the real cgroup2 mount.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from berth.errors import FailedPrecondition, InvalidArgument
from berth.runtime.cgroups import _fs, from_state, open_cgroup
from berth.runtime.cgroups.v2 import V2Cgroup

CONTROLLERS = "cpuset cpu io memory hugetlb pids rdma"
LEAF_FILES = [
    "cgroup.procs", "cgroup.freeze", "cgroup.events", "cgroup.subtree_control",
    "memory.max", "memory.swap.max", "memory.low", "memory.current",
    "pids.max", "cpu.weight", "cpu.max", "cpu.max.burst", "cpu.idle",
    "io.weight", "io.max", "cpuset.cpus", "cpuset.mems", "hugetlb.2MB.max", "rdma.max", "memory.high",
]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "cgroup2"
    r.mkdir()
    (r / "cgroup.controllers").write_text(CONTROLLERS + "\n")
    (r / "cgroup.subtree_control").write_text("")
    return r


def make_leaf(root: Path, rel: str, files: list[str] = LEAF_FILES, controllers: str = CONTROLLERS) -> Path:
    d = root / rel
    d.mkdir(parents=True)
    for name in files:
        (d / name).write_text("")
    (d / "cgroup.controllers").write_text(controllers + "\n")
    return d


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Record (file name, value) of every cgroup write, still performing it."""
    log: list[tuple[str, str]] = []
    real = _fs.write

    def record(directory: str, name: str, value: str) -> None:
        log.append((name, value))
        real(directory, name, value)

    monkeypatch.setattr(_fs, "write", record)
    return log


def read(d: Path, name: str) -> str:
    return (d / name).read_text()


def test_create_enables_controllers_and_destroy_removes_only_what_it_made(root: Path) -> None:
    existing = root / "existing"
    existing.mkdir()
    (existing / "cgroup.controllers").write_text("cpu memory pids\n")
    (existing / "cgroup.subtree_control").write_text("cpu\n")
    cg = open_cgroup("/existing/new/c1", "c1", root=str(root))
    cg.create()
    assert (root / "existing/new/c1").is_dir()
    assert read(root, "cgroup.subtree_control") == "+cpuset +cpu +io +memory +hugetlb +pids +rdma"
    assert read(existing, "cgroup.subtree_control") == "+memory +pids"  # cpu was already on
    paths = cg.paths()
    assert paths == {"mode": "v2", "": f"{root}/existing/new/c1", "created": f"{root}/existing/new"}
    cg.create()  # idempotent
    from_state(json.loads(json.dumps(paths))).destroy()
    assert not (root / "existing/new").exists()
    assert existing.is_dir()
    cg.destroy()  # already gone: no error


def test_destroy_keeps_a_created_parent_that_another_container_uses(root: Path) -> None:
    a = open_cgroup("/p/a", "a", root=str(root))
    b = open_cgroup("/p/b", "b", root=str(root))
    a.create()
    b.create()
    assert a.paths()["created"] == f"{root}/p" and "created" not in b.paths()
    a.destroy()
    assert (root / "p/b").is_dir()
    b.destroy()
    assert (root / "p").is_dir()  # b did not make it; nobody removes it


def test_refuses_the_root_and_paths_outside(root: Path) -> None:
    with pytest.raises(InvalidArgument):
        V2Cgroup(str(root), mountpoint=str(root)).create()
    with pytest.raises(InvalidArgument):
        V2Cgroup("/elsewhere/x", mountpoint=str(root)).create()


def test_memory_limit_swap_and_reservation(root: Path) -> None:
    d = make_leaf(root, "c")
    cg = V2Cgroup(str(d), mountpoint=str(root))
    cg.set({"memory": {"limit": 64 << 20, "swap": 128 << 20, "reservation": 32 << 20}})
    assert read(d, "memory.max") == str(64 << 20)
    assert read(d, "memory.swap.max") == str(64 << 20)  # v2 swap = OCI swap - limit
    assert read(d, "memory.low") == str(32 << 20)
    cg.set({"memory": {"limit": 64 << 20, "swap": 64 << 20}})
    assert read(d, "memory.swap.max") == "0"
    cg.set({"memory": {"limit": -1}})
    assert read(d, "memory.max") == "max" and read(d, "memory.swap.max") == "max"
    with pytest.raises(InvalidArgument, match="should be >= memory limit"):
        cg.set({"memory": {"limit": 64 << 20, "swap": 1 << 20}})


def test_memory_order_is_swap_then_max(root: Path, writes: list) -> None:
    d = make_leaf(root, "c")
    V2Cgroup(str(d)).set({"memory": {"limit": 100, "swap": 300, "swappiness": 10, "disableOOMKiller": True,
                                     "kernel": 5}})
    assert writes == [("memory.swap.max", "200"), ("memory.max", "100")]


def test_swap_without_swap_accounting(root: Path) -> None:
    d = make_leaf(root, "c", [f for f in LEAF_FILES if f != "memory.swap.max"])
    cg = V2Cgroup(str(d))
    cg.set({"memory": {"limit": -1}})  # "max" on a missing swap file: fine
    cg.set({"memory": {"limit": 100, "swap": 100}})  # "0": fine too
    with pytest.raises(FailedPrecondition, match=r"memory\.swap\.max=100: No such file"):
        cg.set({"memory": {"limit": 100, "swap": 200}})


def test_check_before_update(root: Path) -> None:
    d = make_leaf(root, "c")
    (d / "memory.current").write_text("5000\n")
    cg = V2Cgroup(str(d))
    with pytest.raises(FailedPrecondition, match="rejecting memory limit 4096 <= usage 5000"):
        cg.set({"memory": {"limit": 4096, "checkBeforeUpdate": True}})
    cg.set({"memory": {"limit": 4096}})
    assert read(d, "memory.max") == "4096"


def test_cpu_conversions(root: Path, writes: list) -> None:
    d = make_leaf(root, "c")
    cg = V2Cgroup(str(d))
    cg.set({"cpu": {"shares": 1024, "quota": 50000, "period": 200000, "idle": 0, "burst": 1000,
                    "cpus": "0-1", "mems": "0"}})
    assert writes == [("cpu.idle", "0"), ("cpu.weight", "100"), ("cpu.max.burst", "1000"),
                      ("cpu.max", "50000 200000"), ("cpuset.cpus", "0-1"), ("cpuset.mems", "0")]
    cg.set({"cpu": {"quota": -1}})
    assert read(d, "cpu.max") == "max 100000"
    cg.set({"cpu": {"shares": 2}})
    assert read(d, "cpu.weight") == "1"
    with pytest.raises(InvalidArgument, match="realtime"):
        cg.set({"cpu": {"realtimeRuntime": 950000}})


def test_pids(root: Path) -> None:
    d = make_leaf(root, "c")
    cg = V2Cgroup(str(d))
    cg.set({"pids": {"limit": 5}})
    assert read(d, "pids.max") == "5"
    for limit in (0, -1):
        cg.set({"pids": {"limit": limit}})
        assert read(d, "pids.max") == "max"


def test_io_weight_uses_bfq_when_present(root: Path, writes: list) -> None:
    d = make_leaf(root, "c")
    V2Cgroup(str(d)).set({"blockIO": {
        "weight": 500, "leafWeight": 300,
        "weightDevice": [{"major": 8, "minor": 0, "weight": 1000}],
        "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}],
        "throttleWriteIOPSDevice": [{"major": 8, "minor": 16, "rate": 100}],
    }})
    assert writes == [("io.weight", str(1 + 490 * 9999 // 990)), ("io.weight", "8:0 10000"),
                      ("io.max", "8:0 rbps=1048576"), ("io.max", "8:16 wiops=100")]
    writes.clear()
    (d / "io.bfq.weight").write_text("")
    V2Cgroup(str(d)).set({"blockIO": {"weight": 500, "weightDevice": [{"major": 8, "minor": 0, "weight": 20}]}})
    assert writes == [("io.bfq.weight", "500"), ("io.bfq.weight", "8:0 20")]


def test_hugetlb_rdma_and_ignored_v1_only_settings(root: Path, writes: list) -> None:
    d = make_leaf(root, "c")
    V2Cgroup(str(d)).set({
        "hugepageLimits": [{"pageSize": "2MB", "limit": 4 << 21}],
        "rdma": {"mlx5_1": {"hcaHandles": 3}},
        "devices": [{"allow": False, "access": "rwm"}],  # needs eBPF on v2: skipped
        "network": {"classID": 0x100001, "priorities": [{"name": "eth0", "priority": 1}]},
    })
    assert writes == [("hugetlb.2MB.max", str(4 << 21)), ("rdma.max", "mlx5_1 hca_handle=3")]


def test_unified(root: Path, writes: list) -> None:
    d = make_leaf(root, "c")
    cg = V2Cgroup(str(d))
    cg.set({"unified": {"memory.high": "1073741824", "io.max": "8:0 rbps=1\n8:16 wbps=2\n"}})
    assert writes == [("memory.high", "1073741824"), ("io.max", "8:0 rbps=1"), ("io.max", "8:16 wbps=2")]
    with pytest.raises(InvalidArgument, match="no slashes"):
        cg.set({"unified": {"../memory.max": "1"}})
    with pytest.raises(InvalidArgument, match="CONTROLLER.PARAMETER"):
        cg.set({"unified": {"memory": "1"}})
    with pytest.raises(FailedPrecondition, match='the misc controller is not enabled'):
        cg.set({"unified": {"misc.max": "res_a 1"}})


def test_missing_controller_names_it(root: Path) -> None:
    d = make_leaf(root, "c", ["cgroup.procs"], controllers="")
    with pytest.raises(FailedPrecondition) as info:
        V2Cgroup(str(d)).set({"memory": {"limit": 1 << 20}})
    assert str(info.value) == (f"cgroup: write {d}/memory.max=1048576: No such file or directory "
                               "(the memory controller is not enabled for this cgroup)")


def test_freeze_thaw(root: Path) -> None:
    d = make_leaf(root, "c")
    (d / "cgroup.events").write_text("populated 1\nfrozen 1\n")
    cg = V2Cgroup(str(d))
    cg.freeze()
    assert read(d, "cgroup.freeze") == "1" and cg.frozen()
    cg.thaw()
    assert read(d, "cgroup.freeze") == "0" and not cg.frozen()


def test_freeze_timeout_thaws_back(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = make_leaf(root, "c")
    (d / "cgroup.events").write_text("populated 1\nfrozen 0\n")
    monkeypatch.setattr(V2Cgroup, "freeze_timeout", 0.05)
    with pytest.raises(FailedPrecondition, match="timeout"):
        V2Cgroup(str(d)).freeze()
    assert read(d, "cgroup.freeze") == "0"


def test_freeze_without_freezer(root: Path) -> None:
    d = make_leaf(root, "c", ["cgroup.procs"])
    cg = V2Cgroup(str(d))
    with pytest.raises(FailedPrecondition, match="cgroup.freeze"):
        cg.freeze()
    cg.thaw()
    assert not cg.frozen()


def test_pids_walks_sub_cgroups_and_add_pid_writes_procs(root: Path) -> None:
    d = make_leaf(root, "c")
    (d / "cgroup.procs").write_text("10\n11\n")
    sub = make_leaf(root, "c/sub", ["cgroup.procs"])
    (sub / "cgroup.procs").write_text("12\n10\n")
    cg = V2Cgroup(str(d))
    assert sorted(cg.pids()) == [10, 11, 12]
    empty = make_leaf(root, "e", ["cgroup.procs"])
    V2Cgroup(str(empty)).add_pid(4242)
    assert read(empty, "cgroup.procs") == "4242"


def test_oom_kill_count(root: Path) -> None:
    d = make_leaf(root, "c", ["cgroup.procs"])
    assert V2Cgroup(str(d)).oom_kill_count() == 0
    (d / "memory.events").write_text("low 0\nhigh 0\nmax 7\noom 3\noom_kill 2\noom_group_kill 0\n")
    assert V2Cgroup(str(d)).oom_kill_count() == 2


def test_stats_shape(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from berth.runtime.cgroups import _stats

    monkeypatch.setattr(_stats, "hugepage_sizes", lambda: ["2MB"])
    d = make_leaf(root, "c", ["cgroup.procs"])
    files = {
        "cpu.stat": "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 10\nnr_throttled 2\n"
                    "throttled_usec 30\n",
        "cpu.pressure": "some avg10=0.50 avg60=0.00 avg300=0.00 total=1234\n"
                        "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
        "memory.stat": "anon 4096\nfile 8192\n",
        "memory.current": "12288\n", "memory.max": "max\n", "memory.peak": "20000\n",
        "memory.swap.current": "0\n", "memory.swap.max": "max\n",
        "pids.current": "3\n", "pids.max": "max\n",
        "io.stat": "8:0 rbytes=100 wbytes=200 rios=1 wios=2 dbytes=0 dios=0\n",
        "hugetlb.2MB.current": "0\n", "hugetlb.2MB.events": "max 4\n",
    }
    for name, text in files.items():
        (d / name).write_text(text)
    st = V2Cgroup(str(d)).stats()
    assert list(st) == ["cpu", "cpuset", "memory", "pids", "blkio", "hugetlb", "intel_rdt", "network_interfaces"]
    assert st["cpu"] == {
        "usage": {"total": 1500000, "kernel": 500000, "user": 1000000},
        "throttling": {"periods": 10, "throttledPeriods": 2, "throttledTime": 30000},
        "psi": {"some": {"avg10": 0.5, "avg60": 0.0, "avg300": 0.0, "total": 1234},
                "full": {"avg10": 0.0, "avg60": 0.0, "avg300": 0.0, "total": 0}},
    }
    max64 = (1 << 64) - 1
    assert st["memory"] == {
        "cache": 8192,
        "usage": {"limit": max64, "usage": 12288, "max": 20000, "failcnt": 0},
        "swap": {"limit": max64, "usage": 12288, "failcnt": 0},
        "kernel": {"limit": 0, "failcnt": 0},
        "kernelTCP": {"limit": 0, "failcnt": 0},
        "raw": {"anon": 4096, "file": 8192},
    }
    assert st["pids"] == {"current": 3}
    assert st["blkio"] == {
        "ioServiceBytesRecursive": [{"major": 8, "op": "Read", "value": 100}, {"major": 8, "op": "Write", "value": 200}],
        "ioServicedRecursive": [{"major": 8, "op": "Read", "value": 1}, {"major": 8, "op": "Write", "value": 2}],
    }
    assert st["hugetlb"] == {"2MB": {"failcnt": 4}}
    assert st["intel_rdt"] == {} and st["network_interfaces"] is None
    json.dumps(st)


def test_stats_without_controllers_counts_procs(root: Path) -> None:
    d = make_leaf(root, "c", ["cgroup.procs"], controllers="")
    (d / "cgroup.procs").write_text("1\n2\n")
    st = V2Cgroup(str(d)).stats()
    assert st["pids"] == {"current": 2}
    assert st["memory"]["usage"] == {"limit": 0, "failcnt": 0}


def test_write_error_classes() -> None:
    err = _fs.write_error("/cg", "memory.max", "1", OSError(errno.EINVAL, "x"))
    assert isinstance(err, InvalidArgument) and str(err) == "cgroup: write /cg/memory.max=1: Invalid argument"
    err = _fs.write_error("/cg", "memory.max", "1", OSError(errno.EBUSY, "x"))
    assert isinstance(err, FailedPrecondition) and getattr(err, "errno") == errno.EBUSY
    err = _fs.write_error("/cg", "io.max", "a\nb", OSError(errno.EPERM, "x"), "hint")
    assert str(err) == "cgroup: write /cg/io.max=a\\nb: Operation not permitted (hint)"
