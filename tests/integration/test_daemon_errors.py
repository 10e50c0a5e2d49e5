"""Bad requests to berthd get Docker's status codes and messages, and leave nothing half made.

Raw HTTP over the unix socket (``http.client`` on an AF_UNIX socket, so that any bytes can
be sent: broken JSON, wrong field types, API versions) and the real docker CLI, against
one berthd per module (``berthd`` fixture: temporary roots, the busybox image). The
messages are dockerd's; where they were checked against Debian's dockerd 20.10 on the
same requests, they are identical (dockerd 20.10 answers a body of the wrong types with a
500, later versions with a 400 ``invalid JSON: json: cannot unmarshal ...``, as berthd).

After every failing create the daemon must look as before: the same ``GET
/containers/json?all=1``, no new directory under ``<data-root>/containers`` or snapshot
under ``<data-root>/snapshots``, no shim directory or process, no mount under the roots.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import Berthd, berthd  # noqa: F401 - fixture

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


# --- raw HTTP over the unix socket ------------------------------------------------------------


class _Unix(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=60)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.unix_path)
        self.sock = sock


def raw(d: Berthd, method: str, target: str, body: bytes | None = None,
        content_type: str = "application/json") -> tuple[int, Any]:
    """(status, JSON body or text) of one request; ``target`` as sent (with its version)."""
    conn = _Unix(d.socket)
    try:
        conn.request(method, target, body=body, headers={"Content-Type": content_type} if body is not None else {})
        resp = conn.getresponse()
        payload = resp.read().decode(errors="replace")
    finally:
        conn.close()
    try:
        return resp.status, json.loads(payload) if payload.strip() else None
    except ValueError:
        return resp.status, payload


def call(d: Berthd, method: str, path: str, body: Any = None, query: str = "") -> tuple[int, Any]:
    data = None if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
    return raw(d, method, f"/v1.43{path}" + (f"?{query}" if query else ""), data)


def message(result: tuple[int, Any]) -> str:
    body = result[1]
    return body.get("message", "") if isinstance(body, dict) else str(body)


def create(d: Berthd, body: Any, name: str = "") -> tuple[int, Any]:
    from urllib.parse import quote

    return call(d, "POST", "/containers/create", body, f"name={quote(name)}" if name else "")


def cli_error(d: Berthd, *args: str) -> str:
    proc = d.docker(*args, timeout=60)
    assert proc.returncode != 0, f"docker {' '.join(args)} succeeded: {proc.stdout}"
    return proc.stderr.strip()


# --- what a failed request must not leave ----------------------------------------------------


def _listdir(path: Path) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:
        return []


def _snapshots(d: Berthd) -> list[str]:
    root = d.data_root / "snapshots"
    found = []
    for dirpath, dirnames, _files in os.walk(root):
        if Path(dirpath).name == "snapshots" and Path(dirpath) != root:
            found += [os.path.join(dirpath, n) for n in dirnames]
            dirnames[:] = []
    return sorted(found)


def _shim_processes(d: Berthd) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if any(b"berth-shim" in a for a in argv[:2]) and any(str(d.base).encode() in a for a in argv):
            pids.append(int(entry))
    return pids


def _mounts(d: Berthd) -> list[str]:
    """Mounts under the daemon's roots, but the network namespaces' root (``<exec_root>/netns``,
    a shared mount point on itself for the daemon's life, as ``ip netns`` keeps /run/netns)."""
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    netns_root = str(d.exec_root / "netns")
    return sorted(p for p in points if p.startswith(str(d.base)) and p != netns_root)


def footprint(d: Berthd) -> dict[str, Any]:
    status, listed = call(d, "GET", "/containers/json", query="all=1")
    assert status == 200
    return {
        "containers": sorted((c["Id"], c["Names"][0], c["State"]) for c in listed),
        "container dirs": _listdir(d.data_root / "containers"),
        "snapshots": _snapshots(d),
        "shim dirs": _listdir(d.exec_root / "shims"),
        "shim processes": _shim_processes(d),
        "mounts": _mounts(d),
    }


@pytest.fixture
def unchanged(berthd: Berthd):  # noqa: ANN201, F811
    """Asserts after the test that berthd holds exactly what it held before."""
    before = footprint(berthd)
    yield before
    after = footprint(berthd)
    assert after == before


@pytest.fixture
def running(berthd: Berthd):  # noqa: ANN201, F811
    """A running container (``sleep``), force-removed after the test."""
    out = berthd.docker("run", "-d", berthd.image, "sleep", "300", check=True).stdout.strip()
    try:
        yield out
    finally:
        berthd.docker("rm", "-f", out)


# --- create ------------------------------------------------------------------------------------

IMAGE = "berthtest/busybox:latest"
MSG_TYPE = "invalid JSON: json: cannot unmarshal"

BAD_CREATES = [
    # (id, body, name, status, exact message or None, fragments of the message)
    ("unknown image", {"Image": "nope"}, "", 404, "No such image: nope:latest", ()),
    ("unknown image with tag", {"Image": "nope:1.0"}, "", 404, "No such image: nope:1.0", ()),
    ("no image", {"Cmd": ["true"]}, "", 400, None, ("image",)),
    ("invalid JSON", b'{"Image": "x",', "", 400, None, ("invalid JSON",)),
    ("not JSON at all", b"Image=busybox", "", 400, None, ("invalid JSON",)),
    ("a JSON array", [IMAGE], "", 400, None, ("invalid JSON",)),
    ("Cmd a number", {"Image": IMAGE, "Cmd": 5}, "", 400,
     f"{MSG_TYPE} number into Go struct field ContainerConfigWrapper.Cmd of type string", ()),
    ("Cmd holds a number", {"Image": IMAGE, "Cmd": ["echo", 5]}, "", 400, None, (MSG_TYPE, ".Cmd")),
    ("Entrypoint an object", {"Image": IMAGE, "Entrypoint": {"a": 1}}, "", 400, None, (MSG_TYPE, ".Entrypoint")),
    ("Env a string", {"Image": IMAGE, "Env": "A=1"}, "", 400,
     f"{MSG_TYPE} string into Go struct field ContainerConfigWrapper.Env of type []string", ()),
    ("Labels a list", {"Image": IMAGE, "Labels": ["a=b"]}, "", 400, None, (MSG_TYPE, "Labels", "map[string]string")),
    ("Label value a number", {"Image": IMAGE, "Labels": {"a": 1}}, "", 400, None, (MSG_TYPE, "Labels")),
    ("Tty a string", {"Image": IMAGE, "Tty": "yes"}, "", 400, None, (MSG_TYPE, ".Tty", "bool")),
    ("ExposedPorts a list", {"Image": IMAGE, "ExposedPorts": ["80/tcp"]}, "", 400, None, (MSG_TYPE, "ExposedPorts")),
    ("HostConfig a list", {"Image": IMAGE, "HostConfig": []}, "", 400, None, (MSG_TYPE, ".HostConfig")),
    ("Memory a string", {"Image": IMAGE, "HostConfig": {"Memory": "lots"}}, "", 400,
     f"{MSG_TYPE} string into Go struct field ContainerConfigWrapper.HostConfig.Memory of type int64", ()),
    ("Memory a fraction", {"Image": IMAGE, "HostConfig": {"Memory": 1.5}}, "", 400, None,
     (MSG_TYPE, "number 1.5", "HostConfig.Memory")),
    ("CpuShares a bool", {"Image": IMAGE, "HostConfig": {"CpuShares": True}}, "", 400, None,
     (MSG_TYPE, "bool", "CpuShares")),
    ("BlkioWeight out of range", {"Image": IMAGE, "HostConfig": {"BlkioWeight": 70000}}, "", 400, None,
     (MSG_TYPE, "uint16")),
    ("Binds a string", {"Image": IMAGE, "HostConfig": {"Binds": "/tmp:/tmp"}}, "", 400, None,
     (MSG_TYPE, "HostConfig.Binds")),
    ("retry count a string", {"Image": IMAGE, "HostConfig": {"RestartPolicy": {"Name": "on-failure",
                                                                               "MaximumRetryCount": "x"}}},
     "", 400, None, (MSG_TYPE, "RestartPolicy.MaximumRetryCount")),
    ("Memory below 6MB", {"Image": IMAGE, "HostConfig": {"Memory": 1024}}, "", 400,
     "Minimum memory limit allowed is 6MB", ()),
    ("invalid restart policy", {"Image": IMAGE, "HostConfig": {"RestartPolicy": {"Name": "sometimes"}}}, "", 400,
     "invalid restart policy: unknown policy 'sometimes'; use one of 'no', 'always', 'on-failure', or "
     "'unless-stopped'", ()),
    ("retry count without on-failure", {"Image": IMAGE, "HostConfig": {"RestartPolicy": {
        "Name": "always", "MaximumRetryCount": 3}}}, "", 400, None, ("invalid restart policy",)),
    ("negative retry count", {"Image": IMAGE, "HostConfig": {"RestartPolicy": {
        "Name": "on-failure", "MaximumRetryCount": -1}}}, "", 400, None, ("invalid restart policy",)),
    ("AutoRemove with a restart policy", {"Image": IMAGE, "HostConfig": {"AutoRemove": True, "RestartPolicy": {
        "Name": "always"}}}, "", 400, None, ("AutoRemove",)),
    ("invalid name", {"Image": IMAGE}, "a b", 400,
     "Invalid container name (a b), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed", ()),
    # dockerd echoes the name as given, slash included (checked against dockerd 20.10)
    ("invalid name with a slash", {"Image": IMAGE}, "/a b", 400,
     "Invalid container name (/a b), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed", ()),
    ("one-letter name", {"Image": IMAGE}, "a", 400, None, ("Invalid container name (a)",)),
    ("unknown capability", {"Image": IMAGE, "HostConfig": {"CapAdd": ["CAP_NOPE"]}}, "", 400, None,
     ("capability",)),
    ("bad bind", {"Image": IMAGE, "HostConfig": {"Binds": ["/tmp:relative"]}}, "", 400, None,
     ("invalid volume specification",)),
    ("unknown runtime", {"Image": IMAGE, "HostConfig": {"Runtime": "nosuchruntime"}}, "", 400, None,
     ("nosuchruntime",)),
    ("bad seccomp profile", {"Image": IMAGE, "HostConfig": {"SecurityOpt": ["seccomp={nope"]}}, "", 400, None,
     ("seccomp",)),
]


@pytest.mark.parametrize("body, name, status, exact, fragments",
                         [pytest.param(*case[1:], id=case[0]) for case in BAD_CREATES])
def test_bad_create(berthd: Berthd, unchanged: dict, body: Any, name: str, status: int,  # noqa: F811
                    exact: str | None, fragments: tuple[str, ...]) -> None:
    result = create(berthd, body, name)
    assert result[0] == status, result
    assert isinstance(result[1], dict) and isinstance(result[1].get("message"), str), result
    if exact is not None:
        assert message(result) == exact
    for fragment in fragments:
        assert fragment in message(result), result


def test_name_in_use(berthd: Berthd) -> None:  # noqa: F811
    status, body = create(berthd, {"Image": IMAGE, "Cmd": ["true"]}, "taken")
    assert status == 201, body
    cid = body["Id"]
    try:
        before = footprint(berthd)
        text = (f'Conflict. The container name "/taken" is already in use by container "{cid}". You have to '
                "remove (or rename) that container to be able to reuse that name.")
        assert create(berthd, {"Image": IMAGE}, "taken") == (409, {"message": text})
        assert create(berthd, {"Image": IMAGE}, "/taken") == (409, {"message": text})
        assert cli_error(berthd, "create", "--name", "taken", IMAGE) == f"Error response from daemon: {text}"
        assert footprint(berthd) == before
    finally:
        berthd.docker("rm", "-f", cid)


def test_cli_create_errors(berthd: Berthd, unchanged: dict) -> None:  # noqa: F811
    assert cli_error(berthd, "create", "--pull", "never", "nope") == \
        "Error response from daemon: No such image: nope:latest"
    assert cli_error(berthd, "create", "--name", "a b", IMAGE) == \
        "Error response from daemon: Invalid container name (a b), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
    assert cli_error(berthd, "create", "--restart", "sometimes", IMAGE) == (
        "Error response from daemon: invalid restart policy: unknown policy 'sometimes'; use one of 'no', "
        "'always', 'on-failure', or 'unless-stopped'")
    assert cli_error(berthd, "create", "-m", "1k", IMAGE, "true") == \
        "Error response from daemon: Minimum memory limit allowed is 6MB"


# --- unknown things ---------------------------------------------------------------------------


def test_unknown_container(berthd: Berthd) -> None:  # noqa: F811
    expected = (404, {"message": "No such container: x"})
    for method, path in (("GET", "/containers/x/json"), ("POST", "/containers/x/start"),
                         ("POST", "/containers/x/stop"), ("POST", "/containers/x/kill"),
                         ("POST", "/containers/x/pause"), ("POST", "/containers/x/wait"),
                         ("DELETE", "/containers/x"), ("GET", "/containers/x/logs?stdout=1"),
                         ("POST", "/containers/x/exec")):
        body = {"Cmd": ["true"]} if path.endswith("/exec") else None
        target, _, query = path.partition("?")
        assert call(berthd, method, target, body, query) == expected, (method, path)
    assert cli_error(berthd, "rm", "x") == "Error response from daemon: No such container: x"
    assert cli_error(berthd, "stop", "x") == "Error response from daemon: No such container: x"


def test_unknown_route_and_versions(berthd: Berthd) -> None:  # noqa: F811
    assert raw(berthd, "GET", "/v1.43/nothing/here") == (404, {"message": "page not found"})
    assert raw(berthd, "GET", "/nothing") == (404, {"message": "page not found"})
    assert raw(berthd, "PUT", "/v1.43/containers/json") == (404, {"message": "page not found"})
    assert raw(berthd, "GET", "/v1.99/version") == \
        (400, {"message": "client version 1.99 is too new. Maximum supported API version is 1.43"})
    status, body = raw(berthd, "GET", "/v1.12/version")
    assert status == 400 and body["message"].startswith("client version 1.12 is too old. Minimum supported API "
                                                        "version is 1.24")
    assert raw(berthd, "GET", "/v1.43/version")[0] == 200
    assert raw(berthd, "GET", "/v1.24/version")[0] == 200


def test_unknown_image_on_pull(berthd: Berthd, tmp_path: Path) -> None:  # noqa: F811
    from tests.support.registry import REGISTRY_BIN, RegistryProcess

    if not os.path.exists(REGISTRY_BIN):
        pytest.skip(f"{REGISTRY_BIN} is not installed (docker-registry)")
    registry = RegistryProcess(tmp_path / "registry")
    registry.start()
    try:
        host = registry.host
        images_before = call(berthd, "GET", "/images/json")[1]
        status, body = call(berthd, "POST", "/images/create", query=f"fromImage={host}/nope&tag=latest")
        assert (status, body) == (404, {"message": f"manifest for {host}/nope:latest not found: manifest unknown: "
                                                   "manifest unknown"})
        assert cli_error(berthd, "pull", f"{host}/nope:1") == \
            f"Error response from daemon: manifest for {host}/nope:1 not found: manifest unknown: manifest unknown"
        assert call(berthd, "GET", "/images/json")[1] == images_before
    finally:
        registry.stop()
    assert call(berthd, "GET", "/images/nope/json") == (404, {"message": "No such image: nope:latest"})
    assert call(berthd, "DELETE", "/images/nope") == (404, {"message": "No such image: nope:latest"})


# --- a running container ----------------------------------------------------------------------


def test_remove_running(berthd: Berthd, running: str) -> None:  # noqa: F811
    text = (f"You cannot remove a running container {running}. Stop the container before attempting removal or "
            "force remove")
    assert call(berthd, "DELETE", f"/containers/{running}") == (409, {"message": text})
    assert cli_error(berthd, "rm", running[:12]) == f"Error response from daemon: {text}"
    status, info = call(berthd, "GET", f"/containers/{running}/json")
    assert status == 200 and info["State"]["Running"]


def test_kill_with_a_bad_signal(berthd: Berthd, running: str) -> None:  # noqa: F811
    assert call(berthd, "POST", f"/containers/{running}/kill", query="signal=SIGNOPE") == \
        (400, {"message": "Invalid signal: SIGNOPE"})
    assert call(berthd, "POST", f"/containers/{running}/kill", query="signal=999") == \
        (400, {"message": "Invalid signal: 999"})
    assert cli_error(berthd, "kill", "-s", "NOPE", running) == "Error response from daemon: Invalid signal: NOPE"
    assert call(berthd, "GET", f"/containers/{running}/json")[1]["State"]["Running"]


def test_pause_twice(berthd: Berthd, running: str) -> None:  # noqa: F811
    assert call(berthd, "POST", f"/containers/{running}/pause")[0] == 204
    try:
        assert call(berthd, "POST", f"/containers/{running}/pause") == \
            (409, {"message": f"Container {running} is already paused"})
        assert cli_error(berthd, "pause", running) == \
            f"Error response from daemon: Container {running} is already paused"
    finally:
        assert call(berthd, "POST", f"/containers/{running}/unpause")[0] == 204
    assert call(berthd, "POST", f"/containers/{running}/unpause") == \
        (409, {"message": f"Container {running} is not paused"})


def test_wrong_types_elsewhere(berthd: Berthd, running: str) -> None:  # noqa: F811
    status, body = call(berthd, "POST", f"/containers/{running}/update", {"Memory": "lots"})
    assert status == 400 and body["message"].startswith(MSG_TYPE) and "Memory" in body["message"]
    assert call(berthd, "POST", f"/containers/{running}/update", b"{nope")[0] == 400
    status, body = call(berthd, "POST", f"/containers/{running}/exec", {"Cmd": 5})
    assert status == 400 and body["message"].startswith(MSG_TYPE) and "Cmd" in body["message"]
    assert call(berthd, "POST", f"/containers/{running}/exec", b"[1")[0] == 400
    info = call(berthd, "GET", f"/containers/{running}/json")[1]
    assert info["State"]["Running"] and not info["ExecIDs"]


def test_rmi_of_an_image_in_use(berthd: Berthd, running: str) -> None:  # noqa: F811
    image_id = call(berthd, "GET", f"/images/{IMAGE}/json")[1]["Id"]
    status, body = call(berthd, "DELETE", f"/images/{IMAGE}")
    assert status == 409, body
    assert body["message"].startswith(f'conflict: unable to remove repository reference "{IMAGE}" (must force) - '
                                      f"container {running[:12]} is using its referenced image")
    assert cli_error(berthd, "rmi", IMAGE).startswith("Error response from daemon: conflict: unable to remove "
                                                      "repository reference")
    status, body = call(berthd, "DELETE", f"/images/{image_id}")
    assert status == 409 and body["message"].startswith("conflict: unable to delete"), body
    assert call(berthd, "GET", f"/images/{IMAGE}/json")[0] == 200


# --- stopped and removed containers -----------------------------------------------------------


def test_exec_in_a_stopped_container(berthd: Berthd) -> None:  # noqa: F811
    cid = berthd.docker("create", IMAGE, "true", check=True).stdout.strip()
    try:
        text = f"Container {cid} is not running"
        assert call(berthd, "POST", f"/containers/{cid}/exec", {"Cmd": ["true"]}) == (409, {"message": text})
        assert cli_error(berthd, "exec", cid, "true") == f"Error response from daemon: {text}"
        assert call(berthd, "POST", f"/containers/{cid}/pause") == (409, {"message": text})
    finally:
        berthd.docker("rm", "-f", cid)


def test_start_of_a_removed_container(berthd: Berthd, unchanged: dict) -> None:  # noqa: F811
    cid = berthd.docker("create", "--name", "gone", IMAGE, "true", check=True).stdout.strip()
    assert call(berthd, "DELETE", f"/containers/{cid}")[0] == 204
    assert call(berthd, "POST", f"/containers/{cid}/start") == (404, {"message": f"No such container: {cid}"})
    assert cli_error(berthd, "start", "gone").startswith("Error response from daemon: No such container: gone")
    assert call(berthd, "DELETE", f"/containers/{cid}") == (404, {"message": f"No such container: {cid}"})


def test_nothing_left_after_the_module(berthd: Berthd) -> None:  # noqa: F811
    """Everything above removed what it made: no containers, directories, shims, mounts."""
    left = footprint(berthd)
    assert left["containers"] == [] and left["container dirs"] == [] and left["shim processes"] == []
    assert left["mounts"] == [] and left["shim dirs"] == []
