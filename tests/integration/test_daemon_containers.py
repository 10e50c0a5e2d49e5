"""berthd's containers, driven by the real docker CLI (and the raw API for error shapes).

One berthd per module (``berthd`` fixture: temporary roots, its own cgroup parent, a
busybox image imported without a registry); the crash test starts its own daemons on
one pair of roots. Everything a test made (berthd, shims, containers, mounts, cgroups)
is removed by pid and path afterwards, also when the test fails.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import signal
import struct
import subprocess
import termios
import time

import pytest

from tests.support.daemon import Berthd, berthd, berthd_factory  # noqa: F401 - fixtures

pytestmark = pytest.mark.integration


# --- helpers ---------------------------------------------------------------------------------


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    return proc.stdout


def inspect(d: Berthd, name: str) -> dict:
    return json.loads(ok(d.docker("inspect", name)))[0]


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


class Pty:
    """A command under a real pseudo-terminal (python pty.fork), with a window size."""

    def __init__(self, argv: list[str], env: dict[str, str], rows: int = 30, cols: int = 100) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: the docker CLI on the pty's slave
            try:
                os.execvpe(argv[0], argv, env)
            finally:
                os._exit(127)
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.output = b""

    def read_until(self, needle: bytes, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while needle not in self.output:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    data = os.read(self.fd, 65536)
                except OSError:
                    return needle in self.output
                if not data:
                    return needle in self.output
                self.output += data
        return True

    def send(self, data: bytes) -> None:
        os.write(self.fd, data)

    def wait(self, timeout: float = 15.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
            self.read_until(b"\0never\0", 0.05)
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        os.close(self.fd)
        raise AssertionError(f"the command under the pty did not exit; output: {self.output!r}")


# --- run, logs, ps, stop, rm ----------------------------------------------------------------


def test_run_rm_echo(berthd: Berthd) -> None:
    before = set(ok(berthd.docker("ps", "-aq")).split())
    out = ok(berthd.docker("run", "--rm", berthd.image, "echo", "hi"))
    assert out == "hi\n"
    assert set(ok(berthd.docker("ps", "-aq")).split()) == before  # --rm removed it


def test_exit_codes_and_streams(berthd: Berthd) -> None:
    proc = berthd.docker("run", "--name", "exit3", berthd.image, "sh", "-c", "echo out; echo err >&2; exit 3")
    assert proc.returncode == 3
    assert proc.stdout == "out\n"
    assert proc.stderr == "err\n"
    state = inspect(berthd, "exit3")["State"]
    assert (state["Status"], state["ExitCode"], state["Running"]) == ("exited", 3, False)
    assert state["FinishedAt"] > state["StartedAt"]
    assert "Exited (3)" in ok(berthd.docker("ps", "-a", "--filter", "name=exit3", "--format", "{{.Status}}"))
    missing = berthd.docker("run", "--rm", berthd.image, "/nope")
    assert missing.returncode == 127, missing.stderr
    assert "nope" in missing.stderr
    ok(berthd.docker("rm", "exit3"))


def test_detached_ps_logs_follow_stop_rm(berthd: Berthd) -> None:
    cid = ok(berthd.docker("run", "-d", "--name", "looper", berthd.image, "sh", "-c",
                           "trap 'echo bye; exit 0' TERM; i=0; while true; do echo line $i; i=$((i+1)); "
                           "sleep 0.1; done")).strip()
    assert len(cid) == 64
    ps = ok(berthd.docker("ps", "--format", "{{.ID}} {{.Names}} {{.Status}}"))
    assert f"{cid[:12]} looper Up" in ps
    follow = subprocess.Popen(berthd.docker_argv("logs", "-f", "looper"), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=berthd.docker_env())
    try:
        first = [follow.stdout.readline() for _ in range(3)]
        assert first == [b"line 0\n", b"line 1\n", b"line 2\n"]
        ok(berthd.docker("stop", "looper"))
        rest, _ = follow.communicate(timeout=10)  # logs -f ends when the container stops
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()
    assert follow.returncode == 0
    assert rest.endswith(b"bye\n")
    logs = ok(berthd.docker("logs", "--tail", "2", "looper"))
    assert logs.splitlines()[-1] == "bye"
    assert len(logs.splitlines()) == 2
    stamped = ok(berthd.docker("logs", "--timestamps", "--tail", "1", "looper"))
    assert stamped.split(" ", 1)[0].endswith("Z") and stamped.endswith(" bye\n")
    state = inspect(berthd, "looper")["State"]
    assert (state["Status"], state["ExitCode"]) == ("exited", 0)
    assert "looper" not in ok(berthd.docker("ps", "--format", "{{.Names}}"))
    assert "Exited (0)" in ok(berthd.docker("ps", "-a", "--filter", "id=" + cid[:12], "--format", "{{.Status}}"))
    ok(berthd.docker("rm", "looper"))
    gone = berthd.docker("inspect", "looper")
    assert gone.returncode != 0 and "No such" in gone.stderr
    assert not os.path.exists(berthd.data_root / "containers" / cid)


def test_run_it_under_a_pty(berthd: Berthd) -> None:
    term = Pty(berthd.docker_argv("run", "-it", "--rm", "--name", "tty1", berthd.image, "sh"), berthd.docker_env())
    assert term.read_until(b"# "), term.output
    term.send(b"echo hello-$((6*7)); stty size; tty\r")
    assert term.read_until(b"/dev/pts/0"), term.output
    assert b"hello-42" in term.output
    assert b"30 100" in term.output  # the CLI sent the window size
    term.send(b"exit 5\r")
    assert term.wait() == 5


def test_run_it_detach_keys_and_attach(berthd: Berthd) -> None:
    term = Pty(berthd.docker_argv("run", "-it", "--name", "det", berthd.image, "sh"), berthd.docker_env())
    assert term.read_until(b"# "), term.output
    term.send(b"\x10\x11")  # ctrl-p ctrl-q
    assert term.wait() == 0
    assert inspect(berthd, "det")["State"]["Running"]
    again = Pty(berthd.docker_argv("attach", "det"), berthd.docker_env())
    again.send(b"echo back-$((1+1))\r")
    assert again.read_until(b"back-2"), again.output
    again.send(b"exit 4\r")
    assert again.wait() == 4
    assert wait_for(lambda: inspect(berthd, "det")["State"]["ExitCode"] == 4)
    ok(berthd.docker("rm", "det"))


def test_exec(berthd: Berthd) -> None:
    ok(berthd.docker("run", "-d", "--name", "ex", berthd.image, "sleep", "1000"))
    try:
        proc = berthd.docker("exec", "ex", "sh", "-c", "echo from-exec; echo oops >&2; hostname; exit 7")
        assert proc.returncode == 7
        cid = inspect(berthd, "ex")["Id"]
        assert proc.stdout == f"from-exec\n{cid[:12]}\n"
        assert proc.stderr == "oops\n"
        assert ok(berthd.docker("exec", "-u", "nobody", "-w", "/tmp", "-e", "X=1", "ex", "sh", "-c",
                                "id -u; pwd; echo $X")) == "65534\n/tmp\n1\n"
        assert berthd.docker("exec", "-i", "ex", "cat", input="piped\n").stdout == "piped\n"
        ok(berthd.docker("exec", "-d", "ex", "sh", "-c", "echo detached > /tmp/d"))
        assert wait_for(lambda: berthd.docker("exec", "ex", "cat", "/tmp/d").stdout == "detached\n")
        term = Pty(berthd.docker_argv("exec", "-it", "ex", "sh"), berthd.docker_env(), rows=24, cols=90)
        assert term.read_until(b"# "), term.output
        term.send(b"stty size; tty; exit 9\r")
        assert term.wait() == 9
        assert b"24 90" in term.output and b"/dev/pts/" in term.output
        top = ok(berthd.docker("top", "ex"))
        assert "sleep 1000" in top and "PID" in top.splitlines()[0]
    finally:
        berthd.docker("rm", "-f", "ex")


def test_kill_and_signals(berthd: Berthd) -> None:
    ok(berthd.docker("run", "-d", "--name", "k1", berthd.image, "sh", "-c",
                     "trap 'echo got-usr1' USR1; while true; do sleep 0.1; done"))
    ok(berthd.docker("kill", "-s", "USR1", "k1"))
    assert wait_for(lambda: "got-usr1" in berthd.docker("logs", "k1").stdout)
    assert inspect(berthd, "k1")["State"]["Running"]
    ok(berthd.docker("kill", "k1"))
    assert ok(berthd.docker("wait", "k1")).strip() == "137"
    assert inspect(berthd, "k1")["State"]["ExitCode"] == 137
    again = berthd.docker("kill", "k1")
    assert again.returncode != 0 and "is not running" in again.stderr
    ok(berthd.docker("rm", "k1"))


def test_inspect_shape(berthd: Berthd) -> None:
    ok(berthd.docker("create", "--name", "insp", "-e", "A=1", "-l", "team=x", "-w", "/tmp", "--stop-signal",
                     "SIGUSR2", "--restart", "unless-stopped", "--memory", "64m", berthd.image, "sleep", "5"))
    doc = inspect(berthd, "insp")
    assert doc["Name"] == "/insp" and len(doc["Id"]) == 64
    assert doc["Path"] == "sleep" and doc["Args"] == ["5"]
    assert doc["State"]["Status"] == "created" and doc["State"]["StartedAt"] == "0001-01-01T00:00:00Z"
    assert doc["Config"]["Image"] == berthd.image and doc["Config"]["Cmd"] == ["sleep", "5"]
    assert "A=1" in doc["Config"]["Env"] and doc["Config"]["Labels"] == {"team": "x"}
    assert doc["Config"]["WorkingDir"] == "/tmp" and doc["Config"]["StopSignal"] == "SIGUSR2"
    assert doc["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert doc["HostConfig"]["Memory"] == 64 * 1024 * 1024
    assert doc["Image"].startswith("sha256:") and doc["Driver"] == "overlay2"
    assert doc["GraphDriver"]["Data"]["MergedDir"].endswith("/rootfs")
    assert "Networks" in doc["NetworkSettings"]
    assert "Created" in ok(berthd.docker("ps", "-a", "--filter", "name=insp", "--filter", "label=team=x",
                                         "--format", "{{.Status}}"))
    ok(berthd.docker("rename", "insp", "insp2"))
    assert inspect(berthd, "insp2")["Name"] == "/insp2"
    ok(berthd.docker("rm", "insp2"))


def test_restart_on_failure(berthd: Berthd) -> None:
    proc = berthd.docker("run", "--name", "flaky", "--restart", "on-failure:2", berthd.image, "sh", "-c",
                         "echo attempt; exit 1")
    assert proc.returncode == 1
    assert wait_for(lambda: (lambda s: s["RestartCount"] == 2 and s["State"]["Status"] == "exited")(
        inspect(berthd, "flaky")), timeout=15)
    assert ok(berthd.docker("logs", "flaky")).count("attempt") == 3
    time.sleep(0.5)
    assert inspect(berthd, "flaky")["RestartCount"] == 2  # no third restart
    ok(berthd.docker("rm", "flaky"))


def test_auto_remove_detached(berthd: Berthd) -> None:
    cid = ok(berthd.docker("run", "-d", "--rm", berthd.image, "sh", "-c", "sleep 0.3")).strip()
    assert wait_for(lambda: berthd.api.get(f"/containers/{cid}/json")[0] == 404)
    assert not os.path.exists(berthd.data_root / "containers" / cid)


def test_name_conflict_and_removing_running(berthd: Berthd) -> None:
    cid = ok(berthd.docker("run", "-d", "--name", "busy", berthd.image, "sleep", "1000")).strip()
    try:
        again = berthd.docker("run", "-d", "--name", "busy", berthd.image, "true")
        assert again.returncode == 125
        assert (f'Conflict. The container name "/busy" is already in use by container "{cid}". You have to '
                "remove (or rename) that container to be able to reuse that name.") in again.stderr
        rm = berthd.docker("rm", "busy")
        assert rm.returncode == 1
        assert (f"You cannot remove a running container {cid}. Stop the container before attempting removal "
                "or force remove") in rm.stderr
        status, body = berthd.api.delete(f"/containers/{cid}")
        assert status == 409 and body["message"].startswith("You cannot remove a running container")
    finally:
        ok(berthd.docker("rm", "-f", "busy"))
    assert berthd.api.get(f"/containers/{cid}/json")[0] == 404


def test_api_errors(berthd: Berthd) -> None:
    status, body = berthd.api.post("/containers/create", {"Image": "nosuch/image:1"})
    assert (status, body["message"]) == (404, "No such image: nosuch/image:1")
    status, body = berthd.api.request("POST", "/containers/create", b"{not json", raw=False)
    assert status == 400
    status, body = berthd.api.post("/containers/create", {"Image": berthd.image, "Cmd": ["true"]}, name="bad name!")
    assert status == 400 and "Invalid container name" in body["message"]
    status, body = berthd.api.get("/containers/nosuchthing/json")
    assert (status, body["message"]) == (404, "No such container: nosuchthing")
    status, body = berthd.api.post("/containers/create", {"Image": berthd.image, "Cmd": ["true"],
                                                          "HostConfig": {"RestartPolicy": {"Name": "sometimes"}}})
    assert status == 400 and "invalid restart policy" in body["message"]
    assert all(not c["Names"][0].startswith("/bad") for c in berthd.api.get("/containers/json", all=1)[1])


def test_pause_stats_update_wait(berthd: Berthd) -> None:
    ok(berthd.docker("run", "-d", "--name", "pz", berthd.image, "sleep", "1000"))
    try:
        ok(berthd.docker("pause", "pz"))
        doc = inspect(berthd, "pz")
        assert doc["State"]["Paused"] and doc["State"]["Status"] == "paused"
        assert "(Paused)" in ok(berthd.docker("ps", "--filter", "name=pz", "--format", "{{.Status}}"))
        ok(berthd.docker("unpause", "pz"))
        ok(berthd.docker("update", "--memory", "100m", "--memory-swap", "200m", "--pids-limit", "40", "pz"))
        stats = ok(berthd.docker("stats", "--no-stream", "--format", "{{.Name}} {{.MemUsage}} {{.PIDs}}", "pz"))
        assert stats.startswith("pz ") and "100MiB" in stats and stats.split()[-1] == "1"
        status, raw = berthd.api.get("/containers/pz/stats", stream=0, **{"one-shot": 1})
        assert status == 200 and raw["pids_stats"]["current"] == 1 and raw["memory_stats"]["usage"] > 0
        waiter = subprocess.Popen(berthd.docker_argv("wait", "pz"), stdout=subprocess.PIPE, text=True,
                                  env=berthd.docker_env())
        time.sleep(0.3)
        ok(berthd.docker("kill", "-s", "TERM", "pz"))  # sleep as PID 1 ignores TERM
        ok(berthd.docker("kill", "pz"))
        assert waiter.communicate(timeout=10)[0].strip() == "137"
    finally:
        berthd.docker("rm", "-f", "pz")


def test_security_and_resources(berthd: Berthd) -> None:
    def run(*args: str) -> str:
        return ok(berthd.docker("run", "--rm", *args))

    status = run(berthd.image, "sh", "-c", "grep -E 'CapEff|Seccomp:' /proc/self/status; hostname; "
                                           "cat /proc/self/cgroup | grep memory")
    assert "CapEff:\t00000000a80425fb" in status  # Docker's 14 default capabilities
    assert "Seccomp:\t2" in status
    assert berthd.cgroup_parent in status
    assert "Seccomp:\t0" in run("--security-opt", "seccomp=unconfined", berthd.image, "grep", "Seccomp:",
                                "/proc/self/status")
    assert "CapEff:\t0000000000000000" in run("--cap-drop", "ALL", berthd.image, "grep", "CapEff", "/proc/self/status")
    assert "CapEff:\t00000000a82425fb" in run("--cap-add", "SYS_ADMIN", berthd.image, "grep", "CapEff",
                                              "/proc/self/status")
    assert "Read-only file system" in berthd.docker("run", "--rm", "--read-only", berthd.image, "touch", "/x").stderr
    assert run("--read-only", "--tmpfs", "/run:size=1m", berthd.image, "sh", "-c", "touch /run/x && echo ok") == "ok\n"
    assert run("--init", berthd.image, "ps", "-o", "pid,args").splitlines()[1].split(None, 1) == \
        ["1", "/sbin/docker-init -- ps -o pid,args"]
    limits = run("-m", "64m", "--cpus", "0.5", "--pids-limit", "50", berthd.image, "sh", "-c",
                 "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/cpu/cpu.cfs_quota_us "
                 "/sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/cpu.max "
                 "/sys/fs/cgroup/pids.max").split()
    assert "67108864" in limits and "50" in limits and "50000" in limits
    host = berthd.base / "vol"
    host.mkdir(exist_ok=True)
    (host / "f").write_text("from-host\n")
    assert run("-v", f"{host}:/v:ro", berthd.image, "sh", "-c", "cat /v/f; touch /v/g 2>/dev/null || echo ro") == \
        "from-host\nro\n"
    assert run("--network", "none", berthd.image, "sh", "-c", "ls /sys/class/net") == "lo\n"
    assert run("-u", "nobody", berthd.image, "sh", "-c", "id -u; grep CapEff /proc/self/status") == \
        "65534\nCapEff:\t0000000000000000\n"
    assert run("--entrypoint", "echo", berthd.image, "a", "b") == "a b\n"
    env = run("-e", "A=1", "--hostname", "box", berthd.image, "env").splitlines()
    assert "A=1" in env and "HOSTNAME=box" in env and any(e.startswith("PATH=") for e in env)


def test_stdin_start_attach_and_oom(berthd: Berthd) -> None:
    assert berthd.docker("run", "-i", "--rm", berthd.image, "sh", "-c", "cat; echo done",
                         input="piped\n").stdout == "piped\ndone\n"
    ok(berthd.docker("create", "--name", "sa", berthd.image, "sh", "-c", "echo started; exit 2"))
    for _ in range(2):  # start -a attaches before the start, twice
        proc = berthd.docker("start", "-a", "sa")
        assert (proc.returncode, proc.stdout) == (2, "started\n")
    assert ok(berthd.docker("logs", "sa")) == "started\nstarted\n"
    ok(berthd.docker("rm", "sa"))
    proc = berthd.docker("run", "--name", "oom", "-m", "8m", berthd.image, "sh", "-c",
                         "a=$(head -c 50000000 /dev/zero | tr '\\0' x); echo ${#a}")
    assert proc.returncode == 137
    state = inspect(berthd, "oom")["State"]
    assert state["OOMKilled"] and state["ExitCode"] == 137
    ok(berthd.docker("rm", "oom"))


# --- the daemon dies, the containers do not ----------------------------------------------------


def test_berthd_killed_and_restarted(berthd_factory) -> None:  # noqa: ANN001
    d = berthd_factory()
    ok(d.docker("run", "-d", "--name", "ticker", d.image, "sh", "-c",
                "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done"))
    ok(d.docker("run", "-d", "--name", "three", d.image, "sh", "-c", "sleep 2; exit 3"))
    ok(d.docker("run", "-d", "--name", "doomed", d.image, "sleep", "1000"))
    ticker_pid = inspect(d, "ticker")["State"]["Pid"]
    doomed_shim = d.exec_root / "shims" / inspect(d, "doomed")["Id"]
    shim_pid = json.loads((doomed_shim / "shim.pid").read_text())["pid"]
    before = len(ok(d.docker("logs", "ticker")).splitlines())
    d.kill()  # SIGKILL: no chance to clean up
    os.kill(shim_pid, signal.SIGKILL)  # and one container loses its shim while berthd is down
    time.sleep(3)
    d.start()
    ps = ok(d.docker("ps", "-a", "--format", "{{.Names}}|{{.Status}}")).splitlines()
    status = dict(line.split("|", 1) for line in ps)
    assert set(status) == {"ticker", "three", "doomed"}
    assert status["ticker"].startswith("Up")
    assert status["three"].startswith("Exited (3)")
    assert status["doomed"].startswith("Exited (255)")
    ticker = inspect(d, "ticker")
    assert ticker["State"]["Running"] and ticker["State"]["Pid"] == ticker_pid
    assert inspect(d, "three")["State"]["ExitCode"] == 3
    doomed = inspect(d, "doomed")["State"]
    assert doomed["ExitCode"] == 255 and "gone" in doomed["Error"]
    logs = ok(d.docker("logs", "ticker")).splitlines()
    assert len(logs) >= before + 20  # it went on logging while berthd was down
    assert logs == [f"tick {i}" for i in range(len(logs))]
    assert wait_for(lambda: len(ok(d.docker("logs", "ticker")).splitlines()) > len(logs))
    assert ok(d.docker("exec", "ticker", "echo", "still-here")) == "still-here\n"
    ok(d.docker("stop", "-t", "1", "ticker"))
    assert inspect(d, "ticker")["State"]["ExitCode"] == 137
    ok(d.docker("rm", "ticker", "three", "doomed"))
