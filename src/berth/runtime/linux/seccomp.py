"""Seccomp: the OCI ``linux.seccomp`` object, compiled and loaded by libseccomp.

    validate_seccomp(config)   every check, a filter built and thrown away; for
                               ``create``, before anything is forked
    preload()                  libseccomp loaded, before pivot_root hides it
    apply_seccomp(config)      the same filter, loaded into the calling process

The filter is built the way runc builds it (libcontainer/seccomp, specconv):

- ``SCMP_ACT_KILL`` is ``SCMP_ACT_KILL_THREAD``; ``SCMP_ACT_ERRNO`` and
  ``SCMP_ACT_TRACE`` return ``EPERM`` unless ``errnoRet``/``defaultErrnoRet`` says
  otherwise.
- A syscall name that libseccomp can't resolve is skipped (the profile may name
  syscalls of other kernels or architectures). Unknown actions, operators,
  architectures and flags are errors.
- A rule whose action equals the default action is skipped (libseccomp refuses it).
- Conditions of one rule are ANDed. If two conditions test the same argument, each
  condition becomes a rule of its own (ORed), as libseccomp can't AND them.
- ``flags`` absent means ``SECCOMP_FILTER_FLAG_SPEC_ALLOW`` when supported; an
  explicit list, even empty, is used as given.
- libseccomp never sets no_new_privs (``SCMP_FLTATR_CTL_NNP`` = 0): the runtime sets
  it from ``process.noNewPrivileges``. Without it, loading needs CAP_SYS_ADMIN, so
  the caller loads the filter before dropping capabilities in that case.

Not supported: ``SCMP_ACT_NOTIFY`` (needs the seccomp agent handshake over
``listenerPath``), ``SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV``, and runc's ENOSYS
patching of syscalls newer than the profile.

Errors: ``InvalidArgument`` for a bad profile, ``Unavailable`` when libseccomp is not
installed, ``FailedPrecondition`` when the kernel refuses the filter.

Import-light: ctypes and libseccomp are loaded on first use.
"""

from __future__ import annotations

import errno as _errno
import os

from berth.errors import FailedPrecondition, InvalidArgument, Unavailable

TYPE_CHECKING = False
if TYPE_CHECKING:  # without importing typing or ctypes at run time
    import ctypes
    from collections.abc import Mapping

# actions, from seccomp.h
_ACT_KILL_PROCESS = 0x80000000
_ACT_KILL_THREAD = 0x00000000
_ACT_TRAP = 0x00030000
_ACT_ERRNO = 0x00050000
_ACT_TRACE = 0x7FF00000
_ACT_LOG = 0x7FFC0000
_ACT_ALLOW = 0x7FFF0000

# name -> (action value, takes an errno/msg in its low 16 bits)
_ACTIONS: dict[str, tuple[int, bool]] = {
    "SCMP_ACT_ALLOW": (_ACT_ALLOW, False),
    "SCMP_ACT_ERRNO": (_ACT_ERRNO, True),
    "SCMP_ACT_KILL": (_ACT_KILL_THREAD, False),
    "SCMP_ACT_KILL_PROCESS": (_ACT_KILL_PROCESS, False),
    "SCMP_ACT_KILL_THREAD": (_ACT_KILL_THREAD, False),
    "SCMP_ACT_LOG": (_ACT_LOG, False),
    "SCMP_ACT_TRACE": (_ACT_TRACE, True),
    "SCMP_ACT_TRAP": (_ACT_TRAP, False),
}
_ACT_NOTIFY_NAME = "SCMP_ACT_NOTIFY"

# enum scmp_compare
_OPERATORS: dict[str, int] = {
    "SCMP_CMP_EQ": 4,
    "SCMP_CMP_GE": 5,
    "SCMP_CMP_GT": 6,
    "SCMP_CMP_LE": 3,
    "SCMP_CMP_LT": 2,
    "SCMP_CMP_MASKED_EQ": 7,
    "SCMP_CMP_NE": 1,
}

# the runtime-spec's list (libseccomp 2.5); the libseccomp name is the lowercase suffix
_ARCHES: tuple[str, ...] = (
    "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_ARM",
    "SCMP_ARCH_MIPS",
    "SCMP_ARCH_MIPS64",
    "SCMP_ARCH_MIPS64N32",
    "SCMP_ARCH_MIPSEL",
    "SCMP_ARCH_MIPSEL64",
    "SCMP_ARCH_MIPSEL64N32",
    "SCMP_ARCH_PARISC",
    "SCMP_ARCH_PARISC64",
    "SCMP_ARCH_PPC",
    "SCMP_ARCH_PPC64",
    "SCMP_ARCH_PPC64LE",
    "SCMP_ARCH_RISCV64",
    "SCMP_ARCH_S390",
    "SCMP_ARCH_S390X",
    "SCMP_ARCH_X32",
    "SCMP_ARCH_X86",
    "SCMP_ARCH_X86_64",
)

FLAG_TSYNC = "SECCOMP_FILTER_FLAG_TSYNC"
FLAG_SPEC_ALLOW = "SECCOMP_FILTER_FLAG_SPEC_ALLOW"
FLAG_LOG = "SECCOMP_FILTER_FLAG_LOG"

# enum scmp_filter_attr
_ATTR_CTL_NNP = 3
_ATTR_CTL_TSYNC = 4
_ATTR_CTL_LOG = 6
_ATTR_CTL_SSB = 7
_ATTR_CTL_OPTIMIZE = 8
_ATTR_API_SYSRAWRC = 9

# flag -> (filter attribute, lowest libseccomp API level that supports it), runc's order
_FLAGS: dict[str, tuple[int, int]] = {
    FLAG_TSYNC: (_ATTR_CTL_TSYNC, 2),
    FLAG_SPEC_ALLOW: (_ATTR_CTL_SSB, 4),
    FLAG_LOG: (_ATTR_CTL_LOG, 3),
}

SUPPORTED_ACTIONS: tuple[str, ...] = tuple(sorted(_ACTIONS))
SUPPORTED_OPERATORS: tuple[str, ...] = tuple(sorted(_OPERATORS))
SUPPORTED_ARCHES: tuple[str, ...] = _ARCHES
KNOWN_FLAGS: tuple[str, ...] = tuple(_FLAGS)

_MAX_ARGS = 6  # a Linux syscall has at most 6 arguments
_U64_MAX = (1 << 64) - 1
_RET_DATA_MAX = 0xFFFF  # SECCOMP_RET_DATA
_OPTIMIZE_OVER = 32  # runc turns on the binary tree above this many syscall entries


# --- the profile, checked and normalised (no libseccomp needed) --------------------

Cond = tuple[int, int, int, int]  # (arg index, operator, datum_a, datum_b)


class _Rule:
    __slots__ = ("name", "action", "conditions")

    def __init__(self, name: str, action: int, conditions: list[tuple[Cond, ...]]) -> None:
        self.name = name
        self.action = action
        # one libseccomp rule per tuple; [()] is one unconditional rule
        self.conditions = conditions


class _Profile:
    __slots__ = ("default_action", "arches", "flags", "rules", "entries")

    def __init__(
        self, default_action: int, arches: list[str], flags: list[str] | None, rules: list[_Rule], entries: int
    ) -> None:
        self.default_action = default_action
        self.arches = arches
        self.flags = flags  # None: the default (SPEC_ALLOW when supported)
        self.rules = rules
        self.entries = entries


def _fail(message: str) -> InvalidArgument:
    return InvalidArgument("seccomp: " + message)


def _uint(value: object, maximum: int, what: str) -> int:
    """``value`` if it is an integer from 0 to ``maximum``, else an error about ``what``."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= maximum:
        return value
    raise _fail(f"{what}, not {value!r}")


def _action(name: object, errno_ret: object, where: str) -> int:
    if name == _ACT_NOTIFY_NAME:
        raise _fail(f"{_ACT_NOTIFY_NAME} is not supported (no seccomp agent support for listenerPath)")
    if not isinstance(name, str) or name not in _ACTIONS:
        raise _fail(f"unknown action {_quote(name)}")
    value, takes_errno = _ACTIONS[name]
    if errno_ret is None:
        return value | _errno.EPERM if takes_errno else value
    if not takes_errno:
        raise _fail(f"{where} is only valid with SCMP_ACT_ERRNO or SCMP_ACT_TRACE, not {name}")
    return value | _uint(errno_ret, _RET_DATA_MAX, f"{where} must be an integer from 0 to {_RET_DATA_MAX}")


def _quote(value: object) -> str:
    return '"' + value + '"' if isinstance(value, str) else repr(value)


def _conditions(args: object, syscall: str) -> list[tuple[Cond, ...]]:
    if args is None:
        return [()]
    if not isinstance(args, list):
        raise _fail(f"args of {_quote(syscall)} must be a list")
    conds: list[Cond] = []
    for arg in args:
        if not isinstance(arg, dict):
            raise _fail(f"args of {_quote(syscall)} must be objects")
        op = arg.get("op")
        if not isinstance(op, str) or op not in _OPERATORS:
            raise _fail(f"unknown operator {_quote(op)}")
        index = _uint(arg.get("index"), _MAX_ARGS - 1, f"argument index of {_quote(syscall)} must be from 0 to 5")
        value = _uint(arg.get("value"), _U64_MAX, f"value of {_quote(syscall)} argument {index} must be a uint64")
        value_two = arg.get("valueTwo")
        value_two = 0 if value_two is None else value_two
        value_two = _uint(value_two, _U64_MAX, f"valueTwo of {_quote(syscall)} argument {index} must be a uint64")
        conds.append((index, _OPERATORS[op], value, value_two))
    if not conds:
        return [()]
    indexes = [c[0] for c in conds]
    if len(set(indexes)) != len(indexes):
        # runc: two conditions on the same argument can't be ANDed; one rule each (OR)
        return [(c,) for c in conds]
    return [tuple(conds)]


def _parse(config: object) -> _Profile | None:
    if config is None:
        return None
    if not isinstance(config, dict):
        raise _fail("linux.seccomp must be an object")
    syscalls = config.get("syscalls") or []
    if not isinstance(syscalls, list):
        raise _fail("syscalls must be a list")
    default_name = config.get("defaultAction") or ""
    if not default_name and not syscalls:
        return None  # runc: no default action and no syscalls means seccomp is off
    if not default_name:
        raise _fail("defaultAction is required")
    default_action = _action(default_name, config.get("defaultErrnoRet"), "defaultErrnoRet")

    if config.get("listenerMetadata") and not config.get("listenerPath"):
        raise _fail("listenerMetadata is set without listenerPath")

    arches: list[str] = []
    for arch in config.get("architectures") or []:
        if not isinstance(arch, str) or arch not in _ARCHES:
            raise _fail(f"unknown architecture {_quote(arch)}")
        arches.append(arch)

    flags: list[str] | None = None
    raw_flags = config.get("flags")
    if raw_flags is not None:
        if not isinstance(raw_flags, list):
            raise _fail("flags must be a list")
        flags = []
        for flag in raw_flags:
            if not isinstance(flag, str) or flag not in _FLAGS:
                raise _fail(f"unknown flag {_quote(flag)}")
            flags.append(flag)

    rules: list[_Rule] = []
    for entry in syscalls:
        if not isinstance(entry, dict):
            raise _fail("syscalls entries must be objects")
        names = entry.get("names") or []
        if not isinstance(names, list):
            raise _fail("names of a syscalls entry must be a list")
        first = names[0] if names and isinstance(names[0], str) else "?"
        action = _action(entry.get("action"), entry.get("errnoRet"), f"errnoRet of {_quote(first)}")
        for name in names:
            if not isinstance(name, str) or not name:
                raise _fail(f"invalid syscall name {_quote(name)}")
        conditions = _conditions(entry.get("args"), first)
        if action == default_action:
            continue  # runc: redundant, and libseccomp refuses it
        for name in names:
            rules.append(_Rule(name, action, conditions))
    return _Profile(default_action, arches, flags, rules, len(syscalls))


# --- libseccomp through ctypes, loaded on first use ------------------------------


class _Lib:
    __slots__ = ("c", "ArgCmp", "version", "api")

    def __init__(self, c: ctypes.CDLL, arg_cmp: type[ctypes.Structure], version: str, api: int) -> None:
        self.c = c
        self.ArgCmp = arg_cmp
        self.version = version
        self.api = api


_lib: _Lib | None = None


def _libseccomp() -> _Lib:
    global _lib
    if _lib is not None:
        return _lib
    import ctypes

    try:
        c = ctypes.CDLL("libseccomp.so.2")
    except OSError:
        raise Unavailable("seccomp: libseccomp.so.2 is not installed (Debian package libseccomp2)") from None

    class ArgCmp(ctypes.Structure):
        _fields_ = [
            ("arg", ctypes.c_uint),
            ("op", ctypes.c_int),
            ("datum_a", ctypes.c_uint64),
            ("datum_b", ctypes.c_uint64),
        ]

    class Version(ctypes.Structure):
        _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]

    ctx = ctypes.c_void_p
    c.seccomp_init.argtypes = [ctypes.c_uint32]
    c.seccomp_init.restype = ctx
    c.seccomp_release.argtypes = [ctx]
    c.seccomp_release.restype = None
    c.seccomp_load.argtypes = [ctx]
    c.seccomp_arch_add.argtypes = [ctx, ctypes.c_uint32]
    c.seccomp_arch_resolve_name.argtypes = [ctypes.c_char_p]
    c.seccomp_arch_resolve_name.restype = ctypes.c_uint32
    c.seccomp_attr_set.argtypes = [ctx, ctypes.c_int, ctypes.c_uint32]
    c.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    c.seccomp_syscall_resolve_name.restype = ctypes.c_int
    c.seccomp_rule_add_array.argtypes = [ctx, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(ArgCmp)]
    c.seccomp_api_get.argtypes = []
    c.seccomp_api_get.restype = ctypes.c_uint
    c.seccomp_version.argtypes = []
    c.seccomp_version.restype = ctypes.POINTER(Version)
    v = c.seccomp_version().contents
    _lib = _Lib(c, ArgCmp, f"{v.major}.{v.minor}.{v.micro}", int(c.seccomp_api_get()))
    return _lib


def preload() -> None:
    """Load ctypes and libseccomp now, while the host's filesystem is still visible.

    The container's init calls it before pivot_root; ``apply_seccomp`` afterwards
    needs no file. Raises ``Unavailable`` without libseccomp.
    """
    _libseccomp()


def libseccomp_version() -> str:
    """The installed libseccomp's version, e.g. ``"2.5.4"``."""
    return _libseccomp().version


def supported_flags() -> list[str]:
    """The known flags that this libseccomp and kernel can set (runc's order)."""
    api = _libseccomp().api
    return [flag for flag, (_, min_api) in _FLAGS.items() if api >= min_api]


def _build(profile: _Profile) -> int:
    """A libseccomp filter context for ``profile``; the caller releases it."""
    lib = _libseccomp()
    c = lib.c
    ctx: int | None = c.seccomp_init(profile.default_action)
    if not ctx:
        raise _fail("libseccomp refused the default action")
    try:
        _fill(lib, ctx, profile)
    except BaseException:
        c.seccomp_release(ctx)
        raise
    return ctx


def _fill(lib: _Lib, ctx: int, profile: _Profile) -> None:
    c = lib.c
    for arch in profile.arches:
        token = c.seccomp_arch_resolve_name(arch[len("SCMP_ARCH_") :].lower().encode())
        if not token:
            raise _fail(f"architecture {_quote(arch)} is not supported by libseccomp {lib.version}")
        rc = c.seccomp_arch_add(ctx, token)
        if rc < 0 and -rc != _errno.EEXIST:
            if -rc == _errno.EDOM:
                raise _fail(f"architecture {_quote(arch)} can't be mixed with the native one (byte order)")
            raise _fail(f"can't add architecture {_quote(arch)}: {os.strerror(-rc)}")

    if profile.flags is None:
        flags = [FLAG_SPEC_ALLOW] if lib.api >= _FLAGS[FLAG_SPEC_ALLOW][1] else []
    else:
        flags = profile.flags
    for flag in flags:
        attr, min_api = _FLAGS[flag]
        if lib.api < min_api or c.seccomp_attr_set(ctx, attr, 1) < 0:
            raise _fail(f"flag {_quote(flag)} is not supported by this kernel and libseccomp {lib.version}")

    # the runtime owns no_new_privs (process.noNewPrivileges), not libseccomp
    rc = c.seccomp_attr_set(ctx, _ATTR_CTL_NNP, 0)
    if rc < 0:
        raise _fail(f"can't clear the no_new_privs attribute: {os.strerror(-rc)}")
    if lib.api >= 4:
        c.seccomp_attr_set(ctx, _ATTR_API_SYSRAWRC, 1)  # real errnos from load
    if profile.entries > _OPTIMIZE_OVER:
        c.seccomp_attr_set(ctx, _ATTR_CTL_OPTIMIZE, 2)  # best effort, as runc

    for rule in profile.rules:
        nr = c.seccomp_syscall_resolve_name(rule.name.encode())
        if nr == -1:  # __NR_SCMP_ERROR: not a syscall libseccomp knows; runc skips it
            continue
        for conds in rule.conditions:
            array = (lib.ArgCmp * len(conds))(*(lib.ArgCmp(*cond) for cond in conds)) if conds else None
            rc = c.seccomp_rule_add_array(ctx, rule.action, nr, len(conds), array)
            if rc < 0:
                raise _fail(f"can't add a rule for syscall {_quote(rule.name)}: {os.strerror(-rc)}")


def validate_seccomp(config: Mapping[str, object] | None) -> None:
    """Check ``linux.seccomp`` completely, without loading anything.

    Builds the libseccomp filter and throws it away, so whatever ``apply_seccomp``
    would reject is rejected here, before ``create`` forks.
    """
    profile = _parse(config)
    if profile is None:
        return
    ctx = _build(profile)
    _libseccomp().c.seccomp_release(ctx)


def apply_seccomp(config: Mapping[str, object] | None) -> None:
    """Install the ``linux.seccomp`` filter on the calling process (and its children).

    A ``None`` config, or one with neither ``defaultAction`` nor ``syscalls``, installs
    nothing. Without no_new_privs set, loading needs CAP_SYS_ADMIN.
    """
    profile = _parse(config)
    if profile is None:
        return
    lib = _libseccomp()
    ctx = _build(profile)
    try:
        rc = lib.c.seccomp_load(ctx)
    finally:
        lib.c.seccomp_release(ctx)
    if rc < 0:
        reason = os.strerror(-rc)
        if -rc == _errno.EACCES:
            reason += " (needs no_new_privs or CAP_SYS_ADMIN)"
        raise FailedPrecondition(f"seccomp: can't load the filter: {reason}")
