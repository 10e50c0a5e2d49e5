"""Routes of the Docker Engine API, with the version prefix (``/v1.43/...``) as dockerd
handles it: optional, at most the server's version, at least the minimum."""

from __future__ import annotations

from berth.daemon.http import Handler, HTTPError, Request

API_VERSION = "1.43"
MIN_API_VERSION = "1.24"


def _version_tuple(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in text.split("."))
    except ValueError:
        raise HTTPError(400, f"invalid API version {text!r}") from None


class Router:
    """``add("GET", "/containers/{id}/json", handler)``; ``{name*}`` matches several segments
    (image names hold slashes)."""

    def __init__(self) -> None:
        self._routes: list[tuple[str, list[str], Handler]] = []

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        self._routes.append((method, pattern.strip("/").split("/"), handler))

    def route(self, method: str, pattern: str):  # noqa: ANN201 - decorator
        def register(handler: Handler) -> Handler:
            self.add(method, pattern, handler)
            return handler
        return register

    async def dispatch(self, request: Request):  # noqa: ANN201
        path = request.path
        request.api_version = API_VERSION
        if path.startswith("/v") and len(path) > 2 and path[2].isdigit():
            version, _, rest = path[2:].partition("/")
            if _version_tuple(version) > _version_tuple(API_VERSION):
                raise HTTPError(400, f"client version {version} is too new. Maximum supported API version is {API_VERSION}")
            if _version_tuple(version) < _version_tuple(MIN_API_VERSION):
                raise HTTPError(400, f"client version {version} is too old. Minimum supported API version is "
                                     f"{MIN_API_VERSION}, please upgrade your client to a newer version")
            request.api_version = version
            path = "/" + rest
        segments = path.strip("/").split("/")
        for method_, pattern, handler in self._routes:
            params = _match(pattern, segments)
            if params is None:
                continue
            if method_ != request.method and not (method_ == "GET" and request.method == "HEAD"):
                continue
            request.params = params
            return await handler(request)
        raise HTTPError(404, "page not found")  # dockerd's answer to a wrong method too


def _match(pattern: list[str], segments: list[str]) -> dict[str, str] | None:
    params: dict[str, str] = {}
    for i, part in enumerate(pattern):
        if part.startswith("{") and part.endswith("*}"):
            rest_len = len(pattern) - i - 1
            if len(segments) - i - rest_len < 1:
                return None
            params[part[1:-2]] = "/".join(segments[i:len(segments) - rest_len])
            tail = _match(pattern[i + 1:], segments[len(segments) - rest_len:])
            if tail is None:
                return None
            params.update(tail)
            return params
        if i >= len(segments):
            return None
        if part.startswith("{") and part.endswith("}"):
            if not segments[i]:
                return None
            params[part[1:-1]] = segments[i]
        elif part != segments[i]:
            return None
    return params if len(segments) == len(pattern) else None
