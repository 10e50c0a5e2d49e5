"""Fixtures shared by every test.

    bundle(args=None, *, name=None, dir=None, rootless=False, **overrides) -> Bundle
        factory: a busybox bundle in the test's tmp dir (see tests/support/bundle.py)
    runtime -> Runtime
        runs the runtime under test with its own state root:
        runtime.run(*args, input=None, timeout=30, check=False) -> CompletedProcess[str]

The runtime under test is ``berth-runtime`` beside ``sys.executable`` (the venv's), or
whatever ``BERTH_TEST_RUNTIME`` names, e.g. ``BERTH_TEST_RUNTIME=/usr/sbin/runc`` to prove
that a test checks runc's own behaviour.

Markers: ``integration`` (real containers: skipped unless root with namespaces and
cgroups) and ``client`` (a real peer client such as dockerd or containerd drives the
runtime: skipped unless root and the peer's binaries are installed).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import cleanup
from tests.support.bundle import CGROUP_PARENT, Bundle, make_bundle

pytest_plugins = ["tests.support.imagetest"]  # stores, proxy, umoci_ref for the image tests

BERTH_RUNTIME = os.environ.get("BERTH_TEST_RUNTIME") or os.path.join(
    os.path.dirname(sys.executable), "berth-runtime"
)


class RuntimeFailed(subprocess.CalledProcessError):
    def __str__(self) -> str:
        return (
            f"{' '.join(map(str, self.cmd))} exited {self.returncode}\n"
            f"--- stdout\n{self.stdout}--- stderr\n{self.stderr}"
        )


class Runtime:
    """The runtime under test, bound to one state root (``--root``)."""

    def __init__(self, binary: str, root: str) -> None:
        self.binary = binary
        self.root = root

    @property
    def is_runc(self) -> bool:
        return os.path.basename(self.binary) == "runc"

    def argv(self, *args: str) -> list[str]:
        """The full command line, for tests that need Popen (a tty, a detached reader...)."""
        return [self.binary, "--root", self.root, *map(str, args)]

    def run(
        self,
        *args: str,
        input: str | None = None,
        timeout: float = 30,
        check: bool = False,
        cwd: str | os.PathLike[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run the runtime and wait for it (not for the container it leaves behind).

        stdout and stderr go to temporary files rather than pipes, so that a container
        that inherits them (``create``, ``run -d``) cannot keep this call waiting.
        """
        cmd = self.argv(*args)
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = subprocess.run(
                cmd,
                input=None if input is None else input.encode(),
                stdin=subprocess.DEVNULL if input is None else None,
                stdout=out,
                stderr=err,
                timeout=timeout,
                cwd=cwd,
                env=env,
            )
            out.seek(0)
            err.seek(0)
            stdout = out.read().decode(errors="replace")
            stderr = err.read().decode(errors="replace")
        result = subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
        if check and result.returncode != 0:
            raise RuntimeFailed(result.returncode, cmd, stdout, stderr)
        return result

    def state(self, container_id: str) -> dict[str, Any]:
        """``state ID`` parsed; fails the test with the runtime's stderr if it fails."""
        return json.loads(self.run("state", container_id, check=True).stdout)

    def container_ids(self) -> list[str]:
        """Containers in this root: ``list -q`` plus any directory holding a state.json."""
        ids: list[str] = []
        try:
            res = self.run("list", "-q", timeout=10)
            if res.returncode == 0:
                ids.extend(line.strip() for line in res.stdout.splitlines() if line.strip())
        except (OSError, subprocess.TimeoutExpired):
            pass
        if os.path.isdir(self.root):
            for entry in sorted(os.listdir(self.root)):
                if entry not in ids and os.path.isdir(os.path.join(self.root, entry)):
                    ids.append(entry)
        return ids

    def cleanup(self) -> None:
        """Kill and delete every container in this root, then any recorded pid still alive."""
        pids = cleanup.recorded_pids(self.root) if os.path.isdir(self.root) else []
        for container_id in self.container_ids():
            for args in (("kill", container_id, "KILL"), ("delete", "--force", container_id)):
                try:
                    self.run(*args, timeout=15)
                except (OSError, subprocess.TimeoutExpired):
                    pass
        cleanup.kill_recorded(pids)


def _skip_reason_integration() -> str | None:
    if os.geteuid() != 0:
        return "integration test: needs root (runs real containers)"
    for ns in ("pid", "mnt", "uts", "ipc", "net"):
        if not os.path.exists(f"/proc/self/ns/{ns}"):
            return f"integration test: kernel lacks {ns} namespaces"
    if not cleanup.cgroup_mountpoints():
        return "integration test: no cgroup hierarchy is mounted"
    if not os.path.exists("/bin/busybox"):
        return "integration test: /bin/busybox missing (apt-get install busybox-static)"
    return None


def _skip_reason_client() -> str | None:
    if os.geteuid() != 0:
        return "client test: needs root (starts containerd/dockerd)"
    missing = [b for b in ("containerd", "ctr", "dockerd", "docker") if shutil.which(b) is None]
    if missing:
        return f"client test: {', '.join(missing)} not installed (scripts/setup.sh --with-peers)"
    return None


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("integration") is not None:
        reason = _skip_reason_integration()
        if reason:
            pytest.skip(reason)
    if item.get_closest_marker("client") is not None:
        reason = _skip_reason_client()
        if reason:
            pytest.skip(reason)


def pytest_report_header(config: pytest.Config) -> str:
    return f"runtime under test: {BERTH_RUNTIME}; cgroup parent: {CGROUP_PARENT}"


@pytest.fixture(scope="session", autouse=True)
def _session_cgroup_parent() -> Iterator[str]:
    """Remove this session's cgroup parent from every hierarchy at the end."""
    yield CGROUP_PARENT
    if os.geteuid() == 0:
        left = cleanup.remove_cgroup_parent(CGROUP_PARENT)
        if left:
            print(f"\nwarning: could not remove cgroups: {', '.join(left)}", file=sys.stderr)


@pytest.fixture(autouse=True)
def _unmount_tmp_path(request: pytest.FixtureRequest) -> Iterator[None]:
    """Last teardown of a test that used tmp_path: lazily unmount whatever is left below it."""
    tmp_path = request.getfixturevalue("tmp_path") if "tmp_path" in request.fixturenames else None
    yield
    if tmp_path is not None:
        cleanup.unmount_under([str(tmp_path)])


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    """The runtime under test with a fresh state root; everything it made is cleaned up after."""
    root = tmp_path / "state"
    root.mkdir(mode=0o700)
    rt = Runtime(BERTH_RUNTIME, str(root))
    try:
        yield rt
    finally:
        try:
            rt.cleanup()
        finally:
            cleanup.unmount_under([str(tmp_path)])


@pytest.fixture
def bundle(tmp_path: Path) -> Iterator[Callable[..., Bundle]]:
    """Factory of busybox bundles under the test's tmp dir: ``bundle(["/bin/true"], hostname="x")``."""
    made = 0

    def factory(
        args: list[str] | None = None,
        *,
        name: str | None = None,
        dir: str | os.PathLike[str] | None = None,
        rootless: bool = False,
        **overrides: Any,
    ) -> Bundle:
        nonlocal made
        made += 1
        path = dir if dir is not None else tmp_path / f"bundle{made}"
        return make_bundle(path, args, name=name, rootless=rootless, **overrides)

    yield factory


# --- registries and images (tests/support/registry.py, images.py, proxy.py) ------------
#
#   image_layout -> Layout           session: the OCI layout of tests/support/images.py
#   registry -> PushedRegistry       session: docker-registry on 127.0.0.1 with the test
#                                    images pushed by skopeo (see PushedRegistry.REPOS)
#   token_registry -> TokenRegistry  session: docker-registry with token auth, a token
#                                    server (user "berth", password "s3cret") and
#                                    berth/private:v1 pushed with those credentials
# Processes are stopped by pid at the end of the session, also when tests fail.

REGISTRY_TOOLS = ("/usr/bin/docker-registry", "skopeo", "umoci", "openssl")


def _registry_tools_skip() -> None:
    missing = [t for t in REGISTRY_TOOLS if shutil.which(t) is None]
    if not os.path.exists("/bin/busybox"):
        missing.append("/bin/busybox")
    if missing:
        pytest.skip(f"registry test: {', '.join(missing)} missing (scripts/setup.sh --with-peers)")


@pytest.fixture(scope="session")
def image_layout(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tests.support.images import build_layout

    _registry_tools_skip()
    return build_layout(tmp_path_factory.mktemp("images"))


class PushedRegistry:
    """A running registry and what the fixture pushed to it (repo:tag -> layout tag)."""

    REPOS = {
        "berth/busybox:v1": "OCI manifest, gzip layers",
        "berth/busybox:docker": "Docker schema 2 manifest (skopeo --format v2s2)",
        "berth/busybox:plain": "OCI manifest, uncompressed layers",
        "berth/busybox:zstd": "OCI manifest, zstd layers",
        "berth/multi:latest": "OCI index: linux/amd64 + linux/arm64/v8",
        "berth/multi:docker": "Docker manifest list (skopeo --all --format v2s2)",
    }

    def __init__(self, process: Any, layout: Any, zstd: Any) -> None:
        self.process = process
        self.layout = layout
        self.zstd_layout = zstd

    @property
    def host(self) -> str:
        return self.process.host


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory, image_layout: Any) -> Iterator[PushedRegistry]:
    from tests.support.images import push, zstd_layout
    from tests.support.registry import RegistryProcess

    workdir = tmp_path_factory.mktemp("registry")
    process = RegistryProcess(workdir)
    process.start()
    try:
        host = process.host
        push(image_layout, "v1", f"{host}/berth/busybox:v1", "--preserve-digests")
        push(image_layout, "v1", f"{host}/berth/busybox:docker", "--format", "v2s2")
        push(image_layout, "plain", f"{host}/berth/busybox:plain", "--preserve-digests")
        zstd = zstd_layout(image_layout, workdir)
        push(zstd, "zstd", f"{host}/berth/busybox:zstd", "--preserve-digests")
        push(image_layout, "multi", f"{host}/berth/multi:latest", "--all", "--preserve-digests")
        push(image_layout, "multi", f"{host}/berth/multi:docker", "--all", "--format", "v2s2")
        yield PushedRegistry(process, image_layout, zstd)
    finally:
        process.stop()


class TokenRegistry:
    USER, PASSWORD = "berth", "s3cret"

    def __init__(self, process: Any, tokens: Any) -> None:
        self.process = process
        self.tokens = tokens

    @property
    def host(self) -> str:
        return self.process.host


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory: pytest.TempPathFactory, image_layout: Any) -> Iterator[TokenRegistry]:
    from tests.support.images import push
    from tests.support.registry import RegistryProcess, TokenServer

    workdir = tmp_path_factory.mktemp("token-registry")
    tokens = TokenServer(workdir, users={TokenRegistry.USER: TokenRegistry.PASSWORD})
    tokens.start()
    process = RegistryProcess(workdir, token_server=tokens)
    try:
        process.start()
        push(image_layout, "v1", f"{process.host}/berth/private:v1", "--preserve-digests",
             creds=f"{TokenRegistry.USER}:{TokenRegistry.PASSWORD}")
        yield TokenRegistry(process, tokens)
    finally:
        process.stop()
        tokens.stop()
