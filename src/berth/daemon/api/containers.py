"""Container endpoints of the Docker Engine API (``/containers/...``), over the containers
service: create, list, inspect, start, stop, kill, restart, pause, unpause, wait, delete,
rename, top, stats, update, logs, attach, resize, prune. ``changes``, ``export`` and
``archive`` answer 501."""

from __future__ import annotations

import asyncio
import json

from berth.daemon.api._streams import frame, parse_detach_keys, relay
from berth.daemon.api._validate import check_create, check_update
from berth.daemon.http import Hijack, HTTPError, Request, Response, StreamResponse, json_response
from berth.daemon.router import Router
from berth.errors import BerthError

RAW = "application/vnd.docker.raw-stream"
MULTIPLEXED = "application/vnd.docker.multiplexed-stream"


def _no_content() -> Response:
    return Response(204)


def _not_modified() -> Response:
    return Response(304)


def register(router: Router, daemon) -> None:  # noqa: ANN001, C901 - one closure per endpoint
    from berth.daemon.services.containers import NotModified

    def svc():  # noqa: ANN202
        return daemon.services["containers"]  # built before the API serves

    @router.route("POST", "/containers/create")
    async def create(request: Request) -> Response:
        body = await request.json()
        check_create(body)
        cid, warnings = await svc().create(body, request.arg("name"))
        return json_response({"Id": cid, "Warnings": warnings}, 201)

    @router.route("GET", "/containers/json")
    async def list_(request: Request) -> Response:
        limit = request.int_arg("limit", -1)
        if request.flag("latest"):
            limit = 1
        return json_response(svc().summaries(all_=request.flag("all"), size=request.flag("size"),
                                             filters=request.filters(), limit=limit))

    @router.route("POST", "/containers/prune")
    async def prune(request: Request) -> Response:
        service = svc()
        filters = request.filters()
        deleted, reclaimed = [], 0
        for summary in service.summaries(all_=True, filters={k: v for k, v in filters.items() if k == "label"}):
            if summary["State"] in ("exited", "created", "dead"):
                try:
                    _cid, rec = service.get(summary["Id"])
                    reclaimed += service._size(rec)[0]
                    await service.remove(summary["Id"])
                    deleted.append(summary["Id"])
                except BerthError:
                    continue
        return json_response({"ContainersDeleted": deleted or None, "SpaceReclaimed": reclaimed})

    @router.route("GET", "/containers/{id}/json")
    async def inspect(request: Request) -> Response:
        return json_response(svc().inspect(request.params["id"], size=request.flag("size")))

    @router.route("POST", "/containers/{id}/start")
    async def start(request: Request) -> Response:
        if request.arg("checkpoint"):
            raise HTTPError(501, "checkpoints are not supported")
        try:
            await svc().start_container(request.params["id"])
        except NotModified:
            return _not_modified()
        return _no_content()

    @router.route("POST", "/containers/{id}/stop")
    async def stop(request: Request) -> Response:
        timeout = request.int_arg("t", None) if request.arg("t") else None  # type: ignore[arg-type]
        try:
            await svc().stop_container(request.params["id"], timeout, request.arg("signal") or None)
        except NotModified:
            return _not_modified()
        return _no_content()

    @router.route("POST", "/containers/{id}/kill")
    async def kill(request: Request) -> Response:
        await svc().kill(request.params["id"], request.arg("signal"))
        return _no_content()

    @router.route("POST", "/containers/{id}/restart")
    async def restart(request: Request) -> Response:
        timeout = request.int_arg("t", None) if request.arg("t") else None  # type: ignore[arg-type]
        await svc().restart(request.params["id"], timeout, request.arg("signal") or None)
        return _no_content()

    @router.route("POST", "/containers/{id}/pause")
    async def pause(request: Request) -> Response:
        await svc().pause(request.params["id"])
        return _no_content()

    @router.route("POST", "/containers/{id}/unpause")
    async def unpause(request: Request) -> Response:
        await svc().unpause(request.params["id"])
        return _no_content()

    @router.route("POST", "/containers/{id}/wait")
    async def wait(request: Request) -> StreamResponse:
        future = await svc().wait(request.params["id"], request.arg("condition"))

        async def body():  # noqa: ANN202 - the head goes out at once, the status at the exit
            code = await future
            yield (json.dumps({"StatusCode": code, "Error": None}) + "\n").encode()

        return StreamResponse(body())

    @router.route("DELETE", "/containers/{id}")
    async def delete(request: Request) -> Response:
        if request.flag("link"):
            raise HTTPError(400, "links are not supported")
        await svc().remove(request.params["id"], force=request.flag("force"), volumes=request.flag("v"))
        return _no_content()

    @router.route("POST", "/containers/{id}/rename")
    async def rename(request: Request) -> Response:
        await svc().rename(request.params["id"], request.arg("name"))
        return _no_content()

    @router.route("GET", "/containers/{id}/top")
    async def top(request: Request) -> Response:
        return json_response(await svc().top(request.params["id"], request.arg("ps_args")))

    @router.route("GET", "/containers/{id}/stats")
    async def stats(request: Request) -> Response | StreamResponse:
        service = svc()
        service.get(request.params["id"])
        stream = request.flag("stream", True)
        one_shot = request.flag("one-shot")
        samples = service.stats(request.params["id"], stream=stream, one_shot=one_shot)
        if not stream:
            sample = None
            async for sample in samples:
                break
            return json_response(sample)

        async def body():  # noqa: ANN202
            async for sample in samples:
                yield (json.dumps(sample) + "\n").encode()

        return StreamResponse(body())

    @router.route("POST", "/containers/{id}/update")
    async def update(request: Request) -> Response:
        body = await request.json()
        check_update(body)
        warnings = await svc().update(request.params["id"], body)
        return json_response({"Warnings": warnings})

    @router.route("POST", "/containers/{id}/resize")
    async def resize(request: Request) -> Response:
        await svc().resize(request.params["id"], request.int_arg("h"), request.int_arg("w"))
        return Response(200, b"", "text/plain; charset=utf-8")

    @router.route("GET", "/containers/{id}/logs")
    async def logs(request: Request) -> StreamResponse:
        follow = request.flag("follow")
        tty, entries = svc().logs(
            request.params["id"], follow=follow, stdout=request.flag("stdout"), stderr=request.flag("stderr"),
            since=request.arg("since"), until=request.arg("until"), tail=request.arg("tail", "all"),
            timestamps=request.flag("timestamps"))

        async def body():  # noqa: ANN202
            async for stream, data in entries:
                yield data if tty else frame(stream, data)

        return StreamResponse(body(), content_type=RAW if tty else MULTIPLEXED)

    @router.route("POST", "/containers/{id}/attach")
    async def attach(request: Request) -> Hijack:
        service = svc()
        ref = request.params["id"]
        _cid, rec = service.get(ref)
        keys = parse_detach_keys(request.arg("detachKeys"))
        stdin, stdout, stderr = request.flag("stdin"), request.flag("stdout"), request.flag("stderr")
        stream, logs = request.flag("stream"), request.flag("logs")
        tty = bool(rec["Config"].get("Tty"))
        pending = None
        if stream:
            rec, pending = await service.attach(ref, stdin, stdout, stderr)

        async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if logs:
                # The logs are there at once: give the client the time to read the response's
                # head alone (docker-py then reads the socket under its HTTP library's buffer,
                # and would lose whatever came in the same read).
                await asyncio.sleep(0.05)
                try:
                    _tty, entries = service.logs(ref, stdout=stdout, stderr=stderr)
                except BerthError:  # the "none" log driver: nothing to replay
                    entries = None
                if entries is not None:
                    async for which, data in entries:
                        writer.write(data if tty else frame(which, data))
                    await writer.drain()
            if pending is None:
                return
            try:
                shim_reader, shim_writer = await pending
            except BerthError:
                return  # the start failed: the client hears it from the start request
            except asyncio.CancelledError:
                service.forget_attach(ref, pending)
                raise
            await relay(reader, writer, shim_reader, shim_writer, stdin=stdin, detach_keys=keys)

        return Hijack(run, RAW if tty else MULTIPLEXED)

    @router.route("GET", "/containers/{id}/attach/ws")
    async def attach_ws(request: Request) -> Response:
        raise HTTPError(501, "websocket attach is not supported")

    for method, pattern in (("GET", "/containers/{id}/changes"), ("GET", "/containers/{id}/export"),
                            ("GET", "/containers/{id}/archive"), ("HEAD", "/containers/{id}/archive"),
                            ("PUT", "/containers/{id}/archive")):
        async def not_implemented(request: Request, _what: str = pattern) -> Response:
            svc().get(request.params["id"])
            raise HTTPError(501, f"{_what.rsplit('/', 1)[-1]} is not implemented yet")

        router.add(method, pattern, not_implemented)

