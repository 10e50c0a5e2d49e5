"""The CNI conflists berthd writes, and the subnet rules behind them.

    SubnetSpec.parse(subnet, gateway=None, ip_range=None) -> SubnetSpec
    BridgeNetwork(name, bridge, subnets, ipam_dir, internal=False, ip_masq=True,
                  hairpin=True, mtu=None, isolate=True, sysctls={}, tuning_dir=None)
    bridge_conflist(net) -> dict           bridge+host-local, portmap, firewall, tuning
    loopback_conflist(name=LOOPBACK_NETWORK) -> dict
    validate_subnets(name, subnets, others)  InvalidArgument naming the overlapping network
    pick_subnet(taken, pools=DEFAULT_POOLS, avoid=host_routes()) -> IPv4Network
    bridge_name(network_id) -> "br-<12 hex>"
    host_routes() -> list[ip_network]      the host's routes (not the default ones)

What a bridge network is (as podman's CNI networks were, with Docker's defaults):

- ``bridge``: the Linux bridge ``bridge``, a veth pair per container (``hairpinMode`` so
  a container reaches its own published ports), ``isGateway`` gives the bridge the
  gateway address, ``ipMasq`` masquerades traffic leaving the subnet; capabilities
  ``ips`` (``--ip``) and ``mac`` (``--mac-address``) go to it through runtimeConfig.
- ``host-local`` IPAM: one range set per subnet (``--subnet``, ``--gateway``,
  ``--ip-range`` as rangeStart/rangeEnd), a default route through the gateway, its
  reservations in ``ipam_dir/<network>/``.
- ``portmap`` (capability ``portMappings``, ``snat: true``): DNAT for published ports,
  also for connections from the host itself, including 127.0.0.1 (see berth.network.ports).
- ``firewall`` (backend iptables): accepts the container's traffic in FORWARD (needed when
  the FORWARD policy is DROP, as dockerd leaves it); ``ingressPolicy: same-bridge`` keeps
  networks apart, as Docker's DOCKER-ISOLATION chains do.
- ``tuning``: sysctls inside the container's namespace (``--sysctl net.*``).

``--internal``: no gateway address on the bridge, no route, no masquerade, no portmap:
containers reach each other on the bridge and nothing else (the embedded DNS still
answers: it listens inside each container's namespace).

The loopback list is run once per namespace with ifname ``lo`` (also for ``--network
none``), as containerd and cri-o do.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

from berth.errors import InvalidArgument

from .cni import CNI_VERSION

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

LOOPBACK_NETWORK = "berth-loopback"
DEFAULT_BRIDGE = "berth0"
# Docker's default address pools: 172.17-31.0.0/16, then 192.168.0.0/16 cut in /20s
DEFAULT_POOLS: tuple[tuple[str, int], ...] = (("172.17.0.0/16", 16), ("172.18.0.0/15", 16),
                                              ("172.20.0.0/14", 16), ("172.24.0.0/13", 16),
                                              ("192.168.0.0/16", 20))
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")
_IFNAME = re.compile(r"^[A-Za-z0-9_.\-]{1,15}$")


@dataclass(frozen=True)
class SubnetSpec:
    subnet: Network
    gateway: Address
    ip_range: Network | None = None

    @classmethod
    def parse(cls, subnet: str, gateway: str | None = None, ip_range: str | None = None) -> SubnetSpec:
        try:
            net = ipaddress.ip_network(subnet, strict=False)
        except ValueError:
            raise InvalidArgument(f"invalid subnet {subnet!r}") from None
        if "/" not in subnet:
            example = net.supernet(new_prefix=24 if net.version == 4 else 64)
            raise InvalidArgument(f"invalid subnet {subnet}: a prefix length is needed (e.g. {example})")
        if net.network_address != ipaddress.ip_interface(subnet).ip:
            raise InvalidArgument(f"invalid subnet {subnet}: it should be {net}")
        hosts = net.num_addresses - (2 if net.version == 4 else 1)  # network (and broadcast) address
        if hosts < 2:
            raise InvalidArgument(f"subnet {net} is too small: no room for a gateway and a container")
        if gateway:
            try:
                gw = ipaddress.ip_address(gateway)
            except ValueError:
                raise InvalidArgument(f"invalid gateway {gateway!r}") from None
        else:
            gw = net.network_address + 1
        if gw.version != net.version or gw not in net:
            raise InvalidArgument(f"gateway {gw} is not in subnet {net}")
        if net.version == 4 and gw in (net.network_address, net.broadcast_address):
            raise InvalidArgument(f"gateway {gw} is the network or broadcast address of {net}")
        rng = None
        if ip_range:
            try:
                rng = ipaddress.ip_network(ip_range, strict=False)
            except ValueError:
                raise InvalidArgument(f"invalid ip range {ip_range!r}") from None
            if rng.version != net.version or not rng.subnet_of(net):  # type: ignore[arg-type]
                raise InvalidArgument(f"ip range {rng} is not in subnet {net}")
        return cls(net, gw, rng)

    def range_entry(self) -> dict[str, str]:
        entry = {"subnet": str(self.subnet), "gateway": str(self.gateway)}
        if self.ip_range is not None and self.ip_range != self.subnet:
            first, last = self.ip_range.network_address, self.ip_range.broadcast_address
            if self.subnet.version == 4:
                first = max(first, self.subnet.network_address + 1)
                last = min(last, self.subnet.broadcast_address - 1)
            entry["rangeStart"], entry["rangeEnd"] = str(first), str(last)
        return entry


@dataclass(frozen=True)
class BridgeNetwork:
    name: str
    bridge: str
    subnets: tuple[SubnetSpec, ...]
    ipam_dir: str
    internal: bool = False
    ip_masq: bool = True
    hairpin: bool = True
    mtu: int | None = None
    isolate: bool = True
    sysctls: Mapping[str, str] = field(default_factory=dict)
    tuning_dir: str | None = None

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise InvalidArgument(f"invalid network name {self.name!r}: use letters, digits, '_', '.', '-'")
        if not _IFNAME.match(self.bridge):
            raise InvalidArgument(f"invalid bridge name {self.bridge!r}: at most 15 of letters, digits, '_.-'")
        if not self.subnets:
            raise InvalidArgument(f"network {self.name}: at least one subnet is needed")
        if self.mtu is not None and not 68 <= self.mtu <= 65535:
            raise InvalidArgument(f"network {self.name}: invalid mtu {self.mtu}")
        for key in self.sysctls:
            if not key.startswith("net."):
                raise InvalidArgument(f"sysctl {key} is not a network sysctl (net.*)")
        validate_subnets(self.name, [s.subnet for s in self.subnets], {})


def bridge_conflist(net: BridgeNetwork) -> dict[str, Any]:
    routes = [] if net.internal else [
        {"dst": "0.0.0.0/0" if s.subnet.version == 4 else "::/0"}
        for s in _first_per_family(net.subnets)]
    ipam: dict[str, Any] = {
        "type": "host-local",
        "ranges": [[s.range_entry()] for s in net.subnets],
        "dataDir": net.ipam_dir,
    }
    if routes:
        ipam["routes"] = routes
    bridge: dict[str, Any] = {
        "type": "bridge",
        "bridge": net.bridge,
        "isGateway": not net.internal,
        "ipMasq": net.ip_masq and not net.internal,
        "hairpinMode": net.hairpin,
        "capabilities": {"ips": True, "mac": True},
        "ipam": ipam,
    }
    if net.mtu:
        bridge["mtu"] = net.mtu
    plugins: list[dict[str, Any]] = [bridge]
    if not net.internal:
        plugins.append({"type": "portmap", "capabilities": {"portMappings": True}, "snat": True})
    firewall: dict[str, Any] = {"type": "firewall", "backend": "iptables"}
    if net.isolate:
        firewall["ingressPolicy"] = "same-bridge"
    plugins.append(firewall)
    tuning: dict[str, Any] = {"type": "tuning"}
    if net.sysctls:
        tuning["sysctl"] = dict(net.sysctls)
    if net.tuning_dir:
        tuning["dataDir"] = net.tuning_dir
    plugins.append(tuning)
    return {"cniVersion": CNI_VERSION, "name": net.name, "plugins": plugins}


def loopback_conflist(name: str = LOOPBACK_NETWORK) -> dict[str, Any]:
    return {"cniVersion": CNI_VERSION, "name": name, "plugins": [{"type": "loopback"}]}


def _first_per_family(subnets: Iterable[SubnetSpec]) -> list[SubnetSpec]:
    seen: dict[int, SubnetSpec] = {}
    for s in subnets:
        seen.setdefault(s.subnet.version, s)
    return list(seen.values())


def validate_subnets(name: str, subnets: Sequence[Network], others: Mapping[str, Sequence[Network]]) -> None:
    """Refuse subnets that overlap each other or a subnet of another network."""
    for i, a in enumerate(subnets):
        for b in subnets[i + 1:]:
            if a.version == b.version and a.overlaps(b):
                raise InvalidArgument(f"network {name}: subnets {a} and {b} overlap")
    for other, theirs in sorted(others.items()):
        if other == name:
            continue
        for a in subnets:
            for b in theirs:
                if a.version == b.version and a.overlaps(b):
                    raise InvalidArgument(f"subnet {a} overlaps with network {other} ({b})")


def host_routes() -> list[Network]:
    """Destinations of the host's IPv4 and IPv6 routes, default routes left out."""
    found: list[Network] = []
    try:
        with open("/proc/net/route") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if len(fields) < 8:
                    continue
                dst = ipaddress.IPv4Address(int(fields[1], 16).to_bytes(4, "little"))
                mask = ipaddress.IPv4Address(int(fields[7], 16).to_bytes(4, "little"))
                net = ipaddress.IPv4Network(f"{dst}/{mask}", strict=False)
                if net.prefixlen:
                    found.append(net)
    except OSError:
        pass
    try:
        with open("/proc/net/ipv6_route") as f:
            for line in f:
                fields = line.split()
                if len(fields) < 2 or fields[1] == "00":
                    continue
                addr = ipaddress.IPv6Address(bytes.fromhex(fields[0]))
                net6 = ipaddress.IPv6Network(f"{addr}/{int(fields[1], 16)}", strict=False)
                if not (net6.is_link_local or net6.is_multicast or net6.prefixlen == 128):
                    found.append(net6)
    except OSError:
        pass
    return found


def pick_subnet(taken: Iterable[Network], pools: Sequence[tuple[str, int]] = DEFAULT_POOLS,
                avoid: Iterable[Network] | None = None) -> ipaddress.IPv4Network:
    """The first subnet of the pools that overlaps neither ``taken`` nor the host's routes."""
    blocked = [n for n in taken if n.version == 4]
    blocked += [n for n in (host_routes() if avoid is None else avoid) if n.version == 4]
    for base, prefix in pools:
        pool = ipaddress.IPv4Network(base)
        for candidate in pool.subnets(new_prefix=prefix) if prefix > pool.prefixlen else [pool]:
            if not any(candidate.overlaps(b) for b in blocked):
                return candidate
    raise InvalidArgument("could not find an available, non-overlapping IPv4 address pool "
                          "among the defaults to assign to the network")


def bridge_name(network_id: str) -> str:
    """Docker's name for a user-defined network's bridge: ``br-`` and 12 hex of its id."""
    if not re.match(r"^[0-9a-f]{12,}$", network_id):
        raise InvalidArgument(f"invalid network id {network_id!r}")
    return "br-" + network_id[:12]
