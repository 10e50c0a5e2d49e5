"""berthd's networks through the real docker CLI (and docker-compose): CNI bridge networks,
names that resolve, published ports, ``--network none|host|container:``, complete teardown,
Docker's errors for bad input, and what a crash of berthd leaves.

Traffic only goes to 127.0.0.1 and to addresses inside the namespaces of this test's
containers; user-defined subnets are picked in 10.213.0.0/16 away from the host's routes.
What is counted before and after (``Leftovers``) is this daemon's own: veths on its bridges,
iptables lines naming its subnets, bridges or containers, namespace files under its exec
root, host-local reservations and CNI cache entries, so other CNI users on the host (other
daemons, tests running at the same time) do not disturb the counts.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.daemon import Berthd, berthd, berthd_factory  # noqa: F401 - fixtures

pytestmark = pytest.mark.integration

HTTPD = "mkdir -p /www && echo hello-from-{name} > /www/index.html && exec httpd -f -p 8080 -h /www"
_used_subnets: set[str] = set()


def free_subnet() -> str:
    """A /24 in 10.213.0.0/16 that no host route and no earlier test uses."""
    from berth.network.conflist import host_routes

    routes = [r for r in host_routes() if r.version == 4]
    for candidate in ipaddress.ip_network("10.213.0.0/16").subnets(new_prefix=24):
        if str(candidate) in _used_subnets or candidate.network_address.packed[2] < 40:
            continue
        if not any(candidate.overlaps(r) for r in routes):
            _used_subnets.add(str(candidate))
            return str(candidate)
    raise RuntimeError("no free 10.213.x.0/24")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fetch(url: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=3) as resp:
                return resp.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def ok(d: Berthd, *args: str, timeout: float = 60) -> str:
    return d.docker(*args, timeout=timeout, check=True).stdout


def fails(d: Berthd, *args: str) -> str:
    proc = d.docker(*args)
    assert proc.returncode != 0, f"docker {' '.join(args)} succeeded:\n{proc.stdout}"
    return proc.stderr


def serve(d: Berthd, name: str, *args: str) -> str:
    """A busybox httpd on :8080 in a detached container, answering once it listens."""
    cid = ok(d, "run", "-d", "--name", name, *args, d.image, "sh", "-c", HTTPD.format(name=name)).strip()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if d.docker("exec", name, "sh", "-c", "netstat -ltn | grep -q ':8080 '").returncode == 0:
            return cid
        time.sleep(0.05)
    raise AssertionError(f"httpd in {name} does not listen\n{d.docker('logs', name).stderr}")


def rm(d: Berthd, *names: str) -> None:
    d.docker("rm", "-f", *names)


class Leftovers:
    """This daemon's networking state on the host, counted."""

    def __init__(self, d: Berthd) -> None:
        self.d = d

    def _ours(self) -> tuple[list[str], list[ipaddress.IPv4Network]]:
        bridges, subnets = [], []
        for rec in self.d.network_records():
            if rec.get("BerthBridge"):
                bridges.append(rec["BerthBridge"])
            for c in (rec.get("IPAM") or {}).get("Config") or []:
                subnets.append(ipaddress.ip_network(c["Subnet"]))
        return bridges, subnets

    def veths(self) -> int:
        bridges, _ = self._ours()
        return sum(len(os.listdir(f"/sys/class/net/{b}/brif")) for b in bridges
                   if os.path.isdir(f"/sys/class/net/{b}/brif"))

    def rules(self, ids: list[str] = ()) -> list[str]:
        bridges, subnets = self._ours()
        out = []
        for table in ("filter", "nat", "mangle"):
            saved = subprocess.run(["iptables-save", "-t", table], capture_output=True, text=True).stdout
            for line in saved.splitlines():
                if not line.startswith("-A "):
                    continue
                hit = any(f" {b} " in f" {line} " for b in bridges) or any(i in line for i in ids)
                for token in re.findall(r"\d+\.\d+\.\d+\.\d+(?:/\d+)?", line):
                    net = ipaddress.ip_network(token, strict=False)
                    if any(net.subnet_of(s) for s in subnets):
                        hit = True
                if hit:
                    out.append(f"{table}: {line}")
        return out

    def netns_files(self) -> list[str]:
        root = self.d.exec_root / "netns"
        return sorted(os.listdir(root)) if root.is_dir() else []

    def reservations(self) -> list[str]:
        root = self.d.exec_root / "cni" / "networks"
        found = []
        if root.is_dir():
            for net in root.iterdir():
                found += [f"{net.name}/{f}" for f in os.listdir(net) if f != "lock" and not f.startswith("last_")]
        return sorted(found)

    def cache(self) -> list[str]:
        root = self.d.exec_root / "cni" / "results"
        return sorted(os.listdir(root)) if root.is_dir() else []

    def snapshot(self, ids: list[str] = ()) -> dict:
        return {"veths": self.veths(), "rules": self.rules(ids), "netns": self.netns_files(),
                "reservations": self.reservations(), "cni cache": self.cache()}


def test_predefined_networks_are_listed(berthd: Berthd) -> None:
    out = ok(berthd, "network", "ls", "--format", "{{.Name}} {{.Driver}} {{.Scope}}")
    assert {"bridge bridge local", "host host local", "none null local"} <= set(out.splitlines())
    doc = json.loads(ok(berthd, "network", "inspect", "bridge"))[0]
    assert doc["Driver"] == "bridge" and doc["IPAM"]["Config"][0]["Subnet"]
    assert doc["Options"]["com.docker.network.bridge.default_bridge"] == "true"


def test_two_containers_talk_by_name_and_alias(berthd: Berthd) -> None:
    d = berthd
    subnet = free_subnet()
    ok(d, "network", "create", "--subnet", subnet, "--label", "purpose=test", "talk")
    try:
        serve(d, "web", "--network", "talk", "--network-alias", "www")
        script = ("wget -qO- http://web:8080/ && wget -qO- http://www:8080/ && ping -c1 -W2 web >/dev/null "
                  "&& nslookup www | grep -c Address && cat /etc/resolv.conf")
        out = ok(d, "run", "--rm", "--network", "talk", d.image, "sh", "-c", script)
        assert out.count("hello-from-web") == 2, out
        assert "nameserver 127.0.0.11" in out
        doc = json.loads(ok(d, "inspect", "web"))[0]
        ep = doc["NetworkSettings"]["Networks"]["talk"]
        assert ipaddress.ip_address(ep["IPAddress"]) in ipaddress.ip_network(subnet)
        assert "www" in ep["Aliases"] and ep["Gateway"] == str(ipaddress.ip_network(subnet)[1])
        net = json.loads(ok(d, "network", "inspect", "talk"))[0]
        assert net["Labels"] == {"purpose": "test"}
        assert [c["Name"] for c in net["Containers"].values()] == ["web"]
        # a fixed address, and names of another network do not resolve
        ok(d, "run", "--rm", "--network", "talk", "--ip", str(ipaddress.ip_network(subnet)[200]), d.image,
           "sh", "-c", f"ip addr show eth0 | grep -q {ipaddress.ip_network(subnet)[200]}/24")
        other = free_subnet()
        ok(d, "network", "create", "--subnet", other, "apart")
        try:
            out = d.docker("run", "--rm", "--network", "apart", d.image, "sh", "-c",
                           f"nslookup web; wget -T 2 -qO- http://{ep['IPAddress']}:8080/")
            assert out.returncode != 0 and "hello-from-web" not in out.stdout
        finally:
            ok(d, "network", "rm", "apart")
    finally:
        rm(d, "web")
        ok(d, "network", "rm", "talk")


def test_published_port_answers_on_127_0_0_1(berthd: Berthd) -> None:
    d = berthd
    port = free_port()
    serve(d, "pub", "-p", f"{port}:8080", "-p", "127.0.0.1::8080", "--expose", "9000")
    try:
        assert fetch(f"http://127.0.0.1:{port}/") == "hello-from-pub\n"
        mapped = ok(d, "port", "pub", "8080/tcp").split()
        local = [m for m in mapped if m.startswith("127.0.0.1:")][0]
        assert fetch(f"http://{local}/") == "hello-from-pub\n"
        ps = ok(d, "ps", "--filter", "name=pub", "--format", "{{.Ports}}")
        assert f"0.0.0.0:{port}->8080/tcp" in ps and "9000/tcp" in ps
        doc = json.loads(ok(d, "inspect", "pub"))[0]["NetworkSettings"]
        assert doc["Ports"]["8080/tcp"][0] == {"HostIp": "0.0.0.0", "HostPort": str(port)}
        assert doc["IPAddress"] and doc["Networks"]["bridge"]["IPAddress"] == doc["IPAddress"]
    finally:
        rm(d, "pub")
    serve(d, "pub-all", "-P", "--expose", "8080")
    try:
        host = ok(d, "port", "pub-all", "8080").split()[0]
        assert fetch(f"http://127.0.0.1:{host.rsplit(':', 1)[1]}/") == "hello-from-pub-all\n"
    finally:
        rm(d, "pub-all")


def test_network_none_has_only_loopback(berthd: Berthd) -> None:
    out = ok(berthd, "run", "--rm", "--network", "none", berthd.image, "sh", "-c",
             "ls /sys/class/net; ip -o addr show lo | grep -c 127.0.0.1")
    assert out.split() == ["lo", "1"]


def test_network_host_sees_the_hosts_interfaces(berthd: Berthd) -> None:
    inside = set(ok(berthd, "run", "--rm", "--network", "host", berthd.image, "ls", "/sys/class/net").split())
    stable = {n for n in os.listdir("/sys/class/net") if not n.startswith(("veth", "br-", "berth-", "docker"))}
    assert stable <= inside, (stable, inside)


def test_network_container_shares_the_namespace(berthd: Berthd) -> None:
    d = berthd
    serve(d, "owner")
    try:
        out = ok(d, "run", "--rm", "--network", "container:owner", d.image, "wget", "-qO-", "http://127.0.0.1:8080/")
        assert out == "hello-from-owner\n"
    finally:
        rm(d, "owner")


def test_connect_and_disconnect_a_running_container(berthd: Berthd) -> None:
    d = berthd
    ok(d, "network", "create", "--subnet", free_subnet(), "side")
    try:
        serve(d, "svc")
        ok(d, "network", "connect", "--alias", "side-svc", "side", "svc")
        assert "eth1" in ok(d, "exec", "svc", "ls", "/sys/class/net")
        out = ok(d, "run", "--rm", "--network", "side", d.image, "wget", "-qO-", "http://side-svc:8080/")
        assert out == "hello-from-svc\n"
        assert "already exists in network side" in fails(d, "network", "connect", "side", "svc")
        ok(d, "network", "disconnect", "side", "svc")
        assert "eth1" not in ok(d, "exec", "svc", "ls", "/sys/class/net")
        assert "is not connected to network side" in fails(d, "network", "disconnect", "side", "svc")
    finally:
        rm(d, "svc")
        ok(d, "network", "rm", "side")


def test_nothing_is_left_after_rm(berthd: Berthd) -> None:
    d = berthd
    probe = Leftovers(d)
    ok(d, "run", "--rm", "-p", "127.0.0.1::80", d.image, "true")  # warm-up: shared chains exist from now on
    before = probe.snapshot()
    assert before["veths"] == 0 and not before["netns"] and not before["reservations"], before
    ok(d, "network", "create", "--subnet", free_subnet(), "gone")
    ids = [serve(d, "g1", "-p", f"{free_port()}:8080"), serve(d, "g2", "--network", "gone", "--network-alias", "x",
                                                              "-p", "127.0.0.1::8080"),
           ok(d, "run", "-d", "--network", "none", d.image, "sleep", "60").strip()]
    ok(d, "network", "connect", "gone", "g1")
    during = probe.snapshot(ids)
    assert during["veths"] == 3 and len(during["netns"]) == 3 and len(during["reservations"]) == 3, during
    assert any("hostport" in r.lower() or "DNAT" in r for r in during["rules"]), during["rules"]
    ok(d, "rm", "-f", *ids)
    ok(d, "network", "rm", "gone")
    assert probe.snapshot(ids) == before
    # stop (not rm) tears the sandbox down too, and start makes it again
    serve(d, "g3", "-p", f"{free_port()}:8080")
    ok(d, "stop", "-t", "1", "g3")
    assert probe.snapshot() == before
    ok(d, "start", "g3")
    assert probe.veths() == 1
    rm(d, "g3")
    assert probe.snapshot() == before


def test_bad_input_gives_dockers_errors_and_changes_nothing(berthd: Berthd) -> None:
    d = berthd
    probe = Leftovers(d)
    before = probe.snapshot()
    subnet = free_subnet()
    ok(d, "network", "create", "--subnet", subnet, "taken")
    try:
        networks = ok(d, "network", "ls", "-q")
        half = str(list(ipaddress.ip_network(subnet).subnets(new_prefix=25))[1])
        assert "Pool overlaps with other one on this address space" in fails(d, "network", "create", "--subnet",
                                                                                 half, "overlap")
        assert "network with name taken already exists" in fails(d, "network", "create", "taken")
        assert "bridge is a pre-defined network and cannot be removed" in fails(d, "network", "rm", "bridge")
        assert ok(d, "network", "ls", "-q") == networks
        ps = ok(d, "ps", "-aq")
        assert "network nosuch not found" in fails(d, "run", "--rm", "--network", "nosuch", d.image, "true")
        assert "user specified IP address is supported on user defined networks only" in fails(
            d, "run", "--rm", "--ip", "172.17.0.9", d.image, "true")
        status, body = d.api.post("/containers/create", {"Image": d.image, "NetworkingConfig": {
            "EndpointsConfig": {"bridge": {"Aliases": ["a"]}}}})  # docker's CLI refuses this one itself
        assert status == 400 and body["message"] == ("network-scoped alias is supported only for containers in "
                                                     "user defined networks")
        assert "It does not belong to any of this network's subnets" in fails(
            d, "run", "--rm", "--network", "taken", "--ip", "10.99.0.5", d.image, "true")
        assert ok(d, "ps", "-aq") == ps
        port = free_port()
        serve(d, "holder", "--network", "taken", "-p", f"{port}:8080")
        err = fails(d, "run", "--rm", "--network", "taken", "-p", f"{port}:80", d.image, "true")
        assert f"Bind for 0.0.0.0:{port} failed: port is already allocated" in err
        assert "driver failed programming external connectivity on endpoint" in err
        with socket.socket() as busy:  # a port a host process holds
            busy.bind(("0.0.0.0", 0))
            busy.listen(1)
            err = fails(d, "run", "--rm", "-p", f"{busy.getsockname()[1]}:80", d.image, "true")
            assert "address already in use" in err
        err = fails(d, "network", "rm", "taken")
        assert re.search(r"error while removing network: network taken id [0-9a-f]{64} has active endpoints", err)
        assert fetch(f"http://127.0.0.1:{port}/") == "hello-from-holder\n"  # unharmed
        rm(d, "holder")
        deadline = time.monotonic() + 10  # the --rm containers go away in the background
        while ok(d, "ps", "-aq") != ps and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ok(d, "ps", "-aq") == ps
        ok(d, "network", "rm", "taken")
        assert probe.snapshot() == before
    finally:
        rm(d, "holder")
        d.docker("network", "rm", "taken")


def test_prune_removes_unused_networks(berthd: Berthd) -> None:
    d = berthd
    ok(d, "network", "create", "--subnet", free_subnet(), "unused1")
    ok(d, "network", "create", "--subnet", free_subnet(), "kept")
    ok(d, "run", "-d", "--name", "user", "--network", "kept", d.image, "sleep", "60")
    try:
        out = ok(d, "network", "prune", "-f")
        assert "unused1" in out and "kept" not in out
        names = ok(d, "network", "ls", "--format", "{{.Name}}").split()
        assert "kept" in names and "unused1" not in names and "bridge" in names
    finally:
        rm(d, "user")
        d.docker("network", "rm", "kept")


def test_dns_options_and_extra_hosts(berthd: Berthd) -> None:
    out = ok(berthd, "run", "--rm", "--dns", "10.213.0.53", "--dns-search", "example.test", "--dns-option",
             "ndots:2", "--add-host", "db.local:10.213.0.7", "-h", "box", berthd.image, "sh", "-c",
             "cat /etc/resolv.conf /etc/hosts /etc/hostname")
    assert "nameserver 10.213.0.53" in out and "search example.test" in out and "options ndots:2" in out
    assert "10.213.0.7\tdb.local" in out and re.search(r"\d+\.\d+\.\d+\.\d+\tbox", out) and out.endswith("box\n")


def test_berthd_crash_keeps_live_networking_and_cleans_the_dead(berthd_factory) -> None:  # noqa: ANN001
    d = berthd_factory()
    probe = Leftovers(d)
    ok(d, "run", "--rm", d.image, "true")
    before = probe.snapshot()
    ok(d, "network", "create", "--subnet", free_subnet(), "crash")
    port = free_port()
    serve(d, "alive", "--network", "crash", "--network-alias", "still", "-p", f"{port}:8080")
    ok(d, "run", "-d", "--name", "dying", "--network", "crash", d.image, "sleep", "3")
    d.kill()  # SIGKILL: no cleanup at all
    time.sleep(3.5)  # "dying" exits while berthd is down
    d.start()
    assert fetch(f"http://127.0.0.1:{port}/") == "hello-from-alive\n"
    out = ok(d, "run", "--rm", "--network", "crash", d.image, "wget", "-qO-", "http://still:8080/")
    assert out == "hello-from-alive\n"  # the DNS table and the endpoint are back
    assert "port is already allocated" in fails(d, "run", "--rm", "-p", f"{port}:80", d.image, "true")
    assert len(probe.netns_files()) == 1 and probe.veths() == 1  # the dead one's sandbox is gone
    ok(d, "rm", "-f", "alive", "dying")
    ok(d, "network", "rm", "crash")
    assert probe.snapshot() == before


# --- docker-compose --------------------------------------------------------------------------------

COMPOSE_FILE = """\
version: "3.7"
services:
  web:
    image: {image}
    command: ["sh", "-c", "echo hello-from-compose-web > /www/index.html && exec httpd -f -p 8080 -h /www"]
    volumes:
      - www:/www
    ports:
      - "127.0.0.1:{port}:8080"
  client:
    image: {image}
    command: ["sh", "-c", "while true; do wget -qO- http://web:8080/ || echo no-answer; sleep 0.5; done"]
    depends_on:
      - web
volumes:
  www: {{}}
"""


def test_docker_compose_up_ps_logs_down(berthd: Berthd, tmp_path: Path) -> None:
    compose = shutil.which("docker-compose")
    if compose is None:
        pytest.skip("docker-compose is not installed (scripts/setup.sh --with-peers)")
    d = berthd
    port = free_port()
    project = tmp_path / "proj"
    project.mkdir()
    (project / "docker-compose.yml").write_text(COMPOSE_FILE.format(image=d.image, port=port))
    env = dict(d.docker_env(), DOCKER_HOST=f"unix://{d.socket}", COMPOSE_PROJECT_NAME="berthproj",
               COMPOSE_INTERACTIVE_NO_CLI="1")

    def run(*args: str, timeout: float = 120) -> str:
        proc = subprocess.run([compose, *args], cwd=project, env=env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, f"docker-compose {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}\n" \
                                     f"{d.log()[-3000:]}"
        return proc.stdout + proc.stderr

    probe = Leftovers(d)
    before = probe.snapshot()
    try:
        run("up", "-d")
        assert fetch(f"http://127.0.0.1:{port}/") == "hello-from-compose-web\n"
        ps = run("ps")
        assert re.search(r"berthproj_web_1 .* Up .*127\.0\.0\.1:%d->8080/tcp" % port, ps), ps
        assert re.search(r"berthproj_client_1 .* Up", ps), ps
        deadline = time.monotonic() + 20
        logs = ""
        while time.monotonic() < deadline:
            logs = run("logs", "client")
            if "hello-from-compose-web" in logs:
                break
            time.sleep(0.5)
        assert "hello-from-compose-web" in logs, logs
        assert "berthproj_www" in ok(d, "volume", "ls", "--format", "{{.Name}}")
        assert "berthproj_default" in ok(d, "network", "ls", "--format", "{{.Name}}")
    finally:
        down = run("down", "-v", "-t", "1")
    assert "Removing network berthproj_default" in down
    assert "berthproj_www" not in ok(d, "volume", "ls", "--format", "{{.Name}}")
    assert "berthproj_default" not in ok(d, "network", "ls", "--format", "{{.Name}}")
    assert ok(d, "ps", "-aq", "--filter", "label=com.docker.compose.project=berthproj") == ""
    assert probe.snapshot() == before
