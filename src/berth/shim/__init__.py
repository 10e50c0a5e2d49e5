"""Layer 3: ``berth-shim``, the per-container supervisor (containerd-shim-runc-v2 / conmon).

One shim per container. It is the container's subreaper, holds its stdio (pipes) or its
pty master, writes the json-file log, records the exit, and serves a control socket. It
talks to the OCI runtime only through the runtime's command line, so runc or crun can
stand in for ``berth-runtime``. It imports only ``berth._sys``, ``berth.spec``,
``berth.errors`` and light parts of the stdlib: no asyncio, no threads, one poll loop.

Command line (``berth-shim``)::

    berth-shim --id ID --bundle DIR --state-dir DIR --runtime PATH
               [--runtime-root DIR] [--tty] [--stdin] [--ready-fd N]
               [--log-path FILE [--log-max-size BYTES] [--log-max-file N]]
               [--foreground]

    --id            the container's id (passed to the runtime)
    --bundle        the OCI bundle (config.json + rootfs)
    --state-dir     the shim's own directory (created, mode 0700), e.g. /run/berth/shims/ID
    --runtime       the runtime binary: berth-runtime, runc, crun
    --runtime-root  the runtime's ``--root`` (its default when absent)
    --tty           the container has a terminal (``process.terminal`` in config.json):
                    the shim serves a console socket and holds the pty master
    --stdin         keep the container's stdin open (a pipe the shim writes to);
                    without it the container's stdin is /dev/null
    --ready-fd N    an inherited fd to which the shim writes one JSON line once the
                    container is created (``{"ok": true, "pid": SHIM, "init_pid": PID}``)
                    or failed (``{"ok": false, "error": "the runtime's own message"}``)
    --log-path      the json-file log (Docker's format); without it output is only sent
                    to attached clients
    --log-max-size  rotate when the log would grow past this many bytes (k/m/g suffixes,
                    1024-based; 0: never)
    --log-max-file  keep FILE.1 .. FILE.(N-1) besides FILE (default 1: truncate)
    --foreground    do not daemonize (for debugging)

The shim daemonizes (fork, setsid, stdio to /dev/null, its own session and process
group), becomes a child subreaper, and re-executes itself so that ctypes (needed for
prctl) is not resident. It then writes ``shim.pid`` (``{"pid", "start_time"}``), binds
``shim.sock``, runs ``RUNTIME create``, reports readiness, and serves until ``delete`` or
``shutdown``.

State directory::

    shim.pid      {"pid": N, "start_time": T}            (atomic; removed at exit)
    shim.sock     the control socket, mode 0600           (removed at exit)
    init.pid      the runtime's --pid-file
    runtime.log   the runtime's --log (json); errors are read from it
    exit.json     {"exit_code", "exited_at", "oom_killed", "pid"} once the init exits (atomic)

Control protocol (``shim.sock``, unix stream): the client sends one JSON object on one
line, the shim answers one JSON object on one line and closes, except for ``wait`` (the
answer comes at the exit), ``attach`` (the connection then carries the streams) and
``exec`` with ``attach``. Answers are ``{"ok": true, ...}`` or ``{"ok": false, "error":
MESSAGE, "kind": "NotFound" | "AlreadyExists" | "InvalidArgument" | "FailedPrecondition" |
"Unavailable"}`` (the classes of ``berth.errors``). ``exec_id`` is optional wherever it
appears and selects an exec process instead of the container's init.

    start                                   -> {}
    state     {exec_id}                     -> {id, exec_id, status, pid, tty, exit_code,
                                                exited_at, oom_killed}
    kill      {signal: int|name, all, exec_id} -> {}
    wait      {exec_id}                     -> {exit_code, exited_at, oom_killed}
    resize    {width, height, exec_id}      -> {}
    attach    {stdin, stdout, stderr, close_stdin, exec_id} -> {tty}, then the streams:
              without a tty, Docker's multiplexed frames (1 byte stream 1|2, 3 zero
              bytes, big-endian uint32 length, payload) from the shim and raw stdin
              from the client; with a tty raw bytes both ways. When the client half-
              closes and ``close_stdin`` was set, the process's stdin is closed. The
              shim closes the connection when the process's output has ended.
    close_stdin {exec_id}                   -> {}
    exec      {exec_id, process, tty, stdin, attach?: {stdin, stdout, stderr,
              close_stdin}}                 -> {pid} (then the streams, with attach)
    delete    {force}                       -> {}; the shim removes its state dir and exits
    stats                                   -> {stats: the runtime's ``events --stats`` data}
    pids                                    -> {pids: [...]}
    pause / resume                          -> {}
    update    {resources}                   -> {}
    shutdown  {now}                         -> {}; the shim exits, leaving exit.json
              (refused while the init runs, unless ``now``)

The client side is ``berth.shim.client`` (``ShimClient``, ``find_shims``, ``start_shim``).
"""
