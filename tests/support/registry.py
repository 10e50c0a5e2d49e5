"""Real registries for tests: Debian's docker-registry on 127.0.0.1, and a token server.

    reg = RegistryProcess(workdir)                 # anonymous, plain HTTP
    reg.start(); reg.host -> "127.0.0.1:PORT"; reg.stop()   (by pid)
    tokens = TokenServer(workdir, users={"berth": "s3cret"}); tokens.start()
    reg = RegistryProcess(workdir, token_server=tokens)     # auth: token

The token server implements distribution's token spec: GET /token?service=&scope=
with optional Basic credentials; it issues RS256 JWTs signed with a key whose
self-signed certificate is the registry's ``rootcertbundle`` (the JWT header carries it
as ``x5c``). Keys and signatures come from the ``openssl`` command line. Anonymous
callers get a token with no access (as Docker Hub does for private repositories); wrong
credentials get 401.
"""

from __future__ import annotations

import base64
import json
import secrets
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.support.proxy import QuietServer

REGISTRY_BIN = "/usr/bin/docker-registry"
SERVICE = "berth-test-registry"
ISSUER = "berth-test-token-issuer"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """A tiny token server (http.server in a thread) issuing registry JWTs."""

    def __init__(self, workdir: Path, users: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.users = dict(users or {})
        self.key = workdir / "token-key.pem"
        self.cert = workdir / "token-cert.pem"
        self.requests: list[dict[str, Any]] = []
        self.expires_in = 300
        self._server: QuietServer | None = None
        self._thread: threading.Thread | None = None
        self._x5c = ""

    @property
    def realm(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/token"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(self.key),
             "-out", str(self.cert), "-days", "2", "-subj", "/CN=berth-test-token-issuer"],
            check=True, capture_output=True, timeout=60,
        )
        der = subprocess.run(["openssl", "x509", "-in", str(self.cert), "-outform", "DER"],
                             check=True, capture_output=True, timeout=30).stdout
        self._x5c = base64.b64encode(der).decode()
        server = QuietServer(("127.0.0.1", 0), self._handler())
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="token-server", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def issue(self, subject: str, access: list[dict[str, Any]]) -> str:
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c]}
        claims = {"iss": ISSUER, "sub": subject, "aud": SERVICE, "exp": now + self.expires_in,
                  "nbf": now - 10, "iat": now, "jti": secrets.token_hex(8), "access": access}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(self.key)],
                                   input=signing_input.encode(), check=True, capture_output=True,
                                   timeout=30).stdout
        return f"{signing_input}.{_b64url(signature)}"

    def _authenticate(self, header: str | None) -> str | None | bool:
        """The user name, None for anonymous, False for wrong credentials."""
        if not header:
            return None
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        return user if self.users.get(user) == password else False

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = parse_qs(parts.query)
                user = outer._authenticate(self.headers.get("Authorization"))
                outer.requests.append({"path": parts.path, "query": query, "user": user})
                if parts.path != "/token":
                    return self._send(404, {"error": "not found"})
                if user is False:
                    return self._send(401, {"error": "bad credentials"})
                access = []
                if user is not None:
                    for scope in query.get("scope", []):
                        kind, _, rest = scope.partition(":")
                        name, _, actions = rest.rpartition(":")
                        access.append({"type": kind, "name": name, "actions": actions.split(",")})
                token = outer.issue(user if isinstance(user, str) else "", access)
                self._send(200, {"token": token, "access_token": token, "expires_in": outer.expires_in,
                                 "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


class RegistryProcess:
    """docker-registry serving a storage dir on 127.0.0.1:<free port>; stopped by pid."""

    def __init__(self, workdir: Path, *, token_server: TokenServer | None = None) -> None:
        self.workdir = workdir
        self.token_server = token_server
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "registry.log"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def config(self) -> str:
        lines = [
            "version: 0.1",
            "log:",
            "  level: warn",
            "  accesslog:",
            "    disabled: true",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {self.workdir / 'storage'}",
            "  delete:",
            "    enabled: true",
            "http:",
            f"  addr: 127.0.0.1:{self.port}",
            f"  secret: {secrets.token_hex(16)}",
        ]
        if self.token_server is not None:
            lines += [
                "auth:",
                "  token:",
                f"    realm: {self.token_server.realm}",
                f"    service: {SERVICE}",
                f"    issuer: {ISSUER}",
                f"    rootcertbundle: {self.token_server.cert}",
            ]
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 20.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            self.port = free_port()
            config = self.workdir / "config.yml"
            config.write_text(self.config())
            log = open(self.log_path, "ab")
            try:
                self.proc = subprocess.Popen(
                    [REGISTRY_BIN, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, start_new_session=True,
                )
            finally:
                log.close()
            if self._wait_ready(timeout):
                return
            self.stop()
        raise RuntimeError(f"docker-registry did not start; log:\n{self.log_path.read_text()[-2000:]}")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        url = f"http://{self.host}/v2/"
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        return True
            except urllib.error.HTTPError as e:
                if e.code == 401:
                    return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
