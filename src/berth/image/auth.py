"""Registry authentication: credentials from Docker's config.json, and the token flow.

    creds = DockerConfigCredentials()              # $DOCKER_CONFIG/config.json or ~/.docker/config.json
    creds.get("docker.io") -> Credentials | None   # keys like "https://index.docker.io/v1/" match
    auth = AuthProvider(creds)
    auth.authorization(registry, scopes)           # header to send up front, if one is cached
    auth.challenge(registry, www_authenticate, scopes) -> header value   after a 401

The token flow is Docker's (distribution's "Token Authentication Specification"): a 401
with ``WWW-Authenticate: Bearer realm="…",service="…",scope="…"`` sends the client to the
realm with ``GET realm?service=…&scope=…`` (Basic credentials when there are some; an
``identitytoken`` from ``docker login`` is exchanged with an OAuth2 POST instead); the
answer's ``token`` (or ``access_token``) is then sent as ``Authorization: Bearer …``.
Tokens are cached per (registry, scopes) until ``expires_in`` (60 s when absent) has
passed. ``Basic`` challenges get the stored credentials.

Scopes are ``repository:<path>:<actions>``, e.g. ``repository:library/busybox:pull``.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import urlencode, urlsplit

from berth.errors import FailedPrecondition, InvalidArgument, Unavailable
from berth.image._http import HttpClient

DOCKER_HUB = "docker.io"
_HUB_ALIASES = {"index.docker.io", "registry-1.docker.io", "registry.hub.docker.com", "docker.io"}
DEFAULT_TOKEN_LIFETIME = 60.0
_EXPIRY_MARGIN = 5.0
_TOKEN_RESPONSE_MAX = 1 << 20


@dataclass(frozen=True)
class Credentials:
    username: str = ""
    password: str = field(default="", repr=False)
    identity_token: str | None = field(default=None, repr=False)

    def basic(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


class CredentialStore(Protocol):
    def get(self, registry: str) -> Credentials | None: ...


def normalize_registry(key: str) -> str:
    """A config.json key or registry name as a bare ``host[:port]``; Docker Hub as docker.io.

    ``https://index.docker.io/v1/`` -> ``docker.io``; ``http://host:5000/v2/`` -> ``host:5000``.
    """
    key = key.strip()
    if "://" in key:
        key = urlsplit(key).netloc
    else:
        key = key.split("/", 1)[0]
    key = key.lower()
    return DOCKER_HUB if key in _HUB_ALIASES else key


class StaticCredentials:
    """Credentials given in code: ``StaticCredentials({"127.0.0.1:5000": Credentials("u", "p")})``."""

    def __init__(self, mapping: Mapping[str, Credentials]) -> None:
        self._by_registry = {normalize_registry(k): v for k, v in mapping.items()}

    def get(self, registry: str) -> Credentials | None:
        return self._by_registry.get(normalize_registry(registry))


def default_config_path() -> Path:
    base = os.environ.get("DOCKER_CONFIG")
    return Path(base) / "config.json" if base else Path.home() / ".docker" / "config.json"


class DockerConfigCredentials:
    """Credentials from a Docker ``config.json``: ``auths`` (base64 ``auth`` or
    ``username``/``password``, ``identitytoken``), ``credHelpers`` and ``credsStore``
    (``docker-credential-<name> get``). A missing file means no credentials."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *,
                 run_helper: Callable[[str, str], str | None] | None = None) -> None:
        self.path = Path(path) if path is not None else default_config_path()
        self._run_helper = run_helper or _run_credential_helper
        self._loaded: tuple[float, dict[str, object]] | None = None

    def get(self, registry: str) -> Credentials | None:
        config = self._config()
        registry = normalize_registry(registry)
        helpers = config.get("credHelpers")
        if isinstance(helpers, dict):
            for key, helper in helpers.items():
                if normalize_registry(str(key)) == registry and isinstance(helper, str):
                    return self._from_helper(helper, registry)
        auths = config.get("auths")
        if isinstance(auths, dict):
            for key, entry in auths.items():
                if normalize_registry(str(key)) == registry and isinstance(entry, dict):
                    creds = _parse_auth_entry(entry, self.path, str(key))
                    if creds is not None:
                        return creds
        store = config.get("credsStore")
        if isinstance(store, str) and store:
            return self._from_helper(store, registry)
        return None

    def _from_helper(self, helper: str, registry: str) -> Credentials | None:
        server = "https://index.docker.io/v1/" if registry == DOCKER_HUB else registry
        out = self._run_helper(helper, server)
        if out is None:
            return None
        try:
            data = json.loads(out)
            username, secret = str(data["Username"]), str(data["Secret"])
        except (ValueError, KeyError, TypeError):
            raise InvalidArgument(f"credential helper docker-credential-{helper} gave malformed output") from None
        if username == "<token>":
            return Credentials(identity_token=secret)
        return Credentials(username, secret)

    def _config(self) -> dict[str, object]:
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            return {}
        if self._loaded is None or self._loaded[0] != mtime:
            try:
                data = json.loads(self.path.read_bytes())
            except ValueError as e:
                raise InvalidArgument(f"{self.path}: not valid JSON ({e})") from None
            if not isinstance(data, dict):
                raise InvalidArgument(f"{self.path}: expected a JSON object")
            self._loaded = (mtime, data)
        return self._loaded[1]


def _parse_auth_entry(entry: dict[str, object], path: Path, key: str) -> Credentials | None:
    identity = entry.get("identitytoken")
    identity = identity if isinstance(identity, str) and identity else None
    encoded = entry.get("auth")
    if isinstance(encoded, str) and encoded:
        try:
            decoded = base64.b64decode(encoded, validate=False).decode()
        except (ValueError, UnicodeDecodeError):
            raise InvalidArgument(f"{path}: auths[{key!r}].auth is not valid base64") from None
        username, sep, password = decoded.partition(":")
        if not sep:
            raise InvalidArgument(f"{path}: auths[{key!r}].auth must encode 'username:password'")
        return Credentials(username, password, identity)
    user, secret = entry.get("username"), entry.get("password")
    if isinstance(user, str) and user:
        return Credentials(user, str(secret or ""), identity)
    if identity:
        return Credentials(identity_token=identity)
    return None


def _run_credential_helper(helper: str, server: str) -> str | None:
    binary = shutil.which(f"docker-credential-{helper}")
    if binary is None:
        raise FailedPrecondition(f"credential helper docker-credential-{helper} not found in PATH")
    try:
        proc = subprocess.run([binary, "get"], input=server.encode(), capture_output=True, timeout=30)
    except subprocess.TimeoutExpired:
        raise Unavailable(f"credential helper docker-credential-{helper} timed out") from None
    if proc.returncode != 0:
        if b"credentials not found" in proc.stdout + proc.stderr:
            return None
        message = (proc.stderr or proc.stdout).decode(errors="replace").strip().splitlines()
        raise FailedPrecondition(
            f"credential helper docker-credential-{helper} failed: {message[0] if message else proc.returncode}"
        )
    return proc.stdout.decode()


# --- WWW-Authenticate -------------------------------------------------------------------

@dataclass(frozen=True)
class Challenge:
    scheme: str                      # lowercase: "bearer", "basic", ...
    params: Mapping[str, str]        # keys lowercase

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")


_TOKEN68 = r"[A-Za-z0-9._~+/-]+=*"
_PARAM = re.compile(r'\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]*)\s*(?:,|$)')


def parse_www_authenticate(header: str) -> list[Challenge]:
    """Parse ``WWW-Authenticate`` (RFC 7235) into challenges; unknown parts are skipped."""
    challenges: list[Challenge] = []
    pos, text = 0, header
    scheme_re = re.compile(r"\s*,?\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)(?:\s+|$)")
    while pos < len(text):
        m = scheme_re.match(text, pos)
        if not m or not m.group(1):
            break
        scheme = m.group(1).lower()
        pos = m.end()
        params: dict[str, str] = {}
        while pos < len(text):
            pm = _PARAM.match(text, pos)
            if not pm:
                break
            # a bare word followed by a space is the next challenge's scheme, not a param
            value = pm.group(2)
            if value.startswith('"'):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            params[pm.group(1).lower()] = value
            pos = pm.end()
        if not params:
            t68 = re.compile(rf"\s*({_TOKEN68})\s*(?:,|$)").match(text, pos)
            if t68:
                pos = t68.end()
        challenges.append(Challenge(scheme, params))
    return challenges


# --- the provider ------------------------------------------------------------------------

@dataclass
class _Token:
    value: str
    expires: float


class AuthProvider:
    """Turns registry challenges into Authorization headers and caches bearer tokens.

    Thread-safe; one provider is meant to be shared by every client of a process.
    """

    def __init__(self, credentials: CredentialStore | None = None, *, timeout: float = 30.0,
                 http: HttpClient | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.credentials = credentials
        self._http = http or HttpClient(timeout=timeout)
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens: dict[tuple[str, tuple[str, ...]], _Token] = {}
        self._challenges: dict[str, Challenge] = {}      # registry -> last challenge seen
        self._fetch_locks: dict[tuple[str, tuple[str, ...]], threading.Lock] = {}
        self.token_requests = 0                           # for tests and metrics

    def authorization(self, registry: str, scopes: Sequence[str]) -> str | None:
        """The header to send before any 401: a cached token, or Basic for a Basic registry."""
        registry = normalize_registry(registry)
        with self._lock:
            challenge = self._challenges.get(registry)
            token = self._tokens.get((registry, _scope_key(scopes)))
            if token is not None and token.expires > self._clock():
                return f"Bearer {token.value}"
        if challenge is not None and challenge.scheme == "basic":
            creds = self._credentials(registry)
            return creds.basic() if creds and creds.username else None
        if challenge is not None and challenge.scheme == "bearer":
            return self._bearer(registry, challenge, scopes)
        return None

    def challenge(self, registry: str, www_authenticate: Sequence[str] | str, scopes: Sequence[str],
                  *, rejected: str | None = None) -> str:
        """Answer a 401: returns the Authorization header value to retry with.

        ``rejected`` is the header that just got the 401: its token is dropped from the
        cache and a fresh one fetched. FailedPrecondition when the registry wants
        credentials that are not there, or the token server refuses them. The caller
        gives up when the header returned here gets a 401 too.
        """
        registry = normalize_registry(registry)
        headers = [www_authenticate] if isinstance(www_authenticate, str) else list(www_authenticate)
        challenges = [c for h in headers for c in parse_www_authenticate(h)]
        if rejected:
            self._forget(registry, rejected)
        for c in challenges:
            if c.scheme == "bearer" and c.realm:
                merged = _merge_scopes(scopes, c.params.get("scope", ""))
                with self._lock:
                    self._challenges[registry] = c
                return self._bearer(registry, c, merged, force=rejected is not None)
        for c in challenges:
            if c.scheme == "basic":
                with self._lock:
                    self._challenges[registry] = c
                creds = self._credentials(registry)
                if creds is None or not creds.username:
                    raise FailedPrecondition(
                        f"{registry}: authentication required and no credentials found (docker login {registry})"
                    )
                return creds.basic()
        schemes = ", ".join(sorted({c.scheme for c in challenges})) or "none"
        raise FailedPrecondition(f"{registry}: unsupported authentication challenge ({schemes})")

    def has_credentials(self, registry: str) -> bool:
        return self._credentials(normalize_registry(registry)) is not None

    # --- bearer tokens --------------------------------------------------------------------

    def _bearer(self, registry: str, challenge: Challenge, scopes: Sequence[str], *, force: bool = False) -> str:
        key = (registry, _scope_key(scopes))
        with self._lock:
            fetch_lock = self._fetch_locks.setdefault(key, threading.Lock())
        with fetch_lock:
            with self._lock:
                token = self._tokens.get(key)
                if token is not None and token.expires > self._clock() and not force:
                    return f"Bearer {token.value}"
            token = self._fetch_token(registry, challenge, key[1])
            with self._lock:
                self._tokens[key] = token
        return f"Bearer {token.value}"

    def _fetch_token(self, registry: str, challenge: Challenge, scopes: tuple[str, ...]) -> _Token:
        realm = challenge.realm or ""
        parts = urlsplit(realm)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise FailedPrecondition(f"{registry}: token realm {realm!r} is not an http(s) URL")
        service = challenge.params.get("service")
        creds = self._credentials(registry)
        self.token_requests += 1
        if creds is not None and creds.identity_token:
            form = {"grant_type": "refresh_token", "refresh_token": creds.identity_token,
                    "client_id": "berth", "scope": " ".join(scopes)}
            if service:
                form["service"] = service
            resp = self._http.request(
                "POST", realm, body=urlencode(form).encode(),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
        else:
            query: list[tuple[str, str]] = []
            if service:
                query.append(("service", service))
            query.extend(("scope", s) for s in scopes)
            if creds is not None and creds.username:
                query.append(("account", creds.username))
            sep = "&" if parts.query else "?"
            url = realm + (sep + urlencode(query) if query else "")
            headers = {"Accept": "application/json"}
            if creds is not None and creds.username:
                headers["Authorization"] = creds.basic()
            resp = self._http.request("GET", url, headers=headers)
        try:
            body = resp.read_all(_TOKEN_RESPONSE_MAX)
        finally:
            resp.close()
        if resp.status in (401, 403):
            raise FailedPrecondition(
                f"{registry}: token server {parts.netloc} refused "
                + ("the stored credentials" if creds else "anonymous access")
                + f" ({resp.status})"
            )
        if resp.status != 200:
            raise Unavailable(f"{registry}: token server {parts.netloc} answered {resp.status} {resp.reason}")
        try:
            data = json.loads(body)
            value = data.get("token") or data.get("access_token")
        except (ValueError, AttributeError):
            value, data = None, {}
        if not isinstance(value, str) or not value:
            raise Unavailable(f"{registry}: token server {parts.netloc} returned no token")
        try:
            lifetime = float(data.get("expires_in") or DEFAULT_TOKEN_LIFETIME)
        except (TypeError, ValueError):
            lifetime = DEFAULT_TOKEN_LIFETIME
        if lifetime <= 0:
            lifetime = DEFAULT_TOKEN_LIFETIME
        return _Token(value, self._clock() + max(lifetime - _EXPIRY_MARGIN, 1.0))

    def _forget(self, registry: str, header: str) -> None:
        if not header.startswith("Bearer "):
            return
        value = header[len("Bearer "):]
        with self._lock:
            for key in [k for k, t in self._tokens.items() if k[0] == registry and t.value == value]:
                del self._tokens[key]

    def _credentials(self, registry: str) -> Credentials | None:
        return self.credentials.get(registry) if self.credentials is not None else None


def _scope_key(scopes: Sequence[str]) -> tuple[str, ...]:
    return tuple(sorted(set(scopes)))


def _merge_scopes(scopes: Sequence[str], challenge_scope: str) -> list[str]:
    merged = list(scopes)
    for scope in challenge_scope.split():
        if scope and scope not in merged:
            merged.append(scope)
    return merged




def repository_scope(path: str, *actions: str) -> str:
    """``repository_scope("library/busybox", "pull")`` -> ``repository:library/busybox:pull``."""
    return f"repository:{path}:{','.join(actions or ('pull',))}"
