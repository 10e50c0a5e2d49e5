"""Network endpoints of the Docker Engine API, over ``daemon.services["networks"]``.

    GET    /networks                 ?filters={"name","id","driver","label","type","scope","dangling"}
    GET    /networks/{id}            ?verbose=&scope=           the network, with its Containers
    POST   /networks/create          {"Name", "Driver", "Internal", "IPAM": {"Driver", "Config": [{"Subnet",
                                      "Gateway", "IPRange"}]}, "Options", "Labels", "CheckDuplicate",
                                      "EnableIPv6", "Attachable"}                   201 {"Id", "Warning"}
    DELETE /networks/{id}                                        204; 403 in use or predefined
    POST   /networks/{id}/connect    {"Container", "EndpointConfig": {"Aliases", "IPAMConfig":
                                      {"IPv4Address"}, "MacAddress"}}              200
    POST   /networks/{id}/disconnect {"Container", "Force"}                        200
    POST   /networks/prune           ?filters={"label","until"}                   {"NetworksDeleted": [...]}

The predefined networks ``bridge``, ``host`` and ``none`` are listed like Docker's.
"""

from __future__ import annotations

from typing import Any

from berth.daemon.http import HTTPError, Request, Response, json_response
from berth.daemon.router import Router

_IPAM_CONFIG = ("[]", {"Subnet": "string", "IPRange": "string", "Gateway": "string",
                       "AuxiliaryAddresses": "map[string]string"})
_CREATE: dict[str, Any] = {
    "Name": "string", "CheckDuplicate": "bool", "Driver": "string", "Scope": "string", "Internal": "bool",
    "Attachable": "bool", "Ingress": "bool", "EnableIPv6": "bool", "ConfigOnly": "bool",
    "IPAM": {"Driver": "string", "Config": _IPAM_CONFIG, "Options": "map[string]string"},
    "Options": "map[string]string", "Labels": "map[string]string",
}
_ENDPOINT: dict[str, Any] = {
    "IPAMConfig": {"IPv4Address": "string", "IPv6Address": "string", "LinkLocalIPs": "[]string"},
    "Links": "[]string", "Aliases": "[]string", "MacAddress": "string", "DriverOpts": "map[string]string",
}
_CONNECT: dict[str, Any] = {"Container": "string", "EndpointConfig": _ENDPOINT}
_DISCONNECT: dict[str, Any] = {"Container": "string", "Force": "bool"}


def _check(body: Any, spec: dict, top: str) -> dict:
    from berth.daemon.api._validate import _check as check

    if body is None:
        return {}
    if not isinstance(body, dict):
        raise HTTPError(400, f"invalid JSON: json: cannot unmarshal {type(body).__name__} into Go value of type {top}")
    check(body, spec, top, "")
    return body


def register(router: Router, daemon: Any) -> None:
    def service() -> Any:
        return daemon.services["networks"]  # built before the API serves

    @router.route("GET", "/networks")
    async def list_(request: Request) -> Response:
        return json_response(service().list_networks(request.filters()))

    @router.route("POST", "/networks/create")
    async def create(request: Request) -> Response:
        body = _check(await request.json(), _CREATE, "types.NetworkCreateRequest")
        nid, warning = await service().create(body)
        return json_response({"Id": nid, "Warning": warning}, 201)

    @router.route("POST", "/networks/prune")
    async def prune(request: Request) -> Response:
        await request.body()
        removed = await service().prune(request.filters())
        return json_response({"NetworksDeleted": removed or None})

    @router.route("GET", "/networks/{id}")
    async def inspect(request: Request) -> Response:
        return json_response(service().inspect(request.params["id"]))

    @router.route("DELETE", "/networks/{id}")
    async def remove(request: Request) -> Response:
        await service().remove(request.params["id"])
        return Response(204)

    @router.route("POST", "/networks/{id}/connect")
    async def connect(request: Request) -> Response:
        body = _check(await request.json(), _CONNECT, "types.NetworkConnect")
        if not body.get("Container"):
            raise HTTPError(400, "no container specified")
        await service().connect(request.params["id"], body["Container"], body.get("EndpointConfig"))
        return Response(200)

    @router.route("POST", "/networks/{id}/disconnect")
    async def disconnect(request: Request) -> Response:
        body = _check(await request.json(), _DISCONNECT, "types.NetworkDisconnect")
        if not body.get("Container"):
            raise HTTPError(400, "no container specified")
        await service().disconnect(request.params["id"], body["Container"], bool(body.get("Force")))
        return Response(200)
