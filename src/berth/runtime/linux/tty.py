"""The container's terminal: a pty made inside the container, its master sent over the
``--console-socket`` by SCM_RIGHTS (runc's protocol), the slave as stdio and /dev/console."""

from __future__ import annotations

import os

from berth._sys import libc

TIOCSCTTY = 0x540E


def connect_console_socket(path: str) -> int:
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"connect console socket {path}: {exc.strerror}") from None
    return sock.detach()


def setup_console(socket_fd: int, uid: int, gid: int, mount_console: bool = True) -> int:
    """Make the pty, send its master, and return the slave fd."""
    import socket

    master, slave = os.openpty()
    name = os.ttyname(slave)
    os.fchown(slave, uid, gid)
    if mount_console:
        if not os.path.lexists("/dev/console"):
            os.close(os.open("/dev/console", os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
        libc.mount(name, "/dev/console", "bind", libc.MS_BIND)
    sock = socket.socket(fileno=socket_fd)
    try:
        socket.send_fds(sock, [name.encode()], [master])
    finally:
        sock.close()
        os.close(master)
    return slave


def make_controlling(slave: int) -> None:
    import fcntl

    os.setsid()
    fcntl.ioctl(slave, TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if slave > 2:
        os.close(slave)


def receive_master(sock_fd: int) -> int:
    """The runtime's side of the console socket, for a foreground ``run -t``."""
    import socket

    sock = socket.socket(fileno=sock_fd)
    try:
        _, fds, _, _ = socket.recv_fds(sock, 4096, 1)
    finally:
        sock.close()
    if not fds:
        raise OSError(5, "console socket: no pty master received")
    return fds[0]


def proxy(master: int, stop_pid_alive) -> None:  # noqa: ANN001 - a callable returning bool
    """Copy between our stdio and the pty master until the container's side closes."""
    import select
    import termios
    import tty

    raw = os.isatty(0)
    saved = termios.tcgetattr(0) if raw else None
    if raw:
        tty.setraw(0)
        _copy_winsize(0, master)
    try:
        readers = [master, 0]
        while True:
            ready, _, _ = select.select(readers, [], [], 0.5)
            if master in ready:
                try:
                    data = os.read(master, 65536)
                except OSError:
                    data = b""
                if not data:
                    return
                os.write(1, data)
            if 0 in ready:
                data = os.read(0, 65536)
                if not data:
                    readers.remove(0)
                else:
                    os.write(master, data)
            if not ready and not stop_pid_alive():
                return
    finally:
        if saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)


def _copy_winsize(src: int, dst: int) -> None:
    import fcntl
    import termios

    try:
        size = fcntl.ioctl(src, termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(dst, termios.TIOCSWINSZ, size)
    except OSError:
        pass
