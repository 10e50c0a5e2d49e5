"""The runtime's side of the fork: start the init stages and answer them until ready."""

from __future__ import annotations

import os
import _signal as signal  # the C module: ``signal`` imports enum (~3 ms)

from berth.errors import FailedPrecondition
from berth.runtime.linux import init as container_init
from berth.runtime.linux.namespaces import write_id_maps
from berth.runtime.linux.sync import Channel, SyncError


class Launch:
    """A started init: its stage-2 pid and the runtime's end of the channel."""

    def __init__(self, pid: int, channel: Channel, waiter: int = 0) -> None:
        self.pid = pid
        self.channel = channel
        self.waiter = waiter  # stage 1, when it stays to wait for stage 2 (a foreground ``run``)


def start_init(ctx: container_init.InitContext, parent: Channel, child: Channel, cgroup,  # noqa: ANN001
               state_for_hooks, run_runtime_hooks=None, setup_cgroup=None) -> Launch:  # noqa: ANN001
    """Fork stage 1, serve its requests, put stage 2 in the cgroup; return once stage 2 is ready.

    ``state_for_hooks(pid)`` gives the OCI state for hooks; ``run_runtime_hooks(state)`` runs
    the prestart/createRuntime hooks when stage 2 asks. On failure stage 2 is killed and
    the child's own message is raised. ``setup_cgroup()``, when given, makes the cgroup
    after the fork, so that stage 1 sets up namespaces meanwhile.
    """
    stage1 = os.fork()
    if stage1 == 0:
        parent.close()
        try:
            container_init.stage1(ctx)
        finally:
            os._exit(1)
    child.close()
    if ctx.console_fd >= 0:
        os.close(ctx.console_fd)
    pid = waiter = 0
    try:
        if setup_cgroup is not None:
            setup_cgroup()
        while True:
            try:
                msg = parent.recv()
            except EOFError:
                raise SyncError(_exited_message(ctx, cgroup)) from None
            kind = msg.get("type")
            if kind == "error":
                raise FailedPrecondition(f"unable to start container process: {msg.get('msg')}")
            if kind == "usermap":
                write_id_maps(stage1, ctx.linux, deny_setgroups=False)
                parent.send("mapped")
            elif kind == "pid":
                pid = int(msg["pid"])
                if ctx.stage1_waits:
                    waiter = stage1
                else:
                    _reap(stage1)
                stage1 = 0
                if cgroup is not None:  # stage 2 waits for "init" before it needs the cgroup
                    cgroup.add_pid(pid)
                parent.send("init", state=state_for_hooks(pid))
            elif kind == "hooks":
                try:
                    if run_runtime_hooks is not None:
                        run_runtime_hooks(state_for_hooks(pid))
                except Exception as exc:
                    parent.send("error", msg=str(exc))
                    raise
                parent.send("hooks-done")
            elif kind == "ready":
                return Launch(pid, parent, waiter)
    except BaseException:
        for victim in (stage1, pid):
            if victim:
                try:
                    os.kill(victim, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for child_pid in (stage1, waiter):
            if child_pid:
                _reap(child_pid)
        if pid:
            _wait_gone(pid)
        parent.close()
        raise


def _exited_message(ctx: container_init.InitContext, cgroup) -> str:  # noqa: ANN001
    """Why the init went away without a word: runc's message when the OOM killer took it."""
    if not ctx.exec_pid and cgroup is not None:
        try:
            if cgroup.oom_kill_count() > 0:
                return "container init was OOM-killed (memory limit too low?)"
        except Exception:  # noqa: BLE001 - the plain message is still true
            pass
    return "container init exited unexpectedly"


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _wait_gone(pid: int) -> None:
    """Wait until a killed process (maybe not our child) has exited."""
    from berth._sys.proc import state_letter
    import time

    for _ in range(500):
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        if state_letter(pid) in (None, "Z", "X"):
            return
        time.sleep(0.002)
