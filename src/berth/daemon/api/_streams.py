"""Hijacked attach and exec streams: relay between a client's connection and a shim's
attach stream, with Docker's detach keys and stdin half-close.

    parse_detach_keys("ctrl-p,ctrl-q") -> b"\\x10\\x11"
    await relay(client_reader, client_writer, shim_reader, shim_writer, stdin=, detach_keys=)
        -> "ended" (the output ended) | "detached" (the client typed the detach keys)
           | "gone" (the client's connection broke)
    frame(stream, data) -> bytes       Docker's multiplexed frame (stdout 1, stderr 2)
"""

from __future__ import annotations

import asyncio
import contextlib

from berth.errors import InvalidArgument
from berth.shim.protocol import frame

DEFAULT_DETACH_KEYS = "ctrl-p,ctrl-q"
_CTRL_SPECIAL = {"@": 0, "[": 27, "\\": 28, "]": 29, "^": 30, "_": 31}

__all__ = ["DEFAULT_DETACH_KEYS", "frame", "parse_detach_keys", "relay"]


def parse_detach_keys(text: str) -> bytes:
    """Docker's term.ToBytes: comma-separated keys, each one character or ``ctrl-X``."""
    out = bytearray()
    for key in (text or DEFAULT_DETACH_KEYS).split(","):
        key = key.strip()
        if len(key) == 1:
            out.append(ord(key))
        elif key.lower().startswith("ctrl-") and len(key) == 6:
            ch = key[5].lower()
            if "a" <= ch <= "z":
                out.append(ord(ch) - ord("a") + 1)
            elif ch in _CTRL_SPECIAL:
                out.append(_CTRL_SPECIAL[ch])
            else:
                raise InvalidArgument(f"Invalid escape keys ({text}) provided")
        else:
            raise InvalidArgument(f"Invalid escape keys ({text}) provided")
    return bytes(out)


class _DetachMatcher:
    """Holds back bytes that may begin the detach sequence (Docker's escapeProxy)."""

    def __init__(self, keys: bytes) -> None:
        self.keys = keys
        self.held = bytearray()

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        if not self.keys:
            return data, False
        out = bytearray()
        for byte in data:
            if byte == self.keys[len(self.held)]:
                self.held.append(byte)
                if len(self.held) == len(self.keys):
                    return bytes(out), True
                continue
            out += self.held
            self.held.clear()
            if byte == self.keys[0]:
                self.held.append(byte)
                if len(self.keys) == 1:
                    return bytes(out), True
            else:
                out.append(byte)
        return bytes(out), False


async def relay(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter,
                shim_reader: asyncio.StreamReader, shim_writer: asyncio.StreamWriter, *, stdin: bool,
                detach_keys: bytes = b"\x10\x11") -> str:
    async def output() -> str:
        while True:
            data = await shim_reader.read(65536)
            if not data:
                return "ended"
            if client_writer.is_closing():
                return "gone"
            client_writer.write(data)
            try:
                await client_writer.drain()
            except (ConnectionError, RuntimeError):
                return "gone"

    async def input_() -> str:
        matcher = _DetachMatcher(detach_keys)
        while True:
            try:
                data = await client_reader.read(65536)
            except (ConnectionError, asyncio.IncompleteReadError):
                data = b""
            if not data:
                with contextlib.suppress(OSError, RuntimeError):
                    if shim_writer.can_write_eof():
                        shim_writer.write_eof()
                return "eof"
            forward, detached = matcher.feed(data)
            if forward:
                shim_writer.write(forward)
                with contextlib.suppress(ConnectionError):
                    await shim_writer.drain()
            if detached:
                return "detached"

    out_task = asyncio.ensure_future(output())
    in_task = asyncio.ensure_future(input_()) if stdin else None
    try:
        pending = {out_task} | ({in_task} if in_task else set())
        while True:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if out_task in done:
                return out_task.result()
            result = in_task.result() if in_task is not None else "eof"
            if result == "detached":
                return "detached"
            # stdin ended: the output goes on until the process's output ends
    finally:
        for task in (out_task, in_task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        with contextlib.suppress(Exception):
            shim_writer.close()
