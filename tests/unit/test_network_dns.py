"""berth.network.dns: the embedded DNS server over real sockets on 127.0.0.1 (no root).

The upstream it forwards to is a second DNSServer on 127.0.0.1: no query leaves the host.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from berth.errors import InvalidArgument
from berth.network import dnsmsg
from berth.network.dns import DNSServer, Endpoint, parse_upstreams
from tests.unit.test_network_dnsmsg import make_query, parse_answer

TABLE = {
    ("net1", "web"): ["10.213.0.2"],
    ("net1", "db"): ["10.213.0.3", "fd00:213::3"],
    ("net1", "api"): ["10.213.0.4", "10.213.0.5", "10.213.0.6"],  # an alias on three containers
    ("net2", "other"): ["10.214.0.2"],
    ("up", "example.test"): ["192.0.2.10"],
    ("up", "big.test"): [f"192.0.2.{i}" for i in range(1, 60)],
}


def lookup(network: str, name: str) -> list[str]:
    if name == "boom":
        raise RuntimeError("lookup failed")
    return TABLE.get((network, name), [])


def reverse(network: str, ip: str) -> list[str]:
    return [f"{name}.{net}" for (net, name), ips in TABLE.items() if net == network and ip in ips]


async def udp_ask(ep: Endpoint, data: bytes, timeout: float = 3) -> bytes:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[bytes] = loop.create_future()

    class Proto(asyncio.DatagramProtocol):
        def datagram_received(self, d: bytes, addr: Any) -> None:
            if not fut.done():
                fut.set_result(d)

    transport, _ = await loop.create_datagram_endpoint(Proto, remote_addr=(ep.host, ep.udp_port))
    try:
        transport.sendto(data)
        return await asyncio.wait_for(fut, timeout)
    finally:
        transport.close()


async def tcp_ask(ep: Endpoint, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(ep.host, ep.tcp_port)
    try:
        writer.write(struct.pack("!H", len(data)) + data)
        size = struct.unpack("!H", await reader.readexactly(2))[0]
        return await reader.readexactly(size)
    finally:
        writer.close()


def run(body: Callable[..., Awaitable[None]], **server_kw: Any) -> None:
    async def main() -> None:
        upstream = DNSServer(lookup)
        up_ep = await upstream.listen("127.0.0.1", 0, networks=["up"], forward=False)
        server = DNSServer(lookup, reverse, upstreams=[f"127.0.0.1:{up_ep.udp_port}"], timeout=1.0, **server_kw)
        ep = await server.listen("127.0.0.1", 0, networks=["net1"])
        try:
            await body(server, ep, up_ep)
        finally:
            await server.close()
            await upstream.close()
    asyncio.run(main())


def addresses(data: bytes) -> list[str]:
    return sorted(str(ipaddress.ip_address(rdata)) for _, rdata in parse_answer(data)[2])


def test_container_names_and_aliases() -> None:
    async def body(server: DNSServer, ep: Endpoint, up: Endpoint) -> None:
        reply = await udp_ask(ep, make_query("web", msg_id=99))
        assert dnsmsg.message_id(reply) == 99 and dnsmsg.rcode_of(reply) == 0
        assert addresses(reply) == ["10.213.0.2"]
        assert addresses(await udp_ask(ep, make_query("WEB.net1."))) == ["10.213.0.2"]  # case, suffix
        assert addresses(await udp_ask(ep, make_query("api"))) == ["10.213.0.4", "10.213.0.5", "10.213.0.6"]
        assert addresses(await udp_ask(ep, make_query("db", dnsmsg.TYPE_AAAA))) == ["fd00:213::3"]
        # a known name without an address of that family: NOERROR, no answer, not forwarded
        reply = await udp_ask(ep, make_query("web", dnsmsg.TYPE_AAAA))
        assert dnsmsg.rcode_of(reply) == 0 and dnsmsg.answer_count(reply) == 0
        reply = await udp_ask(ep, make_query("web", dnsmsg.TYPE_MX))
        assert dnsmsg.rcode_of(reply) == 0 and dnsmsg.answer_count(reply) == 0
        # names of another network are not seen (the question goes upstream, which refuses
        # it), until the endpoint joins that network
        assert dnsmsg.rcode_of(await udp_ask(ep, make_query("other"))) == dnsmsg.REFUSED
        ep.networks = ["net1", "net2"]
        assert addresses(await udp_ask(ep, make_query("other"))) == ["10.214.0.2"]
    run(body)


def test_round_robin_order_changes() -> None:
    async def body(server: DNSServer, ep: Endpoint, up: Endpoint) -> None:
        orders = set()
        for _ in range(30):
            reply = await udp_ask(ep, make_query("api"))
            orders.add(tuple(r for _, r in parse_answer(reply)[2]))
        assert len(orders) > 1
    run(body)


def test_ptr() -> None:
    async def body(server: DNSServer, ep: Endpoint, up: Endpoint) -> None:
        reply = await udp_ask(ep, make_query("2.0.213.10.in-addr.arpa", dnsmsg.TYPE_PTR))
        assert parse_answer(reply)[2] == [(dnsmsg.TYPE_PTR, dnsmsg.encode_name("web.net1"))]
    run(body)


def test_other_names_are_forwarded_with_the_clients_id() -> None:
    async def body(server: DNSServer, ep: Endpoint, up: Endpoint) -> None:
        reply = await udp_ask(ep, make_query("example.test", msg_id=4242))
        assert dnsmsg.message_id(reply) == 4242
        assert addresses(reply) == ["192.0.2.10"]
        # the upstream's own answer for what it does not know (forwarding off there: REFUSED)
        assert dnsmsg.rcode_of(await udp_ask(ep, make_query("nowhere.test"))) == dnsmsg.REFUSED
    run(body)


def test_tcp_queries_and_truncation() -> None:
    async def body(server: DNSServer, ep: Endpoint, up: Endpoint) -> None:
        assert addresses(await tcp_ask(ep, make_query("web"))) == ["10.213.0.2"]
        # big.test: the upstream truncates over UDP; the client retries over TCP and gets all
        small = await udp_ask(ep, make_query("big.test"))
        assert dnsmsg.is_truncated(small) and len(small) <= 512
        full = await tcp_ask(ep, make_query("big.test"))
        assert not dnsmsg.is_truncated(full) and dnsmsg.answer_count(full) == 59
        # two queries on one connection
        reader, writer = await asyncio.open_connection(ep.host, ep.tcp_port)
        for name in ("web", "db"):
            q = make_query(name)
            writer.write(struct.pack("!H", len(q)) + q)
            size = struct.unpack("!H", await reader.readexactly(2))[0]
            assert dnsmsg.rcode_of(await reader.readexactly(size)) == 0
        writer.close()
    run(body)


def test_no_upstream_is_servfail_at_once_and_no_forwarding_is_refused() -> None:
    async def main() -> None:
        server = DNSServer(lookup)
        ep = await server.listen("127.0.0.1", 0, networks=["net1"])
        internal = await server.listen("127.0.0.1", 0, networks=["net1"], forward=False,
                                       upstreams=["127.0.0.1:9"])
        try:
            started = time.monotonic()
            assert dnsmsg.rcode_of(await udp_ask(ep, make_query("example.test"))) == dnsmsg.SERVFAIL
            assert time.monotonic() - started < 0.5
            assert dnsmsg.rcode_of(await udp_ask(internal, make_query("example.test"))) == dnsmsg.REFUSED
            assert addresses(await udp_ask(internal, make_query("web"))) == ["10.213.0.2"]
        finally:
            await server.close()
    asyncio.run(main())


def test_dead_and_silent_upstreams() -> None:
    async def main() -> None:
        silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # bound, never answers
        silent.bind(("127.0.0.1", 0))
        closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        closed_port = closed.getsockname()[1]
        closed.close()
        upstream = DNSServer(lookup)
        up = await upstream.listen("127.0.0.1", 0, networks=["up"])
        server = DNSServer(lookup, timeout=0.3, upstreams=[
            f"127.0.0.1:{closed_port}", f"127.0.0.1:{silent.getsockname()[1]}", f"127.0.0.1:{up.udp_port}"])
        ep = await server.listen("127.0.0.1", 0, networks=["net1"])
        try:
            started = time.monotonic()
            assert addresses(await udp_ask(ep, make_query("example.test"))) == ["192.0.2.10"]
            assert time.monotonic() - started < 1.5
            ep.upstreams = [("127.0.0.1", silent.getsockname()[1])]
            assert dnsmsg.rcode_of(await udp_ask(ep, make_query("example.test"))) == dnsmsg.SERVFAIL
        finally:
            await server.close()
            await upstream.close()
            silent.close()
    asyncio.run(main())


def test_bad_messages_and_failing_lookup() -> None:
    async def body(server: DNSServer, ep: Endpoint, up: Endpoint) -> None:
        bad = struct.pack("!HHHHHH", 77, 0x0100, 2, 0, 0, 0)
        reply = await udp_ask(ep, bad)
        assert dnsmsg.message_id(reply) == 77 and dnsmsg.rcode_of(reply) == dnsmsg.FORMERR
        assert dnsmsg.rcode_of(await udp_ask(ep, make_query("boom"))) == dnsmsg.SERVFAIL
        assert dnsmsg.rcode_of(await udp_ask(ep, make_query("web", flags=0x2100))) == dnsmsg.NOTIMP  # opcode 4
        # the server is still up
        assert addresses(await udp_ask(ep, make_query("web"))) == ["10.213.0.2"]
    run(body)


def test_getaddrinfo_style_both_families_over_udp() -> None:
    async def body(server: DNSServer, ep: Endpoint, up: Endpoint) -> None:
        a, aaaa = await asyncio.gather(udp_ask(ep, make_query("db")), udp_ask(ep, make_query("db", 28)))
        assert addresses(a) == ["10.213.0.3"] and addresses(aaaa) == ["fd00:213::3"]
    run(body)


def test_parse_upstreams() -> None:
    assert parse_upstreams(["1.2.3.4", "1.2.3.4:5353", "::1", "[::1]:53", ("127.0.0.1", 9)]) == [
        ("1.2.3.4", 53), ("1.2.3.4", 5353), ("::1", 53), ("::1", 53), ("127.0.0.1", 9)]
    with pytest.raises(InvalidArgument):
        parse_upstreams(["nameserver"])
