"""Volume endpoints of the Docker Engine API, over ``daemon.services["volumes"]``.

    GET    /volumes                ?filters={"dangling","name","label","driver"}   {"Volumes": [...], "Warnings": null}
    POST   /volumes/create         {"Name", "Driver", "DriverOpts", "Labels"}       201, the volume (an existing
                                                                                     name answers the existing one)
    POST   /volumes/prune          ?filters={"label","label!","all"}               {"VolumesDeleted", "SpaceReclaimed"}
                                   (unused anonymous volumes; named ones too with all=true, or
                                   always before API 1.42, as dockerd)
    GET    /volumes/{name}                                                          the volume
    DELETE /volumes/{name}         ?force=                                          204; 409 when in use

``/system/df`` lists the volumes with their UsageData (``berth.daemon.api.system``).
"""

from __future__ import annotations

from typing import Any

from berth.daemon.api._validate import json_kind
from berth.daemon.http import HTTPError, Request, Response, json_response
from berth.daemon.router import Router

_CREATE_FIELDS = {"Name": "string", "Driver": "string", "DriverOpts": "map[string]string",
                  "Labels": "map[string]string"}


def _check_create(body: dict) -> None:
    """Go's decoder on VolumeCreateOptions: a wrong type is a 400 before anything is made."""
    for key, kind in _CREATE_FIELDS.items():
        value = body.get(key)
        if value is None:
            continue
        if kind == "string" and not isinstance(value, str):
            raise HTTPError(400, f"json: cannot unmarshal {json_kind(value)} into Go struct field "
                                 f"CreateOptions.{key} of type string")
        if kind == "map[string]string" and (not isinstance(value, dict)
                                            or not all(isinstance(v, str) for v in value.values())):
            raise HTTPError(400, f"json: cannot unmarshal {json_kind(value)} into Go struct field "
                                 f"CreateOptions.{key} of type map[string]string")


def _older_than(version: str, than: tuple[int, int]) -> bool:
    try:
        return tuple(int(p) for p in version.split(".")) < than
    except ValueError:
        return False


def register(router: Router, daemon: Any) -> None:
    def service() -> Any:
        return daemon.services["volumes"]  # built before the API serves

    @router.route("GET", "/volumes")
    async def list_(request: Request) -> Response:
        return json_response({"Volumes": service().list_volumes(request.filters()), "Warnings": None})

    @router.route("POST", "/volumes/create")
    async def create(request: Request) -> Response:
        body = await request.json()
        _check_create(body)
        volume, _created = service().create(body.get("Name") or "", body.get("Driver") or "",
                                            body.get("DriverOpts"), body.get("Labels"))
        return json_response(volume, 201)

    @router.route("POST", "/volumes/prune")
    async def prune(request: Request) -> Response:
        await request.body()
        filters = request.filters()
        if _older_than(request.api_version, (1, 42)) and "all" not in filters:
            filters["all"] = ["true"]  # as dockerd: before API 1.42, prune took named volumes too
        deleted, reclaimed = await service().prune(filters)
        return json_response({"VolumesDeleted": deleted or None, "SpaceReclaimed": reclaimed})

    @router.route("GET", "/volumes/{name}")
    async def inspect(request: Request) -> Response:
        return json_response(service().get(request.params["name"]))

    @router.route("DELETE", "/volumes/{name}")
    async def remove(request: Request) -> Response:
        await service().remove(request.params["name"], force=request.flag("force"))
        return Response(204)
