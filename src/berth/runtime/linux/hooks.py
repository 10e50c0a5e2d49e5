"""OCI hooks: run each with the container state on stdin, its env, args and timeout."""

from __future__ import annotations

from berth._sys import jsonfast as json
import os
import select
import signal
import time

from berth.errors import FailedPrecondition


def run_hooks(hooks: list[dict] | None, state: dict, phase: str) -> None:
    for index, hook in enumerate(hooks or ()):
        run_hook(hook, state, phase, index)


def run_hook(hook: dict, state: dict, phase: str, index: int = 0) -> None:
    """Run one hook; raise FailedPrecondition with its output when it fails or times out."""
    path = hook["path"]
    args = hook.get("args") or [path]
    env = {}
    for entry in hook.get("env") or ():
        key, _, value = entry.partition("=")
        env[key] = value
    timeout = hook.get("timeout")
    stdin_r, stdin_w = os.pipe()
    out_r, out_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: becomes the hook
        try:
            os.dup2(stdin_r, 0)
            os.dup2(out_w, 1)
            os.dup2(out_w, 2)
            os.execve(path, args, env)
        except OSError as exc:
            os.write(2, f"exec {path}: {exc.strerror}".encode())
        os._exit(127)
    os.close(stdin_r)
    os.close(out_w)
    try:
        os.write(stdin_w, json.dumps(state).encode())
    except BrokenPipeError:
        pass
    os.close(stdin_w)
    deadline = None if timeout is None else time.monotonic() + float(timeout)
    output = bytearray()
    status = None
    while True:
        wait = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select([out_r], [], [], wait)
        if ready:
            chunk = os.read(out_r, 65536)
            if chunk:
                output += chunk[: max(0, 4096 - len(output))]
                continue
            break
        if deadline is not None and time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(out_r)
            raise FailedPrecondition(f"error running {phase} hook #{index}: hook ran past specified timeout of {float(timeout)}s")
    os.close(out_r)
    _, status = os.waitpid(pid, 0)
    if status != 0:
        code = os.waitstatus_to_exitcode(status)
        what = f"exit status {code}" if code >= 0 else f"signal: {signal.Signals(-code).name}"
        text = output.decode(errors="replace").strip()
        raise FailedPrecondition(f"error running {phase} hook #{index}: {what}" + (f", output: {text}" if text else ""))
