"""From an image config and Docker's create options to an OCI runtime spec (config.json),
with Docker's defaults.

    merge_config(image_config, create_config) -> Config     create: image + user settings
    check_host_config(host_config)                           create: refuse bad options early
    generate(SpecInput) -> dict                              start: the OCI config.json
    resolve_user(rootfs, "name|uid[:group|gid]") -> User     from the image's /etc/passwd, /etc/group
    capabilities(host_config) -> [CAP_...]                   --cap-add/--cap-drop/--privileged
    oci_resources(host_config) -> linux.resources            -m, --memory-swap, --cpus, ... (also update)
    oci_seccomp(docker_profile, caps, arch) -> linux.seccomp Docker's profile format to OCI
    exec_process(spec, exec_config, rootfs) -> process       the process of ``docker exec``

What a container gets by default, as with dockerd: new pid, ipc, uts, mount and network
namespaces (``--network host`` shares the host's; otherwise the one the networks service
made and wired, given as ``SpecInput.netns_path``); Docker's 14 capabilities (bounding, effective and
permitted; a non-root user starts with none effective, as Docker 23+); masked and
read-only /proc and /sys paths; /proc, /dev, /dev/pts, /dev/shm (64 MiB), /dev/mqueue,
/sys and /sys/fs/cgroup mounted; hostname = the id's first 12 characters; ``PATH`` if
the image sets none, ``HOSTNAME``, ``HOME`` from /etc/passwd, ``TERM=xterm`` with a tty;
Docker's default seccomp profile; cgroupsPath ``<cgroup_parent>/<id>``.

``--privileged``: every capability the daemon itself holds (root on some machines lacks
a few, and asking for them would fail), no seccomp, no masked or read-only paths, /sys
read-write, the host's devices. Errors are ``InvalidArgument`` with Docker's wording.
"""

from __future__ import annotations

import json
import os
import platform
import stat
from dataclasses import dataclass, field

from berth.daemon import mountspec
from berth.errors import InvalidArgument

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
INIT_PATH_IN_CONTAINER = "/sbin/docker-init"
INIT_CANDIDATES = ("/usr/bin/tini-static", "/usr/bin/docker-init", "/usr/libexec/docker/docker-init")

DEFAULT_CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
    "CAP_AUDIT_WRITE",
]

MASKED_PATHS = [
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]

# Config keys that come from the image unless the user sets them (Docker's merge)
CONFIG_KEYS = ("Hostname", "Domainname", "User", "AttachStdin", "AttachStdout", "AttachStderr", "ExposedPorts",
               "Tty", "OpenStdin", "StdinOnce", "Env", "Cmd", "Image", "Volumes", "WorkingDir", "Entrypoint",
               "OnBuild", "Labels", "StopSignal", "StopTimeout", "Healthcheck", "ArgsEscaped", "MacAddress",
               "NetworkDisabled", "Shell")

_ARCH_GO = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386", "s390x": "s390x",
            "ppc64le": "ppc64le", "riscv64": "riscv64"}
_ARCH_SCMP = {"amd64": "SCMP_ARCH_X86_64", "arm64": "SCMP_ARCH_AARCH64", "arm": "SCMP_ARCH_ARM",
              "386": "SCMP_ARCH_X86", "s390x": "SCMP_ARCH_S390X", "ppc64le": "SCMP_ARCH_PPC64LE",
              "riscv64": "SCMP_ARCH_RISCV64"}
_ARCH_ALIASES = {"amd64": {"amd64", "x86_64"}, "arm64": {"arm64", "aarch64"}, "386": {"x86", "386"},
                 "arm": {"arm"}, "s390x": {"s390x"}, "ppc64le": {"ppc64le"}, "riscv64": {"riscv64"}}


def host_arch() -> str:
    machine = platform.machine()
    return _ARCH_GO.get(machine, machine)


# --- create: merging the image's config with the user's ----------------------------------


def merge_config(image_config: dict, user: dict) -> dict:
    """Docker's ``merge`` (daemon/commit.go): what the user gave wins; the command comes
    from the image unless the user names an entrypoint or a command."""
    image_config = image_config or {}
    config = {key: user.get(key) for key in CONFIG_KEYS if key in user}
    for key in ("User", "WorkingDir", "StopSignal", "Domainname", "Hostname"):
        if not config.get(key) and image_config.get(key):
            config[key] = image_config[key]
    env: dict[str, str] = {}
    order: list[str] = []
    for item in list(image_config.get("Env") or []) + list(user.get("Env") or []):
        key = item.split("=", 1)[0]
        if key not in env:
            order.append(key)
        env[key] = item
    config["Env"] = [env[k] for k in order]
    for key in ("ExposedPorts", "Volumes", "Labels"):
        merged = dict(image_config.get(key) or {})
        merged.update(user.get(key) or {})
        config[key] = merged or ({} if key == "Labels" else None)
    entrypoint = user.get("Entrypoint")
    cmd = user.get("Cmd")
    if isinstance(entrypoint, str):
        entrypoint = [entrypoint]
    if isinstance(cmd, str):
        cmd = [cmd]
    if not entrypoint:
        if not cmd:
            cmd = image_config.get("Cmd")
        if entrypoint is None:
            entrypoint = image_config.get("Entrypoint")
    if entrypoint == [""]:  # --entrypoint "": none at all
        entrypoint = None
    config["Entrypoint"] = entrypoint or None
    config["Cmd"] = cmd or None
    if not (config["Entrypoint"] or config["Cmd"]):
        raise InvalidArgument("No command specified")
    for key in ("AttachStdin", "AttachStdout", "AttachStderr", "Tty", "OpenStdin", "StdinOnce"):
        config[key] = bool(config.get(key))
    config.setdefault("Hostname", "")
    config.setdefault("Domainname", "")
    config.setdefault("User", "")
    config.setdefault("WorkingDir", "")
    config.setdefault("OnBuild", None)
    return config


def command_of(config: dict) -> list[str]:
    return list(config.get("Entrypoint") or []) + list(config.get("Cmd") or [])


# --- create: checking the host config -------------------------------------------------------

_RESTART_NAMES = ("", "no", "always", "on-failure", "unless-stopped")


def check_host_config(hc: dict) -> dict:
    """Docker's create-time validation; returns the host config with defaults filled in."""
    hc = dict(hc or {})
    policy = dict(hc.get("RestartPolicy") or {})
    name = policy.get("Name") or ""
    if name not in _RESTART_NAMES:
        raise InvalidArgument(f"invalid restart policy: unknown policy '{name}'; use one of 'no', 'always', "
                              "'on-failure', or 'unless-stopped'")
    retries = int(policy.get("MaximumRetryCount") or 0)
    if retries < 0:
        raise InvalidArgument("invalid restart policy: maximum retry count cannot be negative")
    if retries and name != "on-failure":
        raise InvalidArgument("invalid restart policy: maximum retry count can only be used with 'on-failure'")
    if hc.get("AutoRemove") and name not in ("", "no"):
        raise InvalidArgument("can't create 'AutoRemove' container with restart policy")
    hc["RestartPolicy"] = {"Name": name or "no", "MaximumRetryCount": retries}
    mode = hc.get("NetworkMode") or "default"
    if mode == "container:":  # names are the networks service's to check (berth.daemon.services.networks)
        raise InvalidArgument("invalid network mode: container: needs a container name or id")
    hc["NetworkMode"] = "bridge" if mode == "default" else mode
    for key in ("CapAdd", "CapDrop"):
        for cap in hc.get(key) or []:
            _cap_name(cap)
    parse_security_opts(hc.get("SecurityOpt") or [])
    mountspec.validate(hc)  # Binds, Mounts, Tmpfs, VolumesFrom (sources are checked at create)
    memory = int(hc.get("Memory") or 0)
    if memory and memory < 6 * 1024 * 1024:
        raise InvalidArgument("Minimum memory limit allowed is 6MB")
    swap = int(hc.get("MemorySwap") or 0)
    if memory and swap > 0 and swap < memory:
        raise InvalidArgument("Minimum memoryswap limit should be larger than memory limit, see usage")
    if swap > 0 and not memory:
        raise InvalidArgument("You should always set the Memory limit when using Memoryswap limit, see usage")
    nano = int(hc.get("NanoCpus") or 0)
    if nano and (hc.get("CpuQuota") or hc.get("CpuPeriod")):
        raise InvalidArgument("Conflicting options: Nano CPUs and CPU Period cannot both be set")
    ncpu = os.cpu_count() or 1
    if nano < 0 or nano > ncpu * 10**9:
        raise InvalidArgument(f"Range of CPUs is from 0.01 to {ncpu}.00, as there are only {ncpu} CPUs "
                              "available")
    if hc.get("Init") and find_init() is None:
        raise InvalidArgument("--init: no init binary found (install Debian's tini package: /usr/bin/tini-static)")
    log_config = dict(hc.get("LogConfig") or {})
    log_config["Type"] = log_config.get("Type") or "json-file"
    log_config["Config"] = log_config.get("Config") or {}
    driver = log_config["Type"]
    if driver not in ("json-file", "none"):
        if driver in _DOCKER_LOG_DRIVERS:
            raise InvalidArgument(f"logging driver {driver!r} is not supported (only json-file and none)")
        raise InvalidArgument(f"logger: no log driver named '{driver}' is registered")  # dockerd's words
    hc["LogConfig"] = log_config
    return hc


_DOCKER_LOG_DRIVERS = ("local", "syslog", "journald", "gelf", "fluentd", "awslogs", "splunk", "etwlogs", "gcplogs",
                       "logentries")


def _cap_name(cap: str) -> str:
    from berth.runtime.linux.capabilities import CAP_NUMBERS

    name = cap.upper()
    if name == "ALL":
        return name
    if not name.startswith("CAP_"):
        name = "CAP_" + name
    if name not in CAP_NUMBERS:
        raise InvalidArgument(f"unknown capability: \"{cap}\"")
    return name


def find_init() -> str | None:
    for path in INIT_CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    return None


# --- security options ------------------------------------------------------------------------


@dataclass
class SecurityOpts:
    seccomp: dict | None = None  # a Docker-format profile, or None for unconfined
    seccomp_unconfined: bool = False
    no_new_privileges: bool = False


def parse_security_opts(opts: list[str]) -> SecurityOpts:
    """``seccomp=unconfined|builtin|<profile JSON>`` (the docker CLI sends a file's content),
    ``no-new-privileges[=|:true|false]``; ``apparmor=`` and ``label=`` are accepted and ignored."""
    result = SecurityOpts()
    for opt in opts:
        if opt in ("no-new-privileges", "no-new-privileges=true", "no-new-privileges:true"):
            result.no_new_privileges = True
            continue
        if opt in ("no-new-privileges=false", "no-new-privileges:false"):
            continue
        key, sep, value = opt.partition("=")
        if not sep:
            key, sep, value = opt.partition(":")
        if not sep:
            raise InvalidArgument(f"invalid --security-opt 1: \"{opt}\"")
        if key == "seccomp":
            if value == "unconfined":
                result.seccomp_unconfined = True
            elif value in ("builtin", ""):
                result.seccomp = None
            else:
                text = value
                if not value.lstrip().startswith("{") and os.path.isfile(value):
                    with open(value) as f:
                        text = f.read()
                try:
                    profile = json.loads(text)
                except ValueError as exc:
                    raise InvalidArgument(f"Decoding seccomp profile failed: {exc}") from None
                if not isinstance(profile, dict):
                    raise InvalidArgument("Decoding seccomp profile failed: not a JSON object")
                result.seccomp = profile
        elif key in ("apparmor", "label", "systempaths", "mask", "unmask"):
            if key == "systempaths" and value != "unconfined":
                raise InvalidArgument(f"invalid --security-opt 2: \"{opt}\"")
        else:
            raise InvalidArgument(f"invalid --security-opt 2: \"{opt}\"")
    return result


def capabilities(hc: dict) -> list[str]:
    """Docker's TweakCapabilities: the defaults (or all with --privileged), plus --cap-add,
    minus --cap-drop; ALL in either works as in Docker (add wins over drop for one name)."""
    if hc.get("Privileged"):
        return privileged_caps()
    adds = [_cap_name(c) for c in hc.get("CapAdd") or []]
    drops = [_cap_name(c) for c in hc.get("CapDrop") or []]
    if "ALL" in adds:
        base = privileged_caps()
    elif "ALL" in drops:
        base = []
    else:
        base = list(DEFAULT_CAPS)
    caps = [c for c in base if c not in drops or c in adds]
    for cap in adds:
        if cap != "ALL" and cap not in caps:
            caps.append(cap)
    return caps


def privileged_caps() -> list[str]:
    """Every capability in the daemon's own bounding set (what it can give away)."""
    from berth.runtime.linux.capabilities import CAPABILITIES

    mask = 0
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapBnd:"):
                    mask = int(line.split()[1], 16)
    except OSError:
        mask = (1 << len(CAPABILITIES)) - 1
    return [name for number, name in enumerate(CAPABILITIES) if mask & (1 << number)]


# --- seccomp -----------------------------------------------------------------------------------


def oci_seccomp(profile: dict, caps: list[str], arch: str | None = None) -> dict:
    """A Docker-format profile resolved for one container (dockerd's ``setupSeccomp``)."""
    arch = arch or host_arch()
    aliases = _ARCH_ALIASES.get(arch, {arch})
    native = _ARCH_SCMP.get(arch)
    architectures: list[str] = []
    for entry in profile.get("archMap") or []:
        if entry.get("architecture") == native:
            architectures = [native, *(entry.get("subArchitectures") or [])]
    if not architectures and profile.get("architectures"):
        architectures = list(profile["architectures"])
    kernel = _kernel_version()
    syscalls = []
    for rule in profile.get("syscalls") or []:
        includes, excludes = rule.get("includes") or {}, rule.get("excludes") or {}
        if includes.get("arches") and not aliases & set(includes["arches"]):
            continue
        if includes.get("caps") and not all(c in caps for c in includes["caps"]):
            continue
        if includes.get("minKernel") and kernel < _version_tuple(includes["minKernel"]):
            continue
        if excludes.get("arches") and aliases & set(excludes["arches"]):
            continue
        if excludes.get("caps") and any(c in caps for c in excludes["caps"]):
            continue
        if excludes.get("minKernel") and kernel >= _version_tuple(excludes["minKernel"]):
            continue
        names = list(rule.get("names") or ([rule["name"]] if rule.get("name") else []))
        if not names:
            continue
        out = {"names": names, "action": rule.get("action") or "SCMP_ACT_ALLOW"}
        if rule.get("args"):
            out["args"] = [{"index": a.get("index", 0), "value": a.get("value", 0), "valueTwo": a.get("valueTwo", 0),
                            "op": a.get("op")} for a in rule["args"]]
        if rule.get("errnoRet") is not None:
            out["errnoRet"] = rule["errnoRet"]
        syscalls.append(out)
    seccomp = {"defaultAction": profile.get("defaultAction") or "SCMP_ACT_ERRNO", "architectures": architectures,
               "syscalls": syscalls}
    if profile.get("defaultErrnoRet") is not None:
        seccomp["defaultErrnoRet"] = profile["defaultErrnoRet"]
    if profile.get("flags"):
        seccomp["flags"] = list(profile["flags"])
    return seccomp


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def _kernel_version() -> tuple[int, ...]:
    return _version_tuple(os.uname().release.split("-")[0])


# --- users ----------------------------------------------------------------------------------


@dataclass
class User:
    uid: int = 0
    gid: int = 0
    additional_gids: list[int] = field(default_factory=list)
    home: str = "/"
    name: str = ""


def _read_db(rootfs: str, path: str) -> list[list[str]]:
    from berth.runtime.linux.paths import secure_join  # noqa: PLC0415 - resolve symlinks inside the rootfs

    try:
        full = secure_join(rootfs, path)
    except Exception:  # noqa: BLE001 - a broken link: no entries
        return []
    try:
        with open(full, encoding="utf-8", errors="replace") as f:
            return [line.rstrip("\n").split(":") for line in f if line.strip() and not line.startswith("#")]
    except OSError:
        return []


def resolve_user(rootfs: str, spec: str, group_add: list[str] | None = None) -> User:
    """``user``, ``uid``, ``user:group``, ``uid:gid`` as Docker resolves them in the image's
    /etc/passwd and /etc/group; supplementary groups are those listing the user (else the
    primary group) plus ``--group-add``."""
    spec = spec or ""
    name, _, group = spec.partition(":")
    passwd = _read_db(rootfs, "/etc/passwd")
    groups = _read_db(rootfs, "/etc/group")
    user = User()
    entry = None
    if name:
        for row in passwd:
            if len(row) >= 4 and (row[0] == name or (name.isdigit() and row[2] == name)):
                entry = row
                break
        if entry is None:
            if not name.isdigit():
                raise InvalidArgument(f"unable to find user {name}: no matching entries in passwd file")
            user.uid = int(name)
        else:
            user.uid, user.gid = int(entry[2]), int(entry[3])
    else:
        for row in passwd:
            if len(row) >= 4 and row[2] == "0":
                entry = row
                break
    if entry is not None:
        user.name = entry[0]
        if len(entry) >= 6 and entry[5]:
            user.home = entry[5]
    if group:
        found = None
        for row in groups:
            if len(row) >= 3 and (row[0] == group or (group.isdigit() and row[2] == group)):
                found = row
                break
        if found is None:
            if not group.isdigit():
                raise InvalidArgument(f"unable to find group {group}: no matching entries in group file")
            user.gid = int(group)
        else:
            user.gid = int(found[2])
    else:
        if user.name:
            user.additional_gids = [int(row[2]) for row in groups if len(row) >= 4 and row[2].isdigit()
                                    and user.name in row[3].split(",")]
    if not user.additional_gids:
        user.additional_gids = [user.gid]
    elif user.gid not in user.additional_gids:
        user.additional_gids.insert(0, user.gid)
    for extra in group_add or []:
        gid = None
        for row in groups:
            if len(row) >= 3 and (row[0] == extra or row[2] == extra):
                gid = int(row[2])
        if gid is None:
            if not extra.isdigit():
                raise InvalidArgument(f"unable to find group {extra}: no matching entries in group file")
            gid = int(extra)
        if gid not in user.additional_gids:
            user.additional_gids.append(gid)
    return user


# --- mounts ---------------------------------------------------------------------------------
# -v, --mount, --volumes-from and --tmpfs mounts are made in berth.daemon.mountspec; what is
# left here are the default mounts.


def default_mounts(privileged: bool, readonly_sys: bool = True) -> list[dict]:
    sys_opts = ["nosuid", "noexec", "nodev", "ro" if readonly_sys else "rw"]
    return [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": sys_opts},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "ro" if not privileged else "rw"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=67108864"]},
    ]


def _shm_size(hc: dict) -> int:
    return int(hc.get("ShmSize") or 64 * 1024 * 1024)


def host_devices() -> list[dict]:
    """Every character and block device under the host's /dev (for --privileged)."""
    devices = []
    for dirpath, dirnames, filenames in os.walk("/dev"):
        dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) not in ("/dev/pts", "/dev/shm", "/dev/mqueue")]
        for name in filenames:
            path = os.path.join(dirpath, name)
            if path in ("/dev/console", "/dev/ptmx", "/dev/tty"):
                continue
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                devices.append({"path": path, "type": "c" if stat.S_ISCHR(st.st_mode) else "b",
                                "major": os.major(st.st_rdev), "minor": os.minor(st.st_rdev),
                                "fileMode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid})
    return devices


# --- resources ------------------------------------------------------------------------------


def _swap_supported() -> bool:
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        return True
    return os.path.exists("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")


def oci_resources(hc: dict) -> dict:
    """linux.resources from Docker's resource fields (create and update)."""
    res: dict = {}
    memory: dict = {}
    limit = int(hc.get("Memory") or 0)
    swap = int(hc.get("MemorySwap") or 0)
    if limit > 0:
        memory["limit"] = limit
        if _swap_supported():
            if swap == 0:
                memory["swap"] = 2 * limit
            elif swap == -1:
                memory["swap"] = -1
            else:
                memory["swap"] = swap
    if hc.get("MemoryReservation"):
        memory["reservation"] = int(hc["MemoryReservation"])
    if hc.get("OomKillDisable"):
        memory["disableOOMKiller"] = True
    if hc.get("MemorySwappiness") not in (None, -1):
        memory["swappiness"] = int(hc["MemorySwappiness"])
    if memory:
        res["memory"] = memory
    cpu: dict = {}
    if hc.get("CpuShares"):
        cpu["shares"] = int(hc["CpuShares"])
    if hc.get("NanoCpus"):
        cpu["period"] = 100000
        cpu["quota"] = int(hc["NanoCpus"]) * 100000 // 10**9
    if hc.get("CpuQuota"):
        cpu["quota"] = int(hc["CpuQuota"])
    if hc.get("CpuPeriod"):
        cpu["period"] = int(hc["CpuPeriod"])
    if hc.get("CpusetCpus"):
        cpu["cpus"] = hc["CpusetCpus"]
    if hc.get("CpusetMems"):
        cpu["mems"] = hc["CpusetMems"]
    if cpu:
        res["cpu"] = cpu
    pids = hc.get("PidsLimit")
    if pids is not None and int(pids) > 0:
        res["pids"] = {"limit": int(pids)}
    if hc.get("BlkioWeight"):
        res["blockIO"] = {"weight": int(hc["BlkioWeight"])}
    return res


# --- the whole spec ---------------------------------------------------------------------------


@dataclass
class SpecInput:
    container_id: str
    config: dict  # Docker's Config, merged with the image's
    host_config: dict  # Docker's HostConfig, checked
    rootfs: str  # the mounted root filesystem (its /etc/passwd and /etc/group are read)
    cgroup_parent: str = "/berth"
    etc_files: dict[str, str] = field(default_factory=dict)  # container path -> host file (hosts, resolv.conf...)
    extra_mounts: list[dict] = field(default_factory=list)  # more OCI mounts (after the user's)
    mount_points: list[dict] | None = None  # resolved -v/--mount/volumes (berth.daemon.mountspec)
    netns_path: str | None = None  # the network namespace to join (made by the networks service); None: a new one


def container_env(config: dict, hostname: str, user: User) -> list[str]:
    env = list(config.get("Env") or [])
    keys = {item.split("=", 1)[0] for item in env}
    head = []
    if "PATH" not in keys:
        head.append(f"PATH={DEFAULT_PATH}")
    head.append(f"HOSTNAME={hostname}")
    out = head + [e for e in env if not e.startswith("HOSTNAME=")]
    if config.get("Tty") and "TERM" not in keys:
        out.append("TERM=xterm")
    if "HOME" not in keys:
        out.append(f"HOME={user.home or '/'}")
    return out


def _caps_object(caps: list[str], uid: int) -> dict:
    """Docker 23+: bounding for everyone; effective and permitted only for root."""
    running_as_root = uid == 0
    return {"bounding": list(caps), "effective": list(caps) if running_as_root else [],
            "permitted": list(caps) if running_as_root else []}


def generate(inp: SpecInput) -> dict:
    config, hc = inp.config, inp.host_config
    privileged = bool(hc.get("Privileged"))
    hostname = config.get("Hostname") or inp.container_id[:12]
    user = resolve_user(inp.rootfs, config.get("User") or "", hc.get("GroupAdd"))
    args = command_of(config)
    if hc.get("Init"):
        args = [INIT_PATH_IN_CONTAINER, "--", *args]
    caps = capabilities(hc)
    security = parse_security_opts(hc.get("SecurityOpt") or [])
    process = {
        "terminal": bool(config.get("Tty")),
        "user": {"uid": user.uid, "gid": user.gid, "additionalGids": user.additional_gids},
        "args": args,
        "env": container_env(config, hostname, user),
        "cwd": config.get("WorkingDir") or "/",
        "capabilities": _caps_object(caps, user.uid),
        "noNewPrivileges": security.no_new_privileges,
    }
    if hc.get("OomScoreAdj"):
        process["oomScoreAdj"] = int(hc["OomScoreAdj"])
    mounts = default_mounts(privileged, readonly_sys=not privileged)
    for m in mounts:
        if m["destination"] == "/dev/shm":
            m["options"] = [o for o in m["options"] if not o.startswith("size=")] + [f"size={_shm_size(hc)}"]
    points = inp.mount_points
    if points is None:  # not resolved by the containers service (tools, tests): no volumes
        points = [p for p in mountspec.plan(config, hc, check_sources=False) if p["Type"] != "volume"]
    extra = mountspec.oci_mounts(points)
    for dest, options in (hc.get("Tmpfs") or {}).items():
        extra.append(mountspec.tmpfs_mount(dest, options))
    extra.extend(inp.extra_mounts)
    user_dests = {m["destination"] for m in extra}
    mounts = [m for m in mounts if m["destination"] not in user_dests]
    added: list[dict] = []
    for path, source in inp.etc_files.items():
        if path not in user_dests:
            opts = ["rbind", "rprivate"] + (["ro"] if hc.get("ReadonlyRootfs") and path != "/etc/resolv.conf" else [])
            added.append({"destination": path, "type": "bind", "source": source, "options": opts})
    if hc.get("Init"):
        init = find_init()
        if init is None:
            raise InvalidArgument("--init: no init binary found (install Debian's tini package: /usr/bin/tini-static)")
        added.append({"destination": INIT_PATH_IN_CONTAINER, "type": "bind", "source": init,
                      "options": ["bind", "ro"]})
    mounts.extend(mountspec.by_depth(added + extra))  # as dockerd: a volume at /etc, then /etc/hosts on it
    network = hc.get("NetworkMode") or "bridge"
    namespaces = [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]
    if network != "host":
        namespaces.append({"type": "network", "path": inp.netns_path} if inp.netns_path else {"type": "network"})
    if hc.get("PidMode") == "host":
        namespaces = [n for n in namespaces if n["type"] != "pid"]
    if hc.get("IpcMode") == "host":
        namespaces = [n for n in namespaces if n["type"] != "ipc"]
    if hc.get("UTSMode") == "host":
        namespaces = [n for n in namespaces if n["type"] != "uts"]
    resources = oci_resources(hc)
    resources["devices"] = [{"allow": True, "access": "rwm"}] if privileged else [{"allow": False, "access": "rwm"}]
    linux: dict = {
        "namespaces": namespaces,
        "cgroupsPath": f"{(hc.get('CgroupParent') or inp.cgroup_parent).rstrip('/')}/{inp.container_id}",
        "resources": resources,
    }
    if not privileged:
        linux["maskedPaths"] = list(MASKED_PATHS)
        linux["readonlyPaths"] = list(READONLY_PATHS)
    else:
        linux["devices"] = host_devices()
    if hc.get("Sysctls"):
        linux["sysctl"] = dict(hc["Sysctls"])
    if not privileged and not security.seccomp_unconfined:
        from berth.daemon.seccomp_default import PROFILE

        linux["seccomp"] = oci_seccomp(security.seccomp or PROFILE, caps)
    spec = {
        "ociVersion": "1.1.0",
        "process": process,
        "root": {"path": "rootfs", "readonly": bool(hc.get("ReadonlyRootfs"))},
        "hostname": hostname if network != "host" else os.uname().nodename,
        "mounts": mounts,
        "linux": linux,
    }
    if network == "host" and not config.get("Hostname"):
        spec["hostname"] = os.uname().nodename
    if config.get("Domainname"):
        spec["domainname"] = config["Domainname"]
    return spec


def exec_process(spec: dict, exec_config: dict, rootfs: str) -> dict:
    """The OCI process of ``docker exec``: the container's, with the exec's command, env,
    user, working dir, tty; ``--privileged`` gives every capability."""
    base = spec.get("process") or {}
    process = json.loads(json.dumps(base))
    process["args"] = list(exec_config.get("Cmd") or [])
    process["terminal"] = bool(exec_config.get("Tty"))
    env = list(base.get("env") or [])
    for item in exec_config.get("Env") or []:
        key = item.split("=", 1)[0]
        env = [e for e in env if e.split("=", 1)[0] != key] + [item]
    if exec_config.get("Tty") and not any(e.startswith("TERM=") for e in env):
        env.append("TERM=xterm")
    if exec_config.get("User"):
        user = resolve_user(rootfs, exec_config["User"])
        process["user"] = {"uid": user.uid, "gid": user.gid, "additionalGids": user.additional_gids}
        env = [e for e in env if not e.startswith("HOME=")] + [f"HOME={user.home or '/'}"]
        caps = (base.get("capabilities") or {}).get("bounding") or []
        process["capabilities"] = _caps_object(caps, user.uid)
    process["env"] = env
    if exec_config.get("WorkingDir"):
        process["cwd"] = exec_config["WorkingDir"]
    if exec_config.get("Privileged"):
        caps = privileged_caps()
        process["capabilities"] = _caps_object(caps, int((process.get("user") or {}).get("uid") or 0))
    process.pop("consoleSize", None)
    return process
