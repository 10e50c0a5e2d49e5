#!/usr/bin/env python3
"""Container networking, berthd against dockerd 20.10, side by side.

1. Start time: ``docker run -d busybox sleep 60`` (the docker CLI for both daemons, so
   the client is the same), timed until the CLI returns (the container runs), on the
   default bridge network and with ``--network none``; the container is removed
   (untimed) before the next run. Also ``run --rm busybox true`` (start, exit, teardown).
   Runs are interleaved: berth bridge, berth none, docker bridge, docker none, the
   order rotating every round, after a warm-up.
2. Throughput through a published port: a busybox ``httpd`` in a container published
   on 127.0.0.1, ``--requests`` sequential HTTP GETs (a new connection each: busybox
   httpd closes it) and the same number spread over ``--concurrency`` threads; requests
   per second. berthd publishes with the CNI portmap plugin (DNAT in the kernel, also
   for 127.0.0.1); dockerd with its defaults (DNAT, and docker-proxy, the userland proxy,
   for connections to 127.0.0.1).

Both daemons run for the benchmark with their own temporary roots (bench_daemon.py's
helpers). dockerd gets its default bridge network and iptables, on a bridge of its own:
this script makes a bridge ``bbench-<hex>`` with a free private /24 (10.213.250.0/24 or
the next one away from the host's routes) and starts dockerd with ``--bridge`` on it,
``--iptables``; at the end dockerd is stopped, and the bridge and what dockerd left in
iptables are removed: the ``DOCKER*`` chains and the rules that jump to them (only if no
such chain existed before the run: another dockerd's are left alone), and every rule
naming this bridge or subnet; the FORWARD policy is put back as it was. berthd's default
bridge is its own too (``berth-<hash of its exec root>``), removed at its shutdown.
Test traffic only goes to 127.0.0.1.

    bench_network.py [--runs 20] [--warmup 2] [--requests 2000] [--concurrency 8]
                     [--only berth,docker] [--json]

As root, with dockerd, containerd and the docker CLI installed (scripts/setup.sh
--with-peers). Without dockerd, berthd's figures alone are printed.
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import json
import os
import secrets
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.join(REPO, "src"), os.path.join(REPO, "benchmarks")]

from bench_daemon import BerthStack, Daemon, DockerStack, Failed, pings, run  # noqa: E402

from tests.support.cleanup import remove_cgroup_parent, unmount_under  # noqa: E402

IMAGE = "busybox"
HTTPD = "mkdir -p /www && echo hello > /www/index.html && exec httpd -f -p 8080 -h /www"


def log(msg: str) -> None:
    print(f"bench_network: {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- dockerd with its bridge network --------------------------------------------------------------

def _iptables_save(table: str) -> list[str]:
    return subprocess.run(["iptables-save", "-t", table], capture_output=True, text=True).stdout.splitlines()


def _chains(lines: list[str]) -> set[str]:
    return {line[1:].split()[0] for line in lines if line.startswith(":")}


class DockerBridge:
    """A bridge with a free private /24 for dockerd's default network, and the removal of
    what dockerd leaves in iptables."""

    def __init__(self, token: str) -> None:
        from berth.network.conflist import host_routes

        self.name = f"bbench-{token[:6]}"
        routes = [r for r in host_routes() if r.version == 4]
        for candidate in list(ipaddress.ip_network("10.213.0.0/16").subnets(new_prefix=24))[250:]:
            if not any(candidate.overlaps(r) for r in routes):
                self.subnet = candidate
                break
        else:
            raise Failed("no free 10.213.x.0/24 for dockerd's bridge")
        self.before = {t: _chains(_iptables_save(t)) for t in ("filter", "nat")}
        self.policy = next((line.split()[1] for line in _iptables_save("filter") if line.startswith(":FORWARD ")),
                           "ACCEPT")

    def create(self) -> None:
        run(["ip", "link", "add", self.name, "type", "bridge"])
        run(["ip", "addr", "add", f"{self.subnet[1]}/{self.subnet.prefixlen}", "dev", self.name])
        run(["ip", "link", "set", self.name, "up"])

    def remove(self) -> None:
        subprocess.run(["ip", "link", "del", self.name], capture_output=True)
        subnet = str(self.subnet)
        for table in ("filter", "nat"):
            lines = _iptables_save(table)
            new_chains = {c for c in _chains(lines) if c.startswith("DOCKER") and c not in self.before[table]}
            rules = []
            for line in lines:
                if not line.startswith("-A "):
                    continue
                words = shlex.split(line)
                target = words[words.index("-j") + 1] if "-j" in words else ""
                if words[1] in new_chains or target in new_chains or self.name in words or subnet in line \
                        or str(self.subnet[1]) in line:
                    rules.append(line)
            if not rules and not new_chains:
                continue
            script = [f"*{table}"] + ["-D" + r[2:] for r in reversed(rules) if shlex.split(r)[1] not in new_chains]
            script += [f"-F {c}" for c in sorted(new_chains)] + [f"-X {c}" for c in sorted(new_chains)]
            script += ["COMMIT", ""]
            proc = subprocess.run(["iptables-restore", "--noflush", "--wait"], input="\n".join(script),
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                log(f"warning: could not remove dockerd's {table} rules: {proc.stderr.strip()}")
        subprocess.run(["iptables", "-P", "FORWARD", self.policy], capture_output=True)


class DockerBridgeStack(DockerStack):
    """bench_daemon's dockerd, with its default bridge network and iptables (on our bridge)."""

    def __init__(self, root: str, token: str, bridge: DockerBridge) -> None:
        super().__init__(root, token)
        self.bridge = bridge

    def start(self) -> None:
        # bench_daemon's start, then restart dockerd alone with networking on
        super().start()
        assert self.dockerd is not None
        self.dockerd.stop()
        path = os.path.join(self.root, "daemon.json")
        with open(path) as f:
            daemon_json = json.load(f)
        daemon_json.update({"bridge": self.bridge.name, "iptables": True, "ip-masq": True, "ip-forward": True,
                            "userland-proxy": True})
        with open(path, "w") as f:
            json.dump(daemon_json, f)
        self.dockerd = Daemon(["dockerd", "--config-file", path], os.path.join(self.root, "dockerd.log"),
                              lambda: pings(self.sock), "dockerd (bridge)")


# --- measurements ---------------------------------------------------------------------------------

def timed(argv: list[str], env: dict[str, str] | None) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=120)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise Failed(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")
    return elapsed, proc.stdout.strip()


def get(port: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/")
        resp = conn.getresponse()
        if resp.status != 200 or resp.read() != b"hello\n":
            raise Failed(f"unexpected answer {resp.status} from 127.0.0.1:{port}")
    finally:
        conn.close()


def wait_answer(port: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            get(port)
            return
        except (OSError, Failed, http.client.HTTPException):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def throughput(port: int, requests: int, concurrency: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    for _ in range(requests):
        get(port)
    sequential = requests / (time.perf_counter() - t0)
    errors: list[BaseException] = []
    per = requests // concurrency

    def worker() -> None:
        try:
            for _ in range(per):
                get(port)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    concurrent = per * concurrency / (time.perf_counter() - t0)
    if errors:
        raise Failed(f"concurrent requests failed: {errors[0]}")
    return sequential, concurrent


def docker_argv(stack: object, *args: str) -> list[str]:
    return ["docker", "-H", f"unix://{stack.sock}", *args]  # type: ignore[attr-defined]


def docker_env(root: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env.update(DOCKER_CONFIG=os.path.join(root, "cli"), DOCKER_CLI_HINTS="false")
    return env


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--only", default="berth,docker")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if os.geteuid() != 0:
        log("must run as root")
        return 2
    only = set(args.only.split(","))
    if "docker" in only and not (shutil.which("dockerd") and shutil.which("containerd") and shutil.which("docker")):
        log("dockerd, containerd or the docker CLI is missing: berthd only")
        only.discard("docker")
    token = secrets.token_hex(4)
    base = tempfile.mkdtemp(prefix="bench-network-", dir="/var/tmp")
    stacks: dict[str, object] = {}
    bridge: DockerBridge | None = None
    env = docker_env(base)
    results: dict[str, object] = {"runs": args.runs, "requests": args.requests, "concurrency": args.concurrency}
    try:
        berth = BerthStack(os.path.join(base, "berth"), token)
        berth.start()
        stacks["berth"] = berth
        tar = os.path.join(base, "busybox.tar")
        run(berth.argv("save", "-o", tar, IMAGE))
        if "docker" in only:
            bridge = DockerBridge(token)
            bridge.create()
            docker = DockerBridgeStack(os.path.join(base, "docker"), token, bridge)
            docker.start()
            stacks["docker"] = docker
            run(docker_argv(docker, "load", "-i", tar), env=env)
        kinds = [(name, net) for name in stacks for net in ("bridge", "none")]
        starts: dict[str, list[float]] = {f"{n} {k}": [] for n, k in kinds}
        oneshot: dict[str, list[float]] = {f"{n} {k}": [] for n, k in kinds}
        log(f"start times: {args.runs} rounds of {', '.join(starts)} (+{args.warmup} warm-up)")
        for i in range(args.warmup + args.runs):
            order = kinds[i % len(kinds):] + kinds[:i % len(kinds)]
            for name, net in order:
                stack = stacks[name]
                extra = ["--network", "none"] if net == "none" else []
                elapsed, cid = timed(docker_argv(stack, "run", "-d", *extra, IMAGE, "sleep", "60"), env)
                timed(docker_argv(stack, "rm", "-f", cid), env)
                elapsed2, _ = timed(docker_argv(stack, "run", "--rm", *extra, IMAGE, "true"), env)
                if i >= args.warmup:
                    starts[f"{name} {net}"].append(elapsed)
                    oneshot[f"{name} {net}"].append(elapsed2)
        results["start_ms"] = {k: round(median(v) * 1000, 1) for k, v in starts.items()}
        results["run_rm_true_ms"] = {k: round(median(v) * 1000, 1) for k, v in oneshot.items()}
        tput: dict[str, dict[str, float]] = {}
        for name, stack in stacks.items():
            port = free_port()
            _t, cid = timed(docker_argv(stack, "run", "-d", "-p", f"127.0.0.1:{port}:8080", IMAGE, "sh", "-c",
                                        HTTPD), env)
            try:
                wait_answer(port)
                for _ in range(50):
                    get(port)
                log(f"throughput: {name}: {args.requests} sequential requests, then {args.concurrency} clients")
                seq, conc = throughput(port, args.requests, args.concurrency)
                tput[name] = {"sequential_rps": round(seq), "concurrent_rps": round(conc)}
            finally:
                timed(docker_argv(stack, "rm", "-f", cid), env)
        results["throughput"] = tput
    finally:
        for stack in stacks.values():
            try:
                stack.shutdown()  # type: ignore[attr-defined]
            except Exception as e:  # noqa: BLE001 - clean up the rest
                log(f"warning: shutdown: {e}")
            remove_cgroup_parent(stack.cgroup_parent)  # type: ignore[attr-defined]
        if bridge is not None:
            bridge.remove()
        unmount_under([base])
        shutil.rmtree(base, ignore_errors=True)
    report(results, "docker" in stacks, args.json)
    return 0


def report(r: dict, with_docker: bool, as_json: bool) -> None:
    s, o, t = r["start_ms"], r["run_rm_true_ms"], r["throughput"]
    ratios = {"berth bridge / berth none (start)": s["berth bridge"] / s["berth none"]}
    if with_docker:
        ratios.update({
            "docker bridge / docker none (start)": s["docker bridge"] / s["docker none"],
            "berth bridge / docker bridge (start)": s["berth bridge"] / s["docker bridge"],
            "berth bridge / docker bridge (run --rm true)": o["berth bridge"] / o["docker bridge"],
            "berth / docker (sequential requests/s)": t["berth"]["sequential_rps"] / t["docker"]["sequential_rps"],
            "berth / docker (concurrent requests/s)": t["berth"]["concurrent_rps"] / t["docker"]["concurrent_rps"],
        })
    r["ratios"] = {k: round(v, 2) for k, v in ratios.items()}
    if as_json:
        print(json.dumps(r, indent=2))
        return
    print(f"median of {r['runs']} runs, ms       run -d (start)   run --rm true")
    for key in s:
        print(f"  {key:<28} {s[key]:>10.1f} {o[key]:>15.1f}")
    print(f"published port on 127.0.0.1, {r['requests']} requests   sequential/s   {r['concurrency']} clients/s")
    for key, v in t.items():
        print(f"  {key:<28} {v['sequential_rps']:>10} {v['concurrent_rps']:>15}")
    print("ratios")
    for key, v in r["ratios"].items():
        print(f"  {key:<46} {v:.2f}")


if __name__ == "__main__":
    sys.exit(main())
