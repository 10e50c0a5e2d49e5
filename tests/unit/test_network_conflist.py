"""berth.network.conflist: the conflists berthd writes, subnet validation and picking."""

from __future__ import annotations

import ipaddress
import json

import pytest

from berth.errors import InvalidArgument
from berth.network.cni import NetworkConfigList
from berth.network.conflist import (
    BridgeNetwork,
    SubnetSpec,
    bridge_conflist,
    bridge_name,
    host_routes,
    loopback_conflist,
    pick_subnet,
    validate_subnets,
)

N = ipaddress.ip_network


def net(**kw: object) -> BridgeNetwork:
    args: dict[str, object] = dict(name="mynet", bridge="br-0123456789ab",
                                   subnets=(SubnetSpec.parse("10.213.1.0/24"),), ipam_dir="/state/ipam")
    args.update(kw)
    return BridgeNetwork(**args)  # type: ignore[arg-type]


def test_bridge_conflist_shape() -> None:
    conf = bridge_conflist(net(mtu=1400, sysctls={"net.ipv4.conf.eth0.arp_notify": "1"}, tuning_dir="/state/tuning"))
    assert conf["cniVersion"] == "1.0.0" and conf["name"] == "mynet"
    assert [p["type"] for p in conf["plugins"]] == ["bridge", "portmap", "firewall", "tuning"]
    bridge, portmap, firewall, tuning = conf["plugins"]
    assert bridge == {
        "type": "bridge", "bridge": "br-0123456789ab", "isGateway": True, "ipMasq": True, "hairpinMode": True,
        "capabilities": {"ips": True, "mac": True}, "mtu": 1400,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.213.1.0/24", "gateway": "10.213.1.1"}]],
                 "dataDir": "/state/ipam", "routes": [{"dst": "0.0.0.0/0"}]},
    }
    assert portmap == {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True}
    assert firewall == {"type": "firewall", "backend": "iptables", "ingressPolicy": "same-bridge"}
    assert tuning == {"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.arp_notify": "1"}, "dataDir": "/state/tuning"}
    NetworkConfigList(conf)  # valid as a conflist
    json.dumps(conf)


def test_internal_network_has_no_gateway_route_masquerade_or_portmap() -> None:
    conf = bridge_conflist(net(internal=True))
    types = [p["type"] for p in conf["plugins"]]
    assert "portmap" not in types
    bridge = conf["plugins"][0]
    assert bridge["isGateway"] is False and bridge["ipMasq"] is False
    assert "routes" not in bridge["ipam"]


def test_dual_stack_and_ip_range() -> None:
    conf = bridge_conflist(net(subnets=(
        SubnetSpec.parse("10.213.2.0/24", "10.213.2.254", "10.213.2.128/25"),
        SubnetSpec.parse("fd00:213::/64"))))
    ipam = conf["plugins"][0]["ipam"]
    assert ipam["ranges"] == [
        [{"subnet": "10.213.2.0/24", "gateway": "10.213.2.254", "rangeStart": "10.213.2.128",
          "rangeEnd": "10.213.2.254"}],
        [{"subnet": "fd00:213::/64", "gateway": "fd00:213::1"}]]
    assert ipam["routes"] == [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]


@pytest.mark.parametrize("args, message", [
    (("nonsense",), "invalid subnet 'nonsense'"),
    (("10.0.0.0",), "a prefix length is needed"),
    (("10.0.0.5/24",), "invalid subnet 10.0.0.5/24: it should be 10.0.0.0/24"),
    (("10.0.0.0/31",), "too small"),
    (("10.0.0.0/24", "10.0.1.1"), "gateway 10.0.1.1 is not in subnet 10.0.0.0/24"),
    (("10.0.0.0/24", "10.0.0.255"), "broadcast"),
    (("10.0.0.0/24", "fd00::1"), "is not in subnet"),
    (("10.0.0.0/24", None, "10.0.1.0/25"), "ip range 10.0.1.0/25 is not in subnet 10.0.0.0/24"),
])
def test_subnet_errors(args: tuple[str, ...], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        SubnetSpec.parse(*args)


def test_overlapping_subnets_name_the_other_network() -> None:
    others = {"alpha": [N("10.1.0.0/16")], "beta": [N("10.2.0.0/24")], "mine": [N("10.3.0.0/24")]}
    validate_subnets("mine", [N("10.3.0.0/24"), N("10.4.0.0/24")], others)  # own subnets: fine
    expected = r"^subnet 10\.1\.5\.0/24 overlaps with network alpha \(10\.1\.0\.0/16\)$"
    with pytest.raises(InvalidArgument, match=expected):
        validate_subnets("new", [N("10.1.5.0/24")], others)
    with pytest.raises(InvalidArgument, match="subnets 10.9.0.0/16 and 10.9.1.0/24 overlap"):
        validate_subnets("new", [N("10.9.0.0/16"), N("10.9.1.0/24")], {})
    with pytest.raises(InvalidArgument, match="subnets"):
        net(subnets=(SubnetSpec.parse("10.9.0.0/16"), SubnetSpec.parse("10.9.1.0/24")))


def test_pick_subnet_skips_taken_and_host_routes() -> None:
    assert pick_subnet([], avoid=[]) == N("172.17.0.0/16")
    assert pick_subnet([N("172.17.0.0/16")], avoid=[N("172.18.5.0/24")]) == N("172.19.0.0/16")
    every = [N("172.16.0.0/12")]
    assert pick_subnet(every, avoid=[]) == N("192.168.0.0/20")
    with pytest.raises(InvalidArgument, match="non-overlapping"):
        pick_subnet(every + [N("192.168.0.0/16")], avoid=[])
    assert all(r.prefixlen > 0 for r in host_routes())


def test_names() -> None:
    assert bridge_name("0123456789abcdef" * 4) == "br-0123456789ab"
    with pytest.raises(InvalidArgument):
        bridge_name("nope")
    with pytest.raises(InvalidArgument, match="invalid bridge name"):
        net(bridge="a-much-too-long-bridge-name")
    with pytest.raises(InvalidArgument, match="invalid network name"):
        net(name="bad/name")
    with pytest.raises(InvalidArgument, match="not a network sysctl"):
        net(sysctls={"kernel.shm_rmid_forced": "1"})


def test_loopback_conflist() -> None:
    conf = NetworkConfigList(loopback_conflist())
    assert conf.name == "berth-loopback" and [p["type"] for p in conf.plugins] == ["loopback"]
