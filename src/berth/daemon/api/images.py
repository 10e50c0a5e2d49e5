"""Image endpoints of the Docker Engine API, over ``daemon.services["images"]``.

    POST   /images/create          ?fromImage=&tag=&platform=  pull (progress stream)
                                   ?fromSrc=-&repo=&tag=&changes=&message=  import (body: rootfs tar)
    GET    /images/json            ?all=&filters=              list
    GET    /images/get             ?names=                     save (docker-format tar)
    POST   /images/load            ?quiet=                     load (body: tar)
    POST   /images/prune           ?filters=
    GET    /images/{name}/json                                 inspect
    GET    /images/{name}/history
    GET    /images/{name}/get                                  save one
    POST   /images/{name}/tag      ?repo=&tag=
    POST   /images/{name}/push     ?tag=                       (X-Registry-Auth)
    DELETE /images/{name}          ?force=&noprune=
    POST   /auth                                               login check

Progress streams are JSON messages, one per line; an error found before the first
message is an HTTP error (as dockerd answers), a later one the stream's last message
``{"errorDetail": {"message": ...}, "error": ...}``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from typing import Any

from berth.daemon.http import HTTPError, Request, Response, StreamResponse, json_response
from berth.daemon.router import Router
from berth.daemon.services.images import decode_auth
from berth.errors import BerthError


def register(router: Router, daemon: Any) -> None:  # noqa: C901 - one closure per endpoint
    def service() -> Any:
        return daemon.services["images"]  # built before the API serves

    @router.route("POST", "/images/create")
    async def create(request: Request) -> Response | StreamResponse:
        from_image = request.arg("fromImage")
        from_src = request.arg("fromSrc")
        tag = request.arg("tag")
        if from_src:
            if from_src != "-":
                raise HTTPError(400, "importing from a URL is not supported: send the archive as the body (fromSrc=-)")
            repo = request.arg("repo")
            changes = request.query.get("changes", [])
            image = await service().import_image(request.iter_body(), repo=repo, tag=tag, changes=changes,
                                                 message=request.arg("message"), platform=request.arg("platform"))
            return StreamResponse(_once({"status": image.id}))
        if not from_image:
            raise HTTPError(400, "fromImage or fromSrc is required")
        await request.body()  # nothing expected; keep the connection in step
        ref = from_image
        if tag:
            ref = f"{from_image}@{tag}" if ":" in tag and tag.split(":", 1)[0] in ("sha256", "sha512") else f"{from_image}:{tag}"
        auth = decode_auth(request.headers.get("x-registry-auth", ""))
        return await _progress(service().pull(ref, platform=request.arg("platform"), auth=auth))

    @router.route("GET", "/images/json")
    async def list_images(request: Request) -> Response:
        filters = request.filters()
        legacy = request.arg("filter")
        if legacy:
            filters.setdefault("reference", []).append(legacy)
        return json_response(await service().list(filters))

    @router.route("GET", "/images/search")
    async def search(request: Request) -> Response:
        raise HTTPError(501, "image search is not supported")

    @router.route("GET", "/images/get")
    async def save_many(request: Request) -> StreamResponse:
        names = [n for n in request.query.get("names", []) if n]
        return await _tar(service().save(names))

    @router.route("POST", "/images/load")
    async def load(request: Request) -> StreamResponse:
        try:
            loaded = await service().load(request.iter_body())
        except BerthError as e:  # dockerd answers 200 and reports a failed load in the stream
            return StreamResponse(_once({"errorDetail": {"message": str(e)}, "error": str(e)}))
        lines = []
        for name in loaded:
            what = "Loaded image ID" if name.startswith("sha256:") else "Loaded image"
            lines.append({"stream": f"{what}: {name}\n"})
        return StreamResponse(_once(*lines))

    @router.route("POST", "/images/prune")
    async def prune(request: Request) -> Response:
        return json_response(await service().prune(request.filters()))

    @router.route("GET", "/images/{name*}/json")
    async def inspect(request: Request) -> Response:
        return json_response(await service().inspect(request.params["name"]))

    @router.route("GET", "/images/{name*}/history")
    async def history(request: Request) -> Response:
        return json_response(await service().history(request.params["name"]))

    @router.route("GET", "/images/{name*}/get")
    async def save_one(request: Request) -> StreamResponse:
        return await _tar(service().save([request.params["name"]]))

    @router.route("POST", "/images/{name*}/tag")
    async def tag_image(request: Request) -> Response:
        await service().tag(request.params["name"], request.arg("repo"), request.arg("tag"))
        return Response(201, b"", "text/plain")

    @router.route("POST", "/images/{name*}/push")
    async def push(request: Request) -> StreamResponse:
        await request.body()
        auth = decode_auth(request.headers.get("x-registry-auth", ""))
        return await _progress(service().push(request.params["name"], request.arg("tag"), auth=auth))

    @router.route("DELETE", "/images/{name*}")
    async def remove(request: Request) -> Response:
        report = await service().remove(request.params["name"], force=request.flag("force"),
                                        noprune=request.flag("noprune"))
        return json_response(report)

    @router.route("POST", "/auth")
    async def auth(request: Request) -> Response:
        body = await request.json()
        return json_response(await service().login(body))


def _encode(message: dict) -> bytes:
    return (json.dumps(message) + "\r\n").encode()


async def _once(*messages: dict) -> AsyncIterator[bytes]:
    for message in messages:
        yield _encode(message)


async def _progress(messages: AsyncIterator[dict]) -> StreamResponse:
    """A progress stream whose errors before the first message are HTTP errors."""
    try:
        first = await messages.__anext__()
    except StopAsyncIteration:
        return StreamResponse(_once())

    async def chunks() -> AsyncIterator[bytes]:
        yield _encode(first)
        try:
            async for message in messages:
                yield _encode(message)
        except BerthError as e:
            yield _encode({"errorDetail": {"message": str(e)}, "error": str(e)})
        except Exception as e:  # noqa: BLE001 - the stream has started: report it in the stream
            import traceback

            sys.stderr.write("berthd: internal error:\n" + "".join(traceback.format_exception(e)))
            yield _encode({"errorDetail": {"message": f"internal error: {e}"}, "error": f"internal error: {e}"})

    return StreamResponse(chunks())


async def _tar(chunks: AsyncIterator[bytes]) -> StreamResponse:
    try:
        first = await chunks.__anext__()
    except StopAsyncIteration:
        first = b""

    async def body() -> AsyncIterator[bytes]:
        yield first
        async for chunk in chunks:
            yield chunk

    return StreamResponse(body(), content_type="application/x-tar")
