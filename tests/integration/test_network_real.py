"""berth.network against the real kernel and Debian's CNI plugins (/usr/lib/cni).

Every test makes its own namespaces, a bridge ``bt<hex>`` and a private subnet
``10.213.<n>.0/24`` that overlaps no route of the host; traffic goes only between those
namespaces, the bridge, and 127.0.0.1 (the DNS upstream is a server of the test on
127.0.0.1). Cleanup runs also when a test fails: processes by pid, every cached CNI
attachment DELeted, namespaces unmounted, the bridge deleted, and the iptables rules and
chains that did not exist before the test removed (tests/support/netcleanup.py).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from berth.errors import AlreadyExists, NotFound
from berth.network import bridge, conflist, hosts, netns
from berth.network.cni import CNI, DEFAULT_PLUGIN_DIRS, NetworkConfigList, Result
from berth.network.dns import DNSServer
from berth.network.ports import PortAllocator, cni_port_mappings, parse_publish
from tests.support.netcleanup import IptablesSnapshot, delete_links

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

BUSYBOX = "/bin/busybox"


def _skip_reason() -> str | None:
    missing = [t for t in ("nsenter", "unshare", "ip", "iptables-save", "iptables-restore") if not shutil.which(t)]
    missing += [f"{d}/{p}" for d in ("/usr/lib/cni",) for p in ("bridge", "host-local", "portmap", "firewall",
                                                                "tuning", "loopback")
                if not os.path.exists(f"{d}/{p}")]
    if missing:
        return f"network test: {', '.join(missing)} missing (scripts/setup.sh installs them)"
    return None


@pytest.fixture(autouse=True)
def _tools() -> None:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)


def free_subnet(taken: list[ipaddress.IPv4Network]) -> ipaddress.IPv4Network:
    routes = conflist.host_routes()
    for _ in range(200):
        candidate = ipaddress.IPv4Network(f"10.213.{random.randrange(1, 255)}.0/24")
        if not any(candidate.overlaps(r) for r in routes + taken):  # type: ignore[arg-type]
            return candidate
    raise RuntimeError("no free 10.213.x.0/24")


@dataclass
class Env:
    root: Path
    cni: CNI
    snapshot: IptablesSnapshot
    tag: str
    netns_root: str
    bridges: list[str] = field(default_factory=list)
    subnets: list[ipaddress.IPv4Network] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    loopback: NetworkConfigList = field(default_factory=lambda: NetworkConfigList(conflist.loopback_conflist()))

    def network(self, suffix: str = "", internal: bool = False) -> tuple[NetworkConfigList, conflist.BridgeNetwork]:
        subnet = free_subnet(self.subnets)
        self.subnets.append(subnet)
        br = f"bt{self.tag}{suffix}"
        self.bridges.append(br)
        net = conflist.BridgeNetwork(f"berthtest-{self.tag}{suffix}", br, (conflist.SubnetSpec.parse(str(subnet)),),
                                     ipam_dir=str(self.root / "ipam"), internal=internal,
                                     tuning_dir=str(self.root / "tuning"))
        return NetworkConfigList(conflist.bridge_conflist(net)), net

    def sandbox(self, name: str) -> str:
        """A namespace with lo up, as berthd makes one per container."""
        path = netns.create(f"{self.tag}-{name}", self.netns_root)
        self.cni.add(self.loopback, f"{self.tag}-{name}", path, "lo")
        return path

    def attach(self, conf: NetworkConfigList, name: str, path: str, **caps: object) -> Result:
        return self.cni.add(conf, f"{self.tag}-{name}", path, "eth0", capability_args=caps)

    def spawn(self, argv: list[str]) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.procs.append(proc)
        return proc


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    snapshot = IptablesSnapshot.take()
    tag = secrets.token_hex(3)
    e = Env(tmp_path, CNI(str(tmp_path / "cni"), DEFAULT_PLUGIN_DIRS), snapshot, tag, str(tmp_path / "netns"))
    try:
        yield e
    finally:
        problems = []
        for proc in e.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
        for att in e.cni.attachments():
            try:
                e.cni.delete_cached(att)
            except Exception as exc:  # keep cleaning
                problems.append(f"DEL {att.network}/{att.container_id}: {exc}")
            bridge.sweep_container_rules(att.network, att.container_id)
        for name in netns.list_names(e.netns_root):
            netns.delete(name, e.netns_root)
        for br in e.bridges:
            bridge.remove_bridge(br)
        delete_links(e.bridges)
        problems += snapshot.restore()
        assert not problems, problems


def sh(*argv: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)


def in_ns(path: str, *argv: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
    return sh("nsenter", f"--net={path}", *argv, timeout=timeout)


def ipam_reservations(net: conflist.BridgeNetwork) -> list[str]:
    d = os.path.join(net.ipam_dir, net.name)
    out = []
    for name in os.listdir(d) if os.path.isdir(d) else []:
        try:
            out.append(str(ipaddress.ip_address(name)))
        except ValueError:
            pass
    return sorted(out)


SERVER = r"""
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(16)
print("ready", flush=True)
while True:
    c, addr = s.accept()
    c.sendall(("hello from A to %s\n" % addr[0]).encode())
    c.close()
"""


def fetch(host: str, port: int) -> str:
    with socket.create_connection((host, port), timeout=3) as c:
        c.settimeout(3)
        data = b""
        while not data.endswith(b"\n"):
            chunk = c.recv(100)
            if not chunk:
                break
            data += chunk
    return data.decode().strip()


# --- namespaces ------------------------------------------------------------------------

def test_netns_lifecycle(env: Env) -> None:
    root = env.netns_root
    path = netns.create("one", root)
    assert path == os.path.join(root, "one") and netns.exists("one", root)
    assert os.stat(path).st_ino != os.stat("/proc/self/ns/net").st_ino
    assert netns.list_names(root) == ["one"]
    with pytest.raises(AlreadyExists):
        netns.create("one", root)
    # a fresh namespace has only lo, down; its sockets stay in it
    links = netns.run_in_netns(path, lambda: [name for _, name in socket.if_nameindex()])
    assert links == ["lo"]
    assert open("/proc/self/mounts").read().count(f" {root}/one ") == 1
    netns.delete("one", root)
    assert not netns.exists("one", root) and not os.path.exists(path) and netns.list_names(root) == []
    assert f" {root}/one " not in open("/proc/self/mounts").read()
    netns.delete("one", root)  # missing: fine
    with pytest.raises(NotFound):
        netns.delete("one", root, missing_ok=False)
    with pytest.raises(NotFound):
        netns.run_in_netns(path, lambda: None)


# --- a bridge network: connectivity, published ports, complete teardown ------------------

def test_bridge_network_ping_publish_and_teardown(env: Env) -> None:
    conf, net = env.network()
    a, b = env.sandbox("a"), env.sandbox("b")
    veths_before = len([n for n in os.listdir("/sys/class/net") if n.startswith("veth")])
    host_port = PortAllocator().allocate("a", parse_publish("80"))[0].host_port
    ports = PortAllocator(probe=False).allocate("a", parse_publish(f"{host_port}:80"))
    ra = env.attach(conf, "a", a, portMappings=cni_port_mappings(ports))
    rb = env.attach(conf, "b", b)
    ip_a, ip_b = (str(r.ips[0].address.ip) for r in (ra, rb))
    gateway = str(ra.ips[0].gateway)
    assert ipaddress.ip_address(ip_a) in env.subnets[0] and gateway == str(env.subnets[0].network_address + 1)
    assert ra.mac("eth0") and ra.ips[0].interface == "eth0"

    # the two namespaces reach each other over the bridge
    for src, dst in ((a, ip_b), (b, ip_a)):
        res = in_ns(src, BUSYBOX, "ping", "-c1", "-W2", dst)
        assert res.returncode == 0, res.stdout + res.stderr
    assert sorted(os.listdir(f"/sys/class/net/{net.bridge}/brif")).__len__() == 2
    assert ipam_reservations(net) == sorted([ip_a, ip_b])

    # a published port: a server in A, reached from the host through 127.0.0.1 and the gateway
    server = env.spawn(["nsenter", f"--net={a}", sys.executable, "-c", SERVER, "80"])
    assert server.stdout is not None and server.stdout.readline().strip() == b"ready"
    assert open(f"/proc/sys/net/ipv4/conf/{net.bridge}/route_localnet").read().strip() == "1"
    assert fetch("127.0.0.1", host_port) == f"hello from A to {gateway}"  # masqueraded to the gateway
    assert fetch(gateway, host_port) == f"hello from A to {gateway}"
    # B reaches A by the published port on the gateway (DNAT from the bridge, hairpin SNAT)
    res = in_ns(b, BUSYBOX, "nc", "-w", "3", gateway, str(host_port))
    assert res.stdout.strip().startswith("hello from A"), res.stdout + res.stderr

    ids = (f'id: \\"{env.tag}-a\\"', f'id: \\"{env.tag}-b\\"', f"{ip_a}/32", f"{ip_b}/32")
    rules = env.snapshot.new_lines(*ids)
    assert any("MASQUERADE" in r for r in rules) and any("DNAT" in r for r in rules)
    assert any("CNI-FORWARD" in r for r in rules)

    # DEL: veths, iptables rules (masquerade, DNAT, FORWARD), IPAM reservations all go
    started = time.monotonic()
    for name, path in (("a", a), ("b", b)):
        env.cni.delete(conf, f"{env.tag}-{name}", path)
        assert bridge.sweep_container_rules(conf.name, f"{env.tag}-{name}") == 0  # DEL left nothing
    del_seconds = time.monotonic() - started
    assert os.listdir(f"/sys/class/net/{net.bridge}/brif") == []
    assert len([n for n in os.listdir("/sys/class/net") if n.startswith("veth")]) == veths_before
    assert env.snapshot.new_lines(*ids) == []
    assert ipam_reservations(net) == []
    with pytest.raises(OSError):
        fetch("127.0.0.1", host_port)
    assert del_seconds < 10

    # network rm: the bridge and its isolation rules
    bridge.remove_bridge(net.bridge)
    bridge.release_ipam(net.ipam_dir, net.name)
    assert not bridge.bridge_exists(net.bridge)
    assert env.snapshot.new_lines(net.bridge) == []
    assert not os.path.exists(os.path.join(net.ipam_dir, net.name))


def test_del_after_the_namespace_is_gone(env: Env) -> None:
    """A crash in which the namespace went first: DEL still frees the address and rules."""
    conf, net = env.network()
    a = env.sandbox("a")
    ports = PortAllocator().allocate("a", parse_publish("80"))
    env.attach(conf, "a", a, portMappings=cni_port_mappings(ports))
    netns.delete(f"{env.tag}-a", env.netns_root)
    env.cni.delete(conf, f"{env.tag}-a", a)  # CNI_NETNS="" for the plugins
    swept = bridge.sweep_container_rules(conf.name, f"{env.tag}-a")
    assert swept >= 0
    assert env.snapshot.new_lines(f'id: \\"{env.tag}-a\\"') == []
    assert ipam_reservations(net) == []
    assert os.listdir(f"/sys/class/net/{net.bridge}/brif") == []


def test_internal_network_and_isolation(env: Env) -> None:
    conf, net = env.network("i", internal=True)
    other_conf, _ = env.network("o")
    a, b, c = env.sandbox("a"), env.sandbox("b"), env.sandbox("c")
    ip_b = str(env.attach(conf, "a", a) and env.attach(conf, "b", b).ips[0].address.ip)
    env.attach(other_conf, "c", c)
    assert in_ns(a, BUSYBOX, "ping", "-c1", "-W2", ip_b).returncode == 0
    # internal: no default route, no gateway address on the bridge, no masquerade
    routes = in_ns(a, "ip", "-4", "route").stdout
    assert "default" not in routes and routes.strip()
    assert "inet " not in sh("ip", "-4", "addr", "show", "dev", net.bridge).stdout
    assert not [r for r in env.snapshot.new_lines(f'id: \\"{env.tag}-a\\"', f'id: \\"{env.tag}-b\\"')
                if "MASQUERADE" in r]
    assert not any(p["type"] == "portmap" for p in conf.plugins)
    # networks are isolated from each other (ingressPolicy same-bridge), even the routed one
    assert in_ns(c, BUSYBOX, "ping", "-c1", "-W1", ip_b).returncode != 0


# --- the embedded DNS server inside a namespace ------------------------------------------

def test_embedded_dns_answers_nslookup_and_getaddrinfo(env: Env, tmp_path: Path) -> None:
    conf, net = env.network()
    a, b = env.sandbox("a"), env.sandbox("b")
    ip_a = str(env.attach(conf, "a", a).ips[0].address.ip)
    ip_b = str(env.attach(conf, "b", b).ips[0].address.ip)
    table = {(conf.name, "peer-a"): [ip_a], (conf.name, "peer-b"): [ip_b], (conf.name, "web"): [ip_b]}

    def lookup(network: str, name: str) -> list[str]:
        return table.get((network, name), [])

    def reverse(network: str, ip: str) -> list[str]:
        return [f"{n}.{network}" for (nw, n), ips in table.items() if nw == network and ip in ips][:1]

    resolv, _ = hosts.resolv_conf(hosts.ResolvConf(), mode="embedded")
    resolv_path = tmp_path / "resolv.conf"
    resolv_path.write_text(resolv)
    getaddrinfo = ("import socket,sys; print(' '.join(sorted({ai[4][0] for ai in "
                   "socket.getaddrinfo(sys.argv[1], 80, proto=socket.IPPROTO_TCP)})))")

    async def run(*argv: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.STDOUT)
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), 15)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        return proc.returncode or 0, out.decode()

    async def main() -> None:
        upstream = DNSServer(lambda n, name: ["192.0.2.80"] if name == "outside.test" else [])
        up = await upstream.listen("127.0.0.1", 0, networks=["up"], forward=False)
        server = DNSServer(lookup, reverse)
        ep = await server.listen_container(a, [conf.name], upstreams=[f"127.0.0.1:{up.udp_port}"])
        try:
            rc, out = await run("nsenter", f"--net={a}", BUSYBOX, "nslookup", "peer-b", "127.0.0.11")
            assert rc == 0 and f"Address: {ip_b}" in out, out
            rc, out = await run("nsenter", f"--net={a}", BUSYBOX, "nslookup", "web", "127.0.0.11")
            assert rc == 0 and f"Address: {ip_b}" in out, out
            rc, out = await run("nsenter", f"--net={a}", BUSYBOX, "nslookup", ip_b, "127.0.0.11")
            assert rc == 0 and f"peer-b.{conf.name}" in out, out
            # a name the network does not know goes to the upstream, from the host's namespace
            rc, out = await run("nsenter", f"--net={a}", BUSYBOX, "nslookup", "outside.test", "127.0.0.11")
            assert rc == 0 and "192.0.2.80" in out, out
            rc, out = await run("nsenter", f"--net={a}", BUSYBOX, "nslookup", "nowhere.test", "127.0.0.11")
            assert rc != 0, out
            # getaddrinfo through the generated resolv.conf (bind-mounted in a private mount ns)
            rc, out = await run("unshare", "--mount", "--propagation", "private", "sh", "-c",
                                'mount --bind "$1" /etc/resolv.conf && exec nsenter --net="$2" "$3" -c "$4" "$5"',
                                "sh", str(resolv_path), a, sys.executable, getaddrinfo, "peer-b")
            assert rc == 0 and out.strip() == ip_b, out
            # and the name works for real traffic: ping peer-b by name
            rc, out = await run("unshare", "--mount", "--propagation", "private", "sh", "-c",
                                'mount --bind "$1" /etc/resolv.conf && '
                                'exec nsenter --net="$2" "$3" ping -c1 -W2 peer-b',
                                "sh", str(resolv_path), a, BUSYBOX)
            assert rc == 0 and ip_b in out, out
            # the container's own port 53 stays free (the DNAT sends 127.0.0.11:53 elsewhere)
            assert ep.udp_port != 53 and ep.tcp_port == ep.udp_port
            saved = in_ns(a, "iptables-save", "-t", "nat").stdout
            assert f"--to-destination 127.0.0.11:{ep.udp_port}" in saved
            # listening again (a restarted berthd) keeps one jump to the chain
            await ep.close()
            ep2 = await server.listen_container(a, [conf.name], ports=(ep.udp_port, ep.tcp_port))
            assert in_ns(a, "iptables-save", "-t", "nat").stdout.count("-j BERTH-DNS") == 1
            rc, out = await run("nsenter", f"--net={a}", BUSYBOX, "nslookup", "peer-a", "127.0.0.11")
            assert rc == 0 and f"Address: {ip_a}" in out, out
            await ep2.close()
        finally:
            await server.close()
            await upstream.close()

    asyncio.run(main())
