"""The embedded DNS server: container names and aliases per network, the rest forwarded.

    server = DNSServer(lookup, reverse=None, *, upstreams=(), timeout=2.0, ttl=600)
        lookup(network, name) -> list[str]     addresses of a container name or alias
        reverse(network, ip) -> list[str]      names for a PTR query (optional)
    ep = await server.listen_container(netns_path, networks, *, upstreams=None,
                                       forward=True, redirect=True, ports=(0, 0))
    ep = await server.listen(host, port=53, *, networks, upstreams=None, forward=True)
    ep.networks = [...]          (connect / disconnect); ep.upstreams, ep.forward likewise
    await ep.close();  await server.close()
    await server.resolve(ep, data, tcp=False) -> bytes | None   one message, for tests

Where it listens (Docker's design, chosen here): inside each container's network
namespace, on 127.0.0.11, with ``nameserver 127.0.0.11`` in its resolv.conf (see
berth.network.hosts). The sockets are made by a thread that has entered the namespace
(berth.network.netns.run_in_netns) and are then served by this process's event loop, so
one server in berthd answers every container and forwards from the host's namespace,
where the host's resolvers (127.0.0.53 included) answer. This works for ``--internal``
networks (whose bridge has no address) and needs no host firewall opening. With
``redirect`` (the default) the sockets take free ports and two DNAT rules in the
container's nat/OUTPUT (chain ``BERTH-DNS``, set by ``iptables-restore`` run through
``nsenter``) send 127.0.0.11:53 there, so the container's own programs can still bind
port 53 (Docker does the same); without it, 127.0.0.11:53 is bound directly. The
namespace's ``lo`` must be up (the CNI loopback plugin) for queries to arrive.
``listen`` binds an address of the host's namespace instead (e.g. the bridge gateway).
Closing an endpoint leaves the DNAT rules (they go with the namespace); listening again
with the recorded ``ports`` after a restart of berthd finds them in place.

Answers: A and AAAA for names that ``lookup`` knows on one of the endpoint's networks
(also ``name.network``), in random order (round robin between aliases), TTL ``ttl``;
a known name without an address of the asked family, or asked for another type, gets an
empty NOERROR (never forwarded: container names do not leak out); PTR through
``reverse``. Everything else is forwarded, over the protocol it came in on (a truncated UDP
answer is passed back as is, so the client retries over TCP), to the endpoint's upstreams one by one, each given
``timeout`` seconds; SERVFAIL at once when there is none, REFUSED when forwarding is off
(a container only on internal networks, as Docker does).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import random
import shutil
import socket
import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from berth.errors import FailedPrecondition, InvalidArgument

from . import dnsmsg
from .hosts import EMBEDDED_DNS
from .netns import run_in_netns

log = logging.getLogger(__name__)

Lookup = Callable[[str, str], Sequence[str]]
Reverse = Callable[[str, str], Sequence[str]]
Upstream = tuple[str, int]

REDIRECT_CHAIN = "BERTH-DNS"
_IP_FREEBIND = 15


def parse_upstreams(servers: Iterable[str | tuple[str, int]]) -> list[Upstream]:
    """``"1.2.3.4"``, ``"1.2.3.4:5353"``, ``"[::1]:53"``, ``"::1"`` or (ip, port)."""
    out: list[Upstream] = []
    for s in servers:
        if isinstance(s, tuple):
            host, port = s
        else:
            text = s.strip()
            if text.startswith("["):
                host, _, rest = text[1:].partition("]")
                port = int(rest[1:]) if rest.startswith(":") else 53
            elif text.count(":") == 1:
                host, _, p = text.partition(":")
                port = int(p)
            else:
                host, port = text, 53
        try:
            host = str(ipaddress.ip_address(host.split("%")[0]))
        except ValueError:
            raise InvalidArgument(f"invalid DNS server {s!r}") from None
        if not 0 < int(port) < 65536:
            raise InvalidArgument(f"invalid DNS server port in {s!r}")
        out.append((host, int(port)))
    return out


class Endpoint:
    """One listening address (UDP and TCP) and what it answers for."""

    def __init__(self, server: DNSServer, networks: Sequence[str], upstreams: list[Upstream] | None,
                 forward: bool, netns: str | None) -> None:
        self._server = server
        self.networks = list(networks)
        self.upstreams = upstreams
        self.forward = forward
        self.netns = netns
        self.host = ""
        self.udp_port = 0
        self.tcp_port = 0
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.AbstractServer | None = None

    def __repr__(self) -> str:
        where = f" in {self.netns}" if self.netns else ""
        return f"<dns endpoint {self.host} udp:{self.udp_port} tcp:{self.tcp_port}{where} {self.networks}>"

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            try:
                await asyncio.wait_for(self._tcp.wait_closed(), 2)
            except asyncio.TimeoutError:
                pass
            self._tcp = None
        self._server._endpoints.discard(self)


class _UDP(asyncio.DatagramProtocol):
    def __init__(self, server: DNSServer, endpoint: Endpoint) -> None:
        self.server, self.endpoint = server, endpoint
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.server._spawn(self._answer(data, addr))

    async def _answer(self, data: bytes, addr: Any) -> None:
        reply = await self.server.resolve(self.endpoint, data, tcp=False)
        if reply is not None and self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:  # ICMP errors: nothing to do
        pass


class _OneShot(asyncio.DatagramProtocol):
    def __init__(self, want_id: int) -> None:
        self.want_id = want_id
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if len(data) >= 12 and dnsmsg.message_id(data) == self.want_id and not self.answer.done():
            self.answer.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.answer.done():
            self.answer.set_exception(exc)


class DNSServer:
    def __init__(self, lookup: Lookup, reverse: Reverse | None = None, *,
                 upstreams: Iterable[str | tuple[str, int]] = (), timeout: float = 2.0, ttl: int = 600,
                 max_forwards: int = 100) -> None:
        self.lookup = lookup
        self.reverse = reverse
        self.upstreams = parse_upstreams(upstreams)
        self.timeout = timeout
        self.ttl = ttl
        self._forwards = asyncio.Semaphore(max_forwards)
        self._endpoints: set[Endpoint] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    # --- listening ----------------------------------------------------------------------

    async def listen(self, host: str, port: int = 53, *, networks: Sequence[str],
                     upstreams: Iterable[str | tuple[str, int]] | None = None,
                     forward: bool = True) -> Endpoint:
        """Answer on ``host:port`` (UDP and TCP) in this process's namespace; port 0 picks
        a free port, the same for both (``ep.udp_port``, ``ep.tcp_port``)."""
        ep = Endpoint(self, networks, None if upstreams is None else parse_upstreams(upstreams), forward, None)
        udp, tcp = _bind_pair(host, port, port)
        await self._serve(ep, host, udp, tcp)
        return ep

    async def listen_container(self, netns: str, networks: Sequence[str], *,
                               upstreams: Iterable[str | tuple[str, int]] | None = None,
                               forward: bool = True, redirect: bool = True,
                               ports: tuple[int, int] = (0, 0)) -> Endpoint:
        """Answer on 127.0.0.11 inside the network namespace at ``netns``.

        ``ports`` (UDP, TCP) with ``redirect``: the ports to bind, e.g. the ones of an
        earlier run of berthd, recorded from ``ep.udp_port`` / ``ep.tcp_port``.
        """
        ep = Endpoint(self, networks, None if upstreams is None else parse_upstreams(upstreams), forward, netns)
        want = ports if redirect else (53, 53)
        udp, tcp = run_in_netns(netns, lambda: _bind_pair(EMBEDDED_DNS, *want))
        try:
            if redirect:
                await install_redirect(netns, udp.getsockname()[1], tcp.getsockname()[1])
        except BaseException:
            udp.close()
            tcp.close()
            raise
        await self._serve(ep, EMBEDDED_DNS, udp, tcp)
        return ep

    async def _serve(self, ep: Endpoint, host: str, udp: socket.socket, tcp: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            ep.host = host
            ep.udp_port = udp.getsockname()[1]
            ep.tcp_port = tcp.getsockname()[1]
            transport, _ = await loop.create_datagram_endpoint(lambda: _UDP(self, ep), sock=udp)
            ep._udp = transport
            ep._tcp = await asyncio.start_server(lambda r, w: self._tcp_client(ep, r, w), sock=tcp)
        except BaseException:
            udp.close()
            tcp.close()
            if ep._udp is not None:
                ep._udp.close()
            raise
        self._endpoints.add(ep)

    async def close(self) -> None:
        for ep in list(self._endpoints):
            await ep.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _tcp_client(self, ep: Endpoint, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readexactly(2), 10)
                    data = await asyncio.wait_for(reader.readexactly(struct.unpack("!H", head)[0]), 10)
                except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
                    return
                reply = await self.resolve(ep, data, tcp=True)
                if reply is None:
                    return
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    # --- answering ----------------------------------------------------------------------

    async def resolve(self, ep: Endpoint, data: bytes, tcp: bool = False) -> bytes | None:
        try:
            query = dnsmsg.parse_query(data)
        except dnsmsg.FormatError:
            return dnsmsg.error_response(data, dnsmsg.FORMERR)
        limit = None if tcp else query.udp_size
        if query.opcode != 0:
            return dnsmsg.build_response(query, dnsmsg.NOTIMP, aa=False)
        try:
            local = self._local(ep, query)
        except Exception:  # a failing lookup callback must not take the server down
            log.exception("dns: lookup of %s failed", query.name)
            return dnsmsg.build_response(query, dnsmsg.SERVFAIL, aa=False)
        if local is not None:
            return dnsmsg.build_response(query, dnsmsg.NOERROR, local, limit=limit)
        return await self._forward(ep, query, data, tcp)

    def _names(self, ep: Endpoint, name: str) -> list[tuple[str, str]]:
        """(network, name) pairs to ask ``lookup``: the name, and ``x`` for ``x.<network>``."""
        pairs = []
        for network in ep.networks:
            pairs.append((network, name))
            suffix = "." + network.lower()
            if name.endswith(suffix) and len(name) > len(suffix):
                pairs.append((network, name[: -len(suffix)]))
        return pairs

    def _local(self, ep: Endpoint, query: dnsmsg.Query) -> list[dnsmsg.Record] | None:
        """The answer records if the name is ours (maybe none), or None to forward."""
        if query.qclass != dnsmsg.CLASS_IN:
            return None
        name = query.name.lower().rstrip(".")
        if query.qtype == dnsmsg.TYPE_PTR:
            ip = dnsmsg.reverse_pointer_ip(name)
            if ip is None or self.reverse is None:
                return None
            for network in ep.networks:
                names = list(self.reverse(network, str(ip)))
                if names:
                    return [dnsmsg.ptr_record(n, self.ttl) for n in names]
            return None
        if not name:
            return None
        addresses: list[str] = []
        for network, candidate in self._names(ep, name):
            addresses = list(self.lookup(network, candidate))
            if addresses:
                break
        if not addresses:
            return None
        records = []
        for text in addresses:
            try:
                ip = ipaddress.ip_address(text)
            except ValueError:
                continue
            if ip.version == 4 and query.qtype in (dnsmsg.TYPE_A, dnsmsg.TYPE_ANY):
                records.append(dnsmsg.a_record(ip, self.ttl))
            elif ip.version == 6 and query.qtype in (dnsmsg.TYPE_AAAA, dnsmsg.TYPE_ANY):
                records.append(dnsmsg.aaaa_record(ip, self.ttl))
        random.shuffle(records)
        return records  # possibly empty: NODATA, never forwarded

    async def _forward(self, ep: Endpoint, query: dnsmsg.Query, data: bytes, tcp: bool) -> bytes:
        if not ep.forward:
            return dnsmsg.build_response(query, dnsmsg.REFUSED, aa=False)
        upstreams = self.upstreams if ep.upstreams is None else ep.upstreams
        if not upstreams:
            return dnsmsg.build_response(query, dnsmsg.SERVFAIL, aa=False)
        async with self._forwards:
            for upstream in upstreams:
                msg_id = random.getrandbits(16)
                out = dnsmsg.with_id(data, msg_id)
                try:
                    if tcp:
                        reply = await asyncio.wait_for(_ask_tcp(upstream, out), self.timeout)
                    else:  # a truncated (TC) answer goes back as is: the client retries over TCP
                        reply = await asyncio.wait_for(_ask_udp(upstream, out, msg_id), self.timeout)
                except (asyncio.TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as e:
                    log.debug("dns: upstream %s:%d failed for %s: %s", *upstream, query.name, e)
                    continue
                if len(reply) < 12 or dnsmsg.message_id(reply) != msg_id:
                    continue
                if dnsmsg.rcode_of(reply) in (dnsmsg.SERVFAIL, dnsmsg.REFUSED) and upstream != upstreams[-1]:
                    continue  # the next server may know better
                return dnsmsg.with_id(reply, query.id)
        return dnsmsg.build_response(query, dnsmsg.SERVFAIL, aa=False)


async def _ask_udp(upstream: Upstream, data: bytes, msg_id: int) -> bytes:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(lambda: _OneShot(msg_id), remote_addr=upstream)
    try:
        transport.sendto(data)
        return await proto.answer
    finally:
        transport.close()


async def _ask_tcp(upstream: Upstream, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(*upstream)
    try:
        writer.write(struct.pack("!H", len(data)) + data)
        await writer.drain()
        size = struct.unpack("!H", await reader.readexactly(2))[0]
        return await reader.readexactly(size)
    finally:
        writer.close()


def _bind_pair(host: str, udp_port: int, tcp_port: int) -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket bound to ``host`` (not yet served), freebind so ``lo`` may
    still be down in a fresh namespace. Ports 0 and 0: one free port for both."""
    last: OSError | None = None
    for _ in range(20 if udp_port == tcp_port == 0 else 1):
        udp, tcp = _socket(host, socket.SOCK_DGRAM), _socket(host, socket.SOCK_STREAM)
        try:
            udp.bind((host, udp_port))
            tcp.bind((host, udp.getsockname()[1] if udp_port == tcp_port == 0 else tcp_port))
            tcp.listen(64)
            return udp, tcp
        except OSError as e:
            udp.close()
            tcp.close()
            last = e
    assert last is not None
    raise FailedPrecondition(f"dns: cannot listen on {host} (udp {udp_port}, tcp {tcp_port}): "
                             f"{os.strerror(last.errno or 0)}")


def _socket(host: str, kind: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, kind)
    sock.setblocking(False)
    if family == socket.AF_INET:
        sock.setsockopt(socket.IPPROTO_IP, _IP_FREEBIND, 1)
    if kind == socket.SOCK_STREAM:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    return sock


async def install_redirect(netns: str, udp_port: int, tcp_port: int) -> None:
    """DNAT 127.0.0.11:53 to the given ports in the namespace's nat/OUTPUT (idempotent:
    the ``BERTH-DNS`` chain is rewritten, the jump to it added once)."""
    nsenter = shutil.which("nsenter") or "/usr/bin/nsenter"
    current = await _run([nsenter, f"--net={netns}", "iptables-save", "-t", "nat"], None)
    jump = f"-A OUTPUT -d {EMBEDDED_DNS}/32 -j {REDIRECT_CHAIN}"
    rules = ["*nat", f":{REDIRECT_CHAIN} - [0:0]"]
    if jump not in current.splitlines():
        rules.append(jump)
    for proto, port in (("udp", udp_port), ("tcp", tcp_port)):
        rules.append(f"-A {REDIRECT_CHAIN} -d {EMBEDDED_DNS}/32 -p {proto} -m {proto} --dport 53 "
                     f"-j DNAT --to-destination {EMBEDDED_DNS}:{port}")
    rules += ["COMMIT", ""]
    await _run([nsenter, f"--net={netns}", "iptables-restore", "--noflush", "--wait"], "\n".join(rules))


async def _run(argv: list[str], stdin: str | None) -> str:
    env = dict(os.environ)
    path = env.get("PATH", "/usr/bin:/bin").split(":")
    env["PATH"] = ":".join(path + [d for d in ("/usr/sbin", "/sbin") if d not in path])
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    except OSError as e:
        raise FailedPrecondition(f"dns redirect: cannot run {argv[0]}: {os.strerror(e.errno or 0)}") from None
    out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
    if proc.returncode != 0:
        line = (err.decode(errors="replace").strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        raise FailedPrecondition(f"dns redirect in {argv[1][6:]}: {' '.join(argv[2:4])}: {line}")
    return out.decode(errors="replace")
