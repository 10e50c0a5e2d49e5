"""Misuse and bad input, as a user of runc meets them.

Each case: a non-zero exit, one clear line on stderr (never a traceback) with the words
that runc and berth-runtime share, and nothing left behind: no state dir under --root,
no cgroup dir, no mount mentioning the bundle, no process. Where the container already
existed, the failed command leaves it as it was.
"""

from __future__ import annotations

import os
import time

import pytest

from tests.support.outcomes import Leftovers, assert_failed

pytestmark = pytest.mark.integration

SLEEPER = ["sleep", "1000"]


def _wait_for(cond, timeout: float = 10.0, what: str = "condition") -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _running(runtime, bundle, cid: str = "c1"):  # noqa: ANN001, ANN202
    b = bundle(SLEEPER)
    runtime.run("run", "-d", "--bundle", b.path, cid, check=True)
    state = runtime.state(cid)
    assert state["status"] == "running"
    return b, state


def _create_fails(runtime, b, *words: str, cid: str = "bad", command: str = "create") -> str:  # noqa: ANN001
    """``create`` (or ``run``) of bundle ``b`` fails clearly and leaves nothing behind."""
    left = Leftovers(runtime, b, cid)
    res = runtime.run(command, "--bundle", b.path, cid, env=left.env)
    message = assert_failed(res, *words)
    left.check()
    res = runtime.run("state", cid)
    assert_failed(res, "container does not exist")
    return message


# --- commands on a container in the wrong state ---------------------------------------

def test_start_on_a_running_container(runtime, bundle):
    _b, before = _running(runtime, bundle)
    assert_failed(runtime.run("start", "c1"), "cannot start an already running container")
    after = runtime.state("c1")
    assert (after["status"], after["pid"]) == ("running", before["pid"])


def test_start_on_a_stopped_container(runtime, bundle):
    b = bundle(["true"])
    runtime.run("create", "--bundle", b.path, "c1", check=True)
    runtime.run("start", "c1", check=True)
    _wait_for(lambda: runtime.state("c1")["status"] == "stopped", what="stopped")
    assert_failed(runtime.run("start", "c1"), "cannot start a container that has stopped")
    assert runtime.state("c1")["status"] == "stopped"
    runtime.run("delete", "c1", check=True)


def test_delete_running_without_force(runtime, bundle):
    _b, before = _running(runtime, bundle)
    assert_failed(runtime.run("delete", "c1"), "cannot delete container c1 that is not stopped", "running")
    after = runtime.state("c1")
    assert (after["status"], after["pid"]) == ("running", before["pid"])


def test_exec_in_a_stopped_container(runtime, bundle):
    b = bundle(["true"])
    runtime.run("run", "--keep", "--bundle", b.path, "c1", check=True)
    res = runtime.run("exec", "c1", "true")
    assert_failed(res, "cannot exec in a stopped container")
    assert res.returncode == 255  # runc: every exec failure exits 255


def test_exec_in_a_paused_container(runtime, bundle):
    _running(runtime, bundle)
    runtime.run("pause", "c1", check=True)
    res = runtime.run("exec", "c1", "true", timeout=15)
    assert_failed(res, "cannot exec in a paused container")
    assert res.returncode == 255
    assert runtime.state("c1")["status"] == "paused"


def test_paused_created_container_is_paused(runtime, bundle):
    """runc checks the freezer before the exec fifo: a created container can be paused and resumed."""
    b = bundle(SLEEPER)
    runtime.run("create", "--bundle", b.path, "c1", check=True)
    runtime.run("pause", "c1", check=True)
    assert runtime.state("c1")["status"] == "paused"
    assert_failed(runtime.run("exec", "c1", "true", timeout=15), "cannot exec in a paused container")
    runtime.run("resume", "c1", check=True)
    assert runtime.state("c1")["status"] == "created"
    runtime.run("start", "c1", check=True)
    assert runtime.state("c1")["status"] == "running"


@pytest.mark.parametrize("command", ["pause", "resume"])
def test_pause_resume_in_the_wrong_state(runtime, bundle, command):
    b = bundle(["true"])
    runtime.run("run", "--keep", "--bundle", b.path, "c1", check=True)
    assert_failed(runtime.run(command, "c1"), "not running" if command == "pause" else "not paused")


# --- unknown ids ----------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["state"], ["start"], ["kill"], ["kill", "KILL"], ["delete"], ["exec", "true"], ["pause"],
    ["resume"], ["ps"], ["events", "--stats"], ["update", "--pids-limit", "10"],
], ids=lambda a: "-".join(a))
def test_unknown_id(runtime, args):
    command, rest = args[0], args[1:]
    cmd = [command, *rest, "nope"] if command in ("events", "update") else [command, "nope", *rest]
    res = runtime.run(*cmd)
    assert_failed(res, "container does not exist")
    if command == "exec":
        assert res.returncode == 255
    assert os.listdir(runtime.root) == []


def test_delete_force_of_an_unknown_id_succeeds(runtime):
    res = runtime.run("delete", "--force", "nope")
    assert res.returncode == 0, res.stderr


# --- create with a bad bundle ---------------------------------------------------------

def test_duplicate_id_on_create(runtime, bundle):
    first = bundle(SLEEPER)
    runtime.run("create", "--bundle", first.path, "c1", check=True)
    before = runtime.state("c1")
    second = bundle(SLEEPER)
    left = Leftovers(runtime, second, "other")
    res = runtime.run("create", "--bundle", second.path, "c1", env=left.env)
    assert_failed(res, "container with given ID already exists")
    assert not left.cgroup_dirs() and not left.mounts() and not left.processes()
    after = runtime.state("c1")
    assert (after["status"], after["pid"], after["bundle"]) == ("created", before["pid"], first.path)


def test_malformed_config_json(runtime, bundle):
    b = bundle(["true"])
    with open(b.config_path, "w") as f:
        f.write('{"ociVersion": "1.0.2", "process": ')
    _create_fails(runtime, b)


def test_missing_config_json(runtime, bundle):
    b = bundle(["true"])
    os.unlink(b.config_path)
    _create_fails(runtime, b, "config.json")


def test_missing_rootfs(runtime, bundle):
    b = bundle(["true"], root={"path": "no-such-rootfs"})
    _create_fails(runtime, b, "rootfs", os.path.join(b.path, "no-such-rootfs"))


def test_unknown_namespace_type(runtime, bundle):
    b = bundle(["true"])
    b.config["linux"]["namespaces"].append({"type": "bogus"})
    b.save()
    _create_fails(runtime, b, "bogus")


@pytest.mark.parametrize("command", ["create", "run"])
def test_nonexistent_executable(runtime, bundle, command):
    b = bundle(["/nope"])
    _create_fails(runtime, b, 'exec: "/nope"', "no such file or directory", command=command)


def test_cwd_that_does_not_exist_is_created(runtime, bundle):
    """Not misuse: runc makes a missing cwd."""
    b = bundle(["pwd"], process={"cwd": "/does/not/exist"})
    res = runtime.run("run", "--bundle", b.path, "c1")
    assert res.returncode == 0, res.stderr
    assert res.stdout == "/does/not/exist\n"


def test_cwd_that_is_a_file(runtime, bundle):
    b = bundle(["true"], process={"cwd": "/etc/passwd"})
    _create_fails(runtime, b, "/etc/passwd", "not a directory")


@pytest.mark.parametrize("phase", ["prestart", "createRuntime", "createContainer"])
def test_hook_that_fails(runtime, bundle, phase):
    b = bundle(["true"])
    left = Leftovers(runtime, b, "bad")
    hook = {"path": "/bin/sh", "args": ["sh", "-c", "echo boom >&2; exit 1"], "env": left.hook_env}
    b.config["hooks"] = {phase: [hook]}
    b.save()
    res = runtime.run("create", "--bundle", b.path, "bad", env=left.env)
    message = assert_failed(res, "error running", "hook #0", "exit status 1")
    if phase != "createContainer":
        assert "boom" in message
    left.check()


def test_hook_that_times_out(runtime, bundle):
    b = bundle(["true"])
    left = Leftovers(runtime, b, "bad")
    hook = {"path": "/bin/sleep", "args": ["sleep", "5"], "env": left.hook_env, "timeout": 1}
    b.config["hooks"] = {"createRuntime": [hook]}
    b.save()
    started = time.monotonic()
    res = runtime.run("create", "--bundle", b.path, "bad", env=left.env)
    elapsed = time.monotonic() - started
    assert_failed(res, "hook #0", "timeout")
    assert elapsed < 4.5, f"the hook was not killed at its timeout ({elapsed:.1f}s)"
    left.check()


def test_bad_seccomp_action(runtime, bundle):
    b = bundle(["true"], linux={"seccomp": {"defaultAction": "SCMP_ACT_BOGUS"}})
    _create_fails(runtime, b, "SCMP_ACT_BOGUS")


def test_memory_limit_too_low(runtime, bundle):
    b = bundle(["true"], linux={"resources": {"memory": {"limit": 4096}}})
    _create_fails(runtime, b, "memory")


def test_negative_cpu_shares(runtime, bundle):
    b = bundle(["true"], linux={"resources": {"cpu": {"shares": -5}}})
    _create_fails(runtime, b, "shares")


# --- bad arguments against a running container ----------------------------------------

@pytest.mark.parametrize("signal", ["FOO", "SIGFOO", "KILLL"])
def test_bad_signal_name(runtime, bundle, signal):
    _b, before = _running(runtime, bundle)
    assert_failed(runtime.run("kill", "c1", signal), f'unknown signal "{signal}"')
    after = runtime.state("c1")
    assert (after["status"], after["pid"]) == ("running", before["pid"])


def test_exec_of_a_nonexistent_executable(runtime, bundle):
    b, before = _running(runtime, bundle)
    left = Leftovers(runtime, b, "c1")
    res = runtime.run("exec", "c1", "/nope", env=left.env)
    assert_failed(res, 'exec: "/nope"', "no such file or directory")
    assert res.returncode == 255
    time.sleep(0.1)
    assert not [p for p in left.processes() if "marker" in p]
    assert runtime.run("ps", "--format", "json", "c1", check=True).stdout.strip() == f"[{before['pid']}]"


def test_exec_with_a_missing_cwd(runtime, bundle):
    _running(runtime, bundle)
    res = runtime.run("exec", "--cwd", "/nonexistent", "c1", "pwd")
    assert_failed(res, "/nonexistent", "no such file or directory")
    assert res.returncode == 255
