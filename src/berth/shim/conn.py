"""One client connection on the control socket: a request line, then an answer line, a
wait for the exit, or an attach stream. All I/O is non-blocking, driven by the loop."""

from __future__ import annotations

import os

from berth._sys import jsonfast as json
from berth.errors import BerthError, InvalidArgument
from berth.shim.loop import POLLERR, POLLHUP, POLLIN, POLLOUT
from berth.shim.protocol import MAX_REQUEST, frame

TYPE_CHECKING = False
if TYPE_CHECKING:
    from berth.shim.process import Process
    from berth.shim.server import Shim

REQUEST, BUSY, WAIT, ATTACH = "request", "busy", "wait", "attach"
ATTACH_HIGH_WATER = 256 * 1024  # a client this far behind pauses the process's output
ATTACH_LOW_WATER = 64 * 1024  # ... until it is this close again


class Conn:
    def __init__(self, shim: Shim, fd: int) -> None:
        self.shim = shim
        self.loop = shim.loop
        self.fd = fd
        os.set_blocking(fd, False)
        self.mode = REQUEST
        self._in = bytearray()
        self._out = bytearray()
        self._reading = True
        self._eof = False
        self._closing = False
        self.process: Process | None = None
        self._streams: tuple[int, ...] = ()
        self._stdin = False
        self._close_stdin = False
        self.loop.add(fd, POLLIN, self._on_event)

    # --- events ----------------------------------------------------------------------------

    def _update(self) -> None:
        if self.fd >= 0:
            self.loop.modify(self.fd, (POLLIN if self._reading else 0) | (POLLOUT if self._out else 0))

    def _on_event(self, events: int) -> None:
        if events & POLLOUT:
            self._flush()
        if self.fd < 0:
            return
        if self._reading and events & (POLLIN | POLLHUP | POLLERR):
            self._on_readable()
        elif events & (POLLHUP | POLLERR):
            self.close()  # the peer is gone and we were not reading

    def _on_readable(self) -> None:
        try:
            data = os.read(self.fd, 65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        if self.mode == REQUEST:
            self._request_data(data)
        elif self.mode == ATTACH:
            self._attach_data(data)
        elif not data:  # a waiter (or a client done with its answer) went away
            self.close()

    def _request_data(self, data: bytes) -> None:
        if not data:
            self.close()
            return
        self._in += data
        nl = self._in.find(b"\n")
        if nl < 0:
            if len(self._in) > MAX_REQUEST:
                self.mode = BUSY
                self.reply_error(InvalidArgument("request too long"))
            return
        line, rest = bytes(self._in[:nl]), bytes(self._in[nl + 1:])
        self._in = bytearray()
        self.mode = BUSY
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            self.reply_error(InvalidArgument(f"invalid request: {exc}"))
            return
        self.shim.dispatch(self, request)
        if rest and self.mode == ATTACH:
            self._attach_data(rest)

    # --- answers ---------------------------------------------------------------------------

    def reply(self, result: dict | None = None) -> None:
        body = {"ok": True}
        if result:
            body.update(result)
        self._closing = True
        self.send((json.dumps(body, separators=(",", ":")) + "\n").encode())

    def reply_error(self, error: BerthError) -> None:
        body = {"ok": False, "error": str(error), "kind": "BerthError"}
        for cls in type(error).__mro__:  # the taxonomy's own class, for the client to raise
            if cls.__module__ == "berth.errors" and cls.__name__ != "BerthError":
                body["kind"] = cls.__name__
                break
        self._closing = True
        self.send((json.dumps(body, separators=(",", ":")) + "\n").encode())

    def wait_for(self, process: Process) -> None:
        """Answer when ``process`` settles; meanwhile only watch for the client leaving."""
        self.mode = WAIT
        self.process = process
        process.waiters.append(self)

    def send(self, data: bytes) -> None:
        if self.fd < 0:
            return
        self._out += data
        self._flush()

    def _flush(self) -> None:
        while self._out:
            try:
                n = os.write(self.fd, self._out)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.close()
                return
            del self._out[:n]
        if not self._out and self._closing:
            self.close()
            return
        self._update()
        if self.mode == ATTACH and not self.backlogged:
            self.process.unthrottle()

    def flush_now(self) -> None:
        """Push out what is buffered, blocking briefly (before the shim exits)."""
        if self.fd >= 0 and self._out:
            os.set_blocking(self.fd, True)
            try:
                while self._out:
                    del self._out[:os.write(self.fd, self._out)]
            except OSError:
                pass
        self.close()

    # --- attach ----------------------------------------------------------------------------

    def begin_attach(self, process: Process, stdin: bool, stdout: bool, stderr: bool, close_stdin: bool,
                     result: dict | None = None) -> None:
        """Answer, then carry the process's streams on this connection."""
        self.send((json.dumps({"ok": True, "tty": process.tty, **(result or {})}, separators=(",", ":"))
                   + "\n").encode())
        if self.fd < 0:  # the client is already gone
            return
        self.mode = ATTACH
        self.process = process
        self._stdin = stdin
        self._close_stdin = close_stdin
        self._streams = tuple(s for s, on in ((1, stdout), (2, stderr)) if on)
        if process.output_open:
            process.attaches.append(self)
        else:
            self.finish()

    def output(self, stream: int, data: bytes) -> None:
        if stream not in self._streams and not (self.process.tty and self._streams):
            return
        self.send(data if self.process.tty else frame(stream, data))
        if len(self._out) > ATTACH_HIGH_WATER and self.fd >= 0:
            self.process.throttle()

    @property
    def backlogged(self) -> bool:
        return len(self._out) > ATTACH_LOW_WATER

    def finish(self) -> None:
        """The process's output has ended: close once everything is sent."""
        self._closing = True
        self._reading = False
        self._flush()

    def _attach_data(self, data: bytes) -> None:
        process = self.process
        writer = process.stdin if process is not None else None
        if not data:
            self._eof = True
            self._reading = False
            self._update()
            if self._stdin and self._close_stdin and writer is not None:
                writer.close()
            return
        if not self._stdin or writer is None or writer.closed:
            return
        writer.write(data)
        if writer.full:  # back-pressure: stop reading until the process takes its input
            self._reading = False
            self._update()
            writer.waiting.append(self._resume)

    def _resume(self) -> None:
        if self.fd >= 0 and self.mode == ATTACH and not self._eof and not self._closing:
            self._reading = True
            self._update()

    # --- end -------------------------------------------------------------------------------

    def close(self) -> None:
        if self.fd < 0:
            return
        self.loop.remove(self.fd)
        os.close(self.fd)
        self.fd = -1
        self._out.clear()
        process = self.process
        if process is not None:
            if self in process.attaches:
                process.attaches.remove(self)
                process.unthrottle()
            if self in process.waiters:
                process.waiters.remove(self)
