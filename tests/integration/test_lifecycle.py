"""The OCI lifecycle and runc's commands, as a user of runc sees them.

create -> created -> start -> running -> (process exits) -> stopped -> delete; run in the
foreground, detached and --keep; list, kill, exec, ps, pause/resume, update, events,
features, spec, --version and --log. Every test passes against runc too
(``BERTH_TEST_RUNTIME=/usr/sbin/runc``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import time

import pytest

from tests.support import cleanup
from tests.support.outcomes import assert_failed, error_message

pytestmark = pytest.mark.integration

SLEEPER = ["sleep", "1000"]
WAIT_FOR_GO = ["sh", "-c", "while [ ! -e /tmp/go ]; do sleep 0.02; done; echo done"]
WRITABLE = {"readonly": False}  # the containers that leave files in /tmp for the test to see
CREATED_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")


def _wait_for(cond, timeout: float = 10.0, what: str = "condition") -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _status(runtime, cid: str) -> str:  # noqa: ANN001
    return runtime.state(cid)["status"]


def _running(runtime, bundle, args=SLEEPER, cid: str = "c1", **overrides):  # noqa: ANN001, ANN202
    b = bundle(list(args), **overrides)
    runtime.run("run", "-d", "--bundle", b.path, cid, check=True)
    state = runtime.state(cid)
    assert state["status"] == "running"
    return b, state


def _write(path: str, text: str, mode: int = 0o755) -> None:
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def _cgroup_of(pid: int) -> set[str]:
    with open(f"/proc/{pid}/cgroup") as f:
        return {line.rstrip("\n").split(":", 2)[2] for line in f}


def _cgroup_file(cgroups_path: str, v1: tuple[str, str], v2: str) -> str:
    """A cgroup file of the container: ``v1`` = (controller, file) on v1, ``v2`` on cgroup2."""
    rel = cgroups_path.strip("/")
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        return f"/sys/fs/cgroup/{rel}/{v2}"
    return f"/sys/fs/cgroup/{v1[0]}/{rel}/{v1[1]}"


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


# --- the lifecycle --------------------------------------------------------------------

def test_create_start_exit_delete(runtime, bundle, tmp_path):
    b = bundle(WAIT_FOR_GO)
    pid_file = tmp_path / "init.pid"
    before = dt.datetime.now(dt.timezone.utc)
    runtime.run("create", "--bundle", b.path, "--pid-file", str(pid_file), "c1", check=True)

    state = runtime.state("c1")
    assert state["status"] == "created"
    assert state["id"] == "c1"
    assert isinstance(state["ociVersion"], str) and state["ociVersion"].startswith("1.")
    assert state["pid"] > 0
    assert state["bundle"] == b.path
    assert state["rootfs"] == b.rootfs
    assert CREATED_RE.match(state["created"]), state["created"]
    created = dt.datetime.fromisoformat(state["created"][:26].rstrip("Z") + "+00:00")
    assert abs((created - before).total_seconds()) < 30
    pid = state["pid"]
    assert int(pid_file.read_text()) == pid  # the init's pid on the host
    assert b.cgroups_path in _cgroup_of(pid)
    assert not cleanup.gone(pid)

    runtime.run("start", "c1", check=True)
    state = runtime.state("c1")
    assert (state["status"], state["pid"]) == ("running", pid)

    _write(os.path.join(b.rootfs, "tmp/go"), "")
    _wait_for(lambda: _status(runtime, "c1") == "stopped", what="the process to exit")
    state = runtime.state("c1")
    assert state["pid"] == 0
    assert state["bundle"] == b.path

    runtime.run("delete", "c1", check=True)
    assert_failed(runtime.run("state", "c1"), "container does not exist")
    assert runtime.run("list", "-q", check=True).stdout == ""
    assert not os.path.exists(os.path.join(runtime.root, "c1"))
    assert not [mp for mp in cleanup.cgroup_mountpoints() if os.path.isdir(mp + b.cgroups_path)]


def test_delete_of_a_created_container_kills_its_init(runtime, bundle):
    b = bundle(SLEEPER)
    runtime.run("create", "--bundle", b.path, "c1", check=True)
    pid = runtime.state("c1")["pid"]
    runtime.run("delete", "c1", check=True)  # runc: no --force needed for "created"
    _wait_for(lambda: cleanup.gone(pid), what="the init to die")
    assert_failed(runtime.run("state", "c1"), "container does not exist")


def test_run_foreground_exit_status_and_output(runtime, bundle):
    b = bundle(["sh", "-c", "echo out; echo err >&2; exit 7"])
    res = runtime.run("run", "--bundle", b.path, "c1")
    assert res.returncode == 7, res.stderr
    assert res.stdout == "out\n"
    assert "err" in res.stderr
    assert runtime.run("list", "-q", check=True).stdout == ""  # run without --keep deletes


def test_run_foreground_killed_exits_128_plus_signal(runtime, bundle, tmp_path):
    b = bundle(SLEEPER)
    proc = subprocess.Popen(runtime.argv("run", "--bundle", b.path, "c1"), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: runtime.run("state", "c1").returncode == 0 and _status(runtime, "c1") == "running",
                  what="running")
        runtime.run("kill", "c1", "KILL", check=True)
        assert proc.wait(timeout=20) == 137
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_run_detached(runtime, bundle):
    b = bundle(SLEEPER)
    started = time.monotonic()
    res = runtime.run("run", "-d", "--bundle", b.path, "c1")
    assert res.returncode == 0, res.stderr
    assert time.monotonic() - started < 10
    state = runtime.state("c1")
    assert state["status"] == "running" and state["pid"] > 0
    assert not cleanup.gone(state["pid"])


def test_run_keep_leaves_a_stopped_container(runtime, bundle):
    b = bundle(["sh", "-c", "exit 3"])
    res = runtime.run("run", "--keep", "--bundle", b.path, "c1")
    assert res.returncode == 3, res.stderr
    state = runtime.state("c1")
    assert (state["status"], state["pid"]) == ("stopped", 0)
    runtime.run("delete", "c1", check=True)
    assert_failed(runtime.run("state", "c1"), "container does not exist")


def test_run_pid_file(runtime, bundle, tmp_path):
    b = bundle(SLEEPER)
    pid_file = tmp_path / "run.pid"
    runtime.run("run", "-d", "--pid-file", str(pid_file), "--bundle", b.path, "c1", check=True)
    pid = int(pid_file.read_text())
    assert pid == runtime.state("c1")["pid"]
    assert b.cgroups_path in _cgroup_of(pid)
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        assert f.read().split(b"\0")[0] == b"sleep"


def test_list_table_json_quiet(runtime, bundle):
    empty = runtime.run("list", "--format", "json", check=True).stdout.strip()
    assert empty == "null"
    assert runtime.run("list", check=True).stdout.split() == ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]

    b1 = bundle(SLEEPER)
    b2 = bundle(SLEEPER)
    runtime.run("create", "--bundle", b1.path, "c-b", check=True)
    runtime.run("run", "-d", "--bundle", b2.path, "c-a", check=True)
    states = {cid: runtime.state(cid) for cid in ("c-a", "c-b")}

    assert runtime.run("list", "-q", check=True).stdout.split() == ["c-a", "c-b"]

    listed = json.loads(runtime.run("list", "--format", "json", check=True).stdout)
    assert [c["id"] for c in listed] == ["c-a", "c-b"]
    for c in listed:
        s = states[c["id"]]
        for key in ("ociVersion", "pid", "status", "bundle", "rootfs", "created"):
            assert c[key] == s[key], key
        assert c["owner"] == "root"

    lines = runtime.run("list", check=True).stdout.splitlines()
    assert lines[0].split() == ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
    rows = [line.split() for line in lines[1:]]
    assert rows == [
        ["c-a", str(states["c-a"]["pid"]), "running", b2.path, states["c-a"]["created"], "root"],
        ["c-b", str(states["c-b"]["pid"]), "created", b1.path, states["c-b"]["created"], "root"],
    ]


# --- kill -----------------------------------------------------------------------------

def test_kill_default_is_sigterm(runtime, bundle):
    b = bundle(["sh", "-c", "trap 'echo term > /tmp/got; exit 0' TERM; while :; do sleep 0.05; done"], root=WRITABLE)
    runtime.run("run", "-d", "--bundle", b.path, "c1", check=True)
    runtime.run("kill", "c1", check=True)
    _wait_for(lambda: _status(runtime, "c1") == "stopped", what="stopped")
    assert _read(os.path.join(b.rootfs, "tmp/got")) == "term"


@pytest.mark.parametrize("signal", ["KILL", "9", "SIGKILL"])
def test_kill_signal_forms(runtime, bundle, signal):
    _b, state = _running(runtime, bundle)
    runtime.run("kill", "c1", signal, check=True)
    _wait_for(lambda: _status(runtime, "c1") == "stopped", what="stopped")
    _wait_for(lambda: cleanup.gone(state["pid"]), what="the init gone")
    assert_failed(runtime.run("kill", "c1", "KILL"), "container not running")


def _two_process_container(bundle):  # noqa: ANN001, ANN202
    """init traps USR1 into /tmp/init-usr1, its child into /tmp/child-usr1."""
    b = bundle(["sh", "/tmp/init.sh"], root=WRITABLE)
    _write(os.path.join(b.rootfs, "tmp/init.sh"),
           "trap 'touch /tmp/init-usr1' USR1\nsh /tmp/child.sh &\nwhile :; do sleep 0.05; done\n")
    _write(os.path.join(b.rootfs, "tmp/child.sh"),
           "trap 'touch /tmp/child-usr1' USR1\ntouch /tmp/child-ready\nwhile :; do sleep 0.05; done\n")
    return b


def test_kill_all(runtime, bundle):
    b = _two_process_container(bundle)
    runtime.run("run", "-d", "--bundle", b.path, "c1", check=True)
    tmp = os.path.join(b.rootfs, "tmp")
    _wait_for(lambda: os.path.exists(f"{tmp}/child-ready"), what="the child")

    runtime.run("kill", "c1", "USR1", check=True)
    _wait_for(lambda: os.path.exists(f"{tmp}/init-usr1"), what="init's trap")
    time.sleep(0.3)
    assert not os.path.exists(f"{tmp}/child-usr1")  # without --all: the init only

    runtime.run("kill", "--all", "c1", "USR1", check=True)
    _wait_for(lambda: os.path.exists(f"{tmp}/child-usr1"), what="the child's trap")

    pids = json.loads(runtime.run("ps", "--format", "json", "c1", check=True).stdout)
    assert len(pids) >= 2
    runtime.run("kill", "--all", "c1", "KILL", check=True)
    _wait_for(lambda: _status(runtime, "c1") == "stopped", what="stopped")
    _wait_for(lambda: all(cleanup.gone(p) for p in pids), what="every process gone")


def test_flags_after_the_container_id(runtime, bundle):
    """runc (urfave/cli) moves known flags in front of the arguments, with the argument
    after each: ``kill ID 9 --all`` works, but in ``kill ID --all 9`` the 9 becomes the id."""
    b = _two_process_container(bundle)
    runtime.run("run", "-d", "--bundle", b.path, "c1", check=True)
    tmp = os.path.join(b.rootfs, "tmp")
    _wait_for(lambda: os.path.exists(f"{tmp}/child-ready"), what="the child")

    assert_failed(runtime.run("kill", "c1", "--all", "USR1"), "container does not exist")
    runtime.run("kill", "c1", "USR1", "--all", check=True)
    _wait_for(lambda: os.path.exists(f"{tmp}/child-usr1"), what="the child's trap")
    assert _status(runtime, "c1") == "running"

    runtime.run("delete", "c1", "--force", check=True)
    assert_failed(runtime.run("state", "c1"), "container does not exist")


def test_delete_force_of_a_running_container(runtime, bundle):
    b, state = _running(runtime, bundle)
    runtime.run("delete", "--force", "c1", check=True)
    assert cleanup.gone(state["pid"])
    assert_failed(runtime.run("state", "c1"), "container does not exist")
    assert not [mp for mp in cleanup.cgroup_mountpoints() if os.path.isdir(mp + b.cgroups_path)]


# --- exec, ps -------------------------------------------------------------------------

def test_exec(runtime, bundle, tmp_path):
    _b, state = _running(runtime, bundle, process={"env": ["PATH=/bin", "FROM_CONFIG=yes"]})
    res = runtime.run("exec", "c1", "echo", "hi", "there")
    assert (res.returncode, res.stdout) == (0, "hi there\n"), res.stderr

    res = runtime.run("exec", "-e", "FOO=bar", "c1", "sh", "-c", 'echo "$FOO $FROM_CONFIG"')
    assert res.stdout == "bar yes\n", res.stderr

    res = runtime.run("exec", "--cwd", "/tmp", "c1", "pwd")
    assert res.stdout == "/tmp\n", res.stderr

    res = runtime.run("exec", "-u", "1000:1000", "c1", "sh", "-c", "id -u; id -g")
    assert res.stdout.split() == ["1000", "1000"], res.stderr

    res = runtime.run("exec", "c1", "sh", "-c", "echo partial; exit 5")
    assert (res.returncode, res.stdout) == (5, "partial\n"), res.stderr

    process = {"args": ["sh", "-c", 'echo "$A $(pwd) $(id -u)"'], "env": ["A=from-file", "PATH=/bin"],
               "cwd": "/home", "user": {"uid": 1000, "gid": 1000}}
    process_file = tmp_path / "process.json"
    process_file.write_text(json.dumps(process))
    res = runtime.run("exec", "--process", str(process_file), "c1")
    assert res.stdout == "from-file /home 1000\n", res.stderr

    pid_file = tmp_path / "exec.pid"
    res = runtime.run("exec", "-d", "--pid-file", str(pid_file), "c1", "sleep", "500")
    assert res.returncode == 0, res.stderr
    pid = int(pid_file.read_text())
    assert not cleanup.gone(pid)
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        assert f.read().split(b"\0")[:2] == [b"sleep", b"500"]
    pids = json.loads(runtime.run("ps", "--format", "json", "c1", check=True).stdout)
    assert sorted(pids) == sorted([state["pid"], pid])


def test_ps_table_and_json(runtime, bundle):
    _b, state = _running(runtime, bundle)
    res = runtime.run("ps", "c1", check=True)
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    assert len(lines) == 2
    row = lines[1].split()
    assert row[0] == "root" and row[1] == str(state["pid"]) and row[-2:] == ["sleep", "1000"]
    assert json.loads(runtime.run("ps", "--format", "json", "c1", check=True).stdout) == [state["pid"]]


# --- pause, update, events ------------------------------------------------------------

def test_pause_and_resume(runtime, bundle):
    b = bundle(["sh", "-c", "i=0; while :; do i=$((i+1)); echo $i > /tmp/count; sleep 0.02; done"], root=WRITABLE)
    runtime.run("run", "-d", "--bundle", b.path, "c1", check=True)
    count = os.path.join(b.rootfs, "tmp/count")

    def value() -> int:
        try:
            return int(_read(count) or 0)
        except (OSError, ValueError):
            return 0

    _wait_for(lambda: value() > 2, what="the counter")
    runtime.run("pause", "c1", check=True)
    assert _status(runtime, "c1") == "paused"
    listed = json.loads(runtime.run("list", "--format", "json", check=True).stdout)
    assert [c["status"] for c in listed] == ["paused"]
    frozen = value()
    time.sleep(0.4)
    assert value() == frozen, "the counter advanced while paused"

    runtime.run("resume", "c1", check=True)
    assert _status(runtime, "c1") == "running"
    _wait_for(lambda: value() > frozen + 2, what="the counter to advance after resume")


def test_update_memory_pids_and_resources_from_stdin(runtime, bundle):
    b, _state = _running(runtime, bundle)
    mem = _cgroup_file(b.cgroups_path, ("memory", "memory.limit_in_bytes"), "memory.max")
    pids = _cgroup_file(b.cgroups_path, ("pids", "pids.max"), "pids.max")

    runtime.run("update", "--memory", "67108864", "c1", check=True)
    assert _read(mem) == "67108864"
    runtime.run("update", "--pids-limit", "10", "c1", check=True)
    assert _read(pids) == "10"

    resources = {"memory": {"limit": 33554432}, "pids": {"limit": 20}}
    runtime.run("update", "--resources", "-", "c1", input=json.dumps(resources), check=True)
    assert (_read(mem), _read(pids)) == ("33554432", "20")
    assert _status(runtime, "c1") == "running"


def test_events_stats(runtime, bundle):
    _running(runtime, bundle)
    res = runtime.run("events", "--stats", "c1", check=True)
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1
    event = json.loads(lines[0])
    assert (event["type"], event["id"]) == ("stats", "c1")
    data = event["data"]
    assert data["memory"]["usage"]["usage"] > 0
    assert data["pids"]["current"] >= 1
    assert "cpu" in data


def test_events_stats_of_a_stopped_container(runtime, bundle):
    b = bundle(["true"])
    runtime.run("run", "--keep", "--bundle", b.path, "c1", check=True)
    assert_failed(runtime.run("events", "--stats", "c1"), "not running")


# --- commands without a container -----------------------------------------------------

def test_features(runtime):
    features = json.loads(runtime.run("features", check=True).stdout)
    assert features["ociVersionMin"].startswith("1.0")
    assert features["ociVersionMax"].startswith("1.")
    assert "rro" in features["mountOptions"] and "rbind" in features["mountOptions"]
    assert {"prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"} \
        <= set(features["hooks"])
    assert "pid" in features["linux"]["namespaces"]


def test_spec_writes_config_and_refuses_to_overwrite(runtime, tmp_path):
    work = tmp_path / "spec"
    work.mkdir()
    runtime.run("spec", cwd=work, check=True)
    config = json.loads((work / "config.json").read_text())
    assert config["process"]["args"] == ["sh"]
    assert config["root"] == {"path": "rootfs", "readonly": True}
    assert config["ociVersion"].startswith("1.")
    written = (work / "config.json").read_text()

    res = runtime.run("spec", cwd=work)
    assert_failed(res, "config.json exists")
    assert (work / "config.json").read_text() == written

    other = tmp_path / "other"
    other.mkdir()
    runtime.run("spec", "--bundle", str(other), check=True)
    assert json.loads((other / "config.json").read_text()) == config


def test_version(runtime):
    res = runtime.run("--version", check=True)
    lines = res.stdout.splitlines()
    name = os.path.basename(runtime.binary)
    assert re.match(rf"^{re.escape(name)} version \S+$", lines[0]), lines[0]
    assert lines[1].startswith("commit: ")
    assert re.match(r"^spec: 1\.\d+\.\d+", lines[2]), lines[2]
    if not runtime.is_runc:
        assert len(lines) == 3  # runc adds "go:" and "libseccomp:" lines


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_log_file_gets_the_error(runtime, tmp_path, fmt):
    log = tmp_path / "runtime.log"
    res = runtime.run("--log", str(log), "--log-format", fmt, "state", "nope")
    assert res.returncode != 0
    assert "container does not exist" in error_message(res.stderr)
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    assert lines, "nothing in the log file"
    if fmt == "json":
        entries = [json.loads(line) for line in lines]
        errors = [e for e in entries if e.get("level") == "error"]
        assert len(errors) == 1, entries
        assert "container does not exist" in errors[0]["msg"]
        assert CREATED_RE.match(errors[0]["time"]) or re.match(r"^\d{4}-\d\d-\d\dT", errors[0]["time"])
    else:
        errors = [line for line in lines if "level=error" in line]
        assert len(errors) == 1, lines
        assert 'msg="container does not exist"' in errors[0]
        assert errors[0].startswith('time="')
