"""Published ports: Docker's ``-p`` / ``-P`` syntax, host-port allocation, CNI portMappings.

    parse_publish(spec) -> list[PortRequest]          "[hostIP:][hostPort:]containerPort[/proto]"
    parse_exposed(exposed) -> list[PortRequest]       -P: every ExposedPorts key, any host port
    requests_from_bindings(port_bindings, exposed=None, publish_all=False) -> list[PortRequest]
    port_bindings(requests) -> dict                   HostConfig.PortBindings form
    PortAllocator(port_range=None, probe=True)
        .allocate(owner, requests) -> list[PortMapping]   all or nothing
        .restore(owner, mappings)  .release(owner)  .owned(owner) -> list[PortMapping]
    cni_port_mappings(mappings) -> list[dict]         runtimeConfig.portMappings for portmap
    docker_ports(mappings, exposed=()) -> dict        NetworkSettings.Ports form

Syntax, as ``docker run -p`` (go-connections' ParsePortSpec): ``80``, ``8080:80``,
``127.0.0.1:8080:80``, ``127.0.0.1::80`` (any host port), ``[::1]:8080:80``, ``80/udp``,
ranges ``8000-8010:80-90`` (paired one to one) and ``8000-8010:80`` (one host port
picked from the range); protocols tcp, udp, sctp.

Allocation is Docker's: a host port is taken per (protocol, host IP, port), a wildcard
host IP (``""``, ``0.0.0.0``, ``::``) overlapping every address of its family, so a second
``-p 8080:80`` fails with "Bind for 0.0.0.0:8080 failed: port is already allocated".
With ``probe`` the allocator also tries to bind the port, so a port a host process
listens on is refused ("address already in use") and never picked for ``-P``. Dynamic
ports come from ``/proc/sys/net/ipv4/ip_local_port_range``, in order after the last one
given, as Docker's allocator does.

Published ports through 127.0.0.1: the ``portmap`` plugin DNATs in nat/OUTPUT for
connections from the host itself (``-m addrtype --dst-type LOCAL``), which covers the
bridge's gateway address and 127.0.0.1. A packet from 127.0.0.1 that is DNATed to a
container must then leave through the bridge, which the kernel refuses for a 127/8
source ("martian") unless ``net.ipv4.conf.<bridge>.route_localnet=1``, and the container
could not answer 127.0.0.1 anyway, so the source must be rewritten. portmap does both
when ``snat`` is true (berth's conflists set it): it sets ``route_localnet=1`` on the
interface that routes to the container (the bridge), and marks ``-s 127.0.0.1`` (and
hairpin) connections in ``CNI-HOSTPORT-SETMARK`` so ``CNI-HOSTPORT-MASQ`` masquerades
them to the gateway address. Nothing else is needed (no userland proxy); the
integration tests check the sysctl and connect through 127.0.0.1 and the gateway.
"""

from __future__ import annotations

import errno
import ipaddress
import re
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from berth.errors import InvalidArgument

PROTOCOLS = ("tcp", "udp", "sctp")
_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


@dataclass(frozen=True)
class PortRequest:
    """One container port to publish; host ports (0, 0) mean any, (a, b) a range."""

    container_port: int
    protocol: str = "tcp"
    host_ip: str = ""
    host_port_start: int = 0
    host_port_end: int = 0

    @property
    def host_port_text(self) -> str:
        if self.host_port_start == 0:
            return ""
        if self.host_port_end != self.host_port_start:
            return f"{self.host_port_start}-{self.host_port_end}"
        return str(self.host_port_start)


@dataclass(frozen=True)
class PortMapping:
    """A published port as allocated: what portmap gets and inspect shows."""

    host_ip: str
    host_port: int
    container_port: int
    protocol: str = "tcp"

    def to_cni(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"hostPort": self.host_port, "containerPort": self.container_port,
                                 "protocol": self.protocol}
        if self.host_ip:
            entry["hostIP"] = self.host_ip
        return entry


# --- parsing ---------------------------------------------------------------------------

def _port_range(text: str, what: str, allow_zero: bool) -> tuple[int, int]:
    m = _RANGE.match(text)
    if not m:
        raise InvalidArgument(f"invalid {what}: {text}")
    start = int(m.group(1))
    end = int(m.group(2)) if m.group(2) is not None else start
    low = 0 if allow_zero else 1
    if not (low <= start <= 65535 and low <= end <= 65535) or end < start or (start == 0 and end != 0):
        raise InvalidArgument(f"invalid {what}: {text}")
    return start, end


def _split_proto(text: str) -> tuple[str, str]:
    port, _, proto = text.partition("/")
    return port, (proto or "tcp")


def _check_ip(ip: str) -> str:
    if ip.startswith("["):
        if not ip.endswith("]"):
            raise InvalidArgument(f"invalid IP address: {ip}")
        ip = ip[1:-1]
    if not ip:
        return ""
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        raise InvalidArgument(f"invalid IP address: {ip}") from None


def parse_publish(spec: str) -> list[PortRequest]:
    """One ``-p`` value into its port requests (one per container port)."""
    raw = spec.strip()
    parts = raw.split(":")
    container = parts[-1]
    if len(parts) == 1:
        ip, host = "", ""
    elif len(parts) == 2:
        ip, host = "", parts[0]
    else:
        ip, host = ":".join(parts[:-2]), parts[-2]
    ip = _check_ip(ip)
    port_text, proto = _split_proto(container)
    if not port_text:
        raise InvalidArgument(f"no port specified: {raw}<empty>")
    proto = proto.lower()
    if proto not in PROTOCOLS:
        raise InvalidArgument(f"invalid proto: {proto}")
    c_start, c_end = _port_range(port_text, "containerPort", allow_zero=False)
    h_start, h_end = _port_range(host, "hostPort", allow_zero=True) if host else (0, 0)
    if host and h_start and (c_end - c_start) != (h_end - h_start) and c_end != c_start:
        raise InvalidArgument(f"invalid ranges specified for container and host Ports: {port_text} and {host}")
    out = []
    for i in range(c_end - c_start + 1):
        if h_start == 0:
            hs = he = 0
        elif c_start == c_end:
            hs, he = h_start, h_end  # a single container port: any host port of the range
        else:
            hs = he = h_start + i
        out.append(PortRequest(c_start + i, proto, ip, hs, he))
    return out


def parse_exposed(exposed: Mapping[str, Any] | Iterable[str]) -> list[PortRequest]:
    """-P: each ``"80/tcp"`` (or ``"8000-8010/udp"``) of ExposedPorts to any host port."""
    out: list[PortRequest] = []
    for key in sorted(exposed, key=_exposed_sort_key):
        port_text, proto = _split_proto(str(key))
        proto = proto.lower()
        if proto not in PROTOCOLS:
            raise InvalidArgument(f"invalid proto: {proto}")
        start, end = _port_range(port_text, "containerPort", allow_zero=False)
        out.extend(PortRequest(p, proto) for p in range(start, end + 1))
    return out


def _exposed_sort_key(key: Any) -> tuple[int, str]:
    port, _, proto = str(key).partition("/")
    head = port.split("-")[0]
    return (int(head) if head.isdigit() else 0, proto)


def requests_from_bindings(port_bindings: Mapping[str, Any] | None, exposed: Mapping[str, Any] | None = None,
                           publish_all: bool = False) -> list[PortRequest]:
    """HostConfig.PortBindings (``{"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}``) and,
    with PublishAllPorts, the ExposedPorts that have no binding."""
    out: list[PortRequest] = []
    bound: set[tuple[int, str]] = set()
    for key, bindings in sorted((port_bindings or {}).items(), key=lambda kv: _exposed_sort_key(kv[0])):
        port_text, proto = _split_proto(key)
        proto = proto.lower()
        if proto not in PROTOCOLS:
            raise InvalidArgument(f"invalid proto: {proto}")
        c_start, c_end = _port_range(port_text, "containerPort", allow_zero=False)
        if c_start != c_end:
            raise InvalidArgument(f"invalid containerPort: {port_text}")
        for binding in bindings or [{}]:
            binding = binding or {}
            ip = _check_ip(str(binding.get("HostIp") or ""))
            host = str(binding.get("HostPort") or "")
            hs, he = _port_range(host, "hostPort", allow_zero=True) if host else (0, 0)
            out.append(PortRequest(c_start, proto, ip, hs, he))
        bound.add((c_start, proto))
    if publish_all and exposed:
        out.extend(r for r in parse_exposed(exposed) if (r.container_port, r.protocol) not in bound)
    return out


def port_bindings(requests: Iterable[PortRequest]) -> dict[str, list[dict[str, str]]]:
    out: dict[str, list[dict[str, str]]] = {}
    for r in requests:
        out.setdefault(f"{r.container_port}/{r.protocol}", []).append(
            {"HostIp": r.host_ip, "HostPort": r.host_port_text})
    return out


def cni_port_mappings(mappings: Iterable[PortMapping]) -> list[dict[str, Any]]:
    return [m.to_cni() for m in mappings]


def docker_ports(mappings: Iterable[PortMapping], exposed: Iterable[str] = ()) -> dict[str, Any]:
    """NetworkSettings.Ports: published ports with their bindings, exposed ones as null.

    A binding on every address is shown as Docker 20.10+ shows it: 0.0.0.0 and ::.
    """
    out: dict[str, Any] = {str(k) if "/" in str(k) else f"{k}/tcp": None for k in exposed}
    for m in mappings:
        key = f"{m.container_port}/{m.protocol}"
        entries = out.get(key) or []
        ips = [m.host_ip] if m.host_ip else ["0.0.0.0", "::"]
        entries.extend({"HostIp": ip, "HostPort": str(m.host_port)} for ip in ips)
        out[key] = entries
    return out


# --- allocation --------------------------------------------------------------------------

def _family(ip: str) -> int:
    return 0 if not ip else ipaddress.ip_address(ip).version


def _overlap(a: str, b: str) -> bool:
    if not a or not b:
        return True
    if a == b:
        return True
    fa, fb = _family(a), _family(b)
    if fa != fb:
        return False
    return ipaddress.ip_address(a).is_unspecified or ipaddress.ip_address(b).is_unspecified


def _local_port_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
        if 0 < low <= high <= 65535:
            return low, high
    except (OSError, ValueError):
        pass
    return 49153, 60999


def _shown_ip(ip: str) -> str:
    if not ip:
        return "0.0.0.0"
    return f"[{ip}]" if ":" in ip else ip


class PortAllocator:
    """Host ports taken by published container ports (in memory; rebuild with ``restore``)."""

    def __init__(self, port_range: tuple[int, int] | None = None, probe: bool = True) -> None:
        self.port_range = port_range or _local_port_range()
        self.probe = probe
        self._taken: dict[tuple[str, int], list[tuple[str, str]]] = {}  # (proto, port) -> [(ip, owner)]
        self._owners: dict[str, list[PortMapping]] = {}
        self._cursor = self.port_range[0]

    def owned(self, owner: str) -> list[PortMapping]:
        return list(self._owners.get(owner, []))

    def release(self, owner: str) -> None:
        for m in self._owners.pop(owner, []):
            entries = self._taken.get((m.protocol, m.host_port), [])
            entries[:] = [e for e in entries if e[1] != owner]
            if not entries:
                self._taken.pop((m.protocol, m.host_port), None)

    def restore(self, owner: str, mappings: Iterable[PortMapping]) -> None:
        """Record ports already published (after a restart of berthd), without checks."""
        for m in mappings:
            self._take(owner, m)

    def allocate(self, owner: str, requests: Sequence[PortRequest]) -> list[PortMapping]:
        """Host ports for every request, or InvalidArgument and nothing taken."""
        made: list[PortMapping] = []
        try:
            for r in requests:
                if r.host_port_start and r.host_port_start == r.host_port_end:
                    port = r.host_port_start
                    self._check(owner, r.protocol, r.host_ip, port)
                else:
                    port = self._pick(owner, r)
                m = PortMapping(r.host_ip, port, r.container_port, r.protocol)
                self._take(owner, m)
                made.append(m)
        except BaseException:
            for m in made:
                self._untake(owner, m)
            raise
        return made

    # ---

    def _take(self, owner: str, m: PortMapping) -> None:
        self._taken.setdefault((m.protocol, m.host_port), []).append((m.host_ip, owner))
        self._owners.setdefault(owner, []).append(m)

    def _untake(self, owner: str, m: PortMapping) -> None:
        entries = self._taken.get((m.protocol, m.host_port), [])
        if (m.host_ip, owner) in entries:
            entries.remove((m.host_ip, owner))
        if not entries:
            self._taken.pop((m.protocol, m.host_port), None)
        owned = self._owners.get(owner, [])
        if m in owned:
            owned.remove(m)
        if not owned:
            self._owners.pop(owner, None)

    def _conflict(self, proto: str, ip: str, port: int) -> bool:
        return any(_overlap(ip, other) for other, _ in self._taken.get((proto, port), []))

    def _check(self, owner: str, proto: str, ip: str, port: int) -> None:
        if self._conflict(proto, ip, port):
            raise InvalidArgument(f"Bind for {_shown_ip(ip)}:{port} failed: port is already allocated")
        if self.probe:
            err = _probe(proto, ip, port)
            if err:
                raise InvalidArgument(f"Bind for {_shown_ip(ip)}:{port} failed: {err}")

    def _pick(self, owner: str, r: PortRequest) -> int:
        if r.host_port_start:
            candidates: Iterable[int] = range(r.host_port_start, r.host_port_end + 1)
        else:
            low, high = self.port_range
            start = min(max(self._cursor, low), high)
            candidates = list(range(start, high + 1)) + list(range(low, start))
        for port in candidates:
            if self._conflict(r.protocol, r.host_ip, port):
                continue
            if self.probe:
                err = _probe(r.protocol, r.host_ip, port)
                if err == "cannot assign requested address":
                    raise InvalidArgument(f"Bind for {_shown_ip(r.host_ip)}:{port} failed: {err}")
                if err:
                    continue
            if not r.host_port_start:
                self._cursor = port + 1 if port < self.port_range[1] else self.port_range[0]
            return port
        where = f"{_shown_ip(r.host_ip)}:{r.host_port_text}" if r.host_port_start else _shown_ip(r.host_ip)
        raise InvalidArgument(f"Bind for {where} failed: all ports are allocated")


def _probe(proto: str, ip: str, port: int) -> str | None:
    """None if a socket could bind ``ip:port`` now, else the reason (e.g. in use)."""
    if proto == "sctp":
        return None
    family = socket.AF_INET6 if ip and ":" in ip else socket.AF_INET
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    try:
        sock = socket.socket(family, kind)
    except OSError:
        return None
    try:
        if proto == "tcp":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no conflict
        sock.bind((ip or ("::" if family == socket.AF_INET6 else "0.0.0.0"), port))
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            return "address already in use"
        if e.errno == errno.EADDRNOTAVAIL:
            return "cannot assign requested address"
        return None  # e.g. EACCES for a low port when not root: portmap does not need it
    finally:
        sock.close()
    return None
