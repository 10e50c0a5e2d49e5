"""A container's /etc/hosts, /etc/hostname and /etc/resolv.conf, in Docker's format.

    parse_extra_host(spec, host_gateway=None) -> (name, ip)     --add-host NAME:IP / NAME=IP
    hosts_file(hostname, *, domainname="", addresses=(), aliases=(), extra_hosts=(),
               ipv6=True) -> str
    hostname_file(hostname) -> str
    parse_resolv_conf(text) -> ResolvConf
    host_resolv_conf(path="/etc/resolv.conf") -> ResolvConf   (systemd-resolved aware)
    resolv_conf(host, *, mode, dns=(), dns_search=(), dns_options=(), ipv6=False)
        -> (text, upstreams)

``mode`` is where the container's names resolve:

- ``"embedded"`` (a user-defined network): ``nameserver 127.0.0.11`` (the embedded DNS
  server of berth.network.dns, listening inside the container's namespace), the search
  domains and options of ``--dns-search``/``--dns-option`` or else the host's, and
  ``ndots:0`` unless an ``ndots`` option is given, as Docker writes it. ``upstreams`` is
  what the embedded server forwards other names to: ``--dns`` or else all the host's
  nameservers, 127.x ones included (the server forwards from the host's namespace, where
  they answer).
- ``"bridge"`` (the default network): ``--dns`` or else the host's nameservers minus the
  loopback ones (unreachable from the container), and Google's public servers if none is
  left, as Docker does; ``upstreams`` is empty.
- ``"host"``: the host's file with the ``--dns*`` overrides.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from berth.errors import InvalidArgument

EMBEDDED_DNS = "127.0.0.11"
DEFAULT_DNS_V4 = ("8.8.8.8", "8.8.4.4")
DEFAULT_DNS_V6 = ("2001:4860:4860::8888", "2001:4860:4860::8844")
SYSTEMD_RESOLVED_UPSTREAM = "/run/systemd/resolve/resolv.conf"

_DEFAULT_V4 = [("127.0.0.1", "localhost")]
_DEFAULT_V6 = [("::1", "localhost ip6-localhost ip6-loopback"), ("fe00::0", "ip6-localnet"),
               ("ff00::0", "ip6-mcastprefix"), ("ff02::1", "ip6-allnodes"), ("ff02::2", "ip6-allrouters")]


def _valid_hostname(name: str) -> bool:
    if not name or len(name) > 253 or name.startswith((".", "-")):
        return False
    return all(c.isalnum() or c in "-._" for c in name)


def parse_extra_host(spec: str, host_gateway: str | None = None) -> tuple[str, str]:
    """``--add-host``: ``name:ip``, ``name=ip``, ``name:[::1]``; ``host-gateway`` as the IP
    is replaced by ``host_gateway`` (the default bridge's gateway)."""
    sep = "=" if "=" in spec else ":"
    name, found, ip = spec.partition(sep)
    name = name.strip()
    ip = ip.strip()
    if not found or not name or not ip:
        raise InvalidArgument(f"invalid argument {spec!r} for --add-host: expected NAME:IP")
    if not _valid_hostname(name):
        raise InvalidArgument(f"invalid hostname {name!r} in --add-host {spec}")
    if ip == "host-gateway":
        if not host_gateway:
            raise InvalidArgument("--add-host NAME:host-gateway: no host gateway address is configured")
        ip = host_gateway
    if ip.startswith("[") and ip.endswith("]"):
        ip = ip[1:-1]
    try:
        ip = str(ipaddress.ip_address(ip))
    except ValueError:
        raise InvalidArgument(f"invalid IP address {ip!r} in --add-host {spec}") from None
    return name, ip


def hostname_file(hostname: str) -> str:
    return hostname + "\n"


def hosts_file(hostname: str, *, domainname: str = "", addresses: Sequence[str] = (),
               aliases: Sequence[str] = (), extra_hosts: Iterable[tuple[str, str]] = (),
               ipv6: bool = True) -> str:
    """Docker's /etc/hosts: the defaults, the ``--add-host`` entries, then the
    container's own addresses with its (fully qualified) hostname and aliases."""
    lines = [f"{ip}\t{names}" for ip, names in _DEFAULT_V4 + (_DEFAULT_V6 if ipv6 else [])]
    lines += [f"{ip}\t{name}" for name, ip in extra_hosts]
    fqdn = f"{hostname}.{domainname}" if domainname else hostname
    short = fqdn.split(".", 1)[0]
    names = [fqdn] + ([short] if short != fqdn else [])
    names += [a for a in aliases if a not in names]
    for ip in addresses:
        lines.append(f"{ip}\t{' '.join(names)}")
    return "\n".join(lines) + "\n"


@dataclass
class ResolvConf:
    nameservers: list[str] = field(default_factory=list)
    search: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)


def parse_resolv_conf(text: str) -> ResolvConf:
    conf = ResolvConf()
    for line in text.splitlines():
        parts = line.split()
        if not parts or parts[0].startswith(("#", ";")):
            continue
        key, values = parts[0], parts[1:]
        if key == "nameserver" and values:
            conf.nameservers.append(values[0])
        elif key in ("search", "domain"):
            conf.search = values  # the last one wins, as in glibc
        elif key == "options":
            conf.options += values
    return conf


def host_resolv_conf(path: str = "/etc/resolv.conf") -> ResolvConf:
    """The host's resolver configuration; behind systemd-resolved's stub (127.0.0.53
    only), its upstream file instead, as Docker reads it."""
    try:
        with open(path) as f:
            conf = parse_resolv_conf(f.read())
    except OSError:
        return ResolvConf()
    if conf.nameservers == ["127.0.0.53"] and path == "/etc/resolv.conf":
        try:
            with open(SYSTEMD_RESOLVED_UPSTREAM) as f:
                upstream = parse_resolv_conf(f.read())
            if upstream.nameservers:
                return upstream
        except OSError:
            pass
    return conf


def _is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip.split("%")[0]).is_loopback
    except ValueError:
        return False


def _check_servers(servers: Iterable[str]) -> list[str]:
    out = []
    for s in servers:
        try:
            out.append(str(ipaddress.ip_address(s)))
        except ValueError:
            raise InvalidArgument(f"invalid --dns address {s!r}") from None
    return out


def _check_search(domains: Sequence[str]) -> list[str]:
    if list(domains) == ["."]:
        return []  # --dns-search . : no search domains
    for d in domains:
        if not _valid_hostname(d.rstrip(".")):
            raise InvalidArgument(f"invalid --dns-search domain {d!r}")
    return [d.rstrip(".") for d in domains]


def resolv_conf(host: ResolvConf, *, mode: str, dns: Sequence[str] = (), dns_search: Sequence[str] = (),
                dns_options: Sequence[str] = (), ipv6: bool = False) -> tuple[str, list[str]]:
    if mode not in ("embedded", "bridge", "host"):
        raise InvalidArgument(f"resolv.conf: unknown mode {mode!r}")
    servers = _check_servers(dns)
    search = _check_search(dns_search) if dns_search else list(host.search)
    options = list(dns_options) if dns_options else list(host.options)
    upstreams: list[str] = []
    if mode == "embedded":
        upstreams = servers or list(host.nameservers)
        nameservers = [EMBEDDED_DNS]
        if not any(o.startswith("ndots:") for o in options):
            options.append("ndots:0")
    elif mode == "bridge":
        nameservers = servers or [n for n in host.nameservers if not _is_loopback(n)]
        if not nameservers:
            nameservers = list(DEFAULT_DNS_V4) + (list(DEFAULT_DNS_V6) if ipv6 else [])
    else:
        nameservers = servers or list(host.nameservers)
    lines = ["# Generated by berthd."]
    lines += [f"nameserver {n}" for n in nameservers]
    if search:
        lines.append("search " + " ".join(search))
    if options:
        lines.append("options " + " ".join(options))
    return "\n".join(lines) + "\n", upstreams
