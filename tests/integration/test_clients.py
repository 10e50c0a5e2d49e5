"""Real clients drive berth-runtime in runc's place: dockerd (Debian's docker.io 20.10,
through the ``docker`` CLI) and containerd's ``ctr``.

Two module fixtures start the daemons once, each with its own temporary roots, sockets,
pidfile and log (never /run/containerd/containerd.sock or /var/run/docker.sock, so another
daemon on the machine is left alone):

    containerd   ``containerd --config <tmp>/ctd/config.toml``; ``ctr`` runs with
                 ``--runc-binary <berth-runtime> --runc-root <tmp>`` and a private
                 namespace and cgroup path
    dockerd      ``dockerd --config-file <tmp>/docker/daemon.json`` on top of that
                 containerd, with runtime ``berth`` = the runtime under test, no bridge,
                 no iptables; runs use ``--runtime berth``

The image is built here without any registry: a one-layer archive holding Debian's static
``/bin/busybox`` and its applet links, in both the OCI layout (for ``ctr images import``)
and ``docker save``'s format (for ``docker load``).

What they cannot move: containerd 1.6 puts shim sockets in /run/containerd/s (named by a
hash that includes our socket's path), ctr its fifos in /run/containerd/fifo, and dockerd
20.10 writes /etc/docker/key.json once if it is missing.

At the end the fixtures remove every container and task, stop their daemon by pid, kill
shims still serving their socket, remove their cgroups and unmount and delete their roots,
also when tests failed. On a failure, the assertion message carries the tail of the
daemons' logs; the runtime's own log of a container is
``<tmp>/ctd/state/io.containerd.runtime.v2.task/<namespace>/<id>/log.json`` while it exists.

Run against runc to check the tests themselves: ``BERTH_TEST_RUNTIME=/usr/sbin/runc``.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import io
import json
import os
import platform
import secrets
import select
import shutil
import signal
import struct
import subprocess
import sys
import tarfile
import termios
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.support import cleanup
from tests.support.bundle import BUSYBOX, CGROUP_PARENT

pytestmark = [pytest.mark.client, pytest.mark.integration]

RUNTIME = os.environ.get("BERTH_TEST_RUNTIME") or str(Path(sys.executable).parent / "berth-runtime")
IMAGE = "berthtest/busybox:latest"
CTR_IMAGE = "docker.io/" + IMAGE
#: cgroups of every container of this module, below the session's parent (removed at the end)
CLIENT_CGROUPS = f"{CGROUP_PARENT}/clients-{secrets.token_hex(3)}"
#: a loop that exits 0 on SIGTERM (busybox sh runs the trap between two sleeps)
TERM_LOOP = 'trap "exit 0" TERM; while true; do sleep 1; done'


# --- helpers ----------------------------------------------------------------------

def run(argv: Sequence[str], *, timeout: float = 60, env: dict[str, str] | None = None,
        input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, env=env, input=input,
                          stdin=subprocess.DEVNULL if input is None else None)


def explain(result: subprocess.CompletedProcess[str] | None = None, *daemons: "Daemon") -> str:
    parts = []
    if result is not None:
        parts.append(f"$ {' '.join(map(str, result.args))}\nexit {result.returncode}\n"
                     f"--- stdout\n{result.stdout}--- stderr\n{result.stderr}")
    for daemon in daemons:
        parts.append(f"--- last lines of {daemon.log_path}\n{daemon.log_tail()}")
    return "\n".join(parts)


def run_in_pty(argv: Sequence[str], *, env: dict[str, str] | None = None, timeout: float = 30,
               send: Sequence[tuple[bytes, bytes]] = ()) -> tuple[int, str]:
    """Run ``argv`` with a new pty as stdin/stdout/stderr, as in a terminal; return (exit code,
    everything it printed). ``send`` holds (marker, data): once ``marker`` has been printed
    (after the previous send), ``data`` is typed."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    try:
        proc = subprocess.Popen(list(argv), stdin=slave, stdout=slave, stderr=slave, env=env,
                                start_new_session=True)
    finally:
        os.close(slave)
    out = bytearray()
    pending = list(send)
    seen = 0
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{' '.join(argv)}: no end after {timeout}s; output so far: {bytes(out)!r}")
            ready, _, _ = select.select([master], [], [], min(left, 0.2))
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the last slave fd was closed
                    data = b""
                if not data:
                    break
                out += data
            elif proc.poll() is not None:
                break
            if pending and pending[0][0] in out[seen:]:
                marker, typed = pending.pop(0)
                seen = out.index(marker, seen) + len(marker)
                os.write(master, typed)
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return code, out.decode(errors="replace")


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def runtime_state(state_root: str, container_id: str) -> dict:
    """What the runtime under test itself says about a container that a client made."""
    res = run([RUNTIME, "--root", state_root, "state", container_id], timeout=15)
    assert res.returncode == 0, explain(res)
    return json.loads(res.stdout)


# --- the image --------------------------------------------------------------------

def busybox_layer() -> bytes:
    """An uncompressed layer: /bin/busybox with its applet links, /etc/passwd and group, /tmp."""
    applets = run([BUSYBOX, "--list"], timeout=10).stdout.split()
    now = int(time.time())
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        def add(name: str, kind: bytes = tarfile.DIRTYPE, mode: int = 0o755, data: bytes = b"", link: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime, info.linkname = kind, mode, now, link
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

        for d in ("bin", "dev", "etc", "proc", "sys"):
            add(d)
        add("root", mode=0o700)
        add("tmp", mode=0o1777)
        with open(BUSYBOX, "rb") as f:
            add("bin/busybox", tarfile.REGTYPE, 0o755, f.read())
        for applet in applets:
            if applet != "busybox" and "/" not in applet:
                add(f"bin/{applet}", tarfile.SYMTYPE, 0o777, link="busybox")
        add("etc/passwd", tarfile.REGTYPE, 0o644,
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
        add("etc/group", tarfile.REGTYPE, 0o644, b"root:x:0:\nnogroup:x:65534:\n")
    return buf.getvalue()


def write_image_archive(path: Path, name: str = IMAGE) -> Path:
    """One tar that is both an OCI image layout (index.json) and a ``docker save`` archive
    (manifest.json), so ``ctr images import`` and ``docker load`` both take it."""
    blobs: dict[str, bytes] = {}

    def blob(data: bytes) -> dict:
        digest = hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return {"digest": f"sha256:{digest}", "size": len(data)}

    layer = blob(busybox_layer())
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    config = blob(json.dumps({
        "architecture": arch, "os": "linux", "created": "2024-01-01T00:00:00Z",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]},
        "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "tests/integration/test_clients.py"}],
    }).encode())
    manifest_type = "application/vnd.oci.image.manifest.v1+json"
    manifest = blob(json.dumps({
        "schemaVersion": 2, "mediaType": manifest_type,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **layer}],
    }).encode())
    files = {f"blobs/sha256/{digest}": data for digest, data in blobs.items()}
    files["oci-layout"] = b'{"imageLayoutVersion":"1.0.0"}'
    files["index.json"] = json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": manifest_type, **manifest,
        "annotations": {"io.containerd.image.name": "docker.io/" + name,
                        "org.opencontainers.image.ref.name": name.rpartition(":")[2]},
    }]}).encode()
    files["manifest.json"] = json.dumps([{
        "Config": "blobs/sha256/" + config["digest"].split(":")[1], "RepoTags": [name],
        "Layers": ["blobs/sha256/" + layer["digest"].split(":")[1]],
    }]).encode()
    with tarfile.open(path, "w") as tar:
        for name_in_tar, data in files.items():
            info = tarfile.TarInfo(name_in_tar)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return path


# --- daemons ----------------------------------------------------------------------

class Daemon:
    """A daemon started by this module: its own log file, stopped by its pid."""

    def __init__(self, argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=env, start_new_session=True)

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def log_since(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, probe, what: str, timeout: float = 30) -> None:  # noqa: ANN001
        """Poll ``probe()`` until it is true; skip the module if the daemon cannot start here."""
        deadline = time.monotonic() + timeout
        while not probe():
            if self.proc.poll() is not None:
                self.stop()
                pytest.skip(f"client test: {what} exited {self.proc.returncode} at start on this machine:\n"
                            f"{self.log_tail(15)}")
            if time.monotonic() >= deadline:
                self.stop()
                pytest.skip(f"client test: {what} did not answer within {timeout:.0f}s:\n{self.log_tail(15)}")
            time.sleep(0.1)

    def stop(self, timeout: float = 20) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


class Containerd:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.sock = str(root / "containerd.sock")
        self.state = str(root / "state")
        self.runc_root = str(root / "runc")  # ctr's --runc-root: the runtime's --root is <this>/<namespace>
        self.namespace = f"berthtest-{secrets.token_hex(3)}"
        self.daemon: Daemon | None = None

    def start(self) -> None:
        config = self.root / "config.toml"
        config.write_text(
            "version = 2\n"
            f'root = "{self.root / "root"}"\n'
            f'state = "{self.state}"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            f'[grpc]\n  address = "{self.sock}"\n'
            f'[ttrpc]\n  address = "{self.sock}.ttrpc"\n'
            f'[debug]\n  address = "{self.root / "debug.sock"}"\n  level = "debug"\n'
            '[metrics]\n  address = ""\n'
        )
        self.daemon = Daemon(["containerd", "--config", str(config)], self.root / "containerd.log")
        self.daemon.wait_ready(lambda: os.path.exists(self.sock) and self.ctr_global("version", timeout=5).returncode == 0,
                               "containerd")

    def ctr_global(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return run(["ctr", "--address", self.sock, *args], timeout=timeout)

    def ctr(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return self.ctr_global("--namespace", self.namespace, *args, timeout=timeout)

    def ctr_argv(self, *args: str) -> list[str]:
        return ["ctr", "--address", self.sock, "--namespace", self.namespace, *args]

    def run_flags(self, container_id: str) -> list[str]:
        """``ctr run`` flags that make it use the runtime under test, in this module's roots."""
        return ["--runc-binary", RUNTIME, "--runc-root", self.runc_root, "--cgroup", f"{CLIENT_CGROUPS}/ctr-{container_id}"]

    def runtime_root(self) -> str:
        return os.path.join(self.runc_root, self.namespace)

    def explain(self, result: subprocess.CompletedProcess[str] | None = None) -> str:
        return explain(result, *([self.daemon] if self.daemon else []))

    def remove_everything(self) -> None:
        """Kill and remove every task and container in every namespace of this containerd."""
        namespaces = self.ctr_global("namespaces", "ls", "-q", timeout=15).stdout.split()
        for ns in namespaces:
            ctr = ["--namespace", ns]
            for task in self.ctr_global(*ctr, "tasks", "ls", "-q", timeout=15).stdout.split():
                self.ctr_global(*ctr, "tasks", "kill", "--all", "--signal", "SIGKILL", task, timeout=15)
                wait_until(lambda: "RUNNING" not in self.ctr_global(*ctr, "tasks", "ls", timeout=15).stdout, 5)
                self.ctr_global(*ctr, "tasks", "rm", "--force", task, timeout=15)
            for container in self.ctr_global(*ctr, "containers", "ls", "-q", timeout=15).stdout.split():
                self.ctr_global(*ctr, "containers", "rm", container, timeout=15)

    def shim_sockets(self) -> list[str]:
        """The sockets of this containerd's shims (under /run/containerd/s, named by a hash)."""
        sockets = []
        for path in glob.glob(os.path.join(self.state, "io.containerd.runtime.v2.task", "*", "*", "address")):
            try:
                address = Path(path).read_text().strip()
            except OSError:
                continue
            if address.startswith("unix://"):
                sockets.append(address[len("unix://"):])
        return sockets

    def kill_own_shims(self, sockets: list[str]) -> None:
        """Shims outlive containerd: kill, by pid, those that serve this containerd's socket,
        and remove the sockets that killed shims leave behind."""
        victims = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if b"-address" in argv and os.fsencode(self.sock) in argv and os.path.basename(argv[0]).startswith(b"containerd-shim"):
                victims.append((int(entry), cleanup.start_time(int(entry))))
        if cleanup.kill_recorded(victims):
            for path in sockets:
                try:
                    os.unlink(path)
                except OSError:
                    pass

    def shutdown(self) -> None:
        sockets = self.shim_sockets()
        try:
            if self.daemon is not None and self.daemon.proc.poll() is None:
                try:
                    self.remove_everything()
                except (OSError, subprocess.TimeoutExpired):
                    pass
        finally:
            if self.daemon is not None:
                self.daemon.stop()
            self.kill_own_shims(sockets)


class Dockerd:
    def __init__(self, root: Path, containerd: Containerd) -> None:
        self.root = root
        self.sock = str(root / "docker.sock")
        self.exec_root = str(root / "exec")
        self.containerd = containerd
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        self.env["DOCKER_CONFIG"] = str(root / "cli")  # the CLI writes nothing under ~/.docker
        self.env["DOCKER_CLI_HINTS"] = "false"
        self.daemon: Daemon | None = None

    def start(self) -> None:
        config = {
            "data-root": str(self.root / "data"),
            "exec-root": self.exec_root,
            "pidfile": str(self.root / "docker.pid"),
            "hosts": [f"unix://{self.sock}"],
            "containerd": self.containerd.sock,
            "runtimes": {"berth": {"path": RUNTIME}},
            "storage-driver": "overlay2",
            "cgroup-parent": f"{CLIENT_CGROUPS}/docker",
            # leave the host's networking alone: no docker0, no iptables, no forwarding
            "bridge": "none", "iptables": False, "ip6tables": False, "ip-masq": False, "ip-forward": False,
            "userland-proxy": False,
            "shutdown-timeout": 2,
            "debug": True,
        }
        path = self.root / "daemon.json"
        path.write_text(json.dumps(config, indent=2))
        self.daemon = Daemon(["dockerd", "--config-file", str(path)], self.root / "dockerd.log")
        self.daemon.wait_ready(lambda: os.path.exists(self.sock) and self.docker("version", timeout=5).returncode == 0,
                               "dockerd")

    def argv(self, *args: str) -> list[str]:
        return ["docker", "-H", f"unix://{self.sock}", *args]

    def docker(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return run(self.argv(*args), timeout=timeout, env=self.env)

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """``docker run --runtime berth ARGS``: ARGS are options, then the image and command."""
        return self.docker("run", "--runtime", "berth", *args, timeout=timeout)

    def ok(self, *args: str, timeout: float = 60) -> str:
        """``docker ARGS`` that must succeed; returns its stdout."""
        res = self.docker(*args, timeout=timeout)
        assert res.returncode == 0, self.explain(res)
        return res.stdout

    def inspect(self, container: str, fmt: str) -> str:
        return self.ok("inspect", "--format", fmt, container).strip()

    def runtime_root(self, container_id: str) -> str:
        """The --root dockerd's shim gives the runtime (``<exec-root>/runtime-*/moby``)."""
        found = glob.glob(os.path.join(self.exec_root, "runtime-*", "moby", container_id, "state.json"))
        assert found, f"no runtime state for {container_id} under {self.exec_root}\n{self.explain()}"
        return os.path.dirname(os.path.dirname(found[0]))

    def explain(self, result: subprocess.CompletedProcess[str] | None = None) -> str:
        daemons = [d for d in (self.daemon, self.containerd.daemon) if d is not None]
        return explain(result, *daemons)

    def shutdown(self) -> None:
        try:
            if self.daemon is not None and self.daemon.proc.poll() is None:
                ids = self.docker("ps", "-aq", timeout=30).stdout.split()
                if ids:
                    self.docker("rm", "-f", *ids, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            pass
        finally:
            if self.daemon is not None:
                self.daemon.stop()


@pytest.fixture(scope="module")
def client_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The module's temporary root; at the end: its cgroups go, its mounts are undone, it is deleted."""
    root = tmp_path_factory.mktemp("clients")
    try:
        yield root
    finally:
        left = cleanup.remove_cgroup_parent(CLIENT_CGROUPS)
        cleanup.unmount_under([str(root)])
        if not cleanup.mounts_under([str(root)]):
            shutil.rmtree(root, ignore_errors=True)
        if left:
            print(f"\nwarning: could not remove cgroups: {', '.join(left)}", file=sys.stderr)


@pytest.fixture(scope="module")
def image_archive(client_root: Path) -> Path:
    return write_image_archive(client_root / "busybox-image.tar")


@pytest.fixture(scope="module")
def containerd(client_root: Path, image_archive: Path) -> Iterator[Containerd]:
    root = client_root / "ctd"
    root.mkdir()
    daemon = Containerd(root)
    try:
        daemon.start()
        res = daemon.ctr("images", "import", str(image_archive))
        assert res.returncode == 0, daemon.explain(res)
        yield daemon
    finally:
        daemon.shutdown()


@pytest.fixture(scope="module")
def dockerd(client_root: Path, containerd: Containerd, image_archive: Path) -> Iterator[Dockerd]:
    root = client_root / "docker"
    root.mkdir()
    daemon = Dockerd(root, containerd)
    try:
        daemon.start()
        daemon.ok("load", "--input", str(image_archive))
        yield daemon
    finally:
        daemon.shutdown()


#: what containerd's log shows when the shim's call of the runtime failed
RUNTIME_FAILURES = ("did not terminate successfully", "failed to kill init's children", "OCI runtime")
#: ... except the "delete --force" in containerd's cleanup after a shim exited, which fails
#: (exit status 255, no output) just as often with runc as the runtime
RUNTIME_FAILURES_SHARED_WITH_RUNC = ("failed to remove runc container",)


@pytest.fixture(autouse=True)
def _no_runtime_failures(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test during which a shim logged a failed runtime call, even one its client
    hid (a cleanup ``delete --force``, ``kill --all`` after init exited...)."""
    if "containerd" not in request.fixturenames:
        yield
        return
    log = request.getfixturevalue("containerd").daemon
    offset = log.log_size()
    yield
    failures = [line for line in log.log_since(offset).splitlines()
                if any(f in line for f in RUNTIME_FAILURES) and not any(f in line for f in RUNTIME_FAILURES_SHARED_WITH_RUNC)]
    assert not failures, "the shim logged failed runtime calls:\n" + "\n".join(failures)


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


# --- dockerd ----------------------------------------------------------------------

def test_docker_run_echo(dockerd: Dockerd) -> None:
    # --network none: docker's spec carries the libnetwork-setkey prestart hook (dockerd itself)
    res = dockerd.run("--rm", "--network", "none", IMAGE, "echo", "hi")
    assert (res.returncode, res.stdout) == (0, "hi\n"), dockerd.explain(res)


def test_docker_network_none_hook_brings_up_loopback(dockerd: Dockerd) -> None:
    # the prestart hook hands the netns to dockerd, which configures lo in it
    res = dockerd.run("--rm", "--network", "none", IMAGE, "ip", "addr", "show", "lo")
    assert res.returncode == 0 and "inet 127.0.0.1/8" in res.stdout, dockerd.explain(res)


def test_docker_network_disabled_runtime_brings_up_loopback(dockerd: Dockerd) -> None:
    # with "bridge": "none" the default network is disabled: no hook, the runtime itself
    # brings up lo in the new network namespace (runc's "loopback" network)
    res = dockerd.run("--rm", IMAGE, "ip", "addr", "show", "lo")
    assert res.returncode == 0 and "inet 127.0.0.1/8" in res.stdout and ",UP" in res.stdout, dockerd.explain(res)


def test_docker_exit_code_passthrough(dockerd: Dockerd) -> None:
    res = dockerd.run("--rm", "--network", "none", IMAGE, "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (res.returncode, res.stdout, res.stderr) == (3, "out\n", "err\n"), dockerd.explain(res)


def test_docker_run_it_tty(dockerd: Dockerd) -> None:
    code, out = run_in_pty(dockerd.argv("run", "-it", "--rm", "--runtime", "berth", "--network", "none", IMAGE,
                                        "sh", "-c", "tty; echo ok; exit 5"), env=dockerd.env)
    assert code == 5, out
    assert "/dev/pts/0\r\nok\r\n" in out, out


def test_docker_run_it_interactive_stdin(dockerd: Dockerd) -> None:
    code, out = run_in_pty(
        dockerd.argv("run", "-it", "--rm", "--runtime", "berth", "--network", "none", IMAGE, "sh"),
        env=dockerd.env,
        send=[(b"# ", b"echo typed-$((40+2))\r"), (b"typed-42", b"exit 4\r")],
    )
    assert "typed-42" in out, out
    assert code == 4, out


def test_docker_memory_limit(dockerd: Dockerd) -> None:
    res = dockerd.run("--rm", "--network", "none", "-m", "64m", IMAGE, "sh", "-c",
                      "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max")
    assert (res.returncode, res.stdout) == (0, "67108864\n"), dockerd.explain(res)


def test_docker_pids_limit(dockerd: Dockerd) -> None:
    res = dockerd.run("--rm", "--network", "none", "--pids-limit", "10", IMAGE, "sh", "-c",
                      "cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max;"
                      " for i in $(seq 1 20); do sleep 5 & done; echo forked-all")
    assert res.stdout.splitlines()[:1] == ["10"], dockerd.explain(res)
    assert "can't fork" in res.stderr and "forked-all" not in res.stdout, dockerd.explain(res)


def test_docker_oom_kill(dockerd: Dockerd) -> None:
    name = unique("oom")
    res = dockerd.run("--name", name, "--network", "none", "-m", "16m", "--memory-swap", "16m", IMAGE,
                      "sh", "-c", "tail /dev/zero")
    try:
        assert res.returncode == 137, dockerd.explain(res)
        assert dockerd.inspect(name, "{{.State.OOMKilled}}") == "true"
    finally:
        dockerd.docker("rm", "-f", name)


@pytest.mark.parametrize("drop", ["CHOWN", "ALL"])
def test_docker_cap_drop(dockerd: Dockerd, drop: str) -> None:
    script = "chown 65534 /tmp && echo chowned"
    allowed = dockerd.run("--rm", "--network", "none", IMAGE, "sh", "-c", script)
    assert (allowed.returncode, allowed.stdout) == (0, "chowned\n"), dockerd.explain(allowed)
    res = dockerd.run("--rm", "--network", "none", "--cap-drop", drop, IMAGE, "sh", "-c", script)
    assert res.returncode != 0 and "Operation not permitted" in res.stderr, dockerd.explain(res)


def test_docker_cap_add_and_no_new_privileges(dockerd: Dockerd) -> None:
    res = dockerd.run("--rm", "--network", "none", "--cap-add", "SYS_ADMIN", "--security-opt", "no-new-privileges",
                      IMAGE, "sh", "-c", "grep -E '^(CapEff|NoNewPrivs)' /proc/self/status")
    assert res.returncode == 0, dockerd.explain(res)
    fields = dict(line.split(":\t") for line in res.stdout.splitlines())
    assert int(fields["CapEff"], 16) & (1 << 21), res.stdout  # CAP_SYS_ADMIN
    assert fields["NoNewPrivs"] == "1", res.stdout


def test_docker_read_only_rootfs(dockerd: Dockerd) -> None:
    res = dockerd.run("--rm", "--network", "none", "--read-only", "--tmpfs", "/scratch", IMAGE, "sh", "-c",
                      "touch /scratch/ok && echo tmpfs-writable; touch /x")
    assert res.returncode != 0, dockerd.explain(res)
    assert res.stdout == "tmpfs-writable\n" and "Read-only file system" in res.stderr, dockerd.explain(res)


def test_docker_user_workdir_env_hostname(dockerd: Dockerd) -> None:
    res = dockerd.run("--rm", "--network", "none", "-u", "65534:65534", "-w", "/tmp", "-e", "FOO=bar",
                      "-h", "boxy", IMAGE, "sh", "-c", 'id -u; id -g; pwd; echo "$FOO"; hostname')
    assert (res.returncode, res.stdout) == (0, "65534\n65534\n/tmp\nbar\nboxy\n"), dockerd.explain(res)


def test_docker_bind_mount_and_init(dockerd: Dockerd, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("data\n")
    res = dockerd.run("--rm", "--network", "none", "--init", "-v", f"{tmp_path}:/v:ro", IMAGE, "sh", "-c",
                      "cat /v/f; touch /v/g 2>/dev/null || echo ro; cat /proc/1/cmdline | tr '\\0' ' '")
    assert res.returncode == 0, dockerd.explain(res)
    lines = res.stdout.splitlines()
    assert lines[:2] == ["data", "ro"], dockerd.explain(res)
    assert "docker-init" in lines[2], dockerd.explain(res)


def test_docker_detached_exec(dockerd: Dockerd) -> None:
    cid = dockerd.ok("run", "-d", "--runtime", "berth", "--network", "none", IMAGE, "sh", "-c", TERM_LOOP).strip()
    try:
        pid = int(dockerd.inspect(cid, "{{.State.Pid}}"))
        # it is the runtime under test that holds this container, not runc
        state = runtime_state(dockerd.runtime_root(cid), cid)
        assert (state["status"], state["pid"]) == ("running", pid), state
        # and it ran docker's prestart hook: dockerd itself, "libnetwork-setkey"
        config = json.loads(Path(state["bundle"], "config.json").read_text())
        prestart = (config.get("hooks") or {}).get("prestart") or []
        assert [h["args"][0] for h in prestart] == ["libnetwork-setkey"], prestart

        res = dockerd.docker("exec", cid, "sh", "-c", "echo in-$((1+1)); exit 4")
        assert (res.returncode, res.stdout) == (4, "in-2\n"), dockerd.explain(res)
        res = dockerd.docker("exec", "-u", "65534", "-w", "/tmp", "-e", "X=1", cid, "sh", "-c", 'id -u; pwd; echo "$X"')
        assert (res.returncode, res.stdout) == (0, "65534\n/tmp\n1\n"), dockerd.explain(res)

        code, out = run_in_pty(dockerd.argv("exec", "-it", cid, "sh", "-c", "tty; echo ok; exit 6"), env=dockerd.env)
        assert code == 6 and "/dev/pts/" in out and "ok" in out, out

        top = dockerd.ok("top", cid)  # the shim asks the runtime: ps --format json
        assert str(pid) in top and "sh -c trap" in top, top
    finally:
        dockerd.docker("rm", "-f", cid)


def test_docker_pause_unpause(dockerd: Dockerd) -> None:
    cid = dockerd.ok("run", "-d", "--runtime", "berth", "--network", "none", IMAGE, "sh", "-c", TERM_LOOP).strip()
    try:
        dockerd.ok("pause", cid)
        assert dockerd.inspect(cid, "{{.State.Status}} {{.State.Paused}}") == "paused true"
        assert runtime_state(dockerd.runtime_root(cid), cid)["status"] == "paused"
        res = dockerd.docker("exec", cid, "true")
        assert res.returncode != 0 and "paused" in res.stderr, dockerd.explain(res)
        dockerd.ok("unpause", cid)
        assert dockerd.inspect(cid, "{{.State.Status}} {{.State.Paused}}") == "running false"
        res = dockerd.docker("exec", cid, "echo", "alive")
        assert (res.returncode, res.stdout) == (0, "alive\n"), dockerd.explain(res)
    finally:
        dockerd.docker("rm", "-f", cid)


def test_docker_stop_sends_sigterm(dockerd: Dockerd) -> None:
    cid = dockerd.ok("run", "-d", "--runtime", "berth", "--network", "none", IMAGE, "sh", "-c", TERM_LOOP).strip()
    try:
        started = time.monotonic()
        dockerd.ok("stop", "-t", "20", cid)
        elapsed = time.monotonic() - started
        # a SIGTERM that never arrived would end in SIGKILL (137) after 20 s
        assert dockerd.inspect(cid, "{{.State.Status}} {{.State.ExitCode}}") == "exited 0"
        assert elapsed < 10, f"docker stop took {elapsed:.1f}s"
    finally:
        dockerd.docker("rm", "-f", cid)


def test_docker_stop_timeout_then_sigkill(dockerd: Dockerd) -> None:
    # pid 1 of a pid namespace ignores SIGTERM without a handler: docker stop must SIGKILL
    cid = dockerd.ok("run", "-d", "--runtime", "berth", "--network", "none", IMAGE, "sleep", "1000").strip()
    try:
        dockerd.ok("stop", "-t", "1", cid)
        assert dockerd.inspect(cid, "{{.State.Status}} {{.State.ExitCode}}") == "exited 137"
    finally:
        dockerd.docker("rm", "-f", cid)


def test_docker_kill(dockerd: Dockerd) -> None:
    cid = dockerd.ok("run", "-d", "--runtime", "berth", "--network", "none", IMAGE, "sh", "-c",
                     'trap "exit 7" HUP; while true; do sleep 1; done').strip()
    try:
        dockerd.ok("kill", "--signal", "HUP", cid)
        assert wait_until(lambda: dockerd.inspect(cid, "{{.State.Status}}") == "exited", 10)
        assert dockerd.inspect(cid, "{{.State.ExitCode}}") == "7"

        dockerd.ok("start", cid)  # the same container again: create + start anew
        assert dockerd.inspect(cid, "{{.State.Status}}") == "running"
        dockerd.ok("kill", cid)
        assert wait_until(lambda: dockerd.inspect(cid, "{{.State.Status}}") == "exited", 10)
        assert dockerd.inspect(cid, "{{.State.ExitCode}}") == "137"
    finally:
        dockerd.docker("rm", "-f", cid)


def test_docker_restart(dockerd: Dockerd) -> None:
    cid = dockerd.ok("run", "-d", "--runtime", "berth", "--network", "none", IMAGE, "sh", "-c", TERM_LOOP).strip()
    try:
        before = dockerd.inspect(cid, "{{.State.Pid}}")
        dockerd.ok("restart", "-t", "5", cid)
        assert dockerd.inspect(cid, "{{.State.Status}}") == "running"
        assert dockerd.inspect(cid, "{{.State.Pid}}") != before
    finally:
        dockerd.docker("rm", "-f", cid)


def test_docker_rm_force(dockerd: Dockerd) -> None:
    cid = dockerd.ok("run", "-d", "--runtime", "berth", "--network", "none", IMAGE, "sleep", "1000").strip()
    pid = int(dockerd.inspect(cid, "{{.State.Pid}}"))
    root = dockerd.runtime_root(cid)
    dockerd.ok("rm", "-f", cid)
    assert cid not in dockerd.ok("ps", "-aq", "--no-trunc")
    assert wait_until(lambda: cleanup.gone(pid), 5), f"pid {pid} still alive after docker rm -f"
    assert not os.path.exists(os.path.join(root, cid)), "the runtime's state outlived docker rm -f"


def test_docker_update(dockerd: Dockerd) -> None:
    cid = dockerd.ok("run", "-d", "--runtime", "berth", "--network", "none", "-m", "64m", IMAGE,
                     "sleep", "1000").strip()
    try:
        dockerd.ok("update", "-m", "128m", "--memory-swap", "256m", "--pids-limit", "20", cid)
        res = dockerd.docker("exec", cid, "sh", "-c",
                             "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max 2>/dev/null"
                             " || cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max")
        assert (res.returncode, res.stdout) == (0, "134217728\n20\n"), dockerd.explain(res)
    finally:
        dockerd.docker("rm", "-f", cid)


def test_docker_host_pid_namespace_children_killed(dockerd: Dockerd) -> None:
    # without its own pid namespace, init's children outlive it; once init has exited the
    # shim runs "kill --all ID 9" on the stopped container, which must still signal them
    cid = dockerd.ok("run", "-d", "--runtime", "berth", "--network", "none", "--pid", "host", IMAGE,
                     "sh", "-c", "sleep 300 & echo $!").strip()
    try:
        assert dockerd.ok("wait", cid).strip() == "0"
        child = int(dockerd.ok("logs", cid).split()[0])
        assert wait_until(lambda: cleanup.gone(child), 5), f"the container's child {child} survived it"
        dockerd.ok("rm", cid)
        shim_errors = [line for line in dockerd.containerd.daemon.log_tail(400).splitlines()
                       if "failed to kill init's children" in line and cid in line]
        assert not shim_errors, "\n".join(shim_errors)
    finally:
        dockerd.docker("rm", "-f", cid)


# --- containerd's ctr -------------------------------------------------------------

def test_ctr_run_echo(containerd: Containerd) -> None:
    cid = unique("echo")
    res = containerd.ctr("run", "--rm", *containerd.run_flags(cid), CTR_IMAGE, cid, "echo", "hi")
    assert (res.returncode, res.stdout) == (0, "hi\n"), containerd.explain(res)


def test_ctr_exit_code_and_loopback(containerd: Containerd) -> None:
    cid = unique("exit")
    res = containerd.ctr("run", "--rm", *containerd.run_flags(cid), CTR_IMAGE, cid,
                         "sh", "-c", "ip addr show lo; exit 7")
    assert res.returncode == 7, containerd.explain(res)
    assert "inet 127.0.0.1/8" in res.stdout, containerd.explain(res)  # lo is up in a new netns, as with runc


def test_ctr_run_tty(containerd: Containerd) -> None:
    cid = unique("tty")
    code, out = run_in_pty(containerd.ctr_argv("run", "--rm", "-t", *containerd.run_flags(cid), CTR_IMAGE, cid,
                                               "sh", "-c", "tty; echo ok; exit 3"))
    assert code == 3, out
    assert "/dev/pts/0\nok\n" in out.replace("\r", ""), out  # ctr leaves our pty cooked: \r\r\n


def test_ctr_detached_exec_kill_rm(containerd: Containerd) -> None:
    cid = unique("det")
    res = containerd.ctr("run", "-d", "--null-io", *containerd.run_flags(cid), CTR_IMAGE, cid, "sh", "-c", TERM_LOOP)
    assert res.returncode == 0, containerd.explain(res)
    try:
        def task_status() -> str:
            for line in containerd.ctr("tasks", "ls").stdout.splitlines()[1:]:
                fields = line.split()
                if fields and fields[0] == cid:
                    return fields[-1]
            return ""

        assert task_status() == "RUNNING"
        state = runtime_state(containerd.runtime_root(), cid)
        assert state["status"] == "running", state

        res = containerd.ctr("tasks", "exec", "--exec-id", "e1", cid, "sh", "-c", "echo from-exec; exit 2")
        assert (res.returncode, res.stdout) == (2, "from-exec\n"), containerd.explain(res)
        code, out = run_in_pty(containerd.ctr_argv("tasks", "exec", "-t", "--exec-id", "e2", cid, "tty"))
        assert "/dev/pts/" in out, out

        ps = containerd.ctr("tasks", "ps", cid)
        assert ps.returncode == 0 and str(state["pid"]) in ps.stdout, containerd.explain(ps)

        containerd.ctr("tasks", "pause", cid)
        assert task_status() == "PAUSED"
        containerd.ctr("tasks", "resume", cid)
        assert task_status() == "RUNNING"

        res = containerd.ctr("tasks", "kill", cid)  # SIGTERM: the trap exits 0
        assert res.returncode == 0, containerd.explain(res)
        assert wait_until(lambda: task_status() == "STOPPED", 10), containerd.ctr("tasks", "ls").stdout
        res = containerd.ctr("tasks", "rm", cid)
        assert res.returncode == 0, containerd.explain(res)
        assert task_status() == ""
        assert not os.path.exists(os.path.join(containerd.runtime_root(), cid)), "the runtime's state outlived task rm"
    finally:
        containerd.ctr("tasks", "kill", "--signal", "SIGKILL", cid)
        containerd.ctr("tasks", "rm", "--force", cid)
        containerd.ctr("containers", "rm", cid)


@pytest.mark.parametrize("fmt", ["docker", "oci"])
def test_docker_load_accepts_berth_save(dockerd: Dockerd, tmp_path: Path, fmt: str) -> None:
    """An image that Berth imported and saved is taken by ``docker load`` with the same ID,
    and runs under docker with berth-runtime."""
    from berth.image.archive import import_rootfs, save
    from berth.image.store import Stores

    name = f"berthsaved/{fmt}:v1"
    stores = Stores(str(tmp_path / "berth-root"))
    try:
        record = import_rootfs(io.BytesIO(busybox_layer()), name, ["CMD [\"sh\"]"], store_root=stores)
        archive = tmp_path / "saved.tar"
        with open(archive, "wb") as out:
            save([name], out, format=fmt, store_root=stores)
    finally:
        stores.close()
    res = dockerd.docker("load", "-i", str(archive))
    assert res.returncode == 0, dockerd.explain(res)
    res = dockerd.docker("image", "inspect", "--format", "{{.Id}}", name)
    assert (res.returncode, res.stdout.strip()) == (0, record.id), dockerd.explain(res)
    res = dockerd.run("--rm", "--network", "none", name, "echo", "saved by berth")
    assert (res.returncode, res.stdout) == (0, "saved by berth\n"), dockerd.explain(res)
    dockerd.docker("rmi", name)
