"""The ``runtime`` and ``bundle`` fixtures against a real container (run with runc to check them)."""

from __future__ import annotations

import time

import pytest

from tests.support import cleanup

pytestmark = pytest.mark.integration


def test_run_busybox(runtime, bundle):
    b = bundle(["/bin/sh", "-c", "echo hello from $(hostname); id"], hostname="box")
    res = runtime.run("run", "--bundle", b.path, "fixture-run")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["hello from box", "uid=0(root) gid=0(root)"]  # no supplementary groups
    assert runtime.container_ids() == []


def test_cleanup_kills_and_deletes(runtime, bundle):
    b = bundle(["/bin/sleep", "300"])
    res = runtime.run("run", "--detach", "--bundle", b.path, "fixture-detached", timeout=30)
    assert res.returncode == 0, res.stderr
    state = runtime.state("fixture-detached")
    assert state["status"] == "running"
    pid = state["pid"]
    assert cleanup.start_time(pid) is not None

    runtime.cleanup()
    deadline = time.monotonic() + 5
    while not cleanup.gone(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert cleanup.gone(pid)  # dead; pid 1 may not have reaped it yet
    assert runtime.container_ids() == []
