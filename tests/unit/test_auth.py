"""berth.image.auth: config.json credentials, WWW-Authenticate parsing, the token flow.

The token flow runs against a small token server on 127.0.0.1 (http.server in a thread).
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from berth.errors import FailedPrecondition, InvalidArgument
from berth.image.auth import (
    AuthProvider,
    Credentials,
    DockerConfigCredentials,
    StaticCredentials,
    default_config_path,
    normalize_registry,
    parse_www_authenticate,
    repository_scope,
)

# --- WWW-Authenticate ---------------------------------------------------------------------


def test_parse_bearer() -> None:
    [c] = parse_www_authenticate(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:samalba/my-app:pull,push"'
    )
    assert c.scheme == "bearer"
    assert c.realm == "https://auth.docker.io/token"
    assert c.params["service"] == "registry.docker.io"
    assert c.params["scope"] == "repository:samalba/my-app:pull,push"


def test_parse_basic_and_several() -> None:
    cs = parse_www_authenticate('Basic realm="Registry Realm", Bearer realm="http://x/t",service=s')
    assert [c.scheme for c in cs] == ["basic", "bearer"]
    assert cs[0].realm == "Registry Realm"
    assert cs[1].params == {"realm": "http://x/t", "service": "s"}


def test_parse_odd_spacing_and_escapes() -> None:
    [c] = parse_www_authenticate('BEARER  realm = "http://h/t" , error="insufficient_scope", x="a\\"b"')
    assert c.scheme == "bearer"
    assert c.params["realm"] == "http://h/t"
    assert c.params["error"] == "insufficient_scope"
    assert c.params["x"] == 'a"b'


def test_parse_garbage_is_empty_or_schemes_only() -> None:
    assert parse_www_authenticate("") == []
    assert [c.scheme for c in parse_www_authenticate("Negotiate")] == ["negotiate"]


# --- credentials --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "normal"),
    [
        ("https://index.docker.io/v1/", "docker.io"),
        ("index.docker.io", "docker.io"),
        ("registry-1.docker.io", "docker.io"),
        ("docker.io", "docker.io"),
        ("http://host:5000/v2/", "host:5000"),
        ("Host:5000", "host:5000"),
        ("quay.io/org", "quay.io"),
    ],
)
def test_normalize_registry(key: str, normal: str) -> None:
    assert normalize_registry(key) == normal


def _write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(json.dumps(config))
    return path


def test_config_auths(tmp_path: Path) -> None:
    b64 = base64.b64encode(b"alice:pa:ss").decode()
    path = _write_config(tmp_path / "config.json", {"auths": {
        "https://index.docker.io/v1/": {"auth": b64},
        "127.0.0.1:5000": {"username": "bob", "password": "pw"},
        "token.example": {"identitytoken": "refresh-me"},
    }})
    creds = DockerConfigCredentials(path)
    assert creds.get("docker.io") == Credentials("alice", "pa:ss")
    assert creds.get("registry-1.docker.io") == Credentials("alice", "pa:ss")
    assert creds.get("127.0.0.1:5000") == Credentials("bob", "pw")
    assert creds.get("token.example") == Credentials(identity_token="refresh-me")
    assert creds.get("elsewhere.example") is None
    assert "pa:ss" not in repr(creds.get("docker.io"))


def test_config_default_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    assert default_config_path() == tmp_path / "config.json"
    _write_config(tmp_path / "config.json", {"auths": {"h:1": {"username": "u", "password": "p"}}})
    assert DockerConfigCredentials().get("h:1") == Credentials("u", "p")
    monkeypatch.delenv("DOCKER_CONFIG")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_config_path() == tmp_path / "home" / ".docker" / "config.json"


def test_config_missing_file_means_no_credentials(tmp_path: Path) -> None:
    assert DockerConfigCredentials(tmp_path / "nope.json").get("docker.io") is None


def test_config_malformed(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InvalidArgument, match="not valid JSON"):
        DockerConfigCredentials(tmp_path / "bad.json").get("docker.io")
    path = _write_config(tmp_path / "c.json", {"auths": {"h": {"auth": base64.b64encode(b"nocolon").decode()}}})
    with pytest.raises(InvalidArgument, match="username:password"):
        DockerConfigCredentials(path).get("h")


def test_config_credential_helpers(tmp_path: Path) -> None:
    calls: list[tuple[str, str]] = []

    def helper(name: str, server: str) -> str | None:
        calls.append((name, server))
        if name == "none":
            return None
        return json.dumps({"Username": f"{name}-user", "Secret": "s"})

    path = _write_config(tmp_path / "c.json", {
        "credHelpers": {"special:5000": "pass"}, "credsStore": "desktop",
        "auths": {"plain:1": {"username": "u", "password": "p"}},
    })
    creds = DockerConfigCredentials(path, run_helper=helper)
    assert creds.get("special:5000") == Credentials("pass-user", "s")
    assert creds.get("plain:1") == Credentials("u", "p")
    assert creds.get("docker.io") == Credentials("desktop-user", "s")
    assert calls == [("pass", "special:5000"), ("desktop", "https://index.docker.io/v1/")]


def test_config_reloads_when_changed(tmp_path: Path) -> None:
    import os

    path = _write_config(tmp_path / "c.json", {"auths": {"h": {"username": "a", "password": "1"}}})
    creds = DockerConfigCredentials(path)
    assert creds.get("h") == Credentials("a", "1")
    _write_config(path, {"auths": {"h": {"username": "b", "password": "2"}}})
    os.utime(path, (1, 1))
    assert creds.get("h") == Credentials("b", "2")


# --- the token flow -------------------------------------------------------------------------


class TokenServer:
    """Records requests; answers per ``self.mode``."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.mode = "token"          # token | access_token | 401 | 500 | empty
        self.expires_in: int | None = 300
        self.counter = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, form: dict[str, list[str]] | None = None) -> None:
                parts = urlsplit(self.path)
                outer.requests.append({
                    "method": self.command, "path": parts.path,
                    "query": parse_qs(parts.query), "form": form,
                    "authorization": self.headers.get("Authorization"),
                })
                outer.counter += 1
                if outer.mode in ("401", "500"):
                    status, body = int(outer.mode), b'{"details":"no"}'
                else:
                    status = 200
                    data: dict[str, Any] = {}
                    if outer.mode != "empty":
                        data[outer.mode] = f"tok-{outer.counter}"
                    if outer.expires_in is not None:
                        data["expires_in"] = outer.expires_in
                    body = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._answer()

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                self._answer(parse_qs(raw))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/token"

    def challenge(self, scope: str = "repository:a/b:pull") -> str:
        return f'Bearer realm="{self.realm}",service="test-registry",scope="{scope}"'


@pytest.fixture
def token_server() -> Iterator[TokenServer]:
    server = TokenServer()
    yield server
    server.server.shutdown()
    server.server.server_close()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


REG = "registry.test:5000"
PULL = [repository_scope("a/b", "pull")]


def test_anonymous_token(token_server: TokenServer) -> None:
    auth = AuthProvider()
    header = auth.challenge(REG, token_server.challenge(), PULL)
    assert header == "Bearer tok-1"
    [req] = token_server.requests
    assert req["query"] == {"service": ["test-registry"], "scope": ["repository:a/b:pull"]}
    assert req["authorization"] is None


def test_token_with_basic_credentials(token_server: TokenServer) -> None:
    auth = AuthProvider(StaticCredentials({REG: Credentials("alice", "pw")}))
    auth.challenge(REG, token_server.challenge(), PULL)
    [req] = token_server.requests
    assert req["authorization"] == "Basic " + base64.b64encode(b"alice:pw").decode()
    assert req["query"]["account"] == ["alice"]


def test_access_token_field_accepted(token_server: TokenServer) -> None:
    token_server.mode = "access_token"
    assert AuthProvider().challenge(REG, token_server.challenge(), PULL) == "Bearer tok-1"


def test_token_cached_per_scope_until_expiry(token_server: TokenServer) -> None:
    clock = Clock()
    auth = AuthProvider(clock=clock)
    token_server.expires_in = 120
    assert auth.authorization(REG, PULL) is None            # nothing known yet
    first = auth.challenge(REG, token_server.challenge(), PULL)
    assert auth.authorization(REG, PULL) == first          # cached: no request
    assert len(token_server.requests) == 1
    push = [repository_scope("a/b", "pull", "push")]
    other = auth.authorization(REG, push)                  # known bearer registry: fetched up front
    assert other is not None and other != first
    assert token_server.requests[-1]["query"]["scope"] == ["repository:a/b:pull,push"]
    assert len(token_server.requests) == 2
    clock.now += 60
    assert auth.authorization(REG, PULL) == first
    clock.now += 61                                        # past expires_in (minus a margin)
    refreshed = auth.authorization(REG, PULL)
    assert refreshed not in (None, first)
    assert len(token_server.requests) == 3


def test_default_lifetime_is_60s(token_server: TokenServer) -> None:
    clock = Clock()
    auth = AuthProvider(clock=clock)
    token_server.expires_in = None
    first = auth.challenge(REG, token_server.challenge(), PULL)
    clock.now += 50
    assert auth.authorization(REG, PULL) == first
    clock.now += 20
    assert auth.authorization(REG, PULL) != first


def test_rejected_token_is_refetched(token_server: TokenServer) -> None:
    auth = AuthProvider()
    first = auth.challenge(REG, token_server.challenge(), PULL)
    second = auth.challenge(REG, token_server.challenge(), PULL, rejected=first)
    assert second != first
    assert len(token_server.requests) == 2


def test_challenge_scope_is_merged(token_server: TokenServer) -> None:
    AuthProvider().challenge(REG, token_server.challenge("repository:other/repo:pull"), PULL)
    assert token_server.requests[0]["query"]["scope"] == ["repository:a/b:pull", "repository:other/repo:pull"]


def test_identity_token_uses_oauth_post(token_server: TokenServer) -> None:
    auth = AuthProvider(StaticCredentials({REG: Credentials(identity_token="refresh-me")}))
    assert auth.challenge(REG, token_server.challenge(), PULL) == "Bearer tok-1"
    [req] = token_server.requests
    assert req["method"] == "POST"
    assert req["form"]["grant_type"] == ["refresh_token"]
    assert req["form"]["refresh_token"] == ["refresh-me"]
    assert req["form"]["service"] == ["test-registry"]


def test_token_server_refuses(token_server: TokenServer) -> None:
    token_server.mode = "401"
    auth = AuthProvider(StaticCredentials({REG: Credentials("alice", "wrong")}))
    with pytest.raises(FailedPrecondition, match="refused the stored credentials"):
        auth.challenge(REG, token_server.challenge(), PULL)


def test_token_server_broken(token_server: TokenServer) -> None:
    from berth.errors import Unavailable

    token_server.mode = "500"
    with pytest.raises(Unavailable, match="answered 500"):
        AuthProvider().challenge(REG, token_server.challenge(), PULL)
    token_server.mode = "empty"
    with pytest.raises(Unavailable, match="no token"):
        AuthProvider().challenge(REG, token_server.challenge(), PULL)


def test_bad_realm() -> None:
    with pytest.raises(FailedPrecondition, match="not an http"):
        AuthProvider().challenge(REG, 'Bearer realm="ftp://x/token"', PULL)


def test_basic_challenge() -> None:
    auth = AuthProvider(StaticCredentials({REG: Credentials("u", "p")}))
    header = auth.challenge(REG, 'Basic realm="r"', PULL)
    assert header == "Basic " + base64.b64encode(b"u:p").decode()
    assert auth.authorization(REG, PULL) == header          # known basic registry: sent up front
    assert auth.authorization("other:1", PULL) is None


def test_basic_challenge_without_credentials() -> None:
    with pytest.raises(FailedPrecondition, match="no credentials found"):
        AuthProvider().challenge(REG, 'Basic realm="r"', PULL)


def test_unsupported_challenge() -> None:
    with pytest.raises(FailedPrecondition, match="unsupported authentication challenge"):
        AuthProvider().challenge(REG, 'Negotiate abc==', PULL)
