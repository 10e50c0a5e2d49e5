"""Layer 1: container networking as berthd uses it (imports only berth._sys, berth.spec,
berth.errors and the stdlib). One job per module; import the one you need:

    netns     named network namespaces pinned by a bind mount (``ip netns add``'s way)
    cni       CNI 1.0.0 plugin invocation: conflist ADD / DEL (reverse) / CHECK / VERSION,
              results cached per (network, container, ifname) for DEL's prevResult
    conflist  the conflists berthd writes (bridge + host-local, portmap, firewall, tuning;
              loopback; --internal) and subnet validation / picking
    ports     Docker's -p / -P syntax, host-port allocation and conflicts, CNI portMappings
    hosts     /etc/hosts, /etc/hostname, /etc/resolv.conf contents (Docker's format)
    dnsmsg    DNS wire format: parse queries, build answers (A, AAAA, PTR)
    dns       the embedded DNS server (asyncio, UDP + TCP), bound in each container's
              netns on 127.0.0.11 (Docker's way) or on any address
    bridge    host-side leftovers: the bridge and its isolation rules (network rm),
              NAT rules DEL could not remove, host-local's directory

Errors are berth.errors (NotFound, AlreadyExists, InvalidArgument, FailedPrecondition,
Unavailable), each one line; a failing CNI plugin's {code, msg, details} becomes one of
them (see cni.PluginError).
"""
