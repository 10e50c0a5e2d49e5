"""A berthd for tests: its own temporary roots, socket and cgroup parent, a busybox image
made without a registry, the real docker CLI pointed at it, and cleanup by pid.

    d = Berthd(base_dir)          d.start() / d.kill() (SIGKILL) / d.stop() (SIGTERM) / d.cleanup()
    d.socket                      the API socket
    d.docker(*args, input=None, timeout=60, check=False) -> CompletedProcess[str]
    d.docker_argv(*args) -> [...] the docker command line (for Popen and ptys)
    d.api.get/post/delete(path, body=None, **query) -> (status, parsed JSON | text)
    d.image                       "berthtest/busybox:latest" (after ensure_image())

The image: ``POST /images/create?fromSrc=-`` when berthd offers it, else the same tar
imported straight into the data root's image store (``berth.image.archive.import_rootfs``)
while berthd runs (the store is shared safely between processes).

Cleanup, also after failures: berthd by pid, every shim under the exec root by the pid
in its ``shim.pid`` (start time checked), every container init recorded by the runtime
under ``<exec_root>/runtime`` (``kill``/``delete --force`` through berth-runtime, then by
pid), mounts under the roots, the daemon's cgroup parent in every hierarchy, and its networks
(CNI attachments, namespaces, bridges and their iptables rules).
"""

from __future__ import annotations

import http.client
import io
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from tests.support import cleanup
from tests.support.bundle import rootfs_template

BIN = os.path.dirname(sys.executable)
BERTHD = os.path.join(BIN, "berthd")
BERTH_RUNTIME = os.path.join(BIN, "berth-runtime")
DOCKER = "/usr/local/bin/docker" if os.path.exists("/usr/local/bin/docker") else "docker"
IMAGE = "berthtest/busybox:latest"

_rootfs_tar: bytes | None = None


def busybox_tar() -> bytes:
    """The busybox root filesystem of tests/support/bundle.py as an uncompressed tar."""
    global _rootfs_tar
    if _rootfs_tar is None:
        buf = io.BytesIO()
        root = rootfs_template()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name in sorted(os.listdir(root)):
                tar.add(os.path.join(root, name), arcname=name)
        _rootfs_tar = buf.getvalue()
    return _rootfs_tar


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.path)
        self.sock = sock


class Api:
    """A tiny Docker Engine API client (one connection per request)."""

    def __init__(self, socket_path: str, version: str = "v1.43") -> None:
        self.socket_path = socket_path
        self.version = version

    def request(self, method: str, path: str, body: Any = None, timeout: float = 60, raw: bool = False,
                headers: dict[str, str] | None = None, **query: Any) -> tuple[int, Any]:
        target = f"/{self.version}{path}" if self.version else path
        if query:
            target += "?" + urllib.parse.urlencode({k: (json.dumps(v) if isinstance(v, dict) else v)
                                                    for k, v in query.items()})
        conn = _UnixConnection(self.socket_path, timeout)
        try:
            data = body if isinstance(body, (bytes, bytearray)) or body is None else json.dumps(body).encode()
            hdrs = {"Content-Type": "application/json"} if data is not None and not raw else {}
            hdrs.update(headers or {})
            conn.request(method, target, body=data, headers=hdrs)
            resp = conn.getresponse()
            payload = resp.read()
        finally:
            conn.close()
        if raw:
            return resp.status, payload
        text = payload.decode(errors="replace")
        try:
            return resp.status, json.loads(text) if text.strip() else None
        except ValueError:
            return resp.status, text

    def get(self, path: str, **query: Any) -> tuple[int, Any]:
        return self.request("GET", path, **query)

    def post(self, path: str, body: Any = None, **query: Any) -> tuple[int, Any]:
        return self.request("POST", path, body, **query)

    def delete(self, path: str, **query: Any) -> tuple[int, Any]:
        return self.request("DELETE", path, **query)


class Berthd:
    def __init__(self, base: str | os.PathLike[str]) -> None:
        self.base = Path(base)
        self.data_root = self.base / "data"
        self.exec_root = self.base / "run"
        self.socket = str(self.exec_root / "berth.sock")
        self.cgroup_parent = f"/berthd-test-{secrets.token_hex(4)}"
        self.log_path = self.base / "berthd.log"
        self.proc: subprocess.Popen | None = None
        self.api = Api(self.socket)
        self.image = IMAGE
        self._pids: list[tuple[int, int | None]] = []

    # --- the daemon ---------------------------------------------------------------------

    def start(self, timeout: float = 20) -> None:
        self.data_root.mkdir(parents=True, exist_ok=True)
        self.exec_root.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen(
                [BERTHD, "--data-root", str(self.data_root), "--exec-root", str(self.exec_root),
                 "--cgroup-parent", self.cgroup_parent], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True)
        finally:
            log.close()
        self._pids.append((self.proc.pid, cleanup.start_time(self.proc.pid)))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"berthd exited {self.proc.returncode}:\n{self.log()}")
            try:
                status, _ = self.api.request("GET", "/_ping", timeout=2)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"berthd did not answer within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL berthd (its containers go on under their shims)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    # --- clients ------------------------------------------------------------------------

    def docker_argv(self, *args: str) -> list[str]:
        return [DOCKER, "-H", f"unix://{self.socket}", *map(str, args)]

    def docker(self, *args: str, input: str | None = None, timeout: float = 60,
               check: bool = False) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, DOCKER_CONFIG=str(self.base / "docker-config"), DOCKER_CLI_HINTS="false")
        env.pop("DOCKER_HOST", None)
        proc = subprocess.run(self.docker_argv(*args), input=input, capture_output=True, text=True,
                              timeout=timeout, env=env, stdin=None if input is not None else subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} exited {proc.returncode}\n--- stdout\n{proc.stdout}"
                                 f"--- stderr\n{proc.stderr}--- berthd log\n{self.log()[-4000:]}")
        return proc

    def docker_env(self) -> dict[str, str]:
        env = dict(os.environ, DOCKER_CONFIG=str(self.base / "docker-config"), DOCKER_CLI_HINTS="false")
        env.pop("DOCKER_HOST", None)
        return env

    # --- the image ----------------------------------------------------------------------

    def ensure_image(self) -> str:
        status, _ = self.api.get(f"/images/{self.image}/json")
        if status == 200:
            return self.image
        repo, _, tag = self.image.rpartition(":")
        status, body = self.api.request("POST", "/images/create", busybox_tar(), raw=True,
                                        headers={"Content-Type": "application/x-tar"},
                                        fromSrc="-", repo=repo, tag=tag, changes='CMD ["sh"]')
        if status == 200 and self.api.get(f"/images/{self.image}/json")[0] == 200:
            return self.image
        from berth.image.archive import import_rootfs

        import_rootfs(io.BytesIO(busybox_tar()), self.image, ['CMD ["sh"]'], store_root=str(self.data_root))
        return self.image

    # --- cleanup ------------------------------------------------------------------------

    def shim_pids(self) -> list[tuple[int, int | None]]:
        found = []
        shims = self.exec_root / "shims"
        if shims.is_dir():
            for entry in shims.iterdir():
                try:
                    data = json.loads((entry / "shim.pid").read_text())
                    found.append((int(data["pid"]), data.get("start_time")))
                except (OSError, ValueError, KeyError, TypeError):
                    continue
        return found

    def cleanup(self) -> None:
        """Stop berthd, then kill whatever it left: shims, containers, mounts, cgroups."""
        try:
            self.kill()
        except Exception:  # noqa: BLE001
            pass
        runtime_root = self.exec_root / "runtime"
        pids = list(self._pids) + self.shim_pids()
        if runtime_root.is_dir():
            pids += cleanup.recorded_pids(str(runtime_root))
        cleanup.kill_recorded(pids)
        if runtime_root.is_dir():
            for entry in runtime_root.iterdir():
                if entry.is_dir():
                    for args in (("kill", "--all", entry.name, "KILL"), ("delete", "--force", entry.name)):
                        subprocess.run([BERTH_RUNTIME, "--root", str(runtime_root), *args], stdin=subprocess.DEVNULL,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=20, check=False)
        cleanup.remove_cgroup_parent(self.cgroup_parent)
        self.cleanup_networks()
        cleanup.unmount_under([str(self.base)])

    def network_records(self) -> list[dict]:
        """The daemon's network records, read from its metadata DB."""
        import sqlite3

        path = self.data_root / "metadata.db"
        if not path.exists():
            return []
        db = sqlite3.connect(str(path))
        try:
            return [json.loads(row[0]) for row in db.execute("SELECT data FROM records WHERE kind = 'network'")]
        except sqlite3.Error:
            return []
        finally:
            db.close()

    def cleanup_networks(self) -> None:
        """What a killed berthd left of its networks: CNI attachments (DEL from the cache,
        then the NAT rules DEL could not find), namespaces, its bridges and their rules."""
        from berth.network import bridge as bridgelib
        from berth.network import netns
        from berth.network.cni import CNI

        cni = CNI(str(self.exec_root / "cni"))
        for att in cni.attachments():
            for step in (lambda: cni.delete_cached(att),
                         lambda: bridgelib.sweep_container_rules(att.network, att.container_id)):
                try:
                    step()
                except Exception:  # noqa: BLE001 - best effort, the next step still runs
                    pass
        root = str(self.exec_root / "netns")
        for name in netns.list_names(root):
            try:
                netns.delete(name, root)
            except Exception:  # noqa: BLE001
                pass
        for rec in self.network_records():
            if rec.get("BerthBridge"):
                try:
                    bridgelib.remove_bridge(rec["BerthBridge"])
                except Exception:  # noqa: BLE001
                    pass


# --- fixtures (import them into a test module: ``from tests.support.daemon import berthd``) ---


def _skip_without_docker() -> None:
    import shutil

    if not (os.path.exists(DOCKER) or shutil.which(DOCKER)):
        pytest.skip("the docker CLI is not installed (scripts/setup.sh --with-peers)")


@pytest.fixture(scope="module")
def berthd(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """One berthd for a test module, with the busybox image; everything it made is removed after."""
    _skip_without_docker()
    daemon = Berthd(tmp_path_factory.mktemp("berthd"))
    try:
        daemon.start()
        daemon.ensure_image()
        yield daemon
    finally:
        daemon.cleanup()


@pytest.fixture
def berthd_factory(tmp_path: Path):  # noqa: ANN201
    """Fresh daemons for one test (``make()`` -> a started Berthd with the image)."""
    _skip_without_docker()
    made: list[Berthd] = []

    def make() -> Berthd:
        daemon = Berthd(tmp_path / f"berthd{len(made)}")
        made.append(daemon)
        daemon.start()
        daemon.ensure_image()
        return daemon

    try:
        yield make
    finally:
        for daemon in made:
            daemon.cleanup()
