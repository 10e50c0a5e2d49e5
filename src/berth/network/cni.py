"""CNI plugin invocation, per the CNI specification 1.0.0.

    conf = NetworkConfigList(dict)           a conflist: name, cniVersion, plugins[]
    cni = CNI(state_dir, plugin_dirs=DEFAULT_PLUGIN_DIRS, timeout=60.0)
    cni.add(conf, container_id, netns_path, ifname="eth0", *, args=None,
            capability_args=None) -> Result
    cni.delete(conf, container_id, netns_path, ifname="eth0", *, args=None,
               capability_args=None) -> None
    cni.check(conf, container_id, netns_path, ifname="eth0") -> None
    cni.version(plugin_type) -> dict
    cni.cached(network, container_id, ifname) -> Attachment | None
    cni.attachments(container_id=None, network=None) -> list[Attachment]
    cni.delete_cached(attachment)            DEL with the cached conflist (after a crash)

How a list runs (spec section 3): each plugin is the executable named by its ``type``,
found in the plugin dirs (also passed to it as ``CNI_PATH``), run with ``CNI_COMMAND``,
``CNI_CONTAINERID``, ``CNI_NETNS``, ``CNI_IFNAME``, ``CNI_ARGS`` and ``CNI_PATH`` in its
environment and its configuration on stdin: the plugin's dict with the list's ``name``
and ``cniVersion``, ``runtimeConfig`` holding the capability arguments it declares in
``capabilities`` (``portMappings``, ``ips``, ``mac``, ``aliases``...), and ``prevResult``.

- ADD runs the plugins in order, each getting the previous one's result; the last
  result is returned and cached, with the arguments, under
  ``state_dir/results/<network>-<container>-<ifname>`` (atomic write). If a plugin fails,
  DEL runs for the whole list in reverse (the spec's advice) and the error is raised.
- DEL runs the plugins in reverse, each with the cached result as ``prevResult`` and the
  cached arguments (portmap needs its ``portMappings`` again to remove its rules); a
  namespace that is gone is passed as ``CNI_NETNS=""`` (plugins then release what they
  can: IPAM, iptables). Every plugin runs even if one fails; the first error is raised
  and the cache kept, so DEL can be retried. Without a cache DEL still runs, without
  ``prevResult``.
- CHECK runs in order with the cached result; skipped when ``disableCheck`` is set.

A plugin's error ``{"code", "msg", "details"}`` on stdout becomes ``PluginError`` whose
one line names the plugin, the command, the network and the message. Call from a
worker thread in asyncio code: every call runs plugins as subprocesses and waits.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from berth._sys.files import atomic_write
from berth.errors import BerthError, FailedPrecondition, InvalidArgument, NotFound, Unavailable

CNI_VERSION = "1.0.0"
DEFAULT_PLUGIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")

_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")
_SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")  # plugins run iptables, ip6tables


class PluginError(BerthError):
    """A CNI plugin failed; ``code``, ``msg`` and ``details`` are what it printed."""

    http_status = 500

    def __init__(self, plugin: str, command: str, network: str, code: int, msg: str, details: str = "") -> None:
        self.plugin, self.command, self.network = plugin, command, network
        self.code, self.msg, self.details = code, msg, details
        text = msg if not details or details in msg else f"{msg}: {details}"
        text = " ".join(text.split()) or "no message"
        super().__init__(f"cni plugin {plugin} {command} on network {network} failed: {text} (code {code})")


def _version_tuple(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in version.split("."))
    except ValueError:
        return (0,)


class NetworkConfigList:
    """A validated CNI network configuration list (a ``.conflist`` document)."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        if not isinstance(raw, Mapping):
            raise InvalidArgument("cni conflist: expected a JSON object")
        name = raw.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise InvalidArgument(f"cni conflist: invalid network name {name!r}")
        version = raw.get("cniVersion", CNI_VERSION)
        if not isinstance(version, str) or not re.match(r"^\d+\.\d+\.\d+$", version):
            raise InvalidArgument(f"cni conflist {name}: invalid cniVersion {version!r}")
        plugins = raw.get("plugins")
        if not isinstance(plugins, list) or not plugins:
            raise InvalidArgument(f"cni conflist {name}: 'plugins' must be a non-empty list")
        for i, plugin in enumerate(plugins):
            if not isinstance(plugin, Mapping) or not isinstance(plugin.get("type"), str) \
                    or not plugin["type"] or "/" in plugin["type"]:
                raise InvalidArgument(f"cni conflist {name}: plugin {i} has no valid 'type'")
        self.raw: dict[str, Any] = json.loads(json.dumps(raw))  # a private deep copy
        self.name: str = name
        self.cni_version: str = version
        self.plugins: list[dict[str, Any]] = self.raw["plugins"]
        self.disable_check: bool = str(raw.get("disableCheck", False)).lower() == "true"

    @classmethod
    def from_json(cls, data: str | bytes) -> NetworkConfigList:
        try:
            raw = json.loads(data)
        except ValueError as e:
            raise InvalidArgument(f"cni conflist: not JSON: {e}") from None
        return cls(raw)

    @classmethod
    def load(cls, path: str) -> NetworkConfigList:
        try:
            with open(path, "rb") as f:
                return cls.from_json(f.read())
        except FileNotFoundError:
            raise NotFound(f"cni conflist {path} not found") from None

    def to_json(self) -> bytes:
        return json.dumps(self.raw, indent=2, sort_keys=False).encode() + b"\n"

    def save(self, path: str) -> None:
        atomic_write(path, self.to_json(), 0o644)

    def plugin_config(self, index: int, prev_result: Mapping[str, Any] | None,
                      capability_args: Mapping[str, Any]) -> dict[str, Any]:
        """What plugin ``index`` gets on stdin (spec: "Deriving execution configuration")."""
        conf = dict(self.plugins[index])
        conf["name"] = self.name
        conf["cniVersion"] = self.cni_version
        caps = conf.get("capabilities") or {}
        runtime = {k: capability_args[k] for k, on in caps.items() if on and k in capability_args}
        if runtime:
            conf["runtimeConfig"] = runtime
        else:
            conf.pop("runtimeConfig", None)
        if prev_result is not None:
            conf["prevResult"] = prev_result
        else:
            conf.pop("prevResult", None)
        return conf

    def __repr__(self) -> str:
        return f"NetworkConfigList({self.name!r}, {[p['type'] for p in self.plugins]})"


@dataclass(frozen=True)
class IPConfig:
    address: ipaddress.IPv4Interface | ipaddress.IPv6Interface
    gateway: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    interface: str | None  # the interface's name, from the result's interfaces[]


@dataclass
class Result:
    """A CNI result (the raw dict in ``raw``) with typed views of what the daemon needs."""

    raw: dict[str, Any]

    @property
    def interfaces(self) -> list[dict[str, Any]]:
        return list(self.raw.get("interfaces") or [])

    @property
    def ips(self) -> list[IPConfig]:
        out = []
        ifaces = self.interfaces
        for item in self.raw.get("ips") or []:
            try:
                address = ipaddress.ip_interface(item["address"])
                gateway = ipaddress.ip_address(item["gateway"]) if item.get("gateway") else None
            except (KeyError, ValueError):
                continue
            index = item.get("interface")
            name = ifaces[index].get("name") if isinstance(index, int) and 0 <= index < len(ifaces) else None
            out.append(IPConfig(address, gateway, name))
        return out

    def mac(self, ifname: str) -> str | None:
        """The MAC address of ``ifname`` inside the sandbox, if the result names it."""
        for iface in self.interfaces:
            if iface.get("name") == ifname and iface.get("sandbox"):
                return iface.get("mac")
        return None


@dataclass
class Attachment:
    """One cached ADD: what DEL needs later, also after a restart of berthd."""

    network: str
    container_id: str
    ifname: str
    netns: str
    config: NetworkConfigList
    result: Result
    args: dict[str, str] = field(default_factory=dict)
    capability_args: dict[str, Any] = field(default_factory=dict)


class CNI:
    """Runs conflists against network namespaces; caches results under ``state_dir``."""

    def __init__(self, state_dir: str, plugin_dirs: Sequence[str] = DEFAULT_PLUGIN_DIRS,
                 timeout: float = 60.0) -> None:
        self.state_dir = state_dir
        self.plugin_dirs = [d for d in plugin_dirs if d]
        self.timeout = timeout
        self._results = os.path.join(state_dir, "results")

    # --- public verbs ------------------------------------------------------------------

    def add(self, conf: NetworkConfigList, container_id: str, netns: str, ifname: str = "eth0", *,
            args: Mapping[str, str] | None = None,
            capability_args: Mapping[str, Any] | None = None) -> Result:
        _check_ids(container_id, ifname)
        if not netns or not os.path.exists(netns):
            raise NotFound(f"network namespace {netns or '(none)'} not found")
        args = dict(args or {})
        caps = dict(capability_args or {})
        prev: dict[str, Any] | None = None
        try:
            for i in range(len(conf.plugins)):
                out = self._exec("ADD", conf, i, prev, container_id, netns, ifname, args, caps)
                prev = out if out else prev
        except BerthError:
            self._delete_all(conf, prev, container_id, netns, ifname, args, caps)
            raise
        result = Result(prev or {"cniVersion": conf.cni_version})
        attachment = Attachment(conf.name, container_id, ifname, netns, conf, result, args, caps)
        self._save(attachment)
        return result

    def delete(self, conf: NetworkConfigList, container_id: str, netns: str | None,
               ifname: str = "eth0", *, args: Mapping[str, str] | None = None,
               capability_args: Mapping[str, Any] | None = None) -> None:
        """Remove the attachment; tolerant of a missing cache, namespace or interface.

        ``args``/``capability_args`` None means the cached ones (what ADD was given).
        """
        _check_ids(container_id, ifname)
        cached = self.cached(conf.name, container_id, ifname)
        prev = cached.result.raw if cached else None
        use_args = dict(args) if args is not None else (cached.args if cached else {})
        use_caps = dict(capability_args) if capability_args is not None else (
            cached.capability_args if cached else {})
        errors = self._delete_all(conf, prev, container_id, netns or "", ifname, use_args, use_caps)
        if errors:
            raise errors[0]
        self._forget(conf.name, container_id, ifname)

    def delete_cached(self, attachment: Attachment) -> None:
        """DEL an attachment found by ``attachments()`` with its own cached configuration."""
        self.delete(attachment.config, attachment.container_id, attachment.netns, attachment.ifname)

    def check(self, conf: NetworkConfigList, container_id: str, netns: str, ifname: str = "eth0") -> None:
        _check_ids(container_id, ifname)
        if conf.disable_check or _version_tuple(conf.cni_version) < (0, 4, 0):
            return
        cached = self.cached(conf.name, container_id, ifname)
        if cached is None:
            raise NotFound(f"network {conf.name}: container {container_id} ({ifname}) is not attached")
        for i in range(len(conf.plugins)):
            self._exec("CHECK", conf, i, cached.result.raw, container_id, netns, ifname,
                       cached.args, cached.capability_args)

    def version(self, plugin_type: str) -> dict[str, Any]:
        path = self.find_plugin(plugin_type)
        env = self._env("VERSION", "", "", "", {})
        out = self._run(path, plugin_type, "VERSION", "-", json.dumps({"cniVersion": CNI_VERSION}).encode(), env)
        return out

    def find_plugin(self, plugin_type: str) -> str:
        for directory in self.plugin_dirs:
            candidate = os.path.join(directory, plugin_type)
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                return candidate
        raise NotFound(f"cni plugin {plugin_type!r} not found in {':'.join(self.plugin_dirs) or '(no dirs)'}")

    # --- cache --------------------------------------------------------------------------

    def _cache_path(self, network: str, container_id: str, ifname: str) -> str:
        return os.path.join(self._results, f"{network}-{container_id}-{ifname}")

    def cached(self, network: str, container_id: str, ifname: str) -> Attachment | None:
        return self._load(self._cache_path(network, container_id, ifname))

    def attachments(self, container_id: str | None = None, network: str | None = None) -> list[Attachment]:
        """Every cached attachment (optionally of one container or network), sorted."""
        try:
            names = sorted(os.listdir(self._results))
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            if name.startswith("."):
                continue
            att = self._load(os.path.join(self._results, name))
            if att is None:
                continue
            if container_id is not None and att.container_id != container_id:
                continue
            if network is not None and att.network != network:
                continue
            found.append(att)
        return found

    def _save(self, att: Attachment) -> None:
        os.makedirs(self._results, mode=0o700, exist_ok=True)
        doc = {
            "kind": "cniCacheV1", "containerId": att.container_id, "ifName": att.ifname,
            "networkName": att.network, "netns": att.netns, "config": att.config.raw,
            "cniArgs": att.args, "capabilityArgs": att.capability_args, "result": att.result.raw,
        }
        atomic_write(self._cache_path(att.network, att.container_id, att.ifname),
                     json.dumps(doc).encode(), 0o600)

    def _load(self, path: str) -> Attachment | None:
        try:
            with open(path, "rb") as f:
                doc = json.load(f)
            return Attachment(doc["networkName"], doc["containerId"], doc["ifName"], doc.get("netns", ""),
                              NetworkConfigList(doc["config"]), Result(doc.get("result") or {}),
                              dict(doc.get("cniArgs") or {}), dict(doc.get("capabilityArgs") or {}))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, BerthError):
            return None  # a corrupt entry is as good as none: DEL runs without prevResult

    def _forget(self, network: str, container_id: str, ifname: str) -> None:
        try:
            os.unlink(self._cache_path(network, container_id, ifname))
        except FileNotFoundError:
            pass

    # --- execution ----------------------------------------------------------------------

    def _delete_all(self, conf: NetworkConfigList, prev: dict[str, Any] | None, container_id: str,
                    netns: str, ifname: str, args: dict[str, str], caps: dict[str, Any]) -> list[BerthError]:
        if netns and not os.path.exists(netns):
            netns = ""
        if _version_tuple(conf.cni_version) < (0, 4, 0):
            prev = None
        errors: list[BerthError] = []
        for i in reversed(range(len(conf.plugins))):
            try:
                self._exec("DEL", conf, i, prev, container_id, netns, ifname, args, caps)
            except BerthError as e:
                errors.append(e)
        return errors

    def _exec(self, command: str, conf: NetworkConfigList, index: int, prev: dict[str, Any] | None,
              container_id: str, netns: str, ifname: str, args: Mapping[str, str],
              caps: Mapping[str, Any]) -> dict[str, Any]:
        plugin_type = conf.plugins[index]["type"]
        path = self.find_plugin(plugin_type)
        stdin = json.dumps(conf.plugin_config(index, prev, caps)).encode()
        env = self._env(command, container_id, netns, ifname, args)
        return self._run(path, plugin_type, command, conf.name, stdin, env)

    def _env(self, command: str, container_id: str, netns: str, ifname: str,
             args: Mapping[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
        path = env.get("PATH", "/usr/bin:/bin").split(":")
        env["PATH"] = ":".join(path + [d for d in _SBIN if d not in path])
        env.update(CNI_COMMAND=command, CNI_CONTAINERID=container_id, CNI_NETNS=netns,
                   CNI_IFNAME=ifname, CNI_PATH=":".join(self.plugin_dirs))
        if args:
            env["CNI_ARGS"] = _format_args(args)
        return env

    def _run(self, path: str, plugin_type: str, command: str, network: str, stdin: bytes,
             env: dict[str, str]) -> dict[str, Any]:
        try:
            proc = subprocess.run([path], input=stdin, capture_output=True, env=env, cwd="/",
                                  timeout=self.timeout, close_fds=True)
        except subprocess.TimeoutExpired:
            raise Unavailable(f"cni plugin {plugin_type} {command} on network {network} timed out "
                              f"after {self.timeout:g}s") from None
        except OSError as e:
            raise FailedPrecondition(f"cni plugin {plugin_type}: cannot run {path}: "
                                     f"{os.strerror(e.errno or 0)}") from None
        out = proc.stdout.strip()
        parsed: Any = None
        if out:
            try:
                parsed = json.loads(out)
            except ValueError:
                parsed = None
        if proc.returncode != 0:
            if isinstance(parsed, dict) and ("code" in parsed or "msg" in parsed):
                code = parsed.get("code", 999)
                raise PluginError(plugin_type, command, network, code if isinstance(code, int) else 999,
                                  str(parsed.get("msg") or ""), str(parsed.get("details") or ""))
            stderr = proc.stderr.decode(errors="replace").strip().splitlines()
            text = stderr[-1] if stderr else out.decode(errors="replace") or f"exit status {proc.returncode}"
            raise PluginError(plugin_type, command, network, 999, text)
        if command in ("DEL", "CHECK") or not out:
            return {}
        if not isinstance(parsed, dict):
            raise PluginError(plugin_type, command, network, 6, "result is not a JSON object",
                              out[:200].decode(errors="replace"))
        return parsed


def _check_ids(container_id: str, ifname: str) -> None:
    if not _NAME.match(container_id or ""):
        raise InvalidArgument(f"cni: invalid container id {container_id!r}")
    if not ifname or len(ifname) > 15 or ifname in (".", "..") or any(c in ifname for c in "/: \t\n"):
        raise InvalidArgument(f"cni: invalid interface name {ifname!r}")


def _format_args(args: Mapping[str, str]) -> str:
    """CNI_ARGS: K=V pairs joined by ';', with IgnoreUnknown=1 first (as podman passes)."""
    pairs = {"IgnoreUnknown": "1", **{str(k): str(v) for k, v in args.items()}}
    for k, v in pairs.items():
        if not k or any(c in k + v for c in ";="):
            raise InvalidArgument(f"cni: invalid CNI_ARGS entry {k}={v}")
    return ";".join(f"{k}={v}" for k, v in pairs.items())
