"""Seccomp filters and capabilities on the real kernel, each in a forked child.

The child applies the profile or the capabilities to itself, probes, and reports
over a pipe (JSON), or execs a real program whose output comes back over the pipe.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import signal
import socket
from collections.abc import Callable

import pytest

from berth._sys import libc
from berth.runtime.linux import capabilities, seccomp
from berth.runtime.linux.capabilities import CAP_NUMBERS

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(ctypes.util.find_library("seccomp") is None, reason="libseccomp2 is not installed"),
]

NOBODY = 65534
CHILD_TIMEOUT = 20  # seconds; a child stuck behind its own filter dies of SIGALRM


def bit(*names: str) -> int:
    mask = 0
    for name in names:
        mask |= 1 << CAP_NUMBERS[name]
    return mask


def status_fields(text: str | None = None) -> dict[str, str]:
    if text is None:
        with open("/proc/self/status") as f:
            text = f.read()
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def cap_sets(text: str | None = None) -> dict[str, int]:
    fields = status_fields(text)
    return {key: int(fields[key], 16) for key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def in_child(fn: Callable[[], object]) -> tuple[object, int]:
    """Run ``fn`` in a forked child: (what it returned, its wait status).

    An exception in the child comes back as ``{"error": "Type: message"}``.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(r)
            signal.alarm(CHILD_TIMEOUT)
            try:
                out: dict = {"ok": fn()}
            except BaseException as e:  # noqa: BLE001 - reported to the parent
                out = {"error": f"{type(e).__name__}: {e}"}
            os.write(w, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(w)
    data = _read_all(r)
    _, status = os.waitpid(pid, 0)
    if not data:
        return None, status
    result = json.loads(data)
    if "error" in result:
        return result, status
    return result["ok"], status


def exec_in_child(setup: Callable[[], None], argv: list[str]) -> tuple[str, int]:
    """Fork, run ``setup`` in the child, exec ``argv``: (its stdout, its wait status)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.dup2(w, 1)
            os.close(w)
            signal.alarm(CHILD_TIMEOUT)
            setup()
            os.execv(argv[0], argv)
        except BaseException as e:  # noqa: BLE001
            os.write(2, f"child: {type(e).__name__}: {e}\n".encode())
        finally:
            os._exit(127)
    os.close(w)
    out = _read_all(r).decode()
    _, status = os.waitpid(pid, 0)
    return out, status


def exited_ok(status: int) -> bool:
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def errno_of(fn: Callable[[], object]) -> int:
    try:
        fn()
    except OSError as e:
        return e.errno or 0
    return 0


# --- seccomp ----------------------------------------------------------------------------


def test_errno_eperm_for_mkdir_while_other_syscalls_work(tmp_path: os.PathLike) -> None:
    target = os.path.join(tmp_path, "blocked")
    data = os.path.join(tmp_path, "data")
    config = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}],
    }
    seccomp.validate_seccomp(config)

    def child() -> dict:
        seccomp.apply_seccomp(config)
        mkdir_errno = errno_of(lambda: os.mkdir(target))
        with open(data, "w") as f:
            f.write("still works")
        with open(data) as f:
            content = f.read()
        fields = status_fields()
        return {
            "mkdir": mkdir_errno,
            "content": content,
            "listdir": sorted(os.listdir(tmp_path)),
            "seccomp": fields["Seccomp"],
            "nnp": fields["NoNewPrivs"],
        }

    result, status = in_child(child)
    assert exited_ok(status)
    assert result == {
        "mkdir": errno.EPERM,
        "content": "still works",
        "listdir": ["data"],
        "seccomp": "2",  # SECCOMP_MODE_FILTER
        "nnp": "0",  # libseccomp left no_new_privs to the runtime (SCMP_FLTATR_CTL_NNP = 0)
    }
    assert not os.path.exists(target)


def test_custom_errno_ret(tmp_path: os.PathLike) -> None:
    target = os.path.join(tmp_path, "blocked")
    config = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ECHRNG},
            {"names": ["rmdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 0},  # "succeeds", does nothing
        ],
    }
    keep = os.path.join(tmp_path, "keep")
    os.mkdir(keep)

    def child() -> dict:
        seccomp.apply_seccomp(config)
        return {"mkdir": errno_of(lambda: os.mkdir(target)), "rmdir": errno_of(lambda: os.rmdir(keep))}

    result, status = in_child(child)
    assert exited_ok(status)
    assert result == {"mkdir": errno.ECHRNG, "rmdir": 0}
    assert not os.path.exists(target)
    assert os.path.isdir(keep)


def test_filter_survives_exec(tmp_path: os.PathLike) -> None:
    target = os.path.join(tmp_path, "blocked")
    config = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EROFS}],
    }
    out, status = exec_in_child(lambda: seccomp.apply_seccomp(config), ["/bin/sh", "-c", f"mkdir {target} 2>&1"])
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 1
    assert "Read-only file system" in out
    assert not os.path.exists(target)


def test_args_condition_blocks_only_the_matching_call() -> None:
    # personality(0xffffffff) only queries the persona; block exactly that call
    config = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {
                "names": ["personality"],
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": errno.EACCES,
                "args": [{"index": 0, "value": 0xFFFFFFFF, "op": "SCMP_CMP_EQ"}],
            }
        ],
    }

    def child() -> dict:
        c = ctypes.CDLL(None, use_errno=True)
        c.personality.argtypes = [ctypes.c_ulong]
        c.personality.restype = ctypes.c_int
        seccomp.apply_seccomp(config)
        query = c.personality(0xFFFFFFFF)
        query_errno = ctypes.get_errno()
        ctypes.set_errno(0)
        set_linux = c.personality(0)  # PER_LINUX: allowed, returns the old persona
        return {"query": [query, query_errno], "set": [set_linux, ctypes.get_errno()]}

    result, status = in_child(child)
    assert exited_ok(status)
    assert result == {"query": [-1, errno.EACCES], "set": [0, 0]}


def test_socket_af_inet_only() -> None:
    config = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {
                "names": ["socket"],
                "action": "SCMP_ACT_ERRNO",
                "args": [{"index": 0, "value": socket.AF_INET, "op": "SCMP_CMP_EQ"}],
            }
        ],
    }

    def child() -> dict:
        seccomp.apply_seccomp(config)
        return {
            "inet": errno_of(lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()),
            "unix": errno_of(lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).close()),
        }

    result, status = in_child(child)
    assert exited_ok(status)
    assert result == {"inet": errno.EPERM, "unix": 0}


def test_same_argument_twice_is_or() -> None:
    # runc: two conditions on argument 0 become two rules, so either family is blocked
    config = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {
                "names": ["socket"],
                "action": "SCMP_ACT_ERRNO",
                "args": [
                    {"index": 0, "value": socket.AF_INET, "op": "SCMP_CMP_EQ"},
                    {"index": 0, "value": socket.AF_INET6, "op": "SCMP_CMP_EQ"},
                ],
            }
        ],
    }

    def child() -> dict:
        seccomp.apply_seccomp(config)
        return {
            "inet": errno_of(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).close()),
            "inet6": errno_of(lambda: socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).close()),
            "unix": errno_of(lambda: socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).close()),
        }

    result, status = in_child(child)
    assert exited_ok(status)
    assert result == {"inet": errno.EPERM, "inet6": errno.EPERM, "unix": 0}


def test_different_arguments_are_and_with_masked_eq() -> None:
    # UDP over IPv4 only: family == AF_INET AND (type & 0xf) == SOCK_DGRAM
    # (Python passes SOCK_CLOEXEC in the type, hence the mask)
    config = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {
                "names": ["socket"],
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": errno.EPROTONOSUPPORT,
                "args": [
                    {"index": 0, "value": socket.AF_INET, "op": "SCMP_CMP_EQ"},
                    {"index": 1, "value": 0xF, "valueTwo": socket.SOCK_DGRAM, "op": "SCMP_CMP_MASKED_EQ"},
                ],
            }
        ],
    }

    def child() -> dict:
        seccomp.apply_seccomp(config)
        return {
            "udp": errno_of(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).close()),
            "tcp": errno_of(lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()),
            "unix_dgram": errno_of(lambda: socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).close()),
        }

    result, status = in_child(child)
    assert exited_ok(status)
    assert result == {"udp": errno.EPROTONOSUPPORT, "tcp": 0, "unix_dgram": 0}


ALLOW_LIST = [
    "brk", "mmap", "munmap", "mremap", "madvise", "mprotect", "futex", "rt_sigaction", "rt_sigprocmask",
    "rt_sigreturn", "sigreturn", "alarm", "getpid", "gettid", "write", "close", "exit", "exit_group",
    "fstat", "newfstatat", "lseek", "clock_gettime", "set_robust_list",
]  # fmt: skip


@pytest.mark.parametrize("default_errno", [None, errno.ENOSYS])
def test_default_errno_with_allow_list(tmp_path: os.PathLike, default_errno: int | None) -> None:
    target = os.path.join(tmp_path, "blocked")
    config: dict = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
        if os.uname().machine == "x86_64"
        else [],
        "syscalls": [{"names": ALLOW_LIST + ["no_such_syscall"], "action": "SCMP_ACT_ALLOW"}],
    }
    if default_errno is not None:
        config["defaultErrnoRet"] = default_errno
    seccomp.validate_seccomp(config)
    pid_before = os.getpid()

    def child() -> dict:
        me = os.getpid()
        seccomp.apply_seccomp(config)
        return {
            "getpid": os.getpid() == me != pid_before,
            "mkdir": errno_of(lambda: os.mkdir(target)),
            "uname": errno_of(os.uname),
            "open": errno_of(lambda: open("/proc/self/status").close()),
        }

    expected = default_errno or errno.EPERM
    result, status = in_child(child)
    assert exited_ok(status), result
    assert result == {"getpid": True, "mkdir": expected, "uname": expected, "open": expected}
    assert not os.path.exists(target)


def test_kill_process(tmp_path: os.PathLike) -> None:
    target = os.path.join(tmp_path, "blocked")
    config = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_KILL_PROCESS"}],
    }

    def child() -> str:
        seccomp.apply_seccomp(config)
        os.mkdir(target)
        return "not killed"

    result, status = in_child(child)
    assert result is None
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS
    assert not os.path.exists(target)


@pytest.mark.parametrize("flags", [None, [], ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_TSYNC"], "supported"])
def test_flags_load(flags: object) -> None:
    config: dict = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}],
    }
    if flags == "supported":
        flags = seccomp.supported_flags()
    if flags is not None:
        config["flags"] = flags

    def child() -> list[str]:
        seccomp.apply_seccomp(config)
        fields = status_fields()
        return [fields["Seccomp"], fields["Seccomp_filters"]]

    result, status = in_child(child)
    assert exited_ok(status)
    assert result == ["2", "1"]


def test_load_needs_nnp_or_cap_sys_admin() -> None:
    config = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]}

    def child() -> dict:
        eff, prm, inh = libc.capget()
        libc.capset(eff & ~bit("CAP_SYS_ADMIN"), prm, inh)
        try:
            seccomp.apply_seccomp(config)
            without = "loaded"
        except Exception as e:  # noqa: BLE001
            without = f"{type(e).__name__}: {e}"
        libc.prctl(libc.PR_SET_NO_NEW_PRIVS, 1)
        seccomp.apply_seccomp(config)
        return {"without": without, "seccomp": status_fields()["Seccomp"]}

    result, status = in_child(child)
    assert exited_ok(status)
    assert result == {
        "without": "FailedPrecondition: seccomp: can't load the filter: Permission denied "
        "(needs no_new_privs or CAP_SYS_ADMIN)",
        "seccomp": "2",
    }


def test_preload_then_apply_without_the_host_filesystem(tmp_path: os.PathLike) -> None:
    # the container's init preloads, pivot_roots into a rootfs without libseccomp, then applies
    empty_root = os.path.join(tmp_path, "root")
    os.mkdir(empty_root)
    config = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSPC}],
    }
    caps = {"bounding": ["CAP_CHOWN"], "permitted": ["CAP_CHOWN"], "effective": ["CAP_CHOWN"]}

    def child() -> dict:
        seccomp.preload()
        capabilities.last_cap()
        os.chroot(empty_root)
        os.chdir("/")
        seccomp.apply_seccomp(config)
        capabilities.drop_bounding_set(caps["bounding"])
        capabilities.apply_caps(caps)
        return {"mkdir": errno_of(lambda: os.mkdir("/x")), "listdir": os.listdir("/")}

    result, status = in_child(child)
    assert exited_ok(status), result
    assert result == {"mkdir": errno.ENOSPC, "listdir": []}


# --- capabilities ------------------------------------------------------------------------


def _switch_user(uid: int, gid: int) -> None:
    """What the runtime does around apply_caps: keepcaps, the switch, keepcaps off."""
    libc.prctl(libc.PR_SET_KEEPCAPS, 1)
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    libc.prctl(libc.PR_SET_KEEPCAPS, 0)


def test_non_root_user_keeps_exactly_the_configured_caps(tmp_path: os.PathLike) -> None:
    path = os.path.join(tmp_path, "owned-by-root")
    with open(path, "w"):
        pass
    caps = {name: ["CAP_CHOWN"] for name in capabilities.SETS}
    warnings: list[str] = []
    capabilities.validate_caps(caps, warn=warnings.append)
    assert warnings == []

    def child() -> dict:
        fd = os.open(path, os.O_RDONLY)  # opened as root: the directory is 0700
        capabilities.drop_bounding_set(caps["bounding"])
        _switch_user(NOBODY, NOBODY)
        capabilities.apply_caps(caps, warn=warnings.append)
        os.fchown(fd, NOBODY, NOBODY)  # CAP_CHOWN at work
        return {
            "caps": cap_sets(),
            "uid": os.getresuid(),
            "kill_init": errno_of(lambda: os.kill(1, 0)),  # no CAP_KILL
            "warnings": warnings,
        }

    result, status = in_child(child)
    assert exited_ok(status), result
    assert isinstance(result, dict)
    one = bit("CAP_CHOWN")
    assert result["caps"] == {"CapInh": one, "CapPrm": one, "CapEff": one, "CapBnd": one, "CapAmb": one}
    assert result["uid"] == [NOBODY, NOBODY, NOBODY]
    assert result["kill_init"] == errno.EPERM
    assert result["warnings"] == []
    assert os.stat(path).st_uid == NOBODY


def test_ambient_caps_survive_exec_for_a_non_root_user() -> None:
    with_ambient = {name: ["CAP_CHOWN", "CAP_NET_BIND_SERVICE"] for name in capabilities.SETS}
    without_ambient = dict(with_ambient, ambient=[])

    def setup(caps: dict) -> Callable[[], None]:
        def run() -> None:
            capabilities.drop_bounding_set(caps["bounding"])
            _switch_user(NOBODY, NOBODY)
            capabilities.apply_caps(caps)

        return run

    two = bit("CAP_CHOWN", "CAP_NET_BIND_SERVICE")
    out, status = exec_in_child(setup(with_ambient), ["/bin/cat", "/proc/self/status"])
    assert exited_ok(status)
    assert cap_sets(out) == {"CapInh": two, "CapPrm": two, "CapEff": two, "CapBnd": two, "CapAmb": two}
    out, status = exec_in_child(setup(without_ambient), ["/bin/cat", "/proc/self/status"])
    assert exited_ok(status)
    assert cap_sets(out) == {"CapInh": two, "CapPrm": 0, "CapEff": 0, "CapBnd": two, "CapAmb": 0}


def test_root_with_a_subset() -> None:
    caps = {
        "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_FOO", "KILL"],  # unknown names ignored
        "permitted": ["CAP_CHOWN", "CAP_KILL"],
        "effective": ["CAP_KILL"],
        "inheritable": ["CAP_CHOWN"],
    }

    def child() -> dict:
        capabilities.drop_bounding_set(caps["bounding"])
        capabilities.apply_caps(caps)
        return cap_sets()

    result, status = in_child(child)
    assert exited_ok(status), result
    assert result == {
        "CapInh": bit("CAP_CHOWN"),
        "CapPrm": bit("CAP_CHOWN", "CAP_KILL"),
        "CapEff": bit("CAP_KILL"),
        "CapBnd": bit("CAP_CHOWN", "CAP_KILL"),
        "CapAmb": 0,  # a missing set is the empty set
    }


def test_missing_sets_are_empty_and_none_changes_nothing() -> None:
    def child() -> dict:
        before = cap_sets()
        capabilities.apply_caps(None)
        untouched = cap_sets() == before
        capabilities.drop_bounding_set(None)  # None: keep nothing
        capabilities.apply_caps({})
        return {"untouched": untouched, "after": cap_sets()}

    result, status = in_child(child)
    assert exited_ok(status), result
    assert result == {
        "untouched": True,
        "after": {"CapInh": 0, "CapPrm": 0, "CapEff": 0, "CapBnd": 0, "CapAmb": 0},
    }


def test_refused_ambient_raise_is_a_warning() -> None:
    caps = {
        "bounding": ["CAP_CHOWN"],
        "permitted": ["CAP_CHOWN"],
        "effective": ["CAP_CHOWN"],
        "ambient": ["CAP_CHOWN"],  # not inheritable: the kernel refuses it
    }

    def child() -> dict:
        warnings: list[str] = []
        capabilities.drop_bounding_set(caps["bounding"])
        capabilities.apply_caps(caps, warn=warnings.append)
        return {"amb": cap_sets()["CapAmb"], "eff": cap_sets()["CapEff"], "warnings": warnings}

    result, status = in_child(child)
    assert exited_ok(status), result
    assert result == {
        "amb": 0,
        "eff": bit("CAP_CHOWN"),
        "warnings": ["can't raise ambient capability CAP_CHOWN: Operation not permitted"],
    }


def test_inheritable_outside_bounding_is_refused() -> None:
    caps = {"bounding": ["CAP_CHOWN"], "permitted": ["CAP_CHOWN"], "inheritable": ["CAP_KILL"]}

    def child() -> str:
        capabilities.drop_bounding_set(caps["bounding"])
        capabilities.apply_caps(caps)
        return "applied"

    result, status = in_child(child)
    assert exited_ok(status)
    assert result == {"error": "FailedPrecondition: capabilities: can't apply capabilities: Operation not permitted"}


def test_bounding_set_is_left_alone_without_cap_setpcap() -> None:
    def child() -> dict:
        eff, prm, inh = libc.capget()
        libc.capset(eff & ~bit("CAP_SETPCAP"), prm, inh)
        before = cap_sets()["CapBnd"]
        capabilities.drop_bounding_set(["CAP_CHOWN"])  # runc: a no-op without CAP_SETPCAP
        return {"same": cap_sets()["CapBnd"] == before, "nonempty": before != 0}

    result, status = in_child(child)
    assert exited_ok(status), result
    assert result == {"same": True, "nonempty": True}
