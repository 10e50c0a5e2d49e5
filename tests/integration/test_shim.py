"""berth-shim: one supervisor per container, driven through its control socket.

Each test starts real containers through ``berth.shim.client.start_shim`` with its own
state dir and runtime root; the runtime-facing tests run against both ``berth-runtime``
and runc (the shim talks to the runtime only through its command line). Whatever a test
started is killed by pid (shim and container init, start time checked) and deleted from
its runtime root afterwards, also when the test fails.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from berth import errors
from berth.shim.client import ShimClient, find_shims, start_shim
from tests.support import cleanup

pytestmark = pytest.mark.integration

BERTH_RUNTIME = os.path.join(os.path.dirname(sys.executable), "berth-runtime")
RUNC = shutil.which("runc") or "/usr/sbin/runc"
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$")


def _runtimes() -> list:
    return [pytest.param(BERTH_RUNTIME, id="berth-runtime"),
            pytest.param(RUNC, id="runc", marks=pytest.mark.skipif(not os.path.exists(RUNC),
                                                                     reason="runc not installed"))]


class Shims:
    """Starts shims for one test, remembers every pid, and cleans up by pid."""

    def __init__(self, base: Path, runtime: str) -> None:
        self.base = base
        self.runtime = runtime
        self.root = base / "runtime-root"
        self.root.mkdir(mode=0o700)
        self.pids: list[tuple[int, int | None]] = []
        self.ids: set[str] = set()

    def state_dir(self, name: str) -> Path:
        return self.base / f"shim-{name}"

    def start(self, bundle, name: str = "c1", **kwargs) -> ShimClient:  # noqa: ANN001
        self.ids.add(name)
        client = start_shim(name, bundle.path, self.state_dir(name), self.runtime, runtime_root=self.root,
                            timeout=30, **kwargs)
        self.remember(client.ready["pid"], client.ready["init_pid"])
        return client

    def remember(self, *pids: int) -> None:
        for pid in pids:
            self.pids.append((pid, cleanup.start_time(pid)))

    def cleanup(self) -> None:
        for cid in sorted(self.ids):
            for args in (["kill", cid, "KILL"], ["delete", "--force", cid]):
                subprocess.run([self.runtime, "--root", str(self.root), *args], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=15, check=False)
        cleanup.kill_recorded(self.pids)


@pytest.fixture(params=_runtimes())
def shims(request: pytest.FixtureRequest, tmp_path: Path):  # noqa: ANN201
    harness = Shims(tmp_path, request.param)
    try:
        yield harness
    finally:
        harness.cleanup()


@pytest.fixture
def berth_shims(tmp_path: Path):  # noqa: ANN201
    """For what the shim does by itself (logs, lifecycle): berth-runtime only."""
    harness = Shims(tmp_path, BERTH_RUNTIME)
    try:
        yield harness
    finally:
        harness.cleanup()


def _log_entries(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f]


def _parse_time(text: str) -> dt.datetime:
    assert TIME_RE.match(text), text
    return dt.datetime.strptime(text[:26] + "Z", "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc)


def _wait_for(cond, timeout: float = 10.0, what: str = "condition") -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        assert chunk, f"connection closed after {len(buf)} of {n} bytes"
        buf += chunk
    return buf


# --- start, logs -------------------------------------------------------------------------------

def test_output_lands_in_json_log_with_streams_and_times(shims: Shims, bundle, tmp_path: Path) -> None:
    log = tmp_path / "logs" / "c1-json.log"
    b = bundle(["sh", "-c", "echo out1; echo err1 >&2; echo out2; printf 'no newline'"])
    before = dt.datetime.now(dt.timezone.utc)
    client = shims.start(b, log_path=log)
    assert client.state()["status"] == "created"
    client.start()
    result = client.wait(timeout=20)
    after = dt.datetime.now(dt.timezone.utc)
    assert result["exit_code"] == 0 and result["oom_killed"] is False

    entries = _log_entries(log)
    assert [(e["stream"], e["log"]) for e in entries if e["stream"] == "stdout"] == [
        ("stdout", "out1\n"), ("stdout", "out2\n"), ("stdout", "no newline")]
    assert [(e["stream"], e["log"]) for e in entries if e["stream"] == "stderr"] == [("stderr", "err1\n")]
    times = [_parse_time(e["time"]) for e in entries]
    for t in times:
        assert before - dt.timedelta(seconds=1) <= t <= after + dt.timedelta(seconds=1)
    assert all(set(e) == {"log", "stream", "time"} for e in entries)

    state = client.state()
    assert state["status"] == "stopped" and state["exit_code"] == 0
    _parse_time(state["exited_at"])


def test_log_rotates_at_max_size_while_no_client_is_connected(berth_shims: Shims, bundle, tmp_path: Path) -> None:
    log = tmp_path / "c1.log"
    max_size = 64 * 1024
    client = berth_shims.start(bundle(["seq", "1", "30000"]), log_path=log, log_max_size=max_size, log_max_file=3)
    client.start()
    assert client.wait(timeout=30)["exit_code"] == 0

    files = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("c1.log"))
    assert files == ["c1.log", "c1.log.1", "c1.log.2"]
    for name in files:
        assert 0 < (tmp_path / name).stat().st_size <= max_size, name
    numbers = [int(e["log"]) for name in ("c1.log.2", "c1.log.1", "c1.log") for e in _log_entries(tmp_path / name)]
    assert numbers[-1] == 30000
    assert numbers == list(range(numbers[0], 30001))  # nothing lost or reordered across rotations
    assert numbers[0] > 1  # the oldest files were dropped


def test_long_line_is_split_into_16k_partial_messages(berth_shims: Shims, bundle, tmp_path: Path) -> None:
    log = tmp_path / "c1.log"
    client = berth_shims.start(bundle(["sh", "-c", "head -c 40000 /dev/zero | tr '\\0' x; echo"]), log_path=log)
    client.start()
    client.wait(timeout=20)
    parts = [e["log"] for e in _log_entries(log)]
    assert [len(p) for p in parts] == [16384, 16384, 40000 - 32768 + 1]
    assert not parts[0].endswith("\n") and parts[-1].endswith("\n")


# --- attach ------------------------------------------------------------------------------------

def test_attach_streams_live_multiplexed_output_and_sends_stdin(shims: Shims, bundle, tmp_path: Path) -> None:
    b = bundle(["sh", "-c", "cat; echo bye >&2"])
    client = shims.start(b, stdin=True, log_path=tmp_path / "c1.log")
    stream = client.attach(stdin=True, stdout=True, stderr=True, close_stdin=True, timeout=15)
    assert stream.tty is False
    client.start()

    stream.send(b"hello\n")  # live: the echo comes back while the container still runs
    assert stream.recv(8) == b"\x01\x00\x00\x00\x00\x00\x00\x06"
    assert stream.recv(6) == b"hello\n"
    assert client.state()["status"] == "running"
    stream.send(b"world\n")
    assert stream.read_frame() == (1, b"world\n")
    stream.close_stdin()  # close_stdin: cat sees EOF
    assert list(stream.frames()) == [(2, b"bye\n")]  # then the shim ends the stream
    stream.close()
    assert client.wait(timeout=15)["exit_code"] == 0
    assert [e["log"] for e in _log_entries(tmp_path / "c1.log")] == ["hello\n", "world\n", "bye\n"]


def test_several_attaches_and_stream_selection(berth_shims: Shims, bundle) -> None:
    client = berth_shims.start(bundle(["sh", "-c", "read x; echo out-$x; echo err-$x >&2"]), stdin=True)
    only_err = client.attach(stdout=False, stderr=True, timeout=15)
    both = client.attach(stdin=True, close_stdin=True, timeout=15)
    client.start()
    both.send(b"1\n")
    assert both.read_all() == (b"out-1\n", b"err-1\n")
    assert only_err.read_all() == (b"", b"err-1\n")


def test_tty_attach_and_resize(shims: Shims, bundle, tmp_path: Path) -> None:
    b = bundle(["sh"], process={"terminal": True})
    client = shims.start(b, tty=True, stdin=True, log_path=tmp_path / "c1.log")
    client.resize(100, 30)
    stream = client.attach(stdin=True, stdout=True, timeout=15)
    assert stream.tty is True
    client.start()
    stream.send(b"stty size\n")
    seen = b""
    while b"30 100" not in seen:
        chunk = stream.recv()
        assert chunk, seen
        seen += chunk
    client.resize(width=132, height=43)
    stream.send(b"stty size; exit 3\n")
    rest, _ = stream.read_all()
    assert b"43 132" in rest
    assert b"\x01\x00\x00\x00" not in seen + rest  # raw bytes, no frames
    assert client.wait(timeout=15)["exit_code"] == 3
    logged = "".join(e["log"] for e in _log_entries(tmp_path / "c1.log"))
    assert "43 132\r\n" in logged
    assert {e["stream"] for e in _log_entries(tmp_path / "c1.log")} == {"stdout"}


def test_slow_attach_client_pauses_output_instead_of_losing_it(berth_shims: Shims, bundle) -> None:
    client = berth_shims.start(bundle(["sleep", "1000"]))
    client.start()
    b = bundle(["true"])
    size = 8_000_000
    _pid, stream = client.exec_attached("big", dict(b.config["process"], args=["head", "-c", str(size), "/dev/zero"]),
                                        timeout=15)
    time.sleep(0.5)  # not reading: the exec blocks on its full pipe, the shim's buffer stays small
    assert client.state(exec_id="big")["status"] == "running"
    assert int(open(f"/proc/{client.ready['pid']}/status").read().split("VmRSS:")[1].split()[0]) < 15 * 1024
    out, err = stream.read_all()
    assert (len(out), err) == (size, b"")
    assert client.wait(exec_id="big", timeout=15)["exit_code"] == 0


# --- exec, kill, wait, OOM -----------------------------------------------------------------------

def test_exec_with_exit_code_and_stdin(shims: Shims, bundle) -> None:
    b = bundle(["sleep", "1000"])
    client = shims.start(b)
    client.start()
    process = dict(b.config["process"], args=["sh", "-c", "echo out; echo err >&2; exit 7"])
    pid, stream = client.exec_attached("e1", process, timeout=15)
    assert pid > 0
    assert stream.read_all() == (b"out\n", b"err\n")
    assert client.wait(exec_id="e1", timeout=15)["exit_code"] == 7
    state = client.state(exec_id="e1")
    assert (state["status"], state["exit_code"], state["pid"]) == ("stopped", 7, pid)
    assert client.state()["status"] == "running"  # the container is not the exec

    client.exec("e2", dict(process, args=["cat"]), stdin=True)
    stream = client.attach(stdin=True, close_stdin=True, exec_id="e2", timeout=15)
    stream.send(b"to cat\n")
    stream.close_stdin()
    assert stream.read_all() == (b"to cat\n", b"")
    assert client.wait(exec_id="e2", timeout=15)["exit_code"] == 0

    with pytest.raises(errors.AlreadyExists):
        client.exec("e1", process)
    with pytest.raises(errors.NotFound, match="/nonexistent"):
        client.exec("e3", dict(process, args=["/nonexistent"]))
    with pytest.raises(errors.NotFound):
        client.wait(exec_id="nope")


def test_kill_then_every_waiter_gets_137(shims: Shims, bundle) -> None:
    client = shims.start(bundle(["sleep", "1000"]))
    client.start()
    results: list[dict] = []
    waiters = [threading.Thread(target=lambda: results.append(client.wait(timeout=20))) for _ in range(3)]
    for w in waiters:
        w.start()
    time.sleep(0.2)
    assert not results
    client.kill("SIGKILL")
    for w in waiters:
        w.join(20)
    assert [r["exit_code"] for r in results] == [137, 137, 137]
    assert client.exit_status()["exit_code"] == 137
    assert client.state()["status"] == "stopped"
    with pytest.raises(errors.FailedPrecondition):
        client.kill(15)


def test_oom_kill_is_detected(shims: Shims, bundle) -> None:
    hog = bundle(["sh", "-c", "x=aaaaaaaa; while true; do x=$x$x; done"],
                 linux={"resources": {"memory": {"limit": 16 * 1024 * 1024}}})
    client = shims.start(hog)
    client.start()
    result = client.wait(timeout=30)
    assert result["exit_code"] == 137
    assert result["oom_killed"] is True
    assert client.exit_status()["oom_killed"] is True

    calm = shims.start(bundle(["true"], linux={"resources": {"memory": {"limit": 16 * 1024 * 1024}}}), name="c2")
    calm.start()
    result = calm.wait(timeout=20)
    assert (result["exit_code"], result["oom_killed"]) == (0, False)


# --- lifecycle ---------------------------------------------------------------------------------

def test_shim_survives_the_death_of_its_starter(berth_shims: Shims, bundle) -> None:
    b = bundle(["sh", "-c", "read x; echo got-$x; exit 4"])
    state_dir = berth_shims.state_dir("c1")
    berth_shims.ids.add("c1")
    starter = f"""
import json, os, signal, sys
from berth.shim.client import start_shim
c = start_shim("c1", {b.path!r}, {str(state_dir)!r}, {BERTH_RUNTIME!r}, runtime_root={str(berth_shims.root)!r},
               stdin=True)
print(json.dumps(c.ready), flush=True)
os.killpg(0, signal.SIGKILL)  # the starter and its whole process group die at once
"""
    proc = subprocess.run([sys.executable, "-c", starter], capture_output=True, text=True, timeout=30,
                          start_new_session=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    ready = json.loads(proc.stdout)
    berth_shims.remember(ready["pid"], ready["init_pid"])
    shim_pid = ready["pid"]
    assert cleanup.start_time(shim_pid) is not None
    assert os.getsid(shim_pid) == shim_pid and os.getpgid(shim_pid) == shim_pid  # its own session and group

    client = ShimClient(state_dir)
    assert client.alive()
    assert find_shims(state_dir.parent) == [str(state_dir)]
    stream = client.attach(stdin=True, close_stdin=True, timeout=15)
    client.start()
    stream.send(b"x\n")
    assert stream.read_all() == (b"got-x\n", b"")
    assert client.wait(timeout=15)["exit_code"] == 4


def test_a_dead_shim_is_reported_not_hung_on(berth_shims: Shims, bundle) -> None:
    client = berth_shims.start(bundle(["sleep", "1000"]))
    client.start()
    pid, _started = client.pid()
    os.kill(pid, signal.SIGKILL)
    _wait_for(lambda: not client.alive(), 5, "the shim to die")
    with pytest.raises(errors.Unavailable, match="not running"):
        client.state()
    assert find_shims(berth_shims.base) == []


def test_exit_is_recorded_while_no_client_is_connected(berth_shims: Shims, bundle) -> None:
    client = berth_shims.start(bundle(["sh", "-c", "sleep 1; exit 5"]))
    client.start()
    exit_file = Path(client.state_dir) / "exit.json"
    assert not exit_file.exists()
    _wait_for(exit_file.exists, 15, "exit.json")  # nobody waits, nobody is attached
    recorded = json.loads(exit_file.read_text())
    assert recorded["exit_code"] == 5 and recorded["oom_killed"] is False
    _parse_time(recorded["exited_at"])
    later = ShimClient(client.state_dir)  # e.g. a daemon that was down meanwhile
    assert later.state()["exit_code"] == 5
    assert later.wait(timeout=5)["exit_code"] == 5


def test_bad_bundle_reports_the_runtimes_error(shims: Shims, bundle) -> None:
    b = bundle(["/nonexistent"])
    with pytest.raises(errors.NotFound) as info:
        shims.start(b)
    message = str(info.value)
    assert "/nonexistent" in message and "no such file or directory" in message
    assert "\n" not in message
    assert not shims.state_dir("c1").exists()
    assert find_shims(shims.base) == []

    no_rootfs = bundle(["true"])
    shutil.rmtree(no_rootfs.rootfs)
    with pytest.raises(errors.BerthError, match="rootfs"):
        shims.start(no_rootfs, name="c2")


def test_delete_removes_the_state_dir_and_ends_the_shim(berth_shims: Shims, bundle) -> None:
    client = berth_shims.start(bundle(["true"]))
    pid, started = client.pid()
    client.start()
    client.wait(timeout=15)
    client.delete()
    assert not os.path.exists(client.state_dir)
    assert cleanup.gone(pid) or cleanup.start_time(pid) != started
    with pytest.raises(errors.Unavailable):
        client.state()
    out = subprocess.run([BERTH_RUNTIME, "--root", str(berth_shims.root), "list", "-q"], capture_output=True,
                         text=True, check=True).stdout
    assert "c1" not in out.split()


def test_find_shims_and_shutdown(berth_shims: Shims, bundle) -> None:
    a = berth_shims.start(bundle(["sleep", "1000"]), name="a")
    b = berth_shims.start(bundle(["true"]), name="b")
    assert find_shims(berth_shims.base) == [a.state_dir, b.state_dir]
    with pytest.raises(errors.FailedPrecondition, match="running"):
        a.shutdown()
    b.start()
    b.wait(timeout=15)
    b.shutdown()
    assert find_shims(berth_shims.base) == [a.state_dir]
    assert json.loads((Path(b.state_dir) / "exit.json").read_text())["exit_code"] == 0


def test_protocol_errors(berth_shims: Shims, bundle) -> None:
    client = berth_shims.start(bundle(["sleep", "1000"]))
    with pytest.raises(errors.InvalidArgument, match="unknown operation"):
        client.call("frobnicate")
    with pytest.raises(errors.FailedPrecondition, match="no terminal"):
        client.resize(80, 24)
    with pytest.raises(errors.InvalidArgument):
        client.kill("SIGNOPE")
    client.start()
    with pytest.raises(errors.FailedPrecondition, match="already been started"):
        client.start()
    with socket.socket(socket.AF_UNIX) as sock:  # not JSON: one error line, then the shim closes
        sock.connect(client.socket_path)
        sock.sendall(b"{nope\n")
        answer = json.loads(sock.makefile().readline())
        assert answer["ok"] is False and answer["kind"] == "InvalidArgument"
    assert client.state()["status"] == "running"  # still serving
    assert client.pids() == [client.state()["pid"]]
    assert "memory" in client.stats()
    assert os.stat(client.socket_path).st_mode & 0o777 == 0o600


def test_shim_resident_memory(berth_shims: Shims, bundle, tmp_path: Path) -> None:
    client = berth_shims.start(bundle(["sh", "-c", "while true; do echo tick; sleep 0.01; done"]),
                               log_path=tmp_path / "c1.log", log_max_size=50_000, log_max_file=2)
    client.start()
    stream = client.attach(timeout=10)
    assert stream.read_frame() == (1, b"tick\n")
    time.sleep(0.5)
    client.state()
    pid = client.ready["pid"]
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f.read().splitlines())
    rss_kib = int(fields["VmRSS"].split()[0])
    hwm_kib = int(fields["VmHWM"].split()[0])
    print(f"\nberth-shim VmRSS {rss_kib / 1024:.1f} MiB (peak {hwm_kib / 1024:.1f} MiB)")
    stream.close()
    assert rss_kib < 15 * 1024
