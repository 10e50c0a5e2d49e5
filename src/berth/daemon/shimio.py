"""The daemon's asyncio side of the shim protocol (see ``berth.shim``): one JSON line each
way per request, on the shim's control socket, without a thread per waiting call.

    await call(state_dir, "state") -> dict               one request, one answer
    await call(state_dir, "wait", timeout=None)          answered when the process exits
    await open_stream(state_dir, "attach", ...) -> (answer, reader, writer)
                                                        the connection then carries the streams

Errors are the ``berth.errors`` class the shim names; a shim that is gone (no socket,
refused, closed early) raises ``Unavailable``.
"""

from __future__ import annotations

import asyncio
import json
import os

from berth import errors
from berth.shim.client import _error
from berth.shim.protocol import SOCKET, short_path

LINE_LIMIT = 1 << 20


async def _connect(state_dir: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    path, dirfd = short_path(os.path.join(state_dir, SOCKET))
    try:
        return await asyncio.open_unix_connection(path, limit=LINE_LIMIT)
    except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError) as exc:
        raise errors.Unavailable(f"shim at {state_dir} is not running ({exc.strerror})") from None
    finally:
        if dirfd >= 0:
            os.close(dirfd)


async def open_stream(state_dir: str, op: str, timeout: float | None = 60.0,
                      **fields: object) -> tuple[dict, asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await _connect(state_dir)
    body = {"op": op, **{k: v for k, v in fields.items() if v is not None}}
    try:
        writer.write(json.dumps(body, separators=(",", ":")).encode() + b"\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
    except asyncio.TimeoutError:
        writer.close()
        raise errors.Unavailable(f"shim at {state_dir} did not answer {op} in time") from None
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        writer.close()
        raise errors.Unavailable(f"shim at {state_dir}: {op}: {exc}") from None
    if not line:
        writer.close()
        raise errors.Unavailable(f"shim at {state_dir} closed the connection during {op}")
    try:
        answer = json.loads(line)
    except ValueError:
        writer.close()
        raise errors.Unavailable(f"shim at {state_dir} answered {op} with nonsense") from None
    if not answer.get("ok"):
        writer.close()
        raise _error(answer)
    answer.pop("ok", None)
    return answer, reader, writer


async def call(state_dir: str, op: str, timeout: float | None = 60.0, **fields: object) -> dict:
    answer, _reader, writer = await open_stream(state_dir, op, timeout, **fields)
    writer.close()
    return answer
