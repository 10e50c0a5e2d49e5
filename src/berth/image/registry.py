"""A client for one registry, over the OCI distribution API (and Docker's registry v2).

    client = RegistryClient("127.0.0.1:5000", auth=AuthProvider(DockerConfigCredentials()))
    media_type, digest, body = client.get_manifest("library/busybox", "latest")
    desc = resolve_platform(body, "linux/arm64")            # when body is an index
    with store.writer(f"pull-{d}", d, size) as w:
        client.fetch_blob("library/busybox", d, w, progress=cb, size=size)
        w.commit()                                           # digest and size verified here
    client.push_blob(repo, d, size, lambda: store.open(d), mount_from="other/repo")
    client.put_manifest(repo, "v1", media_type, body)

Transport: plain HTTP only for localhost, 127.0.0.0/8, ::1 and the hosts in ``insecure``;
HTTPS with the system's trust store otherwise. Docker Hub (``docker.io``) is served by
registry-1.docker.io. Connections are kept alive and shared by threads (blobs can be
fetched in parallel from one client).

Robustness: connection errors, 429 and 5xx are retried with exponential backoff
(``retries`` times); a blob download that breaks resumes with ``Range: bytes=<offset>-``
from what the writer already holds (a 200 instead of a 206 restarts it); redirects are
followed, and the Authorization header is never sent to another host than the
registry's. Every failure ends in one error of berth.errors with one clear line.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import random
import re
import socket
import ssl
import time
from collections.abc import Callable, Collection, Mapping
from typing import IO, Literal, Protocol
from urllib.parse import quote, urljoin, urlsplit

from berth.errors import BerthError, FailedPrecondition, InvalidArgument, NotFound, Unavailable
from berth.image import mediatypes
from berth.image._http import Body, HttpClient, Response
from berth.image.auth import AuthProvider, repository_scope
from berth.image.digest import CHUNK, compute_digest, is_digest, parse_digest
from berth.image.manifests import MAX_MANIFEST_SIZE, check_manifest
from berth.image.platforms import resolve_platform
from berth.image.reference import validate_repository_path, validate_tag

__all__ = ["RegistryClient", "BlobSink", "Progress", "resolve_platform", "MANIFEST_ACCEPT"]

Progress = Callable[[int, "int | None"], None]
PushResult = Literal["exists", "mounted", "uploaded"]

MANIFEST_ACCEPT = ", ".join([
    mediatypes.OCI_INDEX,
    mediatypes.OCI_MANIFEST,
    mediatypes.DOCKER_MANIFEST_LIST,
    mediatypes.DOCKER_MANIFEST,
])
DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain"})
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MAX_REDIRECTS = 10
_MAX_BACKOFF = 8.0
_ERROR_BODY_MAX = 64 << 10
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_NETWORK_ERRORS = (OSError, http.client.HTTPException)


class BlobSink(Protocol):
    """Where fetch_blob writes: a content.Writer, or anything with the same three members."""

    @property
    def offset(self) -> int: ...

    def write(self, data: bytes | bytearray | memoryview) -> None: ...

    def reset(self) -> None: ...


class _Retry(Exception):
    """A failed attempt worth repeating (network error, 5xx, 429)."""

    def __init__(self, message: str, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class RegistryClient:
    def __init__(
        self,
        domain: str,
        *,
        insecure: Collection[str] = frozenset(),
        auth: AuthProvider | None = None,
        timeout: float = 30.0,
        retries: int = 4,
        backoff: float = 0.25,
        chunk_size: int = CHUNK,
        http: HttpClient | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.domain = domain.lower()
        self.host = DOCKER_HUB_API if self.domain in (DOCKER_HUB, "index.docker.io") else self.domain
        self.scheme = "http" if is_plain_http(self.domain, insecure) else "https"
        self.base_url = f"{self.scheme}://{self.host}"
        self.auth = auth if auth is not None else AuthProvider()
        self.retries = max(0, retries)
        self.backoff = backoff
        self.chunk_size = chunk_size
        self._http = http or HttpClient(timeout=timeout)
        self._sleep = sleep

    # --- reading ---------------------------------------------------------------------

    def ping(self) -> None:
        """GET /v2/: the registry answers and speaks the v2 API (authenticating if asked)."""
        with self._request("GET", "/v2/", scopes=[]) as resp:
            if resp.status != 200:
                raise self._error(resp, "/v2/")
            resp.drain()

    def get_manifest(self, repo: str, reference: str) -> tuple[str, str, bytes]:
        """Fetch a manifest or index by tag or digest: (media_type, digest, body).

        The digest is verified when ``reference`` is one, computed otherwise (and checked
        against Docker-Content-Digest when the registry sends it).
        """
        validate_repository_path(repo)
        by_digest = is_digest(reference)
        if not by_digest:
            validate_tag(reference)
        what = f"manifest {self.domain}/{repo}{'@' if by_digest else ':'}{reference}"
        with self._request(
            "GET", f"/v2/{repo}/manifests/{reference}",
            scopes=[repository_scope(repo, "pull")],
            headers={"Accept": MANIFEST_ACCEPT},
        ) as resp:
            if resp.status != 200:
                raise self._error(resp, what)
            length = resp.length
            if length is not None and length > MAX_MANIFEST_SIZE:
                raise InvalidArgument(
                    f"{what}: manifest too large: {length} bytes, the limit is {MAX_MANIFEST_SIZE}"
                )
            try:
                body = resp.read(MAX_MANIFEST_SIZE + 1)
            except _NETWORK_ERRORS as e:
                raise Unavailable(f"{what}: {_describe(e)}") from None
            if len(body) > MAX_MANIFEST_SIZE:
                raise InvalidArgument(f"{what}: manifest too large: more than {MAX_MANIFEST_SIZE} bytes")
            content_type = resp.header("Content-Type") or ""
            header_digest = resp.header("Docker-Content-Digest")
        try:
            media_type, digest = check_manifest(body, content_type, reference if by_digest else None)
        except InvalidArgument as e:
            raise InvalidArgument(f"{what}: {e}") from None
        if not by_digest and header_digest and is_digest(header_digest):
            if parse_digest(header_digest)[0] == "sha256" and header_digest != digest:
                raise InvalidArgument(
                    f"{what}: digest mismatch: the registry says {header_digest}, the body hashes to {digest}"
                )
        return media_type, digest, body

    def blob_exists(self, repo: str, digest: str) -> bool:
        """HEAD the blob: True if the registry has it in this repository."""
        validate_repository_path(repo)
        parse_digest(digest)
        with self._request(
            "HEAD", f"/v2/{repo}/blobs/{digest}", scopes=[repository_scope(repo, "pull")], redirects=True
        ) as resp:
            if resp.status == 200:
                return True
            if resp.status == 404:
                return False
            raise self._error(resp, f"blob {digest} in {self.domain}/{repo}")

    def fetch_blob(
        self,
        repo: str,
        digest: str,
        writer: BlobSink,
        progress: Progress | None = None,
        size: int | None = None,
    ) -> int:
        """Stream a blob into ``writer``, resuming from ``writer.offset``; returns the bytes
        it holds at the end. Verifying (``writer.commit()``) is the caller's step."""
        validate_repository_path(repo)
        parse_digest(digest)
        what = f"blob {digest} from {self.domain}/{repo}"
        scopes = [repository_scope(repo, "pull")]
        failures = 0
        while True:
            start = writer.offset
            if size is not None and start > size:
                writer.reset()
                start = 0
            if size is not None and start == size and size > 0:
                if progress:
                    progress(start, size)
                return start
            headers = {"Accept": "*/*"}
            if start:
                headers["Range"] = f"bytes={start}-"
            try:
                resp = self._request("GET", f"/v2/{repo}/blobs/{digest}", scopes=scopes,
                                     headers=headers, redirects=True)
                try:
                    total = self._begin_body(resp, writer, start, size, what)
                    if total is None and resp.status == 416:
                        continue
                    self._stream(resp, writer, progress, total)
                finally:
                    resp.close()
                if total is not None and writer.offset < total:
                    raise _Retry(f"connection closed after {writer.offset} of {total} bytes")
                return writer.offset
            except (_Retry, *_NETWORK_ERRORS) as e:
                failures += 1
                if failures > self.retries:
                    raise Unavailable(f"{what}: failed after {failures} attempts: {_describe(e)}") from None
                self._sleep(self._delay(failures, getattr(e, "delay", None)))

    def list_tags(self, repo: str) -> list[str]:
        """Every tag of a repository (following the Link header's pages)."""
        validate_repository_path(repo)
        tags: list[str] = []
        url: str | None = f"/v2/{repo}/tags/list"
        pages = 0
        while url is not None and pages < 1000:
            pages += 1
            with self._request("GET", url, scopes=[repository_scope(repo, "pull")],
                               headers={"Accept": "application/json"}) as resp:
                if resp.status != 200:
                    raise self._error(resp, f"tags of {self.domain}/{repo}")
                body = resp.read_all(MAX_MANIFEST_SIZE)
                link = resp.header("Link")
            try:
                page = json.loads(body).get("tags") or []
            except (ValueError, AttributeError):
                raise InvalidArgument(f"tags of {self.domain}/{repo}: the registry sent invalid JSON") from None
            tags.extend(t for t in page if isinstance(t, str))
            url = _next_link(link)
        return tags

    # --- writing ---------------------------------------------------------------------

    def push_blob(
        self,
        repo: str,
        digest: str,
        size: int,
        open_fn: Callable[[], IO[bytes]],
        progress: Progress | None = None,
        chunk_size: int | None = None,
        mount_from: str | None = None,
    ) -> PushResult:
        """Upload a blob unless the registry has it: "exists", "mounted" or "uploaded".

        With ``mount_from`` (another repository of this registry holding the blob) a
        cross-repository mount is tried first. Without ``chunk_size`` the blob goes in one
        PUT; with it, in PATCH chunks (Content-Range) and a final PUT ``?digest=``. A
        failed upload is started again from scratch, ``retries`` times.
        """
        validate_repository_path(repo)
        parse_digest(digest)
        if mount_from is not None:
            validate_repository_path(mount_from)
        scopes = [repository_scope(repo, "pull", "push")]
        if mount_from and mount_from != repo:
            scopes.append(repository_scope(mount_from, "pull"))
        what = f"blob {digest} to {self.domain}/{repo}"
        if self.blob_exists(repo, digest):
            if progress:
                progress(size, size)
            return "exists"
        failures = 0
        while True:
            try:
                location = self._start_upload(repo, digest, scopes, mount_from, what)
                if location is None:
                    if progress:
                        progress(size, size)
                    return "mounted"
                if chunk_size:
                    location = self._upload_chunks(location, size, open_fn, scopes, progress, chunk_size, what)
                    self._finish_upload(location, digest, scopes, None, what)
                else:
                    self._finish_upload(location, digest, scopes, (size, open_fn, progress), what)
                return "uploaded"
            except (_Retry, *_NETWORK_ERRORS) as e:
                failures += 1
                if failures > self.retries:
                    raise Unavailable(f"{what}: failed after {failures} attempts: {_describe(e)}") from None
                self._sleep(self._delay(failures, getattr(e, "delay", None)))

    def put_manifest(self, repo: str, reference: str, media_type: str, data: bytes) -> str:
        """PUT a manifest under a tag or its digest; returns its digest."""
        validate_repository_path(repo)
        by_digest = is_digest(reference)
        if not by_digest:
            validate_tag(reference)
        algorithm = parse_digest(reference)[0] if by_digest else "sha256"
        digest = compute_digest(data, algorithm)
        if by_digest and digest != reference:
            raise InvalidArgument(f"manifest digest mismatch: pushing {digest} as {reference}")
        what = f"manifest {self.domain}/{repo}:{reference}"
        with self._request(
            "PUT", f"/v2/{repo}/manifests/{reference}", scopes=[repository_scope(repo, "pull", "push")],
            headers={"Content-Type": media_type, "Content-Length": str(len(data))},
            body=data, retry=True,
        ) as resp:
            if resp.status not in (200, 201, 202):
                raise self._error(resp, what)
            resp.drain()
            echoed = resp.header("Docker-Content-Digest")
        if echoed and is_digest(echoed) and parse_digest(echoed)[0] == algorithm and echoed != digest:
            raise InvalidArgument(f"{what}: the registry stored {echoed}, expected {digest}")
        return digest

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- blob download internals --------------------------------------------------------

    def _begin_body(self, resp: Response, writer: BlobSink, start: int, size: int | None,
                    what: str) -> int | None:
        """Check the status of a blob GET, line the writer up with it; returns the total
        size expected (None for a 416 that was handled by restarting)."""
        if resp.status == 206:
            match = _CONTENT_RANGE.match(resp.header("Content-Range") or "")
            if match is None or int(match.group(1)) != start:
                writer.reset()
                raise _Retry(f"the registry answered the range request with {resp.header('Content-Range')!r}")
            total = int(match.group(3)) if match.group(3) != "*" else None
            return size if size is not None else total
        if resp.status == 200:
            if start:
                writer.reset()
            length = resp.length
            if size is not None and length is not None and length != size:
                raise InvalidArgument(f"{what}: the registry sends {length} bytes, the descriptor says {size}")
            return size if size is not None else length
        if resp.status == 416 and start:
            writer.reset()
            return None
        if resp.status in _RETRY_STATUSES:
            resp.drain()
            raise _Retry(f"{resp.status} {resp.reason}", _retry_after(resp))
        raise self._error(resp, what)

    def _stream(self, resp: Response, writer: BlobSink, progress: Progress | None, total: int | None) -> None:
        buf = bytearray(self.chunk_size)
        view = memoryview(buf)
        if progress:
            progress(writer.offset, total)
        while True:
            n = resp.readinto(buf)
            if not n:
                break
            writer.write(view[:n])
            if progress:
                progress(writer.offset, total)

    # --- upload internals ----------------------------------------------------------------

    def _start_upload(self, repo: str, digest: str, scopes: list[str], mount_from: str | None,
                      what: str) -> str | None:
        path = f"/v2/{repo}/blobs/uploads/"
        if mount_from and mount_from != repo:
            path += f"?mount={quote(digest, safe=':')}&from={quote(mount_from, safe='/')}"
        with self._request("POST", path, scopes=scopes, retry=False) as resp:
            resp.drain()
            if resp.status == 201 and mount_from:
                return None
            if resp.status in _RETRY_STATUSES:
                raise _Retry(f"{resp.status} {resp.reason} starting the upload", _retry_after(resp))
            if resp.status != 202:
                raise self._error(resp, what)
            return self._location(resp, what)

    def _upload_chunks(self, location: str, size: int, open_fn: Callable[[], IO[bytes]], scopes: list[str],
                       progress: Progress | None, chunk_size: int, what: str) -> str:
        offset = 0
        with open_fn() as f:
            while offset < size:
                chunk = f.read(min(chunk_size, size - offset))
                if not chunk:
                    raise InvalidArgument(f"{what}: the source ended at {offset} of {size} bytes")
                end = offset + len(chunk) - 1
                with self._request(
                    "PATCH", location, scopes=scopes, retry=False, body=chunk,
                    headers={"Content-Type": "application/octet-stream",
                             "Content-Range": f"{offset}-{end}", "Content-Length": str(len(chunk))},
                ) as resp:
                    resp.drain()
                    if resp.status in _RETRY_STATUSES:
                        raise _Retry(f"{resp.status} {resp.reason} uploading a chunk", _retry_after(resp))
                    if resp.status != 202:
                        raise self._error(resp, what)
                    location = self._location(resp, what)
                offset = end + 1
                if progress:
                    progress(offset, size)
        return location

    def _finish_upload(self, location: str, digest: str, scopes: list[str],
                       monolithic: tuple[int, Callable[[], IO[bytes]], Progress | None] | None,
                       what: str) -> None:
        sep = "&" if urlsplit(location).query else "?"
        url = f"{location}{sep}digest={quote(digest, safe=':')}"
        source: IO[bytes] | None = None
        body: Body = None
        headers: dict[str, str] = {}
        if monolithic is not None:
            size, open_fn, progress = monolithic
            source = open_fn()
            body = _CountingReader(source, size, progress)
            headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        try:
            with self._request("PUT", url, scopes=scopes, retry=False, body=body, headers=headers) as resp:
                resp.drain()
                if resp.status in _RETRY_STATUSES:
                    raise _Retry(f"{resp.status} {resp.reason} completing the upload", _retry_after(resp))
                if resp.status not in (201, 204):
                    raise self._error(resp, what)
                echoed = resp.header("Docker-Content-Digest")
        finally:
            if source is not None:
                source.close()
        if echoed and is_digest(echoed) and echoed != digest and parse_digest(echoed)[0] == parse_digest(digest)[0]:
            raise InvalidArgument(f"{what}: the registry stored {echoed}")

    def _location(self, resp: Response, what: str) -> str:
        location = resp.header("Location")
        if not location:
            raise Unavailable(f"{what}: the registry sent no upload Location")
        return urljoin(resp.url, location)

    # --- requests: auth, retries, redirects ------------------------------------------------

    def _request(
        self,
        method: str,
        target: str,
        *,
        scopes: list[str],
        headers: Mapping[str, str] | None = None,
        body: Body = None,
        redirects: bool = False,
        retry: bool = True,
    ) -> Response:
        """One registry request with auth; with ``retry``, network errors, 429 and 5xx are
        retried; with ``redirects``, 3xx are followed (Authorization kept on our host only)."""
        url = target if "://" in target else self.base_url + target
        authorization = self.auth.authorization(self.domain, scopes)
        fresh_auth = False
        failures = 0
        hops = 0
        while True:
            send = dict(headers or {})
            ours = self._is_our_host(url)
            if ours and authorization:
                send["Authorization"] = authorization
            try:
                resp = self._http.request(method, url, headers=send, body=body)
            except _NETWORK_ERRORS as e:
                if not retry:
                    raise
                failures += 1
                if failures > self.retries or not _retryable(e):
                    raise Unavailable(f"{self.domain}: {method} {urlsplit(url).path}: {_describe(e)}") from None
                self._sleep(self._delay(failures))
                continue
            if resp.status == 401 and ours:
                challenges = resp.header_all("WWW-Authenticate")
                if fresh_auth or not challenges:
                    error = self._error(resp, f"{self.domain}: {method} {urlsplit(url).path}")
                    resp.close()
                    if not self.auth.has_credentials(self.domain):
                        error = FailedPrecondition(f"{error}; no credentials found for {self.domain} (docker login)")
                    raise error
                resp.drain()
                resp.close()
                authorization = self.auth.challenge(self.domain, challenges, scopes, rejected=authorization)
                fresh_auth = True
                continue
            if retry and resp.status in _RETRY_STATUSES and failures < self.retries:
                failures += 1
                delay = _retry_after(resp)
                resp.drain()
                resp.close()
                self._sleep(self._delay(failures, delay))
                continue
            if redirects and resp.status in _REDIRECTS and method in ("GET", "HEAD"):
                location = resp.header("Location")
                hops += 1
                if not location or hops > _MAX_REDIRECTS:
                    resp.close()
                    raise Unavailable(f"{self.domain}: too many or empty redirects for {urlsplit(url).path}")
                resp.drain()
                resp.close()
                url = urljoin(url, location)
                continue
            return resp

    def _is_our_host(self, url: str) -> bool:
        parts = urlsplit(url)
        return (parts.scheme, parts.netloc.lower()) == (self.scheme, self.host)

    def _delay(self, failures: int, suggested: float | None = None) -> float:
        if suggested is not None:
            return min(suggested, _MAX_BACKOFF)
        base = self.backoff * (1 << min(failures - 1, 16))
        return min(base + random.uniform(0, self.backoff), _MAX_BACKOFF)

    def _error(self, resp: Response, what: str) -> BerthError:
        """The error for a response that is not what the API promises, with its message."""
        detail = ""
        try:
            if resp.method != "HEAD":
                raw = resp.read(_ERROR_BODY_MAX)
                data = json.loads(raw) if raw else None
                errors = data.get("errors") if isinstance(data, dict) else None
                if isinstance(errors, list) and errors and isinstance(errors[0], dict):
                    code, message = errors[0].get("code", ""), errors[0].get("message", "")
                    detail = f"{code}: {message}" if code and message else str(code or message)
        except (ValueError, *_NETWORK_ERRORS):
            pass
        status = resp.status
        text = f"{what}: {detail or f'{status} {resp.reason}'}"
        if status == 404:
            return NotFound(f"{what}: not found" + (f" ({detail})" if detail else ""))
        if status == 401:
            return FailedPrecondition(f"{what}: unauthorized" + (f" ({detail})" if detail else ""))
        if status == 403:
            return FailedPrecondition(f"{what}: denied" + (f" ({detail})" if detail else ""))
        if status in (400, 405, 411, 413, 415, 416, 422):
            return InvalidArgument(text)
        if status in _RETRY_STATUSES:
            return Unavailable(text)
        return Unavailable(f"{what}: unexpected answer {status} {resp.reason}" + (f" ({detail})" if detail else ""))


# --- helpers ------------------------------------------------------------------------------

def is_plain_http(domain: str, insecure: Collection[str] = frozenset()) -> bool:
    """Whether ``domain`` is reached over plain HTTP: local hosts and configured ones."""
    domain = domain.lower()
    hostname = urlsplit(f"//{domain}").hostname or domain
    if domain in insecure or hostname in insecure or hostname in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


class _CountingReader:
    """A file wrapper that reports upload progress as http.client reads it."""

    def __init__(self, source: IO[bytes], total: int, progress: Progress | None) -> None:
        self._source = source
        self._total = total
        self._progress = progress
        self.done = 0

    def read(self, amount: int = -1) -> bytes:
        data = self._source.read(amount)
        self.done += len(data)
        if self._progress and data:
            self._progress(self.done, self._total)
        return data


def _retryable(error: BaseException) -> bool:
    if isinstance(error, ssl.SSLCertVerificationError):
        return False
    if isinstance(error, socket.gaierror):
        return False
    return True


def _retry_after(resp: Response) -> float | None:
    value = resp.header("Retry-After")
    try:
        return float(str(value)) if value is not None else None
    except ValueError:
        return None


def _describe(error: BaseException) -> str:
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, socket.gaierror):
        return f"cannot resolve host ({error.strerror})"
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted ({error.verify_message})"
    if isinstance(error, ssl.SSLError):
        return f"TLS error ({error.reason or error}); is this an HTTP-only registry? list it as insecure"
    if isinstance(error, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(error, http.client.IncompleteRead):
        return f"connection closed mid-body ({len(error.partial)} bytes read, {error.expected} more expected)"
    if isinstance(error, http.client.RemoteDisconnected):
        return "the registry closed the connection"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return str(error) or type(error).__name__


def _next_link(link: str | None) -> str | None:
    if not link:
        return None
    for part in link.split(","):
        m = re.match(r'\s*<([^>]+)>\s*;\s*rel="?next"?', part)
        if m:
            return m.group(1)
    return None
