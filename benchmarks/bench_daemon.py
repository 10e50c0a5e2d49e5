#!/usr/bin/env python3
"""berthd + berth against dockerd + containerd + runc and podman + conmon + runc, side by side.

Every daemon is started for the run with its own temporary roots, sockets, pidfile and
cgroup parent, and stopped by its pid at the end (also on failure or Ctrl-C); mounts
under the roots are undone, the cgroup parents removed, shims and conmons that outlived
their daemon killed by pid. The image is the same everywhere: berthd's embedded
``busybox:latest``, saved with ``berth save`` and given to ``docker load`` and
``podman load``.

1. ``run --rm busybox true``, interleaved (the order rotates every round), after a
   warm-up: ``berth``, the ``docker`` CLI against berthd (the same daemon, Docker's
   client: separates client cost from daemon cost), ``docker`` against dockerd, and
   ``podman --runtime runc run --rm --ulimit … --network none`` (no daemon). Also the
   clients' floor: ``berth version`` and ``docker version`` against berthd. Besides the
   wall time, the CPU time of each run: the client's (with what it reaped), the daemons'
   (with the children they reaped, e.g. the first stage of a shim) and the whole
   machine's (everything busy on every CPU: shims, runtimes, kernel, and anything else
   that runs meanwhile on a shared machine).
2. Resident memory (VmRSS, and Pss from smaps_rollup): berthd idle after startup and one
   run, dockerd + containerd likewise (sum); the per-container process of a running
   ``run -d busybox sleep 60`` (the parent of the container's init: berth-shim,
   containerd-shim-runc-v2, conmon).
3. N containers (default 50) started at once: N concurrent ``run -d busybox sleep 60``,
   timed until the daemon lists N running containers (``GET /containers/json``, what
   ``ps -q`` asks; polled every 0.1 s; podman: ``podman ps -q``); the CPU spent per
   container (clients, daemons, the per-container processes with the runtime commands
   they reaped); the per-container processes' memory while all N run; then one
   ``rm -f`` of all N, timed until none is left.

Containers get no network beyond ``lo`` everywhere: berth with ``--network none``, dockerd
with ``"bridge": "none"`` (its default network is then "none"), podman with
``--network none``; so the host's interfaces and iptables are never touched (bridge
networking is compared in ``bench_network.py``).

    bench_daemon.py [--runs 30] [--warmup 2] [--burst 50] [--burst-rounds 3]
                    [--only berth,docker-berthd,docker,podman] [--out DIR] [--quick] [--json]

As root. ``--quick``: 5 runs, 1 warm-up, 10 containers in one burst round (~15 s). The
default takes about 1.5 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.join(REPO, "src")]

from tests.support.cleanup import (  # noqa: E402
    kill_recorded, recorded_pids, remove_cgroup_parent, start_time, unmount_under)

VENV_BIN = os.path.join(REPO, ".venv", "bin")
BERTH = os.path.join(VENV_BIN, "berth")
BERTHD = os.path.join(VENV_BIN, "berthd")
PYTHON = os.path.join(VENV_BIN, "python")
IMAGE = "busybox"
ULIMITS = ["--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768"]
MiB = 1024 * 1024


def log(msg: str) -> None:
    print(f"bench_daemon: {msg}", file=sys.stderr, flush=True)


class Failed(Exception):
    pass


def run(argv: Sequence[str], *, env: dict[str, str] | None = None, timeout: float = 120,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(list(argv), stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env,
                         timeout=timeout)
    if check and res.returncode != 0:
        raise Failed(f"{' '.join(argv)} exited {res.returncode}: {(res.stderr or res.stdout).strip()[-1500:]}")
    return res


# --- the Docker Engine API over a unix socket (both daemons speak it) ---------------------------

class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self._path)
        self.sock = s


def api(sock: str, method: str, path: str, timeout: float = 30) -> object:
    """Unversioned request (dockerd 20.10 and berthd both take it); parsed JSON or None."""
    conn = _UnixConnection(sock, timeout)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    if resp.status >= 400:
        raise Failed(f"{method} {path}: {resp.status} {body[:300]!r}")
    return json.loads(body) if body.strip() else None


def pings(sock: str) -> bool:
    try:
        return os.path.exists(sock) and api(sock, "GET", "/version", timeout=5) is not None
    except (OSError, Failed, ValueError):
        return False


# --- processes ------------------------------------------------------------------------------------

def proc_status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def vmrss(pid: int) -> int:
    """VmRSS in bytes."""
    return int(proc_status(pid)["VmRSS"].split()[0]) * 1024


def pss(pid: int) -> int:
    """Pss (shared pages divided among their users) in bytes, from smaps_rollup."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    return 0


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_times(pid: int) -> float:
    """CPU seconds of a process and of the children it has reaped (utime+stime+cutime+cstime)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return 0.0
    fields = raw[raw.rindex(b")") + 2:].split()
    return sum(int(x) for x in fields[11:15]) / CLK_TCK


def busy_cpu() -> float:
    """CPU seconds the whole machine has spent busy (all CPUs, everything but idle and iowait)."""
    with open("/proc/stat") as f:
        values = [int(x) for x in f.readline().split()[1:9]]
    return (sum(values) - values[3] - values[4]) / CLK_TCK


def children_cpu() -> float:
    """CPU seconds of this script's reaped children (and what they reaped)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def uss(pid: int) -> int:
    """Private memory (Private_Clean + Private_Dirty) in bytes: what the process alone holds."""
    total = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1]) * 1024
    return total


def ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as f:
        raw = f.read()
    return int(raw[raw.rindex(b")") + 2:].split()[1])


def comm(pid: int) -> str:
    with open(f"/proc/{pid}/comm") as f:
        return f.read().strip()


def exe_name(pid: int) -> str:
    """The process's name: comm, or the basename of argv[0] where comm is cut at 15 characters
    (a script's comm is the script's name, its argv[0] the interpreter's)."""
    name = comm(pid)
    if len(name) < 15:
        return name
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return os.path.basename(f.read().split(b"\0")[0].decode(errors="replace")) or name


def pids_with_arg(needle: str) -> list[tuple[int, int | None]]:
    """(pid, start time) of processes with ``needle`` inside one of their arguments: used only
    with paths private to this run (our roots, our sockets), so they are ours."""
    found = []
    me = os.getpid()
    raw_needle = os.fsencode(needle)
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if any(raw_needle in a for a in argv):
            found.append((int(entry), start_time(int(entry))))
    return found


class Daemon:
    """A daemon of this run: its own session and log; stopped by its pid."""

    def __init__(self, argv: list[str], log_path: str, ready: Callable[[], bool], what: str,
                 env: dict[str, str] | None = None, timeout: float = 60) -> None:
        self.what = what
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = self.tail()
                self.stop()
                raise Failed(f"{what} did not start (exit {self.proc.returncode}):\n{tail}")
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def tail(self, lines: int = 15) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return "\n".join(f.read().decode(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 30) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


# --- the three stacks -------------------------------------------------------------------------------

class Stack:
    name = ""
    cgroup_parent = ""

    def run_argv(self, *args: str) -> list[str]:
        """``run ARGS`` (options, image, command) with this stack's client."""
        raise NotImplementedError

    def client_env(self) -> dict[str, str] | None:
        return None

    def running_ids(self) -> list[str]:
        raise NotImplementedError

    def all_ids(self) -> list[str]:
        raise NotImplementedError

    def rm_argv(self, ids: list[str]) -> list[str]:
        raise NotImplementedError

    def container_pid(self, cid: str) -> int:
        raise NotImplementedError

    def daemon_pids(self) -> dict[str, int]:
        return {}

    def remove_all(self) -> None:
        raise NotImplementedError

    def shutdown(self) -> None:
        raise NotImplementedError


class DockerAPIStack(Stack):
    """A daemon serving the Docker Engine API on ``self.sock``."""

    sock = ""

    def running_ids(self) -> list[str]:
        return [c["Id"] for c in api(self.sock, "GET", "/containers/json")]  # type: ignore[union-attr]

    def all_ids(self) -> list[str]:
        return [c["Id"] for c in api(self.sock, "GET", "/containers/json?all=1")]  # type: ignore[union-attr]

    def container_pid(self, cid: str) -> int:
        return int(api(self.sock, "GET", f"/containers/{cid}/json")["State"]["Pid"])  # type: ignore[index]

    def remove_all(self) -> None:
        for cid in self.all_ids():
            try:
                api(self.sock, "DELETE", f"/containers/{cid}?force=1", timeout=60)
            except (OSError, Failed):
                pass


class BerthStack(DockerAPIStack):
    name = "berth"

    def __init__(self, root: str, token: str) -> None:
        self.root = root
        self.data = os.path.join(root, "data")
        self.exec_root = os.path.join(root, "exec")
        self.sock = os.path.join(self.exec_root, "berth.sock")
        self.cgroup_parent = f"/bench-berth-{token}"
        self.daemon: Daemon | None = None

    def start(self) -> None:
        os.makedirs(self.root)
        run([PYTHON, "-m", "berth.daemon.default_image", "--data-root", self.data],
            env=dict(os.environ, PYTHONPATH=os.path.join(REPO, "src")))
        self.daemon = Daemon([BERTHD, "--data-root", self.data, "--exec-root", self.exec_root,
                              "--cgroup-parent", self.cgroup_parent],
                             os.path.join(self.root, "berthd.log"), lambda: pings(self.sock), "berthd")

    def argv(self, *args: str) -> list[str]:
        return [BERTH, "-H", f"unix://{self.sock}", *args]

    def run_argv(self, *args: str) -> list[str]:
        return self.argv("run", "--network", "none", *args)

    def rm_argv(self, ids: list[str]) -> list[str]:
        return self.argv("rm", "-f", *ids)

    def daemon_pids(self) -> dict[str, int]:
        return {"berthd": self.daemon.pid} if self.daemon else {}

    def shutdown(self) -> None:
        try:
            if self.daemon is not None and self.daemon.proc.poll() is None:
                self.remove_all()
        except (OSError, Failed):
            pass
        finally:
            if self.daemon is not None:
                self.daemon.stop()
        # shims outlive berthd by design: kill those this run started (recorded pid + start time)
        shims = os.path.join(self.exec_root, "shims")
        recorded = []
        for d in (os.listdir(shims) if os.path.isdir(shims) else []):
            try:
                with open(os.path.join(shims, d, "shim.pid")) as f:
                    data = json.load(f)
                recorded.append((int(data["pid"]), data.get("start_time")))
            except (OSError, ValueError, KeyError, TypeError):
                pass
        kill_recorded(recorded)
        kill_recorded(recorded_pids(self.exec_root))


class DockerStack(DockerAPIStack):
    """dockerd 20.10 on its own containerd, both with private roots; runc as the runtime."""

    name = "docker"

    def __init__(self, root: str, token: str) -> None:
        self.root = root
        self.ctd_sock = os.path.join(root, "containerd", "containerd.sock")
        self.sock = os.path.join(root, "docker.sock")
        self.cgroup_parent = f"/bench-docker-{token}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        self.env["DOCKER_CONFIG"] = os.path.join(root, "cli")  # the CLI writes nothing under ~/.docker
        self.env["DOCKER_CLI_HINTS"] = "false"
        self.containerd: Daemon | None = None
        self.dockerd: Daemon | None = None

    def start(self) -> None:
        ctd = os.path.join(self.root, "containerd")
        os.makedirs(ctd)
        config = os.path.join(ctd, "config.toml")
        with open(config, "w") as f:
            f.write(f'version = 2\nroot = "{ctd}/root"\nstate = "{ctd}/state"\n'
                    'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
                    f'[grpc]\n  address = "{self.ctd_sock}"\n[ttrpc]\n  address = "{self.ctd_sock}.ttrpc"\n'
                    f'[debug]\n  address = "{ctd}/debug.sock"\n[metrics]\n  address = ""\n')
        self.containerd = Daemon(["containerd", "--config", config], os.path.join(ctd, "containerd.log"),
                                 lambda: os.path.exists(self.ctd_sock) and run(
                                     ["ctr", "--address", self.ctd_sock, "version"], check=False,
                                     timeout=10).returncode == 0, "containerd")
        daemon_json = {
            "data-root": f"{self.root}/data", "exec-root": f"{self.root}/exec",
            "pidfile": f"{self.root}/docker.pid", "hosts": [f"unix://{self.sock}"],
            "containerd": self.ctd_sock, "storage-driver": "overlay2", "cgroup-parent": self.cgroup_parent,
            # leave the host's networking alone: no docker0, no iptables, no forwarding
            "bridge": "none", "iptables": False, "ip6tables": False, "ip-masq": False, "ip-forward": False,
            "userland-proxy": False, "shutdown-timeout": 2,
        }
        with open(os.path.join(self.root, "daemon.json"), "w") as f:
            json.dump(daemon_json, f)
        self.dockerd = Daemon(["dockerd", "--config-file", os.path.join(self.root, "daemon.json")],
                              os.path.join(self.root, "dockerd.log"), lambda: pings(self.sock), "dockerd")

    def argv(self, *args: str) -> list[str]:
        return ["docker", "-H", f"unix://{self.sock}", *args]

    def client_env(self) -> dict[str, str]:
        return self.env

    def run_argv(self, *args: str) -> list[str]:
        return self.argv("run", "--network", "none", *args)

    def rm_argv(self, ids: list[str]) -> list[str]:
        return self.argv("rm", "-f", *ids)

    def daemon_pids(self) -> dict[str, int]:
        pids = {}
        if self.dockerd:
            pids["dockerd"] = self.dockerd.pid
        if self.containerd:
            pids["containerd"] = self.containerd.pid
        return pids

    def shutdown(self) -> None:
        try:
            if self.dockerd is not None and self.dockerd.proc.poll() is None:
                self.remove_all()
        except (OSError, Failed):
            pass
        finally:
            if self.dockerd is not None:
                self.dockerd.stop()
            if self.containerd is not None:
                self.containerd.stop()
        # containerd's shims outlive it; they carry our socket's path in their arguments
        sockets = []
        for d, _dirs, files in os.walk(os.path.join(self.root, "containerd", "state")):
            if "address" in files:
                try:
                    with open(os.path.join(d, "address")) as f:
                        sockets.append(f.read().strip().removeprefix("unix://"))
                except OSError:
                    pass
        if kill_recorded(pids_with_arg(self.ctd_sock)):
            for path in sockets:
                try:
                    os.unlink(path)
                except OSError:
                    pass


class PodmanStack(Stack):
    """podman with its own storage, runroot, tmpdir and containers.conf; runc; no daemon."""

    name = "podman"

    def __init__(self, root: str, token: str) -> None:
        self.root = root
        self.cgroup_parent = f"/bench-podman-{token}"
        self.env = dict(os.environ, CONTAINERS_CONF=os.path.join(root, "containers.conf"),
                        CONTAINERS_STORAGE_CONF=os.path.join(root, "storage.conf"))
        self.globals = ["podman", "--root", f"{root}/storage", "--runroot", f"{root}/run", "--tmpdir",
                        f"{root}/tmp", "--storage-driver", "overlay", "--runtime", "runc",
                        "--cgroup-manager", "cgroupfs", "--events-backend", "file"]

    def start(self) -> None:
        os.makedirs(self.root)
        with open(self.env["CONTAINERS_CONF"], "w") as f:
            f.write('[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n'
                    '[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n')
        with open(self.env["CONTAINERS_STORAGE_CONF"], "w") as f:
            f.write(f'[storage]\ndriver = "overlay"\nrunroot = "{self.root}/run"\ngraphroot = "{self.root}/storage"\n')

    def argv(self, *args: str) -> list[str]:
        return [*self.globals, *args]

    def client_env(self) -> dict[str, str]:
        return self.env

    def run_argv(self, *args: str) -> list[str]:
        return self.argv("run", "--network", "none", "--cgroup-parent", self.cgroup_parent, *ULIMITS, *args)

    def running_ids(self) -> list[str]:
        return run(self.argv("ps", "-q", "--no-trunc"), env=self.env).stdout.split()

    def all_ids(self) -> list[str]:
        return run(self.argv("ps", "-aq", "--no-trunc"), env=self.env).stdout.split()

    def rm_argv(self, ids: list[str]) -> list[str]:
        return self.argv("rm", "-f", "-t", "0", *ids)  # podman's rm -f stops with SIGTERM and a 10 s grace

    def remove_all(self) -> None:
        run(self.argv("rm", "-af", "-t", "0"), env=self.env, check=False, timeout=120)

    def container_pid(self, cid: str) -> int:
        return int(run(self.argv("inspect", "--format", "{{.State.Pid}}", cid), env=self.env).stdout.strip())

    def shutdown(self) -> None:
        try:
            self.remove_all()
        except (OSError, subprocess.TimeoutExpired):
            pass
        # conmons (and their exit commands) carry our roots in their arguments
        kill_recorded(pids_with_arg(f"{self.root}/"))


# --- measurements -----------------------------------------------------------------------------------

def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


@dataclass
class Series:
    name: str
    argv: list[str]
    env: dict[str, str] | None
    daemons: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    cpu: dict[str, list[float]] = field(default_factory=dict)
    failure: str | None = None

    def once(self, keep: bool) -> float:
        """One run; with ``keep``, its time and CPU (the client's, the daemon's, the machine's) are recorded."""
        c0, d0, s0 = children_cpu(), sum(cpu_times(p) for p in self.daemons), busy_cpu()
        t0 = time.perf_counter()
        res = subprocess.run(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, env=self.env, timeout=120)
        elapsed = time.perf_counter() - t0
        c1, d1, s1 = children_cpu(), sum(cpu_times(p) for p in self.daemons), busy_cpu()
        if res.returncode != 0:
            raise Failed(f"exit {res.returncode}: {res.stderr.decode(errors='replace').strip()[-500:]}")
        if keep:
            self.times.append(elapsed)
            for key, value in (("client", c1 - c0), ("daemon", d1 - d0), ("machine", s1 - s0)):
                self.cpu.setdefault(key, []).append(value)
        return elapsed

    def summary(self) -> dict:
        if not self.times:
            return {"runs": 0, "failure": self.failure}
        # CPU: means (the daemon's and the machine's counters tick in 10 ms steps)
        return {"runs": len(self.times), "median_s": statistics.median(self.times), "p90_s": pct(self.times, 90),
                "min_s": min(self.times), "cpu_mean_s": {k: statistics.mean(v) for k, v in self.cpu.items()},
                "failure": self.failure}


def bench_runs(series: list[Series], runs: int, warmup: int) -> None:
    """Warm-up rounds, then ``runs`` rounds; each round runs every series once, starting
    one further along each time."""
    for r in range(warmup + runs):
        live = [s for s in series if s.failure is None]
        if not live:
            return
        shift = r % len(live)
        for s in live[shift:] + live[:shift]:
            try:
                s.once(keep=r >= warmup)
            except (Failed, OSError, subprocess.TimeoutExpired) as e:
                s.failure = str(e).splitlines()[0][:400] if str(e) else type(e).__name__
                log(f"{s.name} failed, dropped: {s.failure}")
        if r >= warmup and (r - warmup + 1) % 5 == 0:
            log(f"run round {r - warmup + 1}/{runs}: " + ", ".join(
                f"{s.name} {statistics.median(s.times):.3f}" for s in series if s.times))


def memory_of(pids: dict[str, int]) -> dict[str, dict[str, int]]:
    return {name: {"vmrss": vmrss(pid), "pss": pss(pid)} for name, pid in pids.items()}


def per_container_process(stack: Stack, cid: str) -> dict:
    """The container's supervisor: the parent of its init (berth-shim, containerd-shim, conmon)."""
    init = stack.container_pid(cid)
    sup = ppid(init)
    return {"pid": sup, "comm": exe_name(sup), "vmrss": vmrss(sup), "pss": pss(sup), "uss": uss(sup)}


def burst(stack: Stack, n: int, poll: float = 0.1, timeout: float = 300) -> dict:
    """n concurrent ``run -d busybox sleep 60``, timed until n are running; the supervisors'
    memory; then one ``rm -f`` of all of them, timed until none is left."""
    env = stack.client_env()
    argv = stack.run_argv("-d", IMAGE, "sleep", "60")
    before = set(stack.all_ids())
    if before:
        raise Failed(f"{stack.name}: {len(before)} containers before the burst")
    daemons = list(stack.daemon_pids().values())
    c0, d0, s0 = children_cpu(), sum(cpu_times(p) for p in daemons), busy_cpu()
    t0 = time.perf_counter()
    procs = [subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=env) for _ in range(n)]
    clients_done = running_at = None
    deadline = time.monotonic() + timeout
    while clients_done is None or running_at is None:
        if clients_done is None and all(p.poll() is not None for p in procs):
            clients_done = time.perf_counter() - t0
        if running_at is None and len(stack.running_ids()) >= n:
            running_at = time.perf_counter() - t0
        if clients_done is not None and running_at is None and len(stack.all_ids()) < n and \
                any(p.returncode for p in procs):
            break  # some runs failed: n will never run
        if time.monotonic() > deadline:
            break
        time.sleep(poll)
    ids, errors = [], []
    for p in procs:
        out, err = p.communicate(timeout=60)
        if p.returncode == 0:
            ids.append(out.decode().strip().splitlines()[-1])
        else:
            errors.append(err.decode(errors="replace").strip()[-300:])
    c1, d1, s1 = children_cpu(), sum(cpu_times(p) for p in daemons), busy_cpu()
    result: dict = {"n": n, "clients_done_s": clients_done, "all_running_s": running_at,
                    "failed_runs": len(errors), "first_error": errors[0] if errors else None}
    # memory and CPU of the supervisors with n containers running
    sups = []
    for cid in stack.running_ids():
        try:
            sups.append(per_container_process(stack, cid))
        except (OSError, Failed, ValueError, KeyError):
            pass
    # CPU seconds per container: the clients, the daemons (with the children they reaped: the
    # shims' first stage), the supervisors (with the runtime commands they reaped), the machine
    result["start_cpu_per_container_s"] = {
        "client": (c1 - c0) / n, "daemon": (d1 - d0) / n,
        "supervisor": sum(cpu_times(s["pid"]) for s in sups) / n if sups else None,
        "machine": (s1 - s0) / n}
    if sups:
        result["supervisors"] = len(sups)
        result["supervisor_mean_vmrss"] = statistics.mean(s["vmrss"] for s in sups)
        result["supervisor_mean_pss"] = statistics.mean(s["pss"] for s in sups)
        result["supervisor_mean_uss"] = statistics.mean(s["uss"] for s in sups)
        result["supervisor_comm"] = sorted({s["comm"] for s in sups})
    result["daemons_with_n"] = memory_of(stack.daemon_pids())
    ids = ids or stack.all_ids()
    c0, d0, s0 = children_cpu(), sum(cpu_times(p) for p in daemons), busy_cpu()
    t1 = time.perf_counter()
    res = subprocess.run(stack.rm_argv(ids), stdin=subprocess.DEVNULL, capture_output=True, env=env,
                         timeout=timeout)
    while stack.all_ids() and time.monotonic() < deadline + timeout:
        time.sleep(poll)
    result["rm_s"] = time.perf_counter() - t1
    c1, d1, s1 = children_cpu(), sum(cpu_times(p) for p in daemons), busy_cpu()
    result["rm_cpu_per_container_s"] = {"client": (c1 - c0) / n, "daemon": (d1 - d0) / n, "machine": (s1 - s0) / n}
    if res.returncode != 0:
        result["rm_error"] = res.stderr.decode(errors="replace").strip()[-300:]
    left = stack.all_ids()
    if left:
        raise Failed(f"{stack.name}: {len(left)} containers left after rm -f")
    return result


# --- main -------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=None, help="timed runs of each (default 30; --quick 5)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed rounds first (default 2; --quick 1)")
    parser.add_argument("--burst", type=int, default=None, help="containers started at once (default 50; --quick 10)")
    parser.add_argument("--burst-rounds", type=int, default=None, help="bursts per stack (default 3; --quick 1)")
    parser.add_argument("--only", default="berth,docker-berthd,docker,podman",
                        help="stacks: berth, docker-berthd (the docker CLI on berthd), docker, podman")
    parser.add_argument("--out", metavar="DIR", default="/var/tmp", help="where the roots go (default %(default)s)")
    parser.add_argument("--quick", action="store_true", help="fewer runs, a small burst: a smoke run")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    runs = args.runs if args.runs is not None else (5 if args.quick else 30)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    burst_n = args.burst if args.burst is not None else (10 if args.quick else 50)
    burst_rounds = args.burst_rounds if args.burst_rounds is not None else (1 if args.quick else 3)
    chosen = [c for c in args.only.split(",") if c]
    for c in chosen:
        if c not in ("berth", "docker-berthd", "docker", "podman"):
            parser.error(f"unknown stack {c!r}")
    if os.geteuid() != 0:
        log("run as root (daemons, namespaces, cgroups)")
        return 2
    if "docker-berthd" in chosen and "berth" not in chosen:
        chosen.insert(0, "berth")

    token = secrets.token_hex(3)
    base = tempfile.mkdtemp(prefix="bench-daemon-", dir=args.out)
    stacks: dict[str, Stack] = {}
    skipped: dict[str, str] = {}
    result: dict = {"machine": machine(), "runs": runs, "warmup": warmup, "burst_n": burst_n,
                    "burst_rounds": burst_rounds, "skipped": skipped}

    def on_term(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    try:
        # --- setup: berthd, the image tar, dockerd, podman -------------------------------------
        berth = BerthStack(os.path.join(base, "berth"), token)
        stacks["berth"] = berth
        berth.start()
        tar = os.path.join(base, "busybox.tar")
        run(berth.argv("save", "-o", tar, IMAGE))
        log(f"berthd up (pid {berth.daemon.pid}); {IMAGE} saved to {tar}")  # type: ignore[union-attr]
        if "docker" in chosen or "docker-berthd" in chosen:
            missing = [b for b in ("dockerd", "containerd", "ctr", "docker") if shutil.which(b) is None]
            if missing:
                for c in ("docker", "docker-berthd"):
                    if c in chosen:
                        skipped[c] = f"{', '.join(missing)} not installed"
                        chosen.remove(c)
        if "docker" in chosen:
            docker = DockerStack(os.path.join(base, "docker"), token)
            stacks["docker"] = docker
            try:
                docker.start()
                run(docker.argv("load", "-q", "-i", tar), env=docker.env)
                pids = docker.daemon_pids()
                log(f"dockerd up (pid {pids['dockerd']}, containerd {pids['containerd']}); image loaded")
            except (Failed, OSError, subprocess.TimeoutExpired) as e:
                skipped["docker"] = str(e)[:600]
                chosen.remove("docker")
                log(f"docker skipped: {e}")
        if "podman" in chosen:
            podman = PodmanStack(os.path.join(base, "podman"), token)
            stacks["podman"] = podman
            try:
                if shutil.which("podman") is None:
                    raise Failed("podman not installed")
                podman.start()
                run(podman.argv("load", "-q", "-i", tar), env=podman.env)
                run(podman.run_argv("--rm", IMAGE, "true"), env=podman.env)
                log("podman: image loaded, a container ran")
            except (Failed, OSError, subprocess.TimeoutExpired) as e:
                skipped["podman"] = str(e)[:600]
                chosen.remove("podman")
                log(f"podman skipped: {e}")

        # --- 1. run --rm busybox true, interleaved ---------------------------------------------
        docker_env = DockerStack(os.path.join(base, "docker-cli"), token).env  # a CLI config of our own
        series: list[Series] = []
        berthd_pids = list(berth.daemon_pids().values())
        if "berth" in chosen:
            series.append(Series("berth", berth.run_argv("--rm", IMAGE, "true"), None, berthd_pids))
        if "docker-berthd" in chosen:
            series.append(Series("docker-berthd",
                                 ["docker", "-H", f"unix://{berth.sock}", "run", "--rm", "--network", "none",
                                  IMAGE, "true"],
                                 docker_env, berthd_pids))
        if "docker" in chosen:
            d = stacks["docker"]
            series.append(Series("docker", d.run_argv("--rm", IMAGE, "true"), d.client_env(),
                                 list(d.daemon_pids().values())))
        if "podman" in chosen:
            p = stacks["podman"]
            series.append(Series("podman", p.run_argv("--rm", IMAGE, "true"), p.client_env()))
        # the clients' floor: one small request (GET /version) against berthd
        if "berth" in chosen:
            series.append(Series("berth version", berth.argv("version"), None, berthd_pids))
        if "docker-berthd" in chosen:
            series.append(Series("docker version (berthd)", ["docker", "-H", f"unix://{berth.sock}", "version"],
                                 docker_env, berthd_pids))
        # --- 2a. the daemons idle, after start-up and one run (which also shows the network
        # interfaces a container gets: the same work everywhere means only lo)
        memory: dict = {}
        interfaces = {}
        for name in ("berth", "docker", "podman"):
            if name in chosen:
                stack = stacks[name]
                out = run(stack.run_argv("--rm", IMAGE, "cat", "/proc/net/dev"), env=stack.client_env()).stdout
                interfaces[name] = [line.split(":")[0].strip() for line in out.splitlines() if ":" in line]
        result["container_interfaces"] = interfaces
        time.sleep(1.0)
        for name in ("berth", "docker"):
            if name in chosen:
                memory.setdefault("idle_after_one_run", {}).update(memory_of(stacks[name].daemon_pids()))

        log(f"run --rm {IMAGE} true: {warmup} warm-up + {runs} rounds of {', '.join(s.name for s in series)}")
        bench_runs(series, runs, warmup)
        result["run"] = {s.name: s.summary() for s in series}
        for name in ("berth", "docker"):
            if name in stacks and name in chosen:
                memory.setdefault("idle_after_runs", {}).update(memory_of(stacks[name].daemon_pids()))

        # --- 2b. one running container's supervisor --------------------------------------------
        supervisors = {}
        for name in ("berth", "docker", "podman"):
            if name not in chosen:
                continue
            stack = stacks[name]
            try:
                out = run(stack.run_argv("-d", IMAGE, "sleep", "60"), env=stack.client_env()).stdout
                cid = out.strip().splitlines()[-1]
                time.sleep(1.0)  # let it settle
                supervisors[name] = per_container_process(stack, cid)
                if name in ("berth", "docker"):
                    memory.setdefault("daemons_one_running", {}).update(memory_of(stack.daemon_pids()))
                run(stack.rm_argv([cid]), env=stack.client_env())
            except (Failed, OSError, ValueError, KeyError, subprocess.TimeoutExpired) as e:
                supervisors[name] = {"failure": str(e)[:400]}
        memory["supervisor"] = supervisors
        result["memory"] = memory
        log("memory: " + ", ".join(f"{n} {v.get('comm', '?')} {v.get('vmrss', 0) / MiB:.1f} MiB"
                                   for n, v in supervisors.items()))

        # --- 3. N at once ----------------------------------------------------------------------
        bursts: dict[str, list[dict]] = {}
        order = [n for n in ("berth", "docker", "podman") if n in chosen]
        for r in range(burst_rounds):
            for name in (order if r % 2 == 0 else list(reversed(order))):
                if name in bursts and bursts[name] and "failure" in bursts[name][-1]:
                    continue
                try:
                    b = burst(stacks[name], burst_n)
                except (Failed, OSError, subprocess.TimeoutExpired) as e:
                    b = {"failure": str(e)[:400]}
                    try:
                        stacks[name].remove_all()
                    except (Failed, OSError, subprocess.TimeoutExpired):
                        pass
                bursts.setdefault(name, []).append(b)
                log(f"burst {r + 1}: {name} " + (
                    f"{b['all_running_s']:.2f} s to {burst_n} running, rm -f {b['rm_s']:.2f} s"
                    if b.get("all_running_s") is not None else f"failed: {b.get('failure') or b.get('first_error')}"))
        result["burst_runs"] = bursts
        result["burst"] = {name: summarize_bursts(bs) for name, bs in bursts.items()}
    finally:
        for name in ("podman", "docker", "berth"):
            if name in stacks:
                try:
                    stacks[name].shutdown()
                except Exception as e:  # noqa: BLE001 - cleanup goes on
                    log(f"shutting down {name}: {e}")
        left = []
        for stack in stacks.values():
            left += remove_cgroup_parent(stack.cgroup_parent)
        unmount_under([base])
        shutil.rmtree(base, ignore_errors=True)
        if left:
            log(f"could not remove cgroups: {', '.join(left)}")

    result["ratios"] = ratios(result)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        report(result)
    return 0


def summarize_bursts(bs: list[dict]) -> dict:
    ok = [b for b in bs if b.get("all_running_s") is not None]
    if not ok:
        return {"failure": (bs[-1].get("failure") or bs[-1].get("first_error")) if bs else "not run"}
    out = {"rounds": len(ok), "all_running_s": statistics.median(b["all_running_s"] for b in ok),
           "rm_s": statistics.median(b["rm_s"] for b in ok),
           "failed_runs": sum(b["failed_runs"] for b in ok)}
    for key in ("start_cpu_per_container_s", "rm_cpu_per_container_s"):
        parts = ok[0][key].keys()
        out[key] = {p: statistics.median(b[key][p] for b in ok) if ok[0][key][p] is not None else None for p in parts}
    if all("supervisor_mean_vmrss" in b for b in ok):
        out["supervisor_mean_vmrss"] = statistics.median(b["supervisor_mean_vmrss"] for b in ok)
        out["supervisor_mean_pss"] = statistics.median(b["supervisor_mean_pss"] for b in ok)
        out["supervisor_mean_uss"] = statistics.median(b["supervisor_mean_uss"] for b in ok)
    return out


def ratios(result: dict) -> dict:
    out: dict = {}
    run_ = result.get("run", {})
    med = {n: s["median_s"] for n, s in run_.items() if s.get("runs")}
    for a, b in (("berth", "docker"), ("berth", "podman"), ("docker-berthd", "docker"), ("berth", "docker-berthd")):
        if a in med and b in med:
            out[f"run {a}/{b}"] = med[a] / med[b]
    mem = result.get("memory", {})
    idle = mem.get("idle_after_one_run", {})
    if "berthd" in idle and "dockerd" in idle and "containerd" in idle:
        for kind in ("vmrss", "pss"):
            out[f"idle daemon {kind} berthd/(dockerd+containerd)"] = \
                idle["berthd"][kind] / (idle["dockerd"][kind] + idle["containerd"][kind])
    sup = mem.get("supervisor", {})
    for other in ("docker", "podman"):
        if "vmrss" in sup.get("berth", {}) and "vmrss" in sup.get(other, {}):
            for kind in ("vmrss", "pss", "uss"):
                out[f"supervisor {kind} berth-shim/{sup[other]['comm']}"] = sup["berth"][kind] / sup[other][kind]
    bursts = result.get("burst", {})
    for other in ("docker", "podman"):
        if "all_running_s" in bursts.get("berth", {}) and "all_running_s" in bursts.get(other, {}):
            out[f"burst start berth/{other}"] = bursts["berth"]["all_running_s"] / bursts[other]["all_running_s"]
            out[f"burst rm berth/{other}"] = bursts["berth"]["rm_s"] / bursts[other]["rm_s"]
            for kind in ("vmrss", "pss", "uss"):
                key = f"supervisor_mean_{kind}"
                if key in bursts["berth"] and key in bursts[other]:
                    out[f"burst per-container {kind} berth/{other}"] = bursts["berth"][key] / bursts[other][key]
    return out


def machine() -> dict:
    cgroup = "v2" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else "v1"
    versions = {}
    for name, argv in (("docker", ["dockerd", "--version"]), ("containerd", ["containerd", "--version"]),
                       ("runc", ["runc", "--version"]), ("podman", ["podman", "--version"]),
                       ("conmon", ["conmon", "--version"])):
        try:
            versions[name] = subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            pass
    return {"cpus": os.cpu_count(), "cgroup": cgroup, "kernel": os.uname().release, "versions": versions}


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}"


def report(result: dict) -> None:
    m = result["machine"]
    print(f"machine: {m['cpus']} cpus, cgroup {m['cgroup']}, kernel {m['kernel']}")
    if result.get("container_interfaces"):
        print("network interfaces in a container: " + ", ".join(
            f"{n} {'+'.join(i) or '-'}" for n, i in result["container_interfaces"].items()))
    print(f"\n1. run --rm {IMAGE} true: {result['runs']} runs each, interleaved, "
          f"after {result['warmup']} warm-up rounds")
    print(f"  {'':26s} {'median':>7s} {'p90':>7s} {'min':>7s}   CPU ms per run (mean): client, daemon, whole machine")
    for name, s in result.get("run", {}).items():
        if s.get("runs"):
            cpu = s["cpu_mean_s"]
            print(f"  {name:26s} {s['median_s']:7.3f} {s['p90_s']:7.3f} {s['min_s']:7.3f} s "
                  f"{_ms(cpu['client']):>5s} {_ms(cpu['daemon']):>5s} {_ms(cpu['machine']):>5s}")
        else:
            print(f"  {name:26s} failed: {s.get('failure')}")
    mem = result.get("memory", {})
    print("\n2. resident memory, MiB (VmRSS / Pss; per container also private memory, USS)")
    for label, key in (("daemons idle after one run", "idle_after_one_run"),
                       ("daemons idle after the run series", "idle_after_runs"),
                       ("daemons with one container running", "daemons_one_running")):
        if mem.get(key):
            print(f"  {label}: " + ", ".join(f"{n} {v['vmrss'] / MiB:.1f} / {v['pss'] / MiB:.1f}"
                                             for n, v in mem[key].items()))
    for name, v in mem.get("supervisor", {}).items():
        if "vmrss" in v:
            print(f"  per container, {name:7s} {v['comm']:24s} {v['vmrss'] / MiB:.1f} / {v['pss'] / MiB:.1f} / "
                  f"USS {v['uss'] / MiB:.1f}")
        else:
            print(f"  per container, {name:7s} failed: {v.get('failure')}")
    print(f"\n3. {result['burst_n']} containers at once (median of {result['burst_rounds']} rounds)")
    for name, b in result.get("burst", {}).items():
        if "all_running_s" not in b:
            print(f"  {name:7s} failed: {b.get('failure')}")
            continue
        print(f"  {name:7s} all running after {b['all_running_s']:.2f} s, rm -f of all {b['rm_s']:.2f} s"
              f" ({b['failed_runs']} failed runs)")
        sc, rc = b["start_cpu_per_container_s"], b["rm_cpu_per_container_s"]
        print(f"          CPU ms per container, start: client {_ms(sc['client'])}, daemon {_ms(sc['daemon'])}, "
              f"supervisor+runtime {_ms(sc['supervisor'])}, whole machine {_ms(sc['machine'])}; "
              f"rm: client {_ms(rc['client'])}, daemon {_ms(rc['daemon'])}, whole machine {_ms(rc['machine'])}")
        if "supervisor_mean_vmrss" in b:
            print(f"          per-container process with {result['burst_n']} running: "
                  f"{b['supervisor_mean_vmrss'] / MiB:.1f} MiB VmRSS, {b['supervisor_mean_pss'] / MiB:.1f} MiB Pss, "
                  f"{b['supervisor_mean_uss'] / MiB:.1f} MiB USS")
    print("\nratios")
    for k, v in result.get("ratios", {}).items():
        print(f"  {k:55s} {v:.2f}")
    for name, why in result.get("skipped", {}).items():
        print(f"skipped {name}: {why}")


if __name__ == "__main__":
    sys.exit(main())
