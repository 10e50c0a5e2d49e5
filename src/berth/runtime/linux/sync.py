"""One framed channel between the runtime and the container's init across the fork.

Each message is a 4-byte big-endian length and a JSON object with a ``type``. Errors in
the child travel back as ``{"type": "error", "msg": ...}`` so the user sees the child's
real reason, not "exit status 1" (crun's way).
"""

from __future__ import annotations

from berth._sys import jsonfast as json
import os

from berth.errors import BerthError


class SyncError(BerthError):
    """The other side hung up or sent something unexpected."""


class Channel:
    def __init__(self, read_fd: int, write_fd: int) -> None:
        self.read_fd = read_fd
        self.write_fd = write_fd

    @classmethod
    def pair(cls) -> tuple["Channel", "Channel"]:
        """(parent end, child end); each end closes the other's fds after the fork."""
        p2c_r, p2c_w = os.pipe()
        c2p_r, c2p_w = os.pipe()
        return cls(c2p_r, p2c_w), cls(p2c_r, c2p_w)

    def send(self, kind: str, **fields: object) -> None:
        fields["type"] = kind
        data = json.dumps(fields).encode()
        payload = len(data).to_bytes(4, "big") + data
        view = memoryview(payload)
        while view:
            view = view[os.write(self.write_fd, view):]

    def _read_exact(self, size: int) -> bytes:
        chunks = []
        while size:
            chunk = os.read(self.read_fd, size)
            if not chunk:
                raise EOFError
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    def recv(self) -> dict:
        """The next message; raises EOFError when the other side closed."""
        size = int.from_bytes(self._read_exact(4), "big")
        return json.loads(self._read_exact(size))

    def expect(self, kind: str) -> dict:
        try:
            msg = self.recv()
        except EOFError:
            raise SyncError(f"container init exited before sending {kind}") from None
        if msg.get("type") == "error":
            raise SyncError(msg.get("msg", "unknown error"))
        if msg.get("type") != kind:
            raise SyncError(f"expected {kind} from the other side, got {msg.get('type')}")
        return msg

    def close(self) -> None:
        for fd in (self.read_fd, self.write_fd):
            try:
                os.close(fd)
            except OSError:
                pass
