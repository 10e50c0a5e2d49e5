"""berth.network.dnsmsg: DNS wire format, checked against hand-made messages."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from berth.network import dnsmsg


def make_query(name: str, qtype: int = dnsmsg.TYPE_A, msg_id: int = 0x1234, flags: int = 0x0100,
               edns: int | None = None, qdcount: int = 1) -> bytes:
    arcount = 1 if edns else 0
    data = struct.pack("!HHHHHH", msg_id, flags, qdcount, 0, 0, arcount)
    data += dnsmsg.encode_name(name) + struct.pack("!HH", qtype, dnsmsg.CLASS_IN)
    if edns:
        data += b"\x00" + struct.pack("!HHIH", dnsmsg.TYPE_OPT, edns, 0, 0)
    return data


def parse_answer(data: bytes) -> tuple[int, int, list[tuple[int, bytes]]]:
    """(flags, rcode, [(type, rdata)]) of a response with one question."""
    msg_id, flags, qd, an, ns, ar = struct.unpack_from("!HHHHHH", data)
    _, offset = dnsmsg.read_name(data, 12)
    offset += 4
    records = []
    for _ in range(an):
        _, offset = dnsmsg.read_name(data, offset)
        rtype, rclass, ttl, rdlen = struct.unpack_from("!HHIH", data, offset)
        offset += 10
        records.append((rtype, data[offset:offset + rdlen]))
        offset += rdlen
    assert offset == len(data)
    return flags, flags & 0xF, records


def test_parse_query() -> None:
    q = dnsmsg.parse_query(make_query("Web.MyNet", dnsmsg.TYPE_AAAA, edns=1232))
    assert (q.id, q.name, q.qtype, q.qclass, q.udp_size) == (0x1234, "Web.MyNet", dnsmsg.TYPE_AAAA, 1, 1232)
    assert q.recursion_desired and q.opcode == 0
    assert q.question == dnsmsg.encode_name("Web.MyNet") + b"\x00\x1c\x00\x01"


@pytest.mark.parametrize("data", [
    b"\x00" * 5,
    make_query("a", qdcount=2),
    make_query("a", flags=0x8000),  # a response
    struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + b"\x05ab",  # label past the end
    struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + b"\xc0\x0c",  # pointer to itself
    struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + b"\x01a\x00\x00",  # truncated question
])
def test_parse_query_rejects(data: bytes) -> None:
    with pytest.raises(dnsmsg.FormatError):
        dnsmsg.parse_query(data)


def test_compressed_names() -> None:
    data = b"\x00" * 12 + b"\x03www\x07example\x00" + b"\x03api\xc0\x10"
    assert dnsmsg.read_name(data, 12) == ("www.example", 25)
    assert dnsmsg.read_name(data, 25) == ("api.example", 31)


def test_build_response_with_answers() -> None:
    q = dnsmsg.parse_query(make_query("web"))
    data = dnsmsg.build_response(q, dnsmsg.NOERROR, [dnsmsg.a_record("10.1.0.2", 600),
                                                     dnsmsg.aaaa_record("fd00::2", 600)])
    assert data[:2] == b"\x12\x34"
    flags, rcode, records = parse_answer(data)
    assert flags & 0x8000 and flags & 0x0400 and flags & 0x0100 and flags & 0x0080  # QR AA RD RA
    assert rcode == 0
    assert records == [(1, ipaddress.IPv4Address("10.1.0.2").packed), (28, ipaddress.IPv6Address("fd00::2").packed)]


def test_ptr_and_reverse_names() -> None:
    assert dnsmsg.reverse_pointer_ip("2.0.1.10.in-addr.arpa") == ipaddress.IPv4Address("10.1.0.2")
    v6 = ipaddress.IPv6Address("fd00::2")
    assert dnsmsg.reverse_pointer_ip(v6.reverse_pointer) == v6
    assert dnsmsg.reverse_pointer_ip("1.10.in-addr.arpa") is None
    assert dnsmsg.reverse_pointer_ip("x.0.1.10.in-addr.arpa") is None
    q = dnsmsg.parse_query(make_query("2.0.1.10.in-addr.arpa", dnsmsg.TYPE_PTR))
    _, _, records = parse_answer(dnsmsg.build_response(q, 0, [dnsmsg.ptr_record("web.mynet", 600)]))
    assert records == [(12, dnsmsg.encode_name("web.mynet"))]


def test_udp_answers_are_truncated_with_tc() -> None:
    q = dnsmsg.parse_query(make_query("many"))
    answers = [dnsmsg.a_record(f"10.0.{i // 256}.{i % 256}", 600) for i in range(100)]
    data = dnsmsg.build_response(q, 0, answers, limit=512)
    assert len(data) <= 512 and dnsmsg.is_truncated(data)
    assert 0 < dnsmsg.answer_count(data) < 100
    assert dnsmsg.answer_count(dnsmsg.build_response(q, 0, answers)) == 100


def test_error_response_and_ids() -> None:
    bad = struct.pack("!HHHHHH", 0xBEEF, 0x0100, 2, 0, 0, 0)
    data = dnsmsg.error_response(bad, dnsmsg.FORMERR)
    assert data is not None and dnsmsg.message_id(data) == 0xBEEF and dnsmsg.rcode_of(data) == dnsmsg.FORMERR
    assert dnsmsg.error_response(b"\x00", dnsmsg.FORMERR) is None
    assert dnsmsg.error_response(struct.pack("!HHHHHH", 1, 0x8000, 0, 0, 0, 0), 1) is None
    assert dnsmsg.message_id(dnsmsg.with_id(make_query("a"), 7)) == 7


def test_encode_name_limits() -> None:
    assert dnsmsg.encode_name("") == b"\x00" and dnsmsg.encode_name("a.") == b"\x01a\x00"
    with pytest.raises(ValueError):
        dnsmsg.encode_name("x" * 64)
