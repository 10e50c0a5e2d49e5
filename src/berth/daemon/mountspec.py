"""Docker's mount options, parsed and checked as dockerd's ``volume/mounts`` parser does,
and the mount points a container gets from them.

    parse_bind("SRC:DEST[:MODE]") -> MountPoint              -v / HostConfig.Binds
    parse_mount({"Type", "Source", "Target", ...}) -> MountPoint   --mount / HostConfig.Mounts
    parse_volumes_from("CTR[:ro|rw]") -> (ref, mode)         --volumes-from / HostConfig.VolumesFrom
    inherit(points, mode) -> [MountPoint]                    what --volumes-from copies
    plan(config, host_config, inherited, check_sources) -> [MountPoint]
    validate(host_config)                                    create-time checks without the filesystem
    oci_mounts(points) -> [OCI mount]                        for config.json
    tmpfs_mount(dest, "size=1m,exec") -> OCI mount           --tmpfs
    by_depth(mounts)                                         dockerd's order: parents before children
    check_volume_name(name)                                  the local driver's rule

A MountPoint is the dict ``docker inspect`` shows under ``Mounts`` (Type, Name, Source,
Destination, Driver, Mode, RW, Propagation) plus private fields, dropped from views:

    CopyData      copy the image's content into the volume at the first start, if it is empty
    Anonymous     the volume has no name of the user's: ``rm -v`` and ``--rm`` remove it
    CreateSource  a ``-v`` bind whose host directory is made if missing (``--mount`` refuses)
    Spec          the mount as asked (VolumeOptions, BindOptions, TmpfsOptions, ReadOnly)

Precedence, as dockerd's ``registerMountPoints``: ``--volumes-from`` first, then Binds,
then Mounts (two of those at one destination, or one at a ``--tmpfs`` destination, is
"Duplicate mount point"), then the image's and the Config's Volumes wherever nothing is
mounted yet: those become anonymous volumes. Volume names and sources are filled in by
the caller (the volumes service makes the volumes). Errors are ``InvalidArgument`` with
dockerd's wording.
"""

from __future__ import annotations

import copy
import os
import posixpath
import re

from berth.errors import InvalidArgument

VOLUME_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
RW_MODES = {"rw", "ro"}
LABEL_MODES = {"z", "Z"}
PROPAGATION_MODES = ("private", "rprivate", "slave", "rslave", "shared", "rshared")
CONSISTENCY_MODES = {"consistent", "cached", "delegated"}
COPY_MODES = {"nocopy"}
DEFAULT_PROPAGATION = "rprivate"
PUBLIC_FIELDS = ("Type", "Name", "Source", "Destination", "Driver", "Mode", "RW", "Propagation")


def check_volume_name(name: str) -> None:
    if not VOLUME_NAME_RE.match(name):
        raise InvalidArgument(f'create {name}: "{name}" includes invalid characters for a local volume name, only '
                              '"[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host directory, '
                              "use absolute path")


def _valid_mode(mode: str) -> bool:
    if mode == "":
        return True
    counts = {"rw": 0, "label": 0, "prop": 0, "copy": 0, "cons": 0}
    for opt in mode.split(","):
        if opt in RW_MODES:
            counts["rw"] += 1
        elif opt in LABEL_MODES:
            counts["label"] += 1
        elif opt in PROPAGATION_MODES:
            counts["prop"] += 1
        elif opt in COPY_MODES:
            counts["copy"] += 1
        elif opt in CONSISTENCY_MODES:
            counts["cons"] += 1
        else:
            return False
    return all(n <= 1 for n in counts.values())


def _read_write(mode: str) -> bool:
    return not any(o == "ro" for o in mode.split(","))


def _propagation(mode: str) -> str | None:
    return next((o for o in mode.split(",") if o in PROPAGATION_MODES), None)


def _clean(path: str) -> str:
    return posixpath.normpath(path) if path else path


def _config_error(kind: str, message: str) -> InvalidArgument:
    return InvalidArgument(f'invalid mount config for type "{kind}": {message}')


def _point(kind: str, dest: str, **fields: object) -> dict:
    point = {"Type": kind, "Name": "", "Source": "", "Destination": _clean(dest), "Driver": "", "Mode": "",
             "RW": True, "Propagation": "", "CopyData": False, "Anonymous": False, "CreateSource": False, "Spec": {}}
    point.update(fields)
    return point


# --- -v / Binds --------------------------------------------------------------------------------


def parse_bind(raw: str) -> dict:
    """dockerd's ParseMountRaw: ``DEST``, ``SRC:DEST`` or ``SRC:DEST:MODE``; a SRC that is not
    an absolute path names a volume."""
    arr = raw.split(":", 3)
    if arr[0] == "":
        raise InvalidArgument(f"invalid volume specification: '{raw}'")
    mode = ""
    if len(arr) == 1:
        src, dest = "", arr[0]
    elif len(arr) == 2:
        if _valid_mode(arr[1]):  # /foo:rw is not a volume: volumes cannot include a mode alone
            raise InvalidArgument(f"invalid volume specification: '{raw}'")
        src, dest = arr
    elif len(arr) == 3:
        src, dest, mode = arr
    else:
        raise InvalidArgument(f"invalid volume specification: '{raw}'")
    if not _valid_mode(mode):
        raise InvalidArgument(f"invalid mode: {mode}")
    kind = "bind" if src.startswith("/") else "volume"
    spec: dict = {"Type": kind, "Source": src, "Target": dest, "ReadOnly": not _read_write(mode)}
    if "nocopy" in mode.split(","):
        spec["VolumeOptions"] = {"NoCopy": True}
    prop = _propagation(mode)
    if prop:
        spec["BindOptions"] = {"Propagation": prop}
    try:
        point = _from_spec(spec, check_source=False)
    except InvalidArgument as exc:
        raise InvalidArgument(f"invalid volume specification: '{raw}': {exc}") from None
    point["Mode"] = mode
    if point["Name"]:
        check_volume_name(point["Name"])  # dockerd's volume create says it, unprefixed
    if kind == "bind":
        point["CreateSource"] = True
    elif not mode:
        point["Mode"] = "z"  # dockerd's setBindModeIfNull for volumes of the local driver
    return point


# --- --mount / Mounts ----------------------------------------------------------------------------


def parse_mount(cfg: dict, check_source: bool = True) -> dict:
    """dockerd's ParseMountSpec: ``{"Type", "Source", "Target", "ReadOnly", "BindOptions",
    "VolumeOptions", "TmpfsOptions"}``."""
    if not isinstance(cfg, dict):
        raise InvalidArgument("invalid mount config: expected an object")
    spec = {k: v for k, v in cfg.items() if v is not None}
    spec.setdefault("Type", "volume")
    point = _from_spec(spec, check_source=check_source)
    if point["Name"]:
        check_volume_name(point["Name"])
    if point["Type"] == "volume" and not point["Mode"]:
        point["Mode"] = "z"
    return point


def _from_spec(spec: dict, check_source: bool) -> dict:
    kind = spec.get("Type") or ""
    target = str(spec.get("Target") or "")
    source = str(spec.get("Source") or "")
    if not target:
        raise _config_error(kind, "field Target must not be empty")
    if _clean(target) == "/":
        raise _config_error(kind, "invalid specification: destination can't be '/'")
    if not target.startswith("/"):
        raise _config_error(kind, f"invalid mount path: '{target}' mount path must be absolute")
    readonly = bool(spec.get("ReadOnly"))
    bind_opts = spec.get("BindOptions")
    volume_opts = spec.get("VolumeOptions")
    tmpfs_opts = spec.get("TmpfsOptions")
    if kind == "bind":
        if not source:
            raise _config_error(kind, "field Source must not be empty")
        prop = (bind_opts or {}).get("Propagation") or ""
        if prop and prop not in PROPAGATION_MODES:
            raise _config_error(kind, f"invalid propagation mode: {prop}")
        if volume_opts:
            raise _config_error(kind, "field VolumeOptions must not be specified")
        if tmpfs_opts:
            raise _config_error(kind, "field TmpfsOptions must not be specified")
        if not source.startswith("/"):
            raise _config_error(kind, f"invalid mount path: '{source}' mount path must be absolute")
        create = bool((bind_opts or {}).get("CreateMountpoint"))
        if check_source and not create and not os.path.exists(source):
            raise _config_error(kind, f"bind source path does not exist: {source}")
        return _point("bind", target, Source=_clean(source), RW=not readonly,
                      Propagation=prop or DEFAULT_PROPAGATION, Spec=_spec_copy(spec), CreateSource=create)
    if kind == "volume":
        if bind_opts:
            raise _config_error(kind, "field BindOptions must not be specified")
        if tmpfs_opts:
            raise _config_error(kind, "field TmpfsOptions must not be specified")
        if not source and readonly:
            raise _config_error(kind, "must not set ReadOnly mode when using anonymous volumes")
        driver = ((volume_opts or {}).get("DriverConfig") or {}).get("Name") or "local"
        if driver != "local":
            raise InvalidArgument(f'error looking up volume plugin {driver}: plugin "{driver}" not found')
        return _point("volume", target, Name=source, Driver="local", RW=not readonly, Anonymous=not source,
                      CopyData=not (volume_opts or {}).get("NoCopy"), Spec=_spec_copy(spec))
    if kind == "tmpfs":
        if bind_opts:
            raise _config_error(kind, "field BindOptions must not be specified")
        if volume_opts:
            raise _config_error(kind, "field VolumeOptions must not be specified")
        if source:
            raise _config_error(kind, "field Source must not be specified")
        tmpfs_options(spec)  # checks the values
        return _point("tmpfs", target, RW=not readonly, Spec=_spec_copy(spec))
    raise _config_error(kind, "mount type unknown")


def _spec_copy(spec: dict) -> dict:
    return copy.deepcopy({k: v for k, v in spec.items() if k in ("Type", "Source", "Target", "ReadOnly",
                                                                 "BindOptions", "VolumeOptions", "TmpfsOptions")})


def tmpfs_options(spec: dict) -> str:
    """dockerd's ConvertTmpfsOptions: ``ro``, ``mode=1777`` (octal), ``size=64m``."""
    opts = spec.get("TmpfsOptions") or {}
    out = []
    if spec.get("ReadOnly"):
        out.append("ro")
    try:
        mode = int(opts.get("Mode") or 0)
        size = int(opts.get("SizeBytes") or 0)
    except (TypeError, ValueError):
        raise _config_error("tmpfs", "invalid TmpfsOptions") from None
    if mode < 0 or size < 0:
        raise _config_error("tmpfs", "invalid TmpfsOptions")
    if mode:
        out.append(f"mode={mode:o}")
    if size:
        suffix = ""
        for letter, divisor in (("g", 1 << 30), ("m", 1 << 20), ("k", 1 << 10)):
            if size % divisor == 0:
                size, suffix = size // divisor, letter
                break
        out.append(f"size={size}{suffix}")
    return ",".join(out)


# --- --volumes-from ------------------------------------------------------------------------------


def parse_volumes_from(spec: str) -> tuple[str, str]:
    if not spec:
        raise InvalidArgument("volumes-from specification cannot be an empty string")
    ref, _, mode = spec.partition(":")
    if not mode:
        return ref, "rw"
    if not _valid_mode(mode) or _propagation(mode) or "nocopy" in mode.split(","):
        raise InvalidArgument(f"invalid mode: {mode}")
    return ref, mode


def inherit(points: list[dict], mode: str) -> list[dict]:
    """The mount points of another container, as ``--volumes-from CTR:MODE`` gives them:
    read-only if either says so, never copied into (an anonymous volume stays anonymous:
    ``rm -v`` takes it once no container uses it, as dockerd's)."""
    out = []
    for p in points:
        cp = copy.deepcopy(p)
        cp.update(Mode="", RW=bool(p.get("RW")) and _read_write(mode), CopyData=False, CreateSource=False)
        out.append(cp)
    return out


# --- the whole plan ------------------------------------------------------------------------------


def _duplicate(dest: str) -> InvalidArgument:
    return InvalidArgument(f"Duplicate mount point: {dest}")


def validate(host_config: dict) -> None:
    """The checks that need no filesystem and no other container (create, update)."""
    plan({}, host_config, (), check_sources=False)
    for spec in host_config.get("VolumesFrom") or []:
        parse_volumes_from(spec)


def plan(config: dict, host_config: dict, inherited: list[dict] | tuple = (), check_sources: bool = True) -> list[dict]:
    """Every mount point of a new container, in dockerd's precedence (module docstring)."""
    driver = host_config.get("VolumeDriver") or "local"
    if driver != "local":  # --volume-driver: only the local driver exists
        raise InvalidArgument(f'error looking up volume plugin {driver}: plugin "{driver}" not found')
    points: dict[str, dict] = {}
    for p in inherited:
        points[p["Destination"]] = p
    tmpfs = {_clean(d) for d in (host_config.get("Tmpfs") or {})}
    for dest in tmpfs:
        if not dest.startswith("/"):
            raise InvalidArgument(f"invalid mount config for type \"tmpfs\": invalid mount path: '{dest}' "
                                  "mount path must be absolute")
    taken: set[str] = set()
    for raw in host_config.get("Binds") or []:
        point = parse_bind(str(raw))
        if point["Destination"] in taken or point["Destination"] in tmpfs:
            raise _duplicate(point["Destination"])
        taken.add(point["Destination"])
        points[point["Destination"]] = point
    for cfg in host_config.get("Mounts") or []:
        point = parse_mount(cfg, check_source=check_sources)
        if point["Destination"] in taken:
            raise _duplicate(point["Destination"])
        taken.add(point["Destination"])
        points[point["Destination"]] = point
    for raw in (config.get("Volumes") or {}):
        dest = _clean(str(raw))
        if not dest.startswith("/") or dest == "/":
            raise InvalidArgument(f"invalid volume specification: '{raw}'")
        if dest in points or dest in tmpfs:
            continue
        points[dest] = _point("volume", dest, Driver="local", Anonymous=True, CopyData=True)
    return list(points.values())


def view(point: dict) -> dict:
    """The mount as ``docker inspect`` shows it."""
    out = {k: point.get(k, "") for k in PUBLIC_FIELDS}
    out["RW"] = bool(point.get("RW"))
    if out["Type"] != "volume":
        out.pop("Name")
        out.pop("Driver")
    return out


# --- to OCI --------------------------------------------------------------------------------------


def oci_mounts(points: list[dict]) -> list[dict]:
    """config.json mounts of resolved mount points (volumes have their Source)."""
    out = []
    for p in points:
        dest = p["Destination"]
        if p["Type"] == "tmpfs":
            out.append(tmpfs_mount(dest, tmpfs_options(p.get("Spec") or {})))
            continue
        if not p.get("Source"):
            raise InvalidArgument(f"mount point {dest} has no source")
        nonrecursive = bool(((p.get("Spec") or {}).get("BindOptions") or {}).get("NonRecursive"))
        options = ["bind" if nonrecursive else "rbind", "rw" if p.get("RW") else "ro",
                   p.get("Propagation") or DEFAULT_PROPAGATION]
        out.append({"destination": dest, "type": "bind", "source": p["Source"], "options": options})
    return out


def tmpfs_mount(dest: str, options: str) -> dict:
    """A tmpfs (``--tmpfs /run:size=1m,exec``, ``--mount type=tmpfs``): noexec, nosuid, nodev
    unless the options say exec, suid, dev."""
    opts = ["noexec", "nosuid", "nodev"]
    for opt in (o.strip() for o in (options or "").split(",")):
        if not opt:
            continue
        if opt in ("exec", "suid", "dev"):
            opts = [o for o in opts if o != "no" + opt]
        elif opt not in opts:
            opts.append(opt)
    return {"destination": dest, "type": "tmpfs", "source": "tmpfs", "options": opts}


def by_depth(mounts: list[dict]) -> list[dict]:
    """dockerd's sortMounts: fewer path components first (stable), so /a is mounted before /a/b."""
    return sorted(mounts, key=lambda m: posixpath.normpath(m["destination"]).count("/"))
