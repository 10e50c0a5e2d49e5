"""DNS wire format (RFC 1035), as much as the embedded server needs.

    parse_query(data) -> Query              header and the one question; FormatError if bad
    build_response(query, rcode, answers=(), *, aa=True, ra=True, limit=None) -> bytes
    error_response(data, rcode) -> bytes | None     an answer to what could not be parsed
    a_record(ip, ttl) / aaaa_record(ip, ttl) / ptr_record(name, ttl) -> Record
    reverse_pointer_ip(name) -> IPv4Address | IPv6Address | None   "4.3.2.1.in-addr.arpa"
    with_id(data, msg_id) -> bytes / message_id(data) -> int / rcode_of(data) -> int
    encode_name(name) -> bytes / read_name(data, offset) -> (name, offset)

Answers point at the question's name (compression pointer 0xC00C) and the question is
echoed byte for byte (its letter case too: some resolvers randomise it). A UDP answer
larger than ``limit`` (512 without EDNS) is cut at a record boundary with TC set, so the
client retries over TCP.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Sequence, Union

TYPE_A = 1
TYPE_NS = 2
TYPE_CNAME = 5
TYPE_SOA = 6
TYPE_PTR = 12
TYPE_MX = 15
TYPE_TXT = 16
TYPE_AAAA = 28
TYPE_SRV = 33
TYPE_OPT = 41
TYPE_ANY = 255
CLASS_IN = 1

NOERROR = 0
FORMERR = 1
SERVFAIL = 2
NXDOMAIN = 3
NOTIMP = 4
REFUSED = 5

_QR = 0x8000
_AA = 0x0400
_TC = 0x0200
_RD = 0x0100
_RA = 0x0080
_HEADER = struct.Struct("!HHHHHH")
UDP_LIMIT = 512

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


class FormatError(ValueError):
    """The message is not a DNS query this server can read."""


@dataclass(frozen=True)
class Query:
    id: int
    flags: int
    name: str            # as asked, without the final dot
    qtype: int
    qclass: int
    question: bytes      # the question section, byte for byte
    udp_size: int = UDP_LIMIT  # from an EDNS OPT record, if any

    @property
    def opcode(self) -> int:
        return (self.flags >> 11) & 0xF

    @property
    def recursion_desired(self) -> bool:
        return bool(self.flags & _RD)


@dataclass(frozen=True)
class Record:
    rtype: int
    ttl: int
    rdata: bytes


def read_name(data: bytes, offset: int) -> tuple[str, int]:
    """The name at ``offset`` (following compression pointers) and the offset after it."""
    labels: list[str] = []
    end = -1
    jumps = 0
    total = 0
    while True:
        if offset >= len(data):
            raise FormatError("name runs past the end of the message")
        length = data[offset]
        if length & 0xC0 == 0xC0:
            if offset + 1 >= len(data):
                raise FormatError("truncated compression pointer")
            if end < 0:
                end = offset + 2
            jumps += 1
            if jumps > 64:
                raise FormatError("compression pointer loop")
            offset = ((length & 0x3F) << 8) | data[offset + 1]
            continue
        if length & 0xC0:
            raise FormatError("unsupported label type")
        offset += 1
        if length == 0:
            break
        label = data[offset:offset + length]
        if len(label) != length:
            raise FormatError("label runs past the end of the message")
        total += length + 1
        if total > 255:
            raise FormatError("name longer than 255 bytes")
        labels.append(label.decode("latin-1"))
        offset += length
    return ".".join(labels), (end if end >= 0 else offset)


def encode_name(name: str) -> bytes:
    out = bytearray()
    for label in name.rstrip(".").split(".") if name.strip(".") else []:
        raw = label.encode("idna") if not label.isascii() else label.encode()
        if not raw or len(raw) > 63:
            raise ValueError(f"invalid DNS label in {name!r}")
        out.append(len(raw))
        out += raw
    out.append(0)
    if len(out) > 255:
        raise ValueError(f"DNS name too long: {name!r}")
    return bytes(out)


def _skip_record(data: bytes, offset: int) -> tuple[int, int, int, int]:
    """(type, class, ttl, offset after) of the resource record at ``offset``."""
    _, offset = read_name(data, offset)
    if offset + 10 > len(data):
        raise FormatError("truncated resource record")
    rtype, rclass, ttl, rdlen = struct.unpack_from("!HHIH", data, offset)
    offset += 10 + rdlen
    if offset > len(data):
        raise FormatError("truncated resource record data")
    return rtype, rclass, ttl, offset


def parse_query(data: bytes) -> Query:
    if len(data) < _HEADER.size:
        raise FormatError("shorter than a DNS header")
    msg_id, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(data)
    if flags & _QR:
        raise FormatError("a response, not a query")
    if qdcount != 1:
        raise FormatError(f"{qdcount} questions (exactly one is supported)")
    name, offset = read_name(data, _HEADER.size)
    if offset + 4 > len(data):
        raise FormatError("truncated question")
    qtype, qclass = struct.unpack_from("!HH", data, offset)
    question = data[_HEADER.size:offset + 4]
    offset += 4
    udp_size = UDP_LIMIT
    try:
        for _ in range(ancount + nscount):
            offset = _skip_record(data, offset)[3]
        for _ in range(arcount):
            rtype, rclass, _, offset = _skip_record(data, offset)
            if rtype == TYPE_OPT:
                udp_size = max(UDP_LIMIT, min(rclass, 4096))
    except FormatError:
        pass  # a damaged additional section does not spoil the question
    return Query(msg_id, flags, name, qtype, qclass, question, udp_size)


def a_record(ip: str | IPAddress, ttl: int) -> Record:
    return Record(TYPE_A, ttl, ipaddress.IPv4Address(ip).packed)


def aaaa_record(ip: str | IPAddress, ttl: int) -> Record:
    return Record(TYPE_AAAA, ttl, ipaddress.IPv6Address(ip).packed)


def ptr_record(name: str, ttl: int) -> Record:
    return Record(TYPE_PTR, ttl, encode_name(name))


def build_response(query: Query, rcode: int, answers: Sequence[Record] = (), *, aa: bool = True,
                   ra: bool = True, limit: int | None = None) -> bytes:
    flags = _QR | (query.opcode << 11) | (query.flags & _RD) | (rcode & 0xF)
    if aa:
        flags |= _AA
    if ra:
        flags |= _RA
    body = bytearray(query.question)
    count = 0
    for record in answers:
        rr = struct.pack("!HHHIH", 0xC00C, record.rtype, CLASS_IN, record.ttl, len(record.rdata)) + record.rdata
        if limit is not None and _HEADER.size + len(body) + len(rr) > limit:
            flags |= _TC
            break
        body += rr
        count += 1
    return _HEADER.pack(query.id, flags, 1, count, 0, 0) + bytes(body)


def error_response(data: bytes, rcode: int) -> bytes | None:
    """A header-only answer with ``rcode`` to a query that could not be parsed (needs its id)."""
    if len(data) < 4:
        return None
    msg_id, flags = struct.unpack_from("!HH", data)
    if flags & _QR:
        return None  # never answer a response
    out_flags = _QR | (flags & 0x7800) | (flags & _RD) | _RA | (rcode & 0xF)
    return _HEADER.pack(msg_id, out_flags, 0, 0, 0, 0)


def message_id(data: bytes) -> int:
    return int(struct.unpack_from("!H", data)[0])


def with_id(data: bytes, msg_id: int) -> bytes:
    return struct.pack("!H", msg_id) + data[2:]


def rcode_of(data: bytes) -> int:
    return int(struct.unpack_from("!H", data, 2)[0]) & 0xF


def is_truncated(data: bytes) -> bool:
    return len(data) >= 4 and bool(struct.unpack_from("!H", data, 2)[0] & _TC)


def answer_count(data: bytes) -> int:
    return int(struct.unpack_from("!H", data, 6)[0])


def reverse_pointer_ip(name: str) -> IPAddress | None:
    """The address a PTR query asks about, or None if ``name`` is not a full reverse name."""
    labels = name.lower().rstrip(".").split(".")
    try:
        if labels[-2:] == ["in-addr", "arpa"] and len(labels) == 6:
            return ipaddress.IPv4Address(".".join(reversed(labels[:4])))
        if labels[-2:] == ["ip6", "arpa"] and len(labels) == 34:
            nibbles = "".join(reversed(labels[:32]))
            if len(nibbles) != 32:
                return None
            return ipaddress.IPv6Address(int(nibbles, 16))
    except ValueError:
        return None
    return None
