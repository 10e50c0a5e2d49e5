"""A foreground ``run`` without a terminal: the container's stdio are pipes, copied to and
from the runtime's own stdio by stage 1 (runc copies through pipes the same way), so that
the container owns what it was given: reopening /dev/stdout does not truncate the
caller's file, and fixing stdio permissions never chowns the caller's files."""

from __future__ import annotations

import os

Pipes = list[tuple[int, int]]


def make_pipes() -> Pipes | None:
    """Three pipes (stdin, stdout, stderr), or None when our own stdio is not all open."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            return None
    return [os.pipe(), os.pipe(), os.pipe()]


def use_pipes(pipes: Pipes) -> None:
    """In the container's process: the pipes' container ends become fds 0, 1 and 2."""
    (in_r, in_w), (out_r, out_w), (err_r, err_w) = pipes
    os.dup2(in_r, 0)
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    for fd in (in_r, in_w, out_r, out_w, err_r, err_w):
        os.close(fd)


def copy(pipes: Pipes) -> None:
    """In stage 1: copy our stdin to the container and its stdout/stderr to ours, until the
    container's side of both output pipes is closed. Output has priority: stdin is read
    only when the previous chunk has been written, so a container that does not read its
    stdin cannot block its output."""
    import select

    (in_r, in_w), (out_r, out_w), (err_r, err_w) = pipes
    for fd in (in_r, out_w, err_w):
        os.close(fd)
    os.set_blocking(in_w, False)
    outputs = {out_r: 1, err_r: 2}
    pending, stdin_open = b"", True
    while outputs:
        rlist = list(outputs) + ([0] if stdin_open and not pending else [])
        readable, _, _ = select.select(rlist, [in_w] if pending else [], [])
        for fd in readable:
            try:
                data = os.read(fd, 65536)
            except OSError:
                data = b""
            if fd == 0:
                pending, stdin_open = data, bool(data)
            elif data:
                _write_all(outputs[fd], data)
            else:
                os.close(fd)
                del outputs[fd]
        if pending:
            try:
                pending = pending[os.write(in_w, pending):]
            except BlockingIOError:
                pass
            except OSError:  # the container closed its stdin
                pending, stdin_open = b"", False
        if in_w >= 0 and not stdin_open and not pending:
            os.close(in_w)
            in_w = -1
    if in_w >= 0:
        os.close(in_w)


def _write_all(fd: int, data: bytes) -> None:
    import select

    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            select.select([], [fd], [])
        except OSError:  # our caller stopped reading: drop the output, as a closed pipe would
            return
