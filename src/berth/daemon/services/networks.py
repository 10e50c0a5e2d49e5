"""The networks service: Docker's networks on the CNI plugins, and each container's sandbox.

    build(daemon) -> NetworksService

    networks:   await create(body) -> (id, warning)      list_networks(filters) -> [dict]
                inspect(ref) -> dict                       await remove(ref)
                await prune(filters) -> [names]
                await connect(ref, container, endpoint_config)   await disconnect(ref, container, force)
    containers: plan(config, host_config, networking_config) -> (NetworkSettings, warnings)
                await setup(cid, rec) -> Sandbox            at each start: netns, CNI ADD, ports, DNS, /etc files
                await teardown(cid, rec)                    after each exit: the reverse, nothing left
                await resume(cid, rec)                      a live container after a daemon restart
                await sweep()                               after the restore: what dead containers left
                view(rec) -> NetworkSettings                for inspect;  summary_ports(rec) -> ps's Ports

Networks are records (metadata DB, kind ``network``) in Docker's inspect form plus a private
``BerthBridge`` (the bridge's name) and ``BerthUserSubnet``. Three are predefined, as in
Docker: ``bridge`` (the default network: bridge ``berth0``, or ``berth-<8 hex>`` for a daemon
with another ``--exec-root``, so daemons side by side never share one; ``--bridge`` and
``--bip`` choose), ``host`` and ``none``. A user-defined network gets the bridge
``br-<12 hex of its id>`` and, without ``--subnet``, the first free subnet of Docker's
pools (berth.network.conflist.pick_subnet, under a host-wide lock so that two daemons
never pick the same one). Its bridge is made at ``network create`` with the gateway's
address (so its route shows at once), removed at ``network rm``, and at a clean shutdown
when no container uses it (it is made again at start).

A container's sandbox is made at each start and removed after each exit, as dockerd does:
a network namespace pinned under ``<exec_root>/netns/<id>``, the loopback conflist on
``lo``, then one bridge conflist per network as ``eth0``, ``eth1``… (``--ip`` as the
``ips`` capability, ``--mac-address`` as ``mac``, published ports as ``portMappings`` of the
first network, host ports from a PortAllocator), Docker's /etc/hostname, /etc/hosts and
/etc/resolv.conf (bind-mounted by the spec), and on user-defined networks the embedded DNS
server on 127.0.0.11 inside the namespace, which answers the container names, network
aliases and short ids of the containers on the same networks. ``--network none`` gets the
namespace with ``lo`` only, ``host`` no namespace, ``container:ID`` the other one's. CNI
results are cached under ``<exec_root>/cni`` (host-local's reservations under
``<exec_root>/cni/networks``), so teardown works from the cache, also after a crash.

Errors carry Docker's texts: "network X not found" (404), "network with name X already
exists" (409), "Pool overlaps with other one on this address space" (403), "error while
removing network: network X id Y has active endpoints" (403), "driver failed programming
external connectivity on endpoint C (E): Bind for 0.0.0.0:8080 failed: port is already
allocated" (500).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import ipaddress
import os
import re
import secrets
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

from berth import errors
from berth._sys.files import atomic_write
from berth.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from berth.network import bridge as bridgelib
from berth.network import conflist, hosts, netns, ports
from berth.network.cni import CNI, NetworkConfigList
from berth.shim.protocol import rfc3339nano

KIND = "network"
PREDEFINED = ("bridge", "host", "none")
DEFAULT_BRIDGE_NETWORK = "bridge"
PICK_LOCK = "/run/lock/berth-networks.lock"  # host-wide: subnet picking and bridge creation
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")
_PRIVATE = ("BerthBridge", "BerthUserSubnet")
OPT_BRIDGE = "com.docker.network.bridge.name"
OPT_MTU = "com.docker.network.driver.mtu"
OPT_MASQ = "com.docker.network.bridge.enable_ip_masquerade"


class Forbidden(errors.BerthError):
    """Docker's 403 answers (predefined networks, overlapping pools, active endpoints)."""

    http_status = 403


class ExternalConnectivity(errors.BerthError):
    """A published port could not be set up (HTTP 500, as dockerd)."""

    http_status = 500


def build(daemon) -> NetworksService:  # noqa: ANN001 - berth.daemon.app.Daemon
    return NetworksService(daemon)


def default_bridge_name(exec_root: str) -> str:
    if os.path.abspath(exec_root) == "/run/berth":
        return conflist.DEFAULT_BRIDGE
    return "berth-" + hashlib.sha256(os.path.abspath(exec_root).encode()).hexdigest()[:8]


def _endpoint(network_id: str, endpoint_config: dict | None = None) -> dict:
    cfg = endpoint_config or {}
    ipam = cfg.get("IPAMConfig") or None
    if ipam is not None:
        ipam = {k: v for k, v in ipam.items() if v} or None
    return {"IPAMConfig": ipam, "Links": cfg.get("Links") or None, "Aliases": list(cfg.get("Aliases") or []) or None,
            "MacAddress": cfg.get("MacAddress") or "", "NetworkID": network_id, "EndpointID": "", "Gateway": "",
            "IPAddress": "", "IPPrefixLen": 0, "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
            "DriverOpts": cfg.get("DriverOpts") or None, "DNSNames": None}


_RUNTIME_FIELDS = {"EndpointID": "", "Gateway": "", "IPAddress": "", "IPPrefixLen": 0, "IPv6Gateway": "",
                   "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0, "DNSNames": None}


def empty_settings() -> dict:
    return {"Bridge": "", "SandboxID": "", "SandboxKey": "", "HairpinMode": False, "LinkLocalIPv6Address": "",
            "LinkLocalIPv6PrefixLen": 0, "Ports": {}, "SecondaryIPAddresses": None, "SecondaryIPv6Addresses": None,
            "EndpointID": "", "Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0, "IPAddress": "",
            "IPPrefixLen": 0, "IPv6Gateway": "", "MacAddress": "", "Networks": {}}


@dataclass
class Sandbox:
    """What a start gets: the namespace to join (None: the host's) and the /etc files."""

    netns: str | None
    etc_files: dict[str, str]


@dataclass
class _Live:
    """A running container's networking, in memory (rebuilt by ``resume``)."""

    cid: str
    netns: str | None
    owned: bool                                               # the namespace is ours to delete
    addresses: dict[str, list[str]] = field(default_factory=dict)   # network name -> IPs
    names: dict[str, set[str]] = field(default_factory=dict)       # network name -> aliases, short id
    dns: Any = None                                           # berth.network.dns.Endpoint
    mappings: list[ports.PortMapping] = field(default_factory=list)


class NetworksService:
    def __init__(self, daemon) -> None:  # noqa: ANN001
        self.daemon = daemon
        self.config = daemon.config
        self.db = daemon.db
        self.events = daemon.events
        root = daemon.config.exec_root
        self.cni_dir = os.path.join(root, "cni")
        self.ipam_dir = os.path.join(self.cni_dir, "networks")
        self.netns_root = os.path.join(root, "netns")
        self.cni = CNI(self.cni_dir)
        self.allocator = ports.PortAllocator()
        self.bridge_name = getattr(daemon.config, "bridge", "") or default_bridge_name(root)
        self.bip = getattr(daemon.config, "bip", "") or ""
        self._records: dict[str, dict] = {nid: rec for nid, rec in self.db.all(KIND)}
        self._live: dict[str, _Live] = {}
        self._dns: Any = None
        self._lock = asyncio.Lock()
        self._netns_lock = threading.Lock()

    # --- the daemon's hooks ----------------------------------------------------------------

    async def start(self) -> None:
        await self._ensure_predefined()
        for rec in list(self._records.values()):
            if rec["Driver"] == "bridge":
                with contextlib.suppress(errors.BerthError, OSError):
                    await asyncio.to_thread(self._ensure_bridge, rec)

    async def stop(self) -> None:
        """Close the DNS endpoints (the namespaces' DNAT rules stay for the next start) and
        remove the bridges that no container uses; they are made again at start."""
        if self._dns is not None:
            await self._dns.close()
        used = {n for live in self._live.values() for n in live.addresses}
        used |= {att.network for att in self.cni.attachments()}
        for rec in list(self._records.values()):
            if rec["Driver"] == "bridge" and rec["Name"] not in used and _cni_name(rec) not in used:
                with contextlib.suppress(errors.BerthError, OSError):
                    await asyncio.to_thread(bridgelib.remove_bridge, rec["BerthBridge"])

    def _containers(self) -> Any:
        return self.daemon.services["containers"]  # built before the API serves

    # --- records ---------------------------------------------------------------------------

    async def _ensure_predefined(self) -> None:
        names = {rec["Name"] for rec in self._records.values()}
        if "bridge" not in names:
            specs = None
            if self.bip:  # --bip 10.1.0.1/24: the gateway and the subnet
                try:
                    iface = ipaddress.ip_interface(self.bip)
                except ValueError:
                    raise InvalidArgument(f"invalid --bip {self.bip!r}") from None
                gateway = str(iface.ip) if iface.ip != iface.network.network_address else None
                specs = [conflist.SubnetSpec.parse(str(iface.network), gateway)]
            options = {"com.docker.network.bridge.default_bridge": "true",
                       "com.docker.network.bridge.enable_icc": "true", OPT_MASQ: "true",
                       "com.docker.network.bridge.host_binding_ipv4": "0.0.0.0", OPT_BRIDGE: self.bridge_name,
                       OPT_MTU: "1500"}
            await self._new_record("bridge", "bridge", specs, bridge=self.bridge_name, user_subnet=bool(specs),
                                   options=options)
        for name, driver in (("host", "host"), ("none", "null")):
            if name not in names:
                nid = secrets.token_hex(32)
                rec = self._doc(nid, name, driver, [], {}, {}, False)
                self.db.put(KIND, nid, rec, name=name, create=True)
                self._records[nid] = rec

    def _doc(self, nid: str, name: str, driver: str, specs: list[conflist.SubnetSpec], options: dict, labels: dict,
             internal: bool) -> dict:
        config = []
        for s in specs:
            entry = {"Subnet": str(s.subnet), "Gateway": str(s.gateway)}
            if s.ip_range is not None:
                entry["IPRange"] = str(s.ip_range)
            config.append(entry)
        return {"Name": name, "Id": nid, "Created": rfc3339nano(), "Scope": "local", "Driver": driver,
                "EnableIPv6": False, "IPAM": {"Driver": "default", "Options": None, "Config": config},
                "Internal": internal, "Attachable": False, "Ingress": False, "ConfigFrom": {"Network": ""},
                "ConfigOnly": False, "Options": options, "Labels": labels}

    async def _new_record(self, name: str, driver: str, specs: list[conflist.SubnetSpec] | None, *, bridge: str,
                          user_subnet: bool, options: dict, labels: dict | None = None,
                          internal: bool = False, auxiliary: dict | None = None) -> dict:
        nid = secrets.token_hex(32)
        if bridge == "":
            bridge = conflist.bridge_name(nid)
        async with self._lock:
            def make() -> dict:
                with _host_lock():
                    chosen = specs
                    if chosen is None:
                        taken = [n for r in self._records.values() for n in _subnets(r)]
                        chosen = [conflist.SubnetSpec.parse(str(conflist.pick_subnet(taken)))]
                    rec = self._doc(nid, name, driver, chosen, options, labels or {}, internal)
                    for entry in rec["IPAM"]["Config"]:
                        if (auxiliary or {}).get(entry["Subnet"]):
                            entry["AuxiliaryAddresses"] = auxiliary[entry["Subnet"]]  # type: ignore[index]
                    rec["BerthBridge"] = bridge
                    rec["BerthUserSubnet"] = user_subnet
                    conflist.BridgeNetwork(_cni_name(rec), bridge, tuple(chosen), self.ipam_dir,
                                           internal=internal)  # validates
                    self._ensure_bridge(rec)
                    return rec
            rec = await asyncio.to_thread(make)
            try:
                self.db.put(KIND, nid, rec, name=name, create=True)
            except AlreadyExists:
                with contextlib.suppress(errors.BerthError, OSError):
                    await asyncio.to_thread(bridgelib.remove_bridge, bridge)
                raise AlreadyExists(f"network with name {name} already exists") from None
            self._records[nid] = rec
        return rec

    def find(self, ref: str) -> dict:
        """By full id, by name, or by a unique id prefix (Docker's order); NotFound with
        "network X not found"."""
        if ref in self._records:
            return self._records[ref]
        for rec in self._records.values():
            if rec["Name"] == ref:
                return rec
        if ref and re.fullmatch(r"[0-9a-f]+", ref):
            found = [rec for nid, rec in self._records.items() if nid.startswith(ref)]
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                raise InvalidArgument(f"network {ref} is ambiguous ({len(found)} matches found on name)")
        raise NotFound(f"network {ref} not found")

    def _spec_of(self, rec: dict) -> conflist.BridgeNetwork:
        specs = tuple(conflist.SubnetSpec.parse(c["Subnet"], c.get("Gateway"), c.get("IPRange"))
                      for c in rec["IPAM"]["Config"])
        mtu = None
        with contextlib.suppress(ValueError, TypeError):
            mtu = int((rec.get("Options") or {}).get(OPT_MTU) or 0) or None
        masq = str((rec.get("Options") or {}).get(OPT_MASQ, "true")).lower() != "false"
        return conflist.BridgeNetwork(_cni_name(rec), rec["BerthBridge"], specs, self.ipam_dir,
                                      internal=bool(rec.get("Internal")), ip_masq=masq, mtu=mtu)

    def _conflist(self, rec: dict, publish: bool = True) -> NetworkConfigList:
        """The network's conflist for one attachment, without the plugins that would have
        nothing to do (portmap without published ports, tuning without sysctls): each is
        a process per start and per removal. DEL uses the conflist cached with the ADD."""
        raw = conflist.bridge_conflist(self._spec_of(rec))
        raw["plugins"] = [p for p in raw["plugins"] if not (p["type"] == "portmap" and not publish)
                          and not (p["type"] == "tuning" and not p.get("sysctl"))]
        return NetworkConfigList(raw)

    def _ensure_bridge(self, rec: dict) -> None:
        """The bridge link, up, with the gateway's address (none on --internal), as dockerd
        makes it at network create; the bridge plugin finds it ready."""
        name = rec["BerthBridge"]
        env = dict(os.environ, PATH=os.environ.get("PATH", "/usr/bin:/bin") + ":/usr/sbin:/sbin")

        def ip(*args: str, ok: tuple[str, ...] = ()) -> None:
            proc = subprocess.run(["ip", *args], capture_output=True, text=True, env=env)
            if proc.returncode != 0 and not any(o in proc.stderr for o in ok):
                raise FailedPrecondition(f"ip {' '.join(args)}: {proc.stderr.strip()}")

        if not bridgelib.bridge_exists(name):
            ip("link", "add", name, "type", "bridge", ok=("File exists",))
        if not rec.get("Internal"):
            for c in rec["IPAM"]["Config"]:
                prefix = ipaddress.ip_network(c["Subnet"]).prefixlen
                ip("addr", "add", f"{c['Gateway']}/{prefix}", "dev", name, ok=("File exists",))
        ip("link", "set", name, "up")

    # --- the network API -------------------------------------------------------------------

    async def create(self, body: dict) -> tuple[str, str]:
        name = body.get("Name") or ""
        if not name:
            raise InvalidArgument("network name is required" if "Name" in body else "network name is required")
        if "/" in name or any(ord(c) < 32 for c in name):  # dockerd takes almost anything (spaces too)
            raise InvalidArgument(f"invalid network name {name!r}")
        driver = body.get("Driver") or "bridge"
        if driver in ("host", "null"):
            raise Forbidden(f"only one instance of \"{driver}\" network is allowed")
        if driver != "bridge":
            raise NotFound(f"plugin \"{driver}\" not found")
        for rec in self._records.values():
            if rec["Name"] == name:
                raise AlreadyExists(f"network with name {name} already exists")
        if body.get("EnableIPv6"):
            raise InvalidArgument("IPv6 networks are not supported by berthd")
        ipam = body.get("IPAM") or {}
        if (ipam.get("Driver") or "default") != "default":
            raise NotFound(f"plugin \"{ipam['Driver']}\" not found")
        if body.get("ConfigOnly") or body.get("ConfigFrom") and (body["ConfigFrom"] or {}).get("Network"):
            raise InvalidArgument("config-only networks are not supported by berthd")
        options = {str(k): str(v) for k, v in (body.get("Options") or {}).items()}
        labels = {str(k): str(v) for k, v in (body.get("Labels") or {}).items()}
        specs: list[conflist.SubnetSpec] = []
        auxiliary: dict[str, dict[str, str]] = {}  # recorded and shown, as dockerd (not reserved in host-local)
        for entry in ipam.get("Config") or []:
            subnet = entry.get("Subnet") or ""
            if not subnet:
                if entry.get("Gateway") or entry.get("IPRange"):
                    raise InvalidArgument("gateway or ip-range given without a subnet")
                continue
            if ":" in subnet:
                raise InvalidArgument("IPv6 networks are not supported by berthd")
            specs.append(conflist.SubnetSpec.parse(subnet, entry.get("Gateway") or None, entry.get("IPRange") or None))
            aux = entry.get("AuxiliaryAddresses") or {}
            for ip in aux.values():
                try:
                    if ipaddress.ip_address(ip) not in specs[-1].subnet:
                        raise ValueError
                except ValueError:
                    raise InvalidArgument(f"auxiliary address {ip} is not in subnet {subnet}") from None
            auxiliary[str(specs[-1].subnet)] = {str(k): str(v) for k, v in aux.items()}
        others = {r["Name"]: _subnets(r) for r in self._records.values()}
        try:
            conflist.validate_subnets(name, [s.subnet for s in specs], others)
        except InvalidArgument as exc:
            if "overlaps with network" in str(exc):
                raise Forbidden("Pool overlaps with other one on this address space") from None
            raise
        bridge = options.get(OPT_BRIDGE, "")
        if bridge:
            if any(r.get("BerthBridge") == bridge for r in self._records.values()) or bridgelib.bridge_exists(bridge):
                raise Forbidden(f"bridge name {bridge} is already in use")
        rec = await self._new_record(name, "bridge", specs or None, bridge=bridge, user_subnet=bool(specs),
                                     options=options, labels=labels, internal=bool(body.get("Internal")),
                                     auxiliary=auxiliary)
        self.events.publish("network", "create", rec["Id"], {"name": name, "type": "bridge"})
        return rec["Id"], ""

    def _endpoints_of(self, rec: dict) -> dict[str, dict]:
        out = {}
        containers = self.daemon.services.get("containers")
        for cid, live in self._live.items():
            if rec["Name"] not in live.addresses:
                continue
            crec = getattr(containers, "_records", {}).get(cid) if containers is not None else None
            if crec is None:
                continue
            ep = (crec.get("NetworkSettings") or {}).get("Networks", {}).get(rec["Name"]) or {}
            out[cid] = {"Name": crec["Name"][1:], "EndpointID": ep.get("EndpointID", ""),
                        "MacAddress": ep.get("MacAddress", ""),
                        "IPv4Address": f"{ep['IPAddress']}/{ep['IPPrefixLen']}" if ep.get("IPAddress") else "",
                        "IPv6Address": ""}
        return out

    def _view(self, rec: dict, containers: bool) -> dict:
        out = {k: v for k, v in rec.items() if k not in _PRIVATE}
        out["Containers"] = self._endpoints_of(rec) if containers else {}
        return out

    def inspect(self, ref: str) -> dict:
        return self._view(self.find(ref), True)

    def list_networks(self, filters: dict[str, list[str]] | None = None) -> list[dict]:
        out = []
        for rec in sorted(self._records.values(), key=lambda r: r["Created"]):
            if filters and not self._matches(rec, filters):
                continue
            out.append(self._view(rec, True))
        return out

    def _matches(self, rec: dict, filters: dict[str, list[str]]) -> bool:
        for key, wanted in filters.items():
            if not wanted:
                continue
            if key == "name":
                if not any(w in rec["Name"] for w in wanted):
                    return False
            elif key == "id":
                if not any(rec["Id"].startswith(w) for w in wanted):
                    return False
            elif key == "driver":
                if rec["Driver"] not in wanted:
                    return False
            elif key == "scope":
                if rec["Scope"] not in wanted:
                    return False
            elif key == "type":
                kind = "builtin" if rec["Name"] in PREDEFINED else "custom"
                if kind not in wanted:
                    return False
            elif key == "label":
                labels = rec.get("Labels") or {}
                for item in wanted:
                    k, eq, v = item.partition("=")
                    if k not in labels or (eq and labels[k] != v):
                        return False
            elif key == "dangling":
                dangling = rec["Name"] not in PREDEFINED and not self._in_use(rec)
                if str(dangling).lower() not in [w.lower() for w in wanted] and \
                        not (dangling and "1" in wanted) and not (not dangling and "0" in wanted):
                    return False
            else:
                raise InvalidArgument(f"invalid filter '{key}'")
        return True

    def _in_use(self, rec: dict) -> list[str]:
        return [cid for cid, live in self._live.items() if rec["Name"] in live.addresses]

    async def remove(self, ref: str) -> None:
        rec = self.find(ref)
        if rec["Name"] in PREDEFINED:
            raise Forbidden(f"{rec['Name']} is a pre-defined network and cannot be removed")
        if self._in_use(rec):
            raise Forbidden(f"error while removing network: network {rec['Name']} id {rec['Id']} has active endpoints")
        async with self._lock:
            await asyncio.to_thread(bridgelib.remove_bridge, rec["BerthBridge"])
            await asyncio.to_thread(bridgelib.release_ipam, self.ipam_dir, _cni_name(rec))
            self.db.delete(KIND, rec["Id"])
            self._records.pop(rec["Id"], None)
        self.events.publish("network", "destroy", rec["Id"], {"name": rec["Name"], "type": rec["Driver"]})

    async def prune(self, filters: dict[str, list[str]] | None = None) -> list[str]:
        removed = []
        until = (filters or {}).get("until")
        labels = {k: v for k, v in (filters or {}).items() if k == "label"}
        for rec in list(self._records.values()):
            if rec["Name"] in PREDEFINED or self._in_use(rec):
                continue
            if labels and not self._matches(rec, labels):
                continue
            if until and not _created_before(rec["Created"], until[0]):
                continue
            with contextlib.suppress(errors.BerthError):
                await self.remove(rec["Id"])
                removed.append(rec["Name"])
        return removed

    async def connect(self, ref: str, container: str, endpoint_config: dict | None) -> None:
        rec = self.find(ref)
        svc = self._containers()
        cid, crec = svc.get(container)
        if rec["Driver"] != "bridge":
            raise Forbidden("container cannot be disconnected from host network or connected to host network"
                            if rec["Name"] == "host" else f"container cannot be connected to network {rec['Name']}")
        async with svc._lock(cid):
            crec = svc._records.get(cid)
            if crec is None:
                raise NotFound(f"No such container: {container}")
            mode = crec["HostConfig"].get("NetworkMode") or "bridge"
            if mode in ("host", "none") or mode.startswith("container:"):
                raise Forbidden("container sharing network namespace with another container or host cannot be "
                                "connected to any other network")
            settings = crec.setdefault("NetworkSettings", empty_settings())
            nets = settings.setdefault("Networks", {})
            if rec["Name"] in nets:
                raise Forbidden(f"endpoint with name {crec['Name'][1:]} already exists in network {rec['Name']}")
            endpoint = _endpoint(rec["Id"], endpoint_config)
            self._check_endpoint(rec, endpoint)
            nets[rec["Name"]] = endpoint
            live = self._live.get(cid)
            if live is not None and crec["State"]["Running"] and live.owned:
                try:
                    await self._attach(cid, crec, live, rec, endpoint, _next_ifname(crec), [])
                except BaseException:
                    nets.pop(rec["Name"], None)
                    raise
                await self._update_dns(cid, crec, live)
            svc._save(crec)
        self.events.publish("network", "connect", rec["Id"], {"name": rec["Name"], "type": "bridge", "container": cid})

    async def disconnect(self, ref: str, container: str, force: bool = False) -> None:
        rec = self.find(ref)
        svc = self._containers()
        try:
            cid, crec = svc.get(container)
        except NotFound:
            if force:
                return
            raise
        async with svc._lock(cid):
            crec = svc._records.get(cid)
            if crec is None:
                raise NotFound(f"No such container: {container}")
            if rec["Driver"] != "bridge" and (crec["HostConfig"].get("NetworkMode") or "") == rec["Name"]:
                raise Forbidden("container cannot be disconnected from host network or connected to host network")
            nets = (crec.get("NetworkSettings") or {}).get("Networks") or {}
            if rec["Name"] not in nets:
                raise Forbidden(f"container {cid} is not connected to network {rec['Name']}")
            live = self._live.get(cid)
            if live is not None and rec["Name"] in live.addresses:
                ifname = (crec.get("BerthNetworks") or {}).get("ifnames", {}).get(rec["Name"])
                att = self.cni.cached(_cni_name(rec), cid, ifname) if ifname else None
                if att is not None:
                    await asyncio.to_thread(self._del_attachment, att)
                live.addresses.pop(rec["Name"], None)
                live.names.pop(rec["Name"], None)
                (crec.get("BerthNetworks") or {}).get("ifnames", {}).pop(rec["Name"], None)
                await self._update_dns(cid, crec, live)
            nets.pop(rec["Name"], None)
            if (crec["HostConfig"].get("NetworkMode") or "") == rec["Name"] and nets:
                pass  # dockerd keeps NetworkMode; the container starts on what is left
            svc._save(crec)
        self.events.publish("network", "disconnect", rec["Id"], {"name": rec["Name"], "type": "bridge",
                                                                "container": cid})

    # --- containers: create ----------------------------------------------------------------

    def _check_endpoint(self, rec: dict, endpoint: dict) -> None:
        user_defined = rec["Name"] not in PREDEFINED
        if endpoint.get("Aliases") and not user_defined:
            raise InvalidArgument("network-scoped alias is supported only for containers in user defined networks")
        ipv4 = (endpoint.get("IPAMConfig") or {}).get("IPv4Address") or ""
        if (endpoint.get("IPAMConfig") or {}).get("IPv6Address"):
            raise InvalidArgument("IPv6 addresses are not supported by berthd")
        if ipv4:
            if not user_defined:
                raise InvalidArgument("user specified IP address is supported on user defined networks only")
            if not rec.get("BerthUserSubnet"):
                raise InvalidArgument("user specified IP address is supported only when connecting to networks "
                                      "with user configured subnets")
            try:
                address = ipaddress.ip_address(ipv4)
            except ValueError:
                raise InvalidArgument(f"invalid IPv4 address: {ipv4}") from None
            if not any(address in ipaddress.ip_network(c["Subnet"]) for c in rec["IPAM"]["Config"]):
                raise InvalidArgument(f"Invalid address {ipv4}: It does not belong to any of this network's subnets")

    def plan(self, config: dict, hc: dict, networking_config: dict | None) -> tuple[dict, list[str]]:
        """The NetworkSettings of a new container (endpoints without addresses yet);
        refuses an unknown network, bad ports, DNS or extra hosts before anything is made."""
        settings = empty_settings()
        warnings: list[str] = []
        mode = hc.get("NetworkMode") or "bridge"
        endpoints = dict(((networking_config or {}).get("EndpointsConfig") or {}))
        # an unknown network or container is a 400 here, not dockerd's 404 at start: docker's
        # CLI takes any 404 from create for a missing image and would try to pull it
        if mode.startswith("container:"):
            other = mode.split(":", 1)[1]
            try:
                self._containers().get(other)
            except NotFound as exc:
                raise InvalidArgument(str(exc)) from None
            if hc.get("PortBindings") or hc.get("PublishAllPorts"):
                raise InvalidArgument("conflicting options: port publishing and the container type network mode")
            return settings, warnings
        rec = self._find_for_create(mode)
        if rec["Driver"] == "host" and (hc.get("PortBindings") or hc.get("PublishAllPorts")):
            warnings.append("Published ports are discarded when using host network mode")
        primary = None
        for key in (mode, rec["Name"], rec["Id"], "default"):  # docker's CLI names the default network "default"
            primary = endpoints.pop(key, None) or primary
        endpoint = _endpoint(rec["Id"], primary)
        if config.get("MacAddress") and not endpoint["MacAddress"]:
            endpoint["MacAddress"] = config["MacAddress"]
        if rec["Driver"] == "bridge":
            self._check_endpoint(rec, endpoint)
        settings["Networks"][rec["Name"]] = endpoint
        for ref, cfg in endpoints.items():
            other = self._find_for_create(ref)
            if other["Driver"] != "bridge" or rec["Driver"] != "bridge":
                raise InvalidArgument("Container cannot be connected to network endpoints: " +
                                      ", ".join([mode, *endpoints]))
            ep = _endpoint(other["Id"], cfg)
            self._check_endpoint(other, ep)
            settings["Networks"][other["Name"]] = ep
        if rec["Driver"] != "host":
            ports.requests_from_bindings(hc.get("PortBindings"), config.get("ExposedPorts"),
                                         bool(hc.get("PublishAllPorts")))
        for entry in hc.get("ExtraHosts") or []:
            hosts.parse_extra_host(entry, self._host_gateway() or "127.0.0.1")
        hosts.resolv_conf(hosts.ResolvConf(), mode="bridge", dns=hc.get("Dns") or (),
                          dns_search=hc.get("DnsSearch") or (), dns_options=hc.get("DnsOptions") or ())
        return settings, warnings

    def _find_for_create(self, ref: str) -> dict:
        try:
            return self.find(ref)
        except NotFound as exc:
            raise InvalidArgument(str(exc)) from None

    def _host_gateway(self) -> str:
        for rec in self._records.values():
            if rec["Name"] == DEFAULT_BRIDGE_NETWORK and rec["IPAM"]["Config"]:
                return rec["IPAM"]["Config"][0]["Gateway"]
        return ""

    # --- containers: start and exit --------------------------------------------------------

    async def setup(self, cid: str, rec: dict) -> Sandbox:
        """Everything a start needs; on an error, whatever was made is undone."""
        hc, config = rec["HostConfig"], rec["Config"]
        mode = hc.get("NetworkMode") or "bridge"
        settings = rec.setdefault("NetworkSettings", empty_settings())
        if mode.startswith("container:"):
            return self._join(cid, rec, mode.split(":", 1)[1])
        nets = settings.setdefault("Networks", {})
        records = []
        for name in list(nets):
            try:
                records.append(self.find(nets[name].get("NetworkID") or name))
            except NotFound:
                raise NotFound(f"network {name} not found") from None
        if mode == "host" or (records and records[0]["Driver"] == "host"):
            files = self._write_etc(cid, rec, host=True, addresses=[], resolv_mode="host", upstreams_out=[])
            self._live[cid] = _Live(cid, None, False)
            return Sandbox(None, files)
        live = _Live(cid, None, True)
        if netns.exists(cid, self.netns_root):  # left by a crash: start afresh
            await asyncio.to_thread(self._release_sandbox, cid)
        path = await asyncio.to_thread(self._create_netns, cid)
        live.netns = path
        rec["BerthNetworks"] = {"netns": path, "ifnames": {}, "dns": None, "mappings": []}
        loopback = asyncio.ensure_future(asyncio.to_thread(  # lo meanwhile: it is independent of eth*
            self.cni.add, NetworkConfigList(conflist.loopback_conflist()), cid, path, "lo"))
        try:
            bridges = [r for r in records if r["Driver"] == "bridge"]
            requests = ports.requests_from_bindings(hc.get("PortBindings"), config.get("ExposedPorts"),
                                                    bool(hc.get("PublishAllPorts"))) if bridges else []
            publish_on = next((r for r in bridges if not r.get("Internal")), None)
            if requests and publish_on is not None:
                try:
                    live.mappings = self.allocator.allocate(cid, requests)
                except InvalidArgument as exc:
                    eid = secrets.token_hex(32)
                    nets[publish_on["Name"]]["EndpointID"] = eid
                    raise ExternalConnectivity(f"driver failed programming external connectivity on endpoint "
                                               f"{rec['Name'][1:]} ({eid}): {exc}") from None
                rec["BerthNetworks"]["mappings"] = [[m.host_ip, m.host_port, m.container_port, m.protocol]
                                                    for m in live.mappings]
            for i, net in enumerate(bridges):
                mappings = live.mappings if net is publish_on else []
                await self._attach(cid, rec, live, net, nets[net["Name"]], f"eth{i}", mappings,
                                   mac=nets[net["Name"]].get("MacAddress") or "")
            await loopback
            settings["Ports"] = ports.docker_ports(live.mappings, (config.get("ExposedPorts") or {}).keys())
            user_nets = [r["Name"] for r in bridges if r["Name"] not in PREDEFINED]
            upstreams: list[str] = []
            resolv_mode = "embedded" if user_nets else "bridge"
            primary_ip = next(iter(live.addresses.values()), [])
            files = self._write_etc(cid, rec, host=False, addresses=primary_ip[:1], resolv_mode=resolv_mode,
                                    upstreams_out=upstreams)
            if user_nets:
                forward = any(not r.get("Internal") for r in bridges)
                live.dns = await self._dns_server().listen_container(path, user_nets, upstreams=upstreams,
                                                                     forward=forward)
                rec["BerthNetworks"]["dns"] = [live.dns.udp_port, live.dns.tcp_port, upstreams, forward]
            settings["SandboxID"] = hashlib.sha256(path.encode() + cid.encode()).hexdigest()
            settings["SandboxKey"] = path
            self._live[cid] = live
            self._top_level(settings)
        except BaseException:
            self._live.pop(cid, None)
            with contextlib.suppress(BaseException):
                await loopback  # its cache entry, if any, is then there for the teardown
            with contextlib.suppress(Exception):
                await self._teardown_live(cid, rec, live)
            raise
        return Sandbox(path, files)

    def _create_netns(self, cid: str) -> str:
        with self._netns_lock:  # the first create makes the root a mount point: not twice at once
            return netns.create(cid, self.netns_root)

    def _join(self, cid: str, rec: dict, other_ref: str) -> Sandbox:
        svc = self._containers()
        other_id, other = svc.get(other_ref)
        if not other["State"]["Running"]:
            raise errors.FailedPrecondition(f"cannot join network of a non running container: {other_ref}")
        live = self._live.get(other_id)
        if live is None:
            raise errors.FailedPrecondition(f"cannot join network of container {other_ref}: it has no sandbox")
        self._live[cid] = _Live(cid, live.netns, False)
        files = {"/etc/hostname": other["HostnamePath"], "/etc/hosts": other["HostsPath"],
                 "/etc/resolv.conf": other["ResolvConfPath"]}
        return Sandbox(live.netns or "/proc/1/ns/net", files)

    async def _attach(self, cid: str, rec: dict, live: _Live, net: dict, endpoint: dict, ifname: str,
                      mappings: list[ports.PortMapping], mac: str = "") -> None:
        caps: dict[str, Any] = {}
        if mappings:
            caps["portMappings"] = ports.cni_port_mappings(mappings)
        ipv4 = (endpoint.get("IPAMConfig") or {}).get("IPv4Address")
        if ipv4:
            prefix = next(ipaddress.ip_network(c["Subnet"]).prefixlen for c in net["IPAM"]["Config"]
                          if ipaddress.ip_address(ipv4) in ipaddress.ip_network(c["Subnet"]))
            caps["ips"] = [f"{ipv4}/{prefix}"]
        if mac:
            caps["mac"] = mac
        conf = self._conflist(net, publish=bool(mappings))
        try:
            result = await asyncio.to_thread(self.cni.add, conf, cid, live.netns, ifname, capability_args=caps)
        except errors.BerthError as exc:
            text = str(exc)
            if ipv4 and ("already" in text or "requested IP" in text or "reserved" in text):
                raise Forbidden(f"Address already in use: {ipv4}") from None
            raise
        rec.setdefault("BerthNetworks", {}).setdefault("ifnames", {})[net["Name"]] = ifname
        address = next((c for c in result.ips if c.address.version == 4), None)
        endpoint.update(EndpointID=secrets.token_hex(32), MacAddress=result.mac(ifname) or "")
        if address is not None:
            endpoint.update(IPAddress=str(address.address.ip), IPPrefixLen=address.address.network.prefixlen,
                            Gateway=str(address.gateway or "") if not net.get("Internal") else "")
            live.addresses[net["Name"]] = [str(address.address.ip)]
        else:
            live.addresses[net["Name"]] = []
        names = {cid[:12]} | {a.lower() for a in endpoint.get("Aliases") or []}
        if net["Name"] not in PREDEFINED:
            aliases = [a for a in endpoint.get("Aliases") or [] if a != cid[:12]]
            endpoint["Aliases"] = aliases + [cid[:12]]
            endpoint["DNSNames"] = [rec["Name"][1:], *aliases, cid[:12]]
            hostname = rec["Config"].get("Hostname")
            if hostname:
                endpoint["DNSNames"].append(hostname)
        live.names[net["Name"]] = names

    async def _update_dns(self, cid: str, rec: dict, live: _Live) -> None:
        user_nets = [n for n in live.addresses if n not in PREDEFINED]
        if live.dns is not None:
            live.dns.networks = user_nets
        elif user_nets and live.netns and live.owned:
            live.dns = await self._dns_server().listen_container(live.netns, user_nets)
            rec.setdefault("BerthNetworks", {})["dns"] = [live.dns.udp_port, live.dns.tcp_port, None, True]

    def _top_level(self, settings: dict) -> None:
        """Docker fills the top-level addresses from the default bridge network only."""
        ep = settings["Networks"].get(DEFAULT_BRIDGE_NETWORK) or {}
        for key in ("EndpointID", "Gateway", "IPAddress", "IPPrefixLen", "MacAddress"):
            settings[key] = ep.get(key, settings.get(key))

    def _write_etc(self, cid: str, rec: dict, *, host: bool, addresses: list[str], resolv_mode: str,
                   upstreams_out: list[str]) -> dict[str, str]:
        config, hc = rec["Config"], rec["HostConfig"]
        hostname = config.get("Hostname") or (os.uname().nodename if host else cid[:12])
        extra = [hosts.parse_extra_host(e, self._host_gateway() or None) for e in hc.get("ExtraHosts") or []]
        atomic_write(rec["HostnamePath"], hosts.hostname_file(hostname).encode(), 0o644)
        if host:
            try:
                with open("/etc/hosts") as f:
                    text = f.read()
            except OSError:
                text = "127.0.0.1\tlocalhost\n"
            if not text.endswith("\n"):
                text += "\n"
            text += "".join(f"{ip}\t{name}\n" for name, ip in extra)
        else:
            text = hosts.hosts_file(hostname, domainname=config.get("Domainname") or "", addresses=addresses,
                                    extra_hosts=extra)
        atomic_write(rec["HostsPath"], text.encode(), 0o644)
        resolv, upstreams = hosts.resolv_conf(hosts.host_resolv_conf(), mode=resolv_mode, dns=hc.get("Dns") or (),
                                              dns_search=hc.get("DnsSearch") or (),
                                              dns_options=hc.get("DnsOptions") or ())
        upstreams_out.extend(upstreams)
        atomic_write(rec["ResolvConfPath"], resolv.encode(), 0o644)
        return {"/etc/hostname": rec["HostnamePath"], "/etc/hosts": rec["HostsPath"],
                "/etc/resolv.conf": rec["ResolvConfPath"]}

    async def teardown(self, cid: str, rec: dict) -> None:
        """After an exit (or a failed start): nothing of the sandbox is left. Errors are
        reported on berthd's stderr, never raised (the exit must be recorded)."""
        live = self._live.pop(cid, None) or _Live(cid, None, True)
        await self._teardown_live(cid, rec, live)

    async def _teardown_live(self, cid: str, rec: dict, live: _Live) -> None:
        if live.dns is not None:
            with contextlib.suppress(Exception):
                await live.dns.close()
        self.allocator.release(cid)
        if live.owned:
            try:
                await asyncio.to_thread(self._release_sandbox, cid)
            except Exception as exc:  # noqa: BLE001 - reported, the exit goes on
                sys.stderr.write(f"berthd: network teardown of {cid[:12]}: {exc}\n")
        rec.pop("BerthNetworks", None)
        settings = rec.get("NetworkSettings")
        if settings:
            for ep in (settings.get("Networks") or {}).values():
                ep.update(_RUNTIME_FIELDS)
                if ep.get("NetworkID") and ep.get("Aliases"):
                    ep["Aliases"] = [a for a in ep["Aliases"] if a != cid[:12]] or None
            settings.update(SandboxID="", SandboxKey="", Ports={}, EndpointID="", Gateway="", IPAddress="",
                            IPPrefixLen=0, MacAddress="")

    def _del_attachment(self, att: Any) -> None:
        """DEL from the cache; then the NAT rules DEL leaves when the namespace was gone
        already (or DEL failed): an iptables-save, so only then."""
        errs = []
        had_netns = bool(att.netns) and netns.exists(os.path.basename(att.netns), os.path.dirname(att.netns))
        try:
            self.cni.delete_cached(att)
        except errors.BerthError as exc:
            errs.append(exc)
        if att.network != conflist.LOOPBACK_NETWORK and (errs or not had_netns):
            with contextlib.suppress(errors.BerthError, OSError):
                bridgelib.sweep_container_rules(att.network, att.container_id)
        if errs:
            raise errs[0]

    def _release_sandbox(self, cid: str) -> None:
        """DEL every cached attachment (networks in reverse, then lo), sweep, delete the netns."""
        atts = self.cni.attachments(container_id=cid)
        atts.sort(key=lambda a: (a.network == conflist.LOOPBACK_NETWORK, _ifindex(a.ifname)), reverse=False)
        ordered = [a for a in atts if a.network != conflist.LOOPBACK_NETWORK]
        ordered.sort(key=lambda a: _ifindex(a.ifname), reverse=True)
        ordered += [a for a in atts if a.network == conflist.LOOPBACK_NETWORK]
        first: Exception | None = None
        for att in ordered:
            try:
                self._del_attachment(att)
            except errors.BerthError as exc:
                first = first or exc
        netns.delete(cid, self.netns_root)
        if first is not None:
            raise first

    # --- containers: after a daemon restart ------------------------------------------------

    async def resume(self, cid: str, rec: dict) -> None:
        """A container still running after a restart of berthd: its ports, names and DNS."""
        mode = rec["HostConfig"].get("NetworkMode") or "bridge"
        state = rec.get("BerthNetworks") or {}
        if mode.startswith("container:"):
            with contextlib.suppress(errors.BerthError):
                other_id, _other = self._containers().get(mode.split(":", 1)[1])
                other = self._live.get(other_id)
                self._live[cid] = _Live(cid, other.netns if other else None, False)
            return
        if mode == "host" or not state:
            self._live[cid] = _Live(cid, None, False)
            return
        live = _Live(cid, state.get("netns"), True)
        live.mappings = [ports.PortMapping(h, int(p), int(c), proto) for h, p, c, proto in state.get("mappings") or []]
        self.allocator.restore(cid, live.mappings)
        for name, ep in ((rec.get("NetworkSettings") or {}).get("Networks") or {}).items():
            if name not in (state.get("ifnames") or {}):
                continue
            live.addresses[name] = [ep["IPAddress"]] if ep.get("IPAddress") else []
            live.names[name] = {cid[:12]} | {a.lower() for a in ep.get("Aliases") or []}
        dns = state.get("dns")
        user_nets = [n for n in live.addresses if n not in PREDEFINED]
        if dns and user_nets and live.netns:
            try:
                live.dns = await self._dns_server().listen_container(
                    live.netns, user_nets, upstreams=dns[2], forward=bool(dns[3]), ports=(int(dns[0]), int(dns[1])))
            except errors.BerthError as exc:
                sys.stderr.write(f"berthd: embedded DNS of {cid[:12]}: {exc}\n")
        self._live[cid] = live

    async def sweep(self) -> None:
        """After the containers' restore: attachments and namespaces of containers that do
        not run (berthd died before it could remove them)."""
        def run() -> None:
            for att in self.cni.attachments():
                if att.container_id not in self._live:
                    with contextlib.suppress(errors.BerthError, OSError):
                        self._del_attachment(att)
            for name in netns.list_names(self.netns_root):
                if name not in self._live:
                    with contextlib.suppress(errors.BerthError, OSError):
                        netns.delete(name, self.netns_root)

        await asyncio.to_thread(run)

    # --- DNS -------------------------------------------------------------------------------

    def _dns_server(self) -> Any:
        if self._dns is None:
            from berth.network.dns import DNSServer

            self._dns = DNSServer(self._lookup, self._reverse)
        return self._dns

    def _lookup(self, network: str, name: str) -> list[str]:
        """Container names (as they are now: a rename is seen), aliases and short ids."""
        out: list[str] = []
        records = getattr(self.daemon.services.get("containers"), "_records", {})
        for cid, live in self._live.items():
            names = live.names.get(network)
            if names is None:
                continue
            crec = records.get(cid)
            if name in names or (crec is not None and crec["Name"][1:].lower() == name):
                out.extend(live.addresses.get(network) or [])
        return out

    def _reverse(self, network: str, ip: str) -> list[str]:
        containers = self.daemon.services.get("containers")
        for cid, live in self._live.items():
            if ip in (live.addresses.get(network) or []):
                crec = getattr(containers, "_records", {}).get(cid)
                if crec is not None:
                    return [f"{crec['Name'][1:]}.{network}"]
        return []

    # --- views -----------------------------------------------------------------------------

    def view(self, rec: dict) -> dict:
        settings = dict(empty_settings())
        settings.update(rec.get("NetworkSettings") or {})
        if not settings.get("Networks"):
            mode = rec["HostConfig"].get("NetworkMode") or "bridge"
            if not mode.startswith("container:"):
                settings["Networks"] = {mode: _endpoint("")}
        return settings

    def summary_ports(self, rec: dict) -> list[dict]:
        """``docker ps``'s Ports: published ones with their host side, exposed ones without."""
        out: list[dict] = []
        published = set()
        for key, bindings in ((rec.get("NetworkSettings") or {}).get("Ports") or {}).items():
            port, _, proto = key.partition("/")
            for b in bindings or []:
                out.append({"IP": b["HostIp"], "PrivatePort": int(port), "PublicPort": int(b["HostPort"]),
                            "Type": proto})
                published.add(key)
        for key in (rec["Config"].get("ExposedPorts") or {}):
            port, _, proto = key.partition("/")
            if key not in published and port.isdigit():
                out.append({"PrivatePort": int(port), "Type": proto or "tcp"})
        return out


def _cni_name(rec: dict) -> str:
    """The network's name in CNI (conflist, cache, host-local's directory, rule comments):
    its own name when CNI takes it, else ``net-<12 hex of its id>``."""
    name = rec["Name"]
    return name if _NAME.match(name) and len(name) <= 64 else "net-" + rec["Id"][:12]


def _subnets(rec: dict) -> list[Any]:
    out = []
    for c in (rec.get("IPAM") or {}).get("Config") or []:
        with contextlib.suppress(ValueError, KeyError):
            out.append(ipaddress.ip_network(c["Subnet"]))
    return out


def _ifindex(ifname: str) -> int:
    m = re.search(r"(\d+)$", ifname)
    return int(m.group(1)) if m else -1


def _next_ifname(crec: dict) -> str:
    used = set(((crec.get("BerthNetworks") or {}).get("ifnames") or {}).values())
    i = 0
    while f"eth{i}" in used:
        i += 1
    return f"eth{i}"


def _created_before(created: str, until: str) -> bool:
    from berth.daemon.services._containers_util import parse_time

    when = parse_time(created) or 0.0
    try:
        limit = float(until)
    except ValueError:
        limit = parse_time(until) or 0.0
    return when < limit


@contextlib.contextmanager
def _host_lock():  # noqa: ANN202
    """A lock shared by every berthd on the host (subnets are a host-wide resource)."""
    path = PICK_LOCK
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
