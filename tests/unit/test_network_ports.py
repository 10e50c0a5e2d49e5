"""berth.network.ports: Docker's -p syntax, -P, allocation and conflicts, CNI portMappings."""

from __future__ import annotations

import socket

import pytest

from berth.errors import InvalidArgument
from berth.network.ports import (
    PortAllocator,
    PortMapping,
    PortRequest,
    cni_port_mappings,
    docker_ports,
    parse_exposed,
    parse_publish,
    port_bindings,
    requests_from_bindings,
)


@pytest.mark.parametrize("spec, expected", [
    ("80", [PortRequest(80, "tcp", "", 0, 0)]),
    ("8080:80", [PortRequest(80, "tcp", "", 8080, 8080)]),
    ("127.0.0.1:8080:80", [PortRequest(80, "tcp", "127.0.0.1", 8080, 8080)]),
    ("127.0.0.1::80", [PortRequest(80, "tcp", "127.0.0.1", 0, 0)]),
    ("[::1]:8080:80", [PortRequest(80, "tcp", "::1", 8080, 8080)]),
    ("::1:8080:80", [PortRequest(80, "tcp", "::1", 8080, 8080)]),
    ("53/udp", [PortRequest(53, "udp", "", 0, 0)]),
    ("5353:53/UDP", [PortRequest(53, "udp", "", 5353, 5353)]),
    ("9000:9000/sctp", [PortRequest(9000, "sctp", "", 9000, 9000)]),
    ("8000-8002:80-82", [PortRequest(80, "tcp", "", 8000, 8000), PortRequest(81, "tcp", "", 8001, 8001),
                         PortRequest(82, "tcp", "", 8002, 8002)]),
    ("8000-8010:80", [PortRequest(80, "tcp", "", 8000, 8010)]),
    ("80-81", [PortRequest(80, "tcp", "", 0, 0), PortRequest(81, "tcp", "", 0, 0)]),
    ("0:80", [PortRequest(80, "tcp", "", 0, 0)]),
])
def test_parse_publish(spec: str, expected: list[PortRequest]) -> None:
    assert parse_publish(spec) == expected


@pytest.mark.parametrize("spec, message", [
    ("", "no port specified"),
    ("8080:", "no port specified"),
    ("abc", "invalid containerPort: abc"),
    ("0", "invalid containerPort: 0"),
    ("70000", "invalid containerPort: 70000"),
    ("x:80", "invalid hostPort: x"),
    ("90-80", "invalid containerPort: 90-80"),
    ("8000-8005:80-90", "invalid ranges specified for container and host Ports: 80-90 and 8000-8005"),
    ("80/icmp", "invalid proto: icmp"),
    ("300.1.1.1:80:80", "invalid IP address: 300.1.1.1"),
    ("[::1:80:80", "invalid IP address"),
])
def test_parse_publish_errors(spec: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message.replace("[", r"\[")):
        parse_publish(spec)


def test_parse_exposed_for_publish_all() -> None:
    assert parse_exposed({"443/tcp": {}, "80/tcp": {}, "53/udp": {}}) == [
        PortRequest(53, "udp"), PortRequest(80, "tcp"), PortRequest(443, "tcp")]
    assert parse_exposed(["8000-8001/tcp"]) == [PortRequest(8000), PortRequest(8001)]


def test_bindings_round_trip_and_publish_all() -> None:
    requests = parse_publish("127.0.0.1:8080:80") + parse_publish("8000-8010:90") + parse_publish("53/udp")
    bindings = port_bindings(requests)
    assert bindings == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}],
                        "90/tcp": [{"HostIp": "", "HostPort": "8000-8010"}],
                        "53/udp": [{"HostIp": "", "HostPort": ""}]}
    back = requests_from_bindings(bindings, exposed={"80/tcp": {}, "443/tcp": {}}, publish_all=True)
    assert sorted(back, key=repr) == sorted(requests + [PortRequest(443)], key=repr)


def test_allocate_fixed_and_conflicts() -> None:
    alloc = PortAllocator(port_range=(40000, 40009), probe=False)
    got = alloc.allocate("c1", parse_publish("8080:80"))
    assert got == [PortMapping("", 8080, 80, "tcp")]
    with pytest.raises(InvalidArgument, match=r"^Bind for 0\.0\.0\.0:8080 failed: port is already allocated$"):
        alloc.allocate("c2", parse_publish("8080:81"))
    with pytest.raises(InvalidArgument, match=r"Bind for 127\.0\.0\.1:8080 failed: port is already allocated"):
        alloc.allocate("c2", parse_publish("127.0.0.1:8080:81"))
    # another protocol, or the same port of another owner after release, is fine
    assert alloc.allocate("c2", parse_publish("8080:80/udp")) == [PortMapping("", 8080, 80, "udp")]
    alloc.release("c1")
    assert alloc.allocate("c3", parse_publish("8080:80")) == [PortMapping("", 8080, 80, "tcp")]


def test_specific_addresses_do_not_overlap_each_other() -> None:
    alloc = PortAllocator(port_range=(40000, 40009), probe=False)
    alloc.allocate("a", parse_publish("127.0.0.1:9000:80"))
    alloc.allocate("b", parse_publish("127.0.0.2:9000:80"))
    alloc.allocate("c", parse_publish("[::1]:9000:80"))  # another family
    with pytest.raises(InvalidArgument, match=r"Bind for \[::\]:9000 failed"):
        alloc.allocate("d", parse_publish("[::]:9000:80"))
    with pytest.raises(InvalidArgument, match=r"Bind for 0\.0\.0\.0:9000"):
        alloc.allocate("d", parse_publish("0.0.0.0:9000:80"))


def test_allocation_is_all_or_nothing() -> None:
    alloc = PortAllocator(port_range=(40000, 40009), probe=False)
    alloc.allocate("a", parse_publish("9001:80"))
    with pytest.raises(InvalidArgument):
        alloc.allocate("b", parse_publish("9000:80") + parse_publish("9001:81"))
    assert alloc.owned("b") == []
    assert alloc.allocate("c", parse_publish("9000:80")) == [PortMapping("", 9000, 80)]


def test_dynamic_ports_in_order_and_ranges() -> None:
    alloc = PortAllocator(port_range=(40000, 40002), probe=False)
    got = alloc.allocate("a", parse_publish("80-81"))
    assert [m.host_port for m in got] == [40000, 40001]
    assert alloc.allocate("b", parse_publish("80"))[0].host_port == 40002
    with pytest.raises(InvalidArgument, match="all ports are allocated"):
        alloc.allocate("c", parse_publish("80"))
    alloc.release("a")
    assert alloc.allocate("c", parse_publish("80"))[0].host_port == 40000
    # a host range for one container port: the first free port of it
    alloc2 = PortAllocator(port_range=(40000, 40002), probe=False)
    alloc2.allocate("x", parse_publish("8000:80"))
    assert alloc2.allocate("y", parse_publish("8000-8002:80"))[0].host_port == 8001


def _listening_with_free_next() -> socket.socket:
    """A listening socket on a port P whose P+1 is free right now (other tests run beside)."""
    for _ in range(50):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                s.close()
                continue
        s.listen()
        return s
    raise AssertionError("no port P with P+1 free")


def test_probe_refuses_a_port_a_host_process_listens_on() -> None:
    with _listening_with_free_next() as s:
        port = s.getsockname()[1]
        alloc = PortAllocator(port_range=(port, port + 1), probe=True)
        with pytest.raises(InvalidArgument, match=f"Bind for 127.0.0.1:{port} failed: address already in use"):
            alloc.allocate("a", parse_publish(f"127.0.0.1:{port}:80"))
        # and -P skips it
        got = alloc.allocate("a", [PortRequest(80, "tcp", "127.0.0.1")])
        assert got[0].host_port == port + 1


def test_restore_after_restart() -> None:
    alloc = PortAllocator(probe=False)
    alloc.restore("c1", [PortMapping("", 8080, 80)])
    with pytest.raises(InvalidArgument, match="already allocated"):
        alloc.allocate("c2", parse_publish("8080:80"))


def test_cni_and_docker_forms() -> None:
    mappings = [PortMapping("", 8080, 80), PortMapping("127.0.0.1", 5353, 53, "udp")]
    assert cni_port_mappings(mappings) == [
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
        {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.1"}]
    assert docker_ports(mappings, exposed=["80/tcp", "443/tcp"]) == {
        "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}, {"HostIp": "::", "HostPort": "8080"}],
        "443/tcp": None,
        "53/udp": [{"HostIp": "127.0.0.1", "HostPort": "5353"}]}
