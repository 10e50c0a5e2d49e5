"""Exec endpoints of the Docker Engine API: ``POST /containers/{id}/exec`` (create),
``POST /exec/{id}/start`` (detached, or hijacked with the process's streams),
``POST /exec/{id}/resize`` and ``GET /exec/{id}/json`` (inspect, with the exit code once
the stream has ended)."""

from __future__ import annotations

import asyncio

from berth.daemon.api._streams import frame, parse_detach_keys, relay
from berth.daemon.api._validate import check_exec, check_exec_start
from berth.daemon.http import Hijack, HTTPError, Request, Response, json_response
from berth.daemon.router import Router
from berth.errors import BerthError

RAW = "application/vnd.docker.raw-stream"
MULTIPLEXED = "application/vnd.docker.multiplexed-stream"


def register(router: Router, daemon) -> None:  # noqa: ANN001
    def svc():  # noqa: ANN202
        return daemon.services["containers"]  # built before the API serves

    @router.route("POST", "/containers/{id}/exec")
    async def create(request: Request) -> Response:
        body = await request.json()
        check_exec(body)
        eid = svc().exec_create(request.params["id"], body)
        return json_response({"Id": eid}, 201)

    @router.route("POST", "/exec/{id}/start")
    async def start(request: Request) -> Response | Hijack:
        service = svc()
        body = await request.json()
        check_exec_start(body)
        eid = request.params["id"]
        ex = service.exec_get(eid)
        if ex["Started"]:
            raise HTTPError(409, f"Error: Exec command {eid} has already run")
        _cid, rec = service.get(ex["ContainerID"])
        if not rec["State"]["Running"]:
            raise HTTPError(409, f"Container {ex['ContainerID']} is not running")
        if isinstance(body.get("ConsoleSize"), list):
            ex["Config"]["ConsoleSize"] = body["ConsoleSize"]
        if body.get("Detach"):
            await service.exec_start(eid, detach=True)
            return Response(200, b"", "text/plain; charset=utf-8")
        # As dockerd: the process has a terminal if the create asked for one; the stream is
        # raw if the start asks for it (``Tty``), else multiplexed (docker-py starts an exec
        # made with tty=True with Tty false, and reads frames of the terminal's output).
        use_tty = bool(body.get("Tty"))
        keys = parse_detach_keys(ex.get("DetachKeys") or "")

        async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                _ex, (shim_reader, shim_writer) = await service.exec_start(eid, detach=False)
            except BerthError as exc:
                message = f"{exc}\r\n" if use_tty else f"{exc}\n"
                writer.write(message.encode() if use_tty else frame(2, message.encode()))
                await writer.drain()
                return
            if use_tty != bool(ex["Config"]["Tty"]):  # the shim frames the output of a process without a tty
                shim_reader = _Reframed(shim_reader, wrap=not use_tty)
            result = await relay(reader, writer, shim_reader, shim_writer, stdin=bool(ex["OpenStdin"]),
                                 detach_keys=keys)
            if result != "detached":
                await service.exec_wait(eid)

        return Hijack(run, RAW if use_tty else MULTIPLEXED)

    @router.route("POST", "/exec/{id}/resize")
    async def resize(request: Request) -> Response:
        await svc().exec_resize(request.params["id"], request.int_arg("h"), request.int_arg("w"))
        return Response(200, b"", "text/plain; charset=utf-8")

    @router.route("GET", "/exec/{id}/json")
    async def inspect(request: Request) -> Response:
        return json_response(svc().exec_inspect(request.params["id"]))


class _Reframed:
    """A shim stream in the other framing: a terminal's raw output as stdout frames
    (``wrap``), or the payloads of a multiplexed stream (unwrapped)."""

    def __init__(self, reader: asyncio.StreamReader, wrap: bool) -> None:
        self.reader = reader
        self.wrap = wrap

    async def read(self, n: int = -1) -> bytes:
        if self.wrap:
            data = await self.reader.read(n)
            return frame(1, data) if data else b""
        try:
            while True:
                header = await self.reader.readexactly(8)
                size = int.from_bytes(header[4:8], "big")
                if size:
                    return await self.reader.readexactly(size)
        except asyncio.IncompleteReadError:
            return b""
