"""cgroups on the real kernel: v1 (legacy/hybrid) hierarchies and a real cgroup2 mount.

Every test works below its own parent ``/berth-test-<random>`` and the ``env`` fixture
cleans up even when a test fails: it thaws what it froze, kills the processes the test
started (and their children, which live only in the test's cgroups) by pid, reaps them,
then removes the test's directories from every hierarchy.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from berth.errors import FailedPrecondition, InvalidArgument
from berth.runtime.cgroups import _paths, detect_mode, from_state, open_cgroup

ROOT = "/sys/fs/cgroup"


def _cgroup2_mount() -> str | None:
    if detect_mode(ROOT) == "v2":
        return ROOT
    for m in _paths.read_mounts():
        if m.fstype == "cgroup2" and m.mountpoint.startswith(ROOT + "/") and \
                os.path.exists(m.mountpoint + "/cgroup.controllers"):
            return m.mountpoint
    return None


IS_ROOT = os.geteuid() == 0
V1 = os.path.isdir(ROOT) and detect_mode(ROOT) == "v1"
CGROUP2 = _cgroup2_mount() if os.path.isdir(ROOT) else None

pytestmark = [pytest.mark.integration, pytest.mark.skipif(not IS_ROOT, reason="needs root")]
needs_v1 = pytest.mark.skipif(not V1, reason="needs cgroup v1 hierarchies")
needs_cgroup2 = pytest.mark.skipif(CGROUP2 is None, reason="needs a cgroup2 mount")


def _all_mountpoints() -> list[str]:
    return [m.mountpoint for m in _paths.read_mounts() if m.mountpoint.startswith(ROOT)]


def _state_letter(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(") ", 1)[1][0]


def _wait_for(cond: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timeout waiting for {what}")
        time.sleep(0.02)


class Env:
    """A unique cgroup parent plus the processes a test started."""

    def __init__(self) -> None:
        self.name = f"/berth-test-{secrets.token_hex(4)}"
        self.procs: list[subprocess.Popen] = []

    def path(self, sub: str) -> str:
        return f"{self.name}/{sub}"

    def dirs(self) -> list[str]:
        return [mp + self.name for mp in _all_mountpoints() if os.path.isdir(mp + self.name)]

    def spawn(self, args: list[str]) -> subprocess.Popen:
        p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.procs.append(p)
        return p

    def go(self, p: subprocess.Popen) -> None:
        """Let a spawned process past its `read` gate (after add_pid)."""
        assert p.stdin is not None
        p.stdin.write(b"go\n")
        p.stdin.flush()

    def _pids_in_tree(self) -> set[int]:
        pids: set[int] = set()
        for top in self.dirs():
            for dirpath, _dirs, files in os.walk(top):
                if "cgroup.procs" in files:
                    try:
                        with open(dirpath + "/cgroup.procs") as f:
                            pids.update(int(x) for x in f.read().split())
                    except OSError:
                        pass
        return pids

    def cleanup(self) -> None:
        # 1. thaw: a frozen v1 task does not die until thawed
        for top in self.dirs():
            for dirpath, _dirs, files in os.walk(top):
                for name, value in (("freezer.state", "THAWED"), ("cgroup.freeze", "0")):
                    if name in files:
                        try:
                            with open(f"{dirpath}/{name}", "w") as f:
                                f.write(value)
                        except OSError:
                            pass
        # 2. kill grandchildren first (their parent, our child, reaps them), then our children
        ours = {p.pid for p in self.procs}
        grandchildren = self._pids_in_tree() - ours
        for pid in grandchildren:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        # let their parents (our children, still alive) reap them, so none is orphaned
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(os.path.exists(f"/proc/{pid}") for pid in grandchildren):
            time.sleep(0.02)
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)
            for stream in (p.stdin, p.stdout, p.stderr):
                if stream:
                    stream.close()
        # 3. remove the directories, deepest first
        for top in self.dirs():
            for dirpath, _dirs, _files in sorted(os.walk(top, topdown=False), key=lambda w: -len(w[0])):
                for _ in range(50):
                    try:
                        os.rmdir(dirpath)
                        break
                    except FileNotFoundError:
                        break
                    except OSError:
                        time.sleep(0.05)


@pytest.fixture
def env() -> Iterator[Env]:
    e = Env()
    yield e
    e.cleanup()
    assert not e.dirs(), f"cleanup left {e.dirs()}"


GATED_SLEEP = ["sh", "-c", "read x; dd if=/dev/zero of=/dev/null bs=1M count=500 2>/dev/null; exec sleep 100"]

FORKER = r"""
import os, sys
sys.stdin.readline()
ok = fail = 0
for _ in range(10):
    try:
        pid = os.fork()
    except BlockingIOError:
        fail += 1
        continue
    if pid == 0:
        os.execvp("sleep", ["sleep", "100"])
    ok += 1
print(f"ok {ok} fail {fail}", flush=True)
try:
    while True:
        os.wait()
except ChildProcessError:
    pass
"""


def test_detect_mode_on_this_host() -> None:
    mode = detect_mode()
    assert mode == ("v2" if os.path.exists(ROOT + "/cgroup.controllers") else "v1")
    if CGROUP2 is not None:
        assert detect_mode(CGROUP2) == "v2"


@needs_v1
def test_v1_lifecycle(env: Env) -> None:
    cg = open_cgroup(env.path("c1"), "c1")
    cg.create()
    mountpoints = _all_mountpoints()
    leaves = [mp + env.path("c1") for mp in mountpoints if mp != ROOT]
    assert leaves and all(os.path.isdir(d) for d in leaves)  # incl. name=systemd and the hybrid cgroup2
    cpuset = cg.paths()["cpuset"]
    with open(cpuset + "/cpuset.cpus") as f, open(ROOT + "/cpuset/cpuset.cpus") as g:
        assert f.read().strip() == g.read().strip() != ""

    p = env.spawn(GATED_SLEEP)
    cg.add_pid(p.pid)
    with open(f"/proc/{p.pid}/cgroup") as f:
        lines = f.read().splitlines()
    assert lines and all(line.endswith(":" + env.path("c1")) for line in lines)

    cg.set({"memory": {"limit": 64 << 20, "swap": 128 << 20}, "pids": {"limit": 20},
            "cpu": {"shares": 512, "quota": 50000, "period": 100000}})
    dirs = cg.paths()
    for key, name, expected in (("memory", "memory.limit_in_bytes", str(64 << 20)),
                                ("memory", "memory.memsw.limit_in_bytes", str(128 << 20)),
                                ("pids", "pids.max", "20"), ("cpu", "cpu.shares", "512"),
                                ("cpu", "cpu.cfs_quota_us", "50000"), ("cpu", "cpu.cfs_period_us", "100000")):
        with open(f"{dirs[key]}/{name}") as f:
            assert f.read().strip() == expected, name

    env.go(p)  # dd runs inside the cgroup, then the shell execs sleep
    _wait_for(lambda: open(f"/proc/{p.pid}/comm").read().strip() == "sleep", what="exec sleep")

    cg.freeze()
    with open(dirs["freezer"] + "/freezer.state") as f:
        assert f.read().strip() == "FROZEN"
    assert cg.frozen()
    assert _state_letter(p.pid) == "D"  # how a frozen task shows in /proc
    cg.thaw()
    with open(dirs["freezer"] + "/freezer.state") as f:
        assert f.read().strip() == "THAWED"
    assert not cg.frozen()
    _wait_for(lambda: _state_letter(p.pid) == "S", what="thawed sleep")

    st = cg.stats()
    json.dumps(st)
    assert st["cpu"]["usage"]["total"] > 0
    assert st["memory"]["usage"]["usage"] > 0
    assert st["memory"]["usage"]["limit"] == 64 << 20
    assert st["pids"] == {"current": 1, "limit": 20}
    assert cg.pids() == [p.pid]
    assert cg.oom_kill_count() == 0

    p.kill()
    p.wait()
    saved = json.loads(json.dumps(cg.paths()))
    assert "created" in saved  # the parent env.name was made by create()
    from_state(saved).destroy()
    assert not any(os.path.exists(mp + env.name) for mp in mountpoints)


@needs_v1
def test_v1_pids_limit_blocks_the_sixth_process(env: Env) -> None:
    cg = open_cgroup(env.path("forker"), "forker")
    cg.create()
    cg.set({"pids": {"limit": 5}})
    p = env.spawn([sys.executable, "-c", FORKER])
    cg.add_pid(p.pid)
    env.go(p)
    assert p.stdout is not None
    assert p.stdout.readline().decode().strip() == "ok 4 fail 6"
    pids_dir = cg.paths()["pids"]
    with open(pids_dir + "/pids.current") as f:
        assert f.read().strip() == "5"
    assert len(cg.pids()) == 5 and p.pid in cg.pids()
    if os.path.exists(pids_dir + "/pids.events"):
        with open(pids_dir + "/pids.events") as f:
            assert "max 6" in f.read()


@needs_v1
def test_v1_memory_and_swap_raise_and_lower(env: Env) -> None:
    cg = open_cgroup(env.path("mem"), "mem")
    cg.create()
    d = cg.paths()["memory"]

    def limits() -> tuple[str, str]:
        with open(d + "/memory.limit_in_bytes") as f, open(d + "/memory.memsw.limit_in_bytes") as g:
            return f.read().strip(), g.read().strip()

    cg.set({"memory": {"limit": 64 << 20, "swap": 128 << 20}})
    assert limits() == (str(64 << 20), str(128 << 20))
    cg.set({"memory": {"limit": 32 << 20, "swap": 32 << 20}})  # lower: limit first
    assert limits() == (str(32 << 20), str(32 << 20))
    cg.set({"memory": {"limit": 256 << 20, "swap": 512 << 20}})  # raise: memsw first
    assert limits() == (str(256 << 20), str(512 << 20))
    cg.set({"memory": {"limit": -1}})  # unlimited, swap follows
    unlimited = limits()
    assert unlimited[0] == unlimited[1] and int(unlimited[0]) > 1 << 60
    cg.set({"memory": {"reservation": 16 << 20, "swappiness": 10}})
    with open(d + "/memory.soft_limit_in_bytes") as f:
        assert f.read().strip() == str(16 << 20)
    cg.destroy()


@needs_v1
def test_v1_limit_below_usage_names_file_and_reason(env: Env) -> None:
    cg = open_cgroup(env.path("busy"), "busy")
    cg.create()
    hog = "import sys; sys.stdin.readline(); b = bytearray(48 << 20); print('ready', flush=True); " \
          "sys.stdin.readline()"
    p = env.spawn([sys.executable, "-c", hog])
    cg.add_pid(p.pid)
    env.go(p)
    assert p.stdout is not None and p.stdout.readline().strip() == b"ready"
    with pytest.raises(FailedPrecondition) as info:
        cg.set({"memory": {"limit": 4096}})
    msg = str(info.value)
    assert "memory.limit_in_bytes=4096: Device or resource busy" in msg and "current usage:" in msg
    assert "\n" not in msg


@needs_v1
def test_v1_devices_deny_by_default(env: Env) -> None:
    cg = open_cgroup(env.path("dev"), "dev")
    cg.create()
    cg.set({"devices": [{"allow": False, "access": "rwm"},
                        {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"}]})
    with open(cg.paths()["devices"] + "/devices.list") as f:
        assert f.read().split("\n")[0] == "c 1:3 rwm"
    probe = ("import sys; sys.stdin.readline()\n"
             "for dev in ('/dev/null', '/dev/zero'):\n"
             "    try:\n        open(dev, 'rb').close(); print(dev, 'ok')\n"
             "    except PermissionError:\n        print(dev, 'denied')\n")
    p = env.spawn([sys.executable, "-c", probe])
    cg.add_pid(p.pid)
    env.go(p)
    out, _ = p.communicate(timeout=30)
    assert out.decode().split("\n")[:2] == ["/dev/null ok", "/dev/zero denied"]


@needs_v1
def test_v1_oom_kill_is_counted(env: Env) -> None:
    cg = open_cgroup(env.path("oom"), "oom")
    cg.create()
    cg.set({"memory": {"limit": 32 << 20, "swap": 32 << 20}})
    p = env.spawn([sys.executable, "-c", "import sys; sys.stdin.readline(); b = bytearray(256 << 20)"])
    cg.add_pid(p.pid)
    env.go(p)
    assert p.wait(timeout=60) == -signal.SIGKILL
    assert cg.oom_kill_count() >= 1
    assert cg.stats()["memory"]["usage"]["max"] == 32 << 20  # the peak hit the limit


@needs_v1
def test_v1_bad_values_are_invalid_argument(env: Env) -> None:
    cg = open_cgroup(env.path("bad"), "bad")
    cg.create()
    with pytest.raises(InvalidArgument, match="the minimum allowed cpu-shares is 2"):
        cg.set({"cpu": {"shares": 1}})
    with pytest.raises(InvalidArgument, match=r"^cgroup: write .*/cpuset\.cpus=4095: "
                                                  r"(Invalid argument|Numerical result out of range)$"):
        cg.set({"cpu": {"cpus": "4095"}})
    with pytest.raises(InvalidArgument, match="unified needs cgroup v2"):
        cg.set({"unified": {"memory.high": "1"}})


@needs_v1
def test_v1_destroy_keeps_parents_that_existed(env: Env) -> None:
    os.mkdir(ROOT + "/memory" + env.name)  # exists before create(), in one hierarchy only
    cg = open_cgroup(env.path("a/c1"), "c1")
    cg.create()
    from_state(cg.paths()).destroy()
    assert os.path.isdir(ROOT + "/memory" + env.name)
    assert not os.path.exists(ROOT + "/memory" + env.path("a"))
    assert not os.path.exists(ROOT + "/pids" + env.name)


@needs_v1
def test_v1_destroy_with_a_live_process_is_refused(env: Env) -> None:
    cg = open_cgroup(env.path("live"), "live")
    cg.create()
    p = env.spawn(["sleep", "100"])
    cg.add_pid(p.pid)
    with pytest.raises(FailedPrecondition, match="Device or resource busy"):
        cg.destroy()
    assert p.poll() is None  # destroy kills nothing
    p.kill()
    p.wait()
    cg.destroy()
    assert not cg.exists()


@needs_cgroup2
def test_v2_on_the_real_cgroup2_mount(env: Env) -> None:
    assert CGROUP2 is not None
    cg = open_cgroup(env.path("c2"), "c2", root=CGROUP2)
    assert cg.mode == "v2"
    cg.create()
    d = cg.paths()[""]
    assert d == CGROUP2 + env.path("c2") and os.path.isdir(d)
    p = env.spawn(["sleep", "100"])
    cg.add_pid(p.pid)
    with open(f"/proc/{p.pid}/cgroup") as f:
        assert f"0::{env.path('c2')}" in f.read().splitlines()
    assert cg.pids() == [p.pid]

    cg.freeze()
    with open(d + "/cgroup.events") as f:
        assert "frozen 1" in f.read().splitlines()
    assert cg.frozen()
    cg.thaw()
    with open(d + "/cgroup.events") as f:
        assert "frozen 0" in f.read().splitlines()
    assert not cg.frozen()

    st = cg.stats()
    json.dumps(st)
    assert st["pids"]["current"] == 1
    cg.set({})
    with open(d + "/cgroup.controllers") as f:
        available = f.read().split()
    if "memory" not in available:
        with pytest.raises(FailedPrecondition, match="memory controller is not enabled"):
            cg.set({"memory": {"limit": 64 << 20}})
    assert cg.oom_kill_count() == 0

    p.kill()
    p.wait()
    from_state(json.loads(json.dumps(cg.paths()))).destroy()
    assert not os.path.exists(CGROUP2 + env.name)
