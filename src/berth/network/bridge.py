"""What the plugins leave on the host after DEL, and its removal.

    bridge_exists(bridge) -> bool
    remove_bridge(bridge) -> None            the link, and the firewall plugin's isolation
                                             rules that name it (CNI-ISOLATION-STAGE-1/2)
    release_ipam(ipam_dir, network) -> None  host-local's directory for the network
    container_rules(network, container_id, table="nat") -> list[str]
    sweep_container_rules(network, container_id) -> int   after DEL: NAT rules it left

The CNI plugins release per-container state on DEL (veth, IP reservation, masquerade,
DNAT and FORWARD rules) but keep what the network shares: the bridge itself and the
``ingressPolicy: same-bridge`` rules, which they cannot know to be unused. ``network rm``
calls these (Docker removes the bridge with the network too). The chains shared by every
CNI network (CNI-HOSTPORT-*, CNI-FORWARD, CNI-ADMIN, CNI-ISOLATION-STAGE-*) and their
jumps stay, as they do with podman and cri-o.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess

from berth.errors import FailedPrecondition, InvalidArgument

from .conflist import _IFNAME

ISOLATION_CHAINS = ("CNI-ISOLATION-STAGE-1", "CNI-ISOLATION-STAGE-2")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    path = env.get("PATH", "/usr/bin:/bin").split(":")
    env["PATH"] = ":".join(path + [d for d in ("/usr/sbin", "/sbin") if d not in path])
    return env


def bridge_exists(bridge: str) -> bool:
    return os.path.isdir(f"/sys/class/net/{bridge}/bridge")


def _isolation_rules(bridge: str, saved: str) -> list[str]:
    rules = []
    for line in saved.splitlines():
        if not line.startswith("-A "):
            continue
        words = shlex.split(line)
        if len(words) < 2 or words[1] not in ISOLATION_CHAINS:
            continue
        pairs = {(words[i], words[i + 1]) for i in range(len(words) - 1)}
        if ("-i", bridge) in pairs or ("-o", bridge) in pairs:
            rules.append(line)
    return rules


def remove_bridge(bridge: str) -> None:
    if not _IFNAME.match(bridge):
        raise InvalidArgument(f"invalid bridge name {bridge!r}")
    env = _env()
    if bridge_exists(bridge):
        proc = subprocess.run(["ip", "link", "del", bridge], capture_output=True, text=True, env=env)
        if proc.returncode != 0 and bridge_exists(bridge):
            raise FailedPrecondition(f"ip link del {bridge}: {proc.stderr.strip()}")
    if shutil.which("iptables-save", path=env["PATH"]) is None:
        return
    saved = subprocess.run(["iptables-save", "-t", "filter"], capture_output=True, text=True, env=env)
    rules = _isolation_rules(bridge, saved.stdout)
    if not rules:
        return
    script = "*filter\n" + "".join("-D" + r[2:] + "\n" for r in rules) + "COMMIT\n"
    proc = subprocess.run(["iptables-restore", "--noflush", "--wait"], input=script, capture_output=True,
                          text=True, env=env)
    if proc.returncode != 0:
        raise FailedPrecondition(f"remove isolation rules of {bridge}: {proc.stderr.strip()}")


def container_rules(network: str, container_id: str, table: str = "nat") -> list[str]:
    """``iptables-save`` lines of ``table`` that the bridge and portmap plugins tagged with
    this attachment (comment ``name: "<network>" id: "<container>"``)."""
    tag = f'name: "{network}" id: "{container_id}"'
    saved = subprocess.run(["iptables-save", "-t", table], capture_output=True, text=True, env=_env())
    out = []
    for line in saved.stdout.splitlines():
        if line.startswith("-A ") and tag in " ".join(shlex.split(line)):
            out.append(line)
    return out


def sweep_container_rules(network: str, container_id: str) -> int:
    """Remove what DEL left of one attachment's NAT rules; returns how many rules went.

    The bridge plugin (1.1.x) removes its masquerade chain only if the container's
    namespace still exists, to learn the addresses from the interface; after a crash in
    which the namespace went first, the rules stay. They carry the attachment's tag in a
    comment, so they are found and removed here (jumps first, then the chains they name).
    Call after ``CNI.delete``; a no-op when DEL did its job.
    """
    rules = container_rules(network, container_id)
    if not rules:
        return 0
    chains: list[str] = []
    for line in rules:
        words = shlex.split(line)
        if "-j" in words:
            target = words[words.index("-j") + 1]
            if target.startswith("CNI-") and not target.startswith("CNI-HOSTPORT") and target not in chains:
                chains.append(target)
    jumps = [r for r in rules if shlex.split(r)[1] not in chains]
    script = ["*nat"] + ["-D" + r[2:] for r in jumps]
    script += [f"-F {c}" for c in chains] + [f"-X {c}" for c in chains] + ["COMMIT", ""]
    proc = subprocess.run(["iptables-restore", "--noflush", "--wait"], input="\n".join(script),
                          capture_output=True, text=True, env=_env())
    if proc.returncode != 0:
        raise FailedPrecondition(f"remove nat rules of {container_id} on {network}: {proc.stderr.strip()}")
    return len(rules)


def release_ipam(ipam_dir: str, network: str) -> None:
    if not network or "/" in network or network in (".", ".."):
        raise InvalidArgument(f"invalid network name {network!r}")
    shutil.rmtree(os.path.join(ipam_dir, network), ignore_errors=True)
