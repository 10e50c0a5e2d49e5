"""Unit tests of berth.runtime.linux.seccomp: validation and rule planning, no root."""

from __future__ import annotations

import ctypes.util
import errno
import os
import subprocess
import sys

import pytest

from berth.errors import InvalidArgument
from berth.runtime.linux import seccomp

needs_libseccomp = pytest.mark.skipif(
    ctypes.util.find_library("seccomp") is None, reason="libseccomp2 is not installed"
)

EPERM = errno.EPERM
ALLOW = 0x7FFF0000
ERRNO = 0x00050000
TRACE = 0x7FF00000
EQ, NE, MASKED_EQ = 4, 1, 7


def profile(**kw: object) -> dict:
    base: dict = {"defaultAction": "SCMP_ACT_ALLOW"}
    base.update(kw)
    return base


def rules(config: dict) -> list[tuple[str, int, list[tuple]]]:
    parsed = seccomp._parse(config)
    assert parsed is not None
    return [(r.name, r.action, r.conditions) for r in parsed.rules]


# --- actions --------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, value",
    [
        ("SCMP_ACT_ALLOW", ALLOW),
        ("SCMP_ACT_ERRNO", ERRNO | EPERM),
        ("SCMP_ACT_KILL", 0),
        ("SCMP_ACT_KILL_THREAD", 0),
        ("SCMP_ACT_KILL_PROCESS", 0x80000000),
        ("SCMP_ACT_TRAP", 0x00030000),
        ("SCMP_ACT_TRACE", TRACE | EPERM),
        ("SCMP_ACT_LOG", 0x7FFC0000),
    ],
)
def test_action_values_match_libseccomp_and_runc(name: str, value: int) -> None:
    parsed = seccomp._parse({"defaultAction": name})
    assert parsed is not None and parsed.default_action == value


def test_default_errno_ret() -> None:
    parsed = seccomp._parse({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": errno.ENOSYS})
    assert parsed is not None and parsed.default_action == ERRNO | errno.ENOSYS


def test_rule_errno_ret_and_default_eperm() -> None:
    config = profile(
        syscalls=[
            {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"},
            {"names": ["rmdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EXDEV},
            {"names": ["ptrace"], "action": "SCMP_ACT_TRACE", "errnoRet": 7},
            {"names": ["chdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 0},
        ]
    )
    assert rules(config) == [
        ("mkdir", ERRNO | EPERM, [()]),
        ("rmdir", ERRNO | errno.EXDEV, [()]),
        ("ptrace", TRACE | 7, [()]),
        ("chdir", ERRNO, [()]),
    ]


def test_unknown_action_is_an_error() -> None:
    with pytest.raises(InvalidArgument) as e:
        seccomp._parse({"defaultAction": "SCMP_ACT_FOO"})
    assert str(e.value) == 'seccomp: unknown action "SCMP_ACT_FOO"'
    with pytest.raises(InvalidArgument, match='unknown action "SCMP_ACT_NOPE"'):
        seccomp._parse(profile(syscalls=[{"names": ["mkdir"], "action": "SCMP_ACT_NOPE"}]))


def test_notify_is_rejected_clearly() -> None:
    with pytest.raises(InvalidArgument, match="SCMP_ACT_NOTIFY is not supported"):
        seccomp._parse(profile(syscalls=[{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]))
    with pytest.raises(InvalidArgument, match="SCMP_ACT_NOTIFY is not supported"):
        seccomp._parse({"defaultAction": "SCMP_ACT_NOTIFY"})
    assert "SCMP_ACT_NOTIFY" not in seccomp.SUPPORTED_ACTIONS


def test_errno_ret_with_an_action_without_errno_is_an_error() -> None:
    # runtime-spec: "When the action doesn't support an errno, the runtime MUST ... fail"
    with pytest.raises(InvalidArgument, match="defaultErrnoRet is only valid with"):
        seccomp._parse({"defaultAction": "SCMP_ACT_ALLOW", "defaultErrnoRet": 1})
    with pytest.raises(InvalidArgument, match='errnoRet of "mkdir" is only valid with'):
        seccomp._parse(profile(syscalls=[{"names": ["mkdir"], "action": "SCMP_ACT_KILL", "errnoRet": 1}]))


@pytest.mark.parametrize("bad", [-1, 0x10000, "1", 1.5, True])
def test_errno_ret_range(bad: object) -> None:
    with pytest.raises(InvalidArgument, match="errnoRet"):
        seccomp._parse(profile(syscalls=[{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": bad}]))


# --- rules ---------------------------------------------------------------------


def test_rule_equal_to_default_action_is_skipped() -> None:
    config = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [
            {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"},  # ERRNO(EPERM) == default: skipped
            {"names": ["rmdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSYS},  # differs: kept
            {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
        ],
    }
    assert [r[0] for r in rules(config)] == ["rmdir", "read", "write"]
    config = profile(syscalls=[{"names": ["mkdir"], "action": "SCMP_ACT_ALLOW"}])
    assert rules(config) == []
    # KILL and KILL_THREAD are the same action
    config = {"defaultAction": "SCMP_ACT_KILL", "syscalls": [{"names": ["x"], "action": "SCMP_ACT_KILL_THREAD"}]}
    assert rules(config) == []


def test_conditions_on_different_arguments_are_anded_in_one_rule() -> None:
    config = profile(
        syscalls=[
            {
                "names": ["socket"],
                "action": "SCMP_ACT_ERRNO",
                "args": [
                    {"index": 0, "value": 2, "op": "SCMP_CMP_EQ"},
                    {"index": 1, "value": 0xF, "valueTwo": 2, "op": "SCMP_CMP_MASKED_EQ"},
                ],
            }
        ]
    )
    assert rules(config) == [("socket", ERRNO | EPERM, [((0, EQ, 2, 0), (1, MASKED_EQ, 0xF, 2))])]


def test_conditions_on_the_same_argument_become_separate_rules() -> None:
    # runc: "If two or more arguments have the same condition, revert to old behavior,
    # adding each condition as a separate rule" -- OR semantics
    config = profile(
        syscalls=[
            {
                "names": ["socket", "socketpair"],
                "action": "SCMP_ACT_ERRNO",
                "args": [
                    {"index": 0, "value": 2, "op": "SCMP_CMP_EQ"},
                    {"index": 0, "value": 10, "op": "SCMP_CMP_EQ"},
                    {"index": 2, "value": 0, "op": "SCMP_CMP_NE"},
                ],
            }
        ]
    )
    expected = [((0, EQ, 2, 0),), ((0, EQ, 10, 0),), ((2, NE, 0, 0),)]
    assert rules(config) == [("socket", ERRNO | EPERM, expected), ("socketpair", ERRNO | EPERM, expected)]


def test_unknown_operator_is_an_error() -> None:
    config = profile(
        syscalls=[{"names": ["x"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_XX"}]}]
    )
    with pytest.raises(InvalidArgument) as e:
        seccomp._parse(config)
    assert str(e.value) == 'seccomp: unknown operator "SCMP_CMP_XX"'


def test_operator_checked_even_when_the_rule_is_skipped() -> None:
    config = profile(
        syscalls=[{"names": ["x"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 1, "op": "BAD"}]}]
    )
    with pytest.raises(InvalidArgument, match="unknown operator"):
        seccomp._parse(config)


@pytest.mark.parametrize(
    "arg, message",
    [
        ({"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}, "argument index"),
        ({"index": -1, "value": 1, "op": "SCMP_CMP_EQ"}, "argument index"),
        ({"value": 1, "op": "SCMP_CMP_EQ"}, "argument index"),
        ({"index": 0, "op": "SCMP_CMP_EQ"}, "value of"),
        ({"index": 0, "value": -1, "op": "SCMP_CMP_EQ"}, "value of"),
        ({"index": 0, "value": 1 << 64, "op": "SCMP_CMP_EQ"}, "value of"),
        ({"index": 0, "value": 1, "valueTwo": "2", "op": "SCMP_CMP_EQ"}, "valueTwo of"),
    ],
)
def test_bad_arguments(arg: dict, message: str) -> None:
    config = profile(syscalls=[{"names": ["x"], "action": "SCMP_ACT_ERRNO", "args": [arg]}])
    with pytest.raises(InvalidArgument, match=message):
        seccomp._parse(config)


def test_max_uint64_value_is_accepted() -> None:
    config = profile(
        syscalls=[
            {
                "names": ["x"],
                "action": "SCMP_ACT_ERRNO",
                "args": [{"index": 5, "value": (1 << 64) - 1, "op": "SCMP_CMP_EQ"}],
            }
        ]
    )
    assert rules(config)[0][2] == [((5, EQ, (1 << 64) - 1, 0),)]


def test_empty_syscall_name_is_an_error() -> None:
    with pytest.raises(InvalidArgument, match="invalid syscall name"):
        seccomp._parse(profile(syscalls=[{"names": ["mkdir", ""], "action": "SCMP_ACT_ERRNO"}]))


# --- the profile as a whole -------------------------------------------------------


def test_disabled_when_no_default_action_and_no_syscalls() -> None:
    assert seccomp._parse(None) is None
    assert seccomp._parse({}) is None
    assert seccomp._parse({"defaultAction": "", "architectures": ["SCMP_ARCH_X86_64"]}) is None
    seccomp.validate_seccomp(None)
    seccomp.apply_seccomp({})  # installs nothing


def test_default_action_required_with_syscalls() -> None:
    with pytest.raises(InvalidArgument, match="defaultAction is required"):
        seccomp._parse({"syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]})


def test_not_an_object() -> None:
    with pytest.raises(InvalidArgument, match="must be an object"):
        seccomp._parse(["SCMP_ACT_ALLOW"])


def test_unknown_architecture_is_an_error() -> None:
    with pytest.raises(InvalidArgument) as e:
        seccomp._parse(profile(architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_VAX"]))
    assert str(e.value) == 'seccomp: unknown architecture "SCMP_ARCH_VAX"'


def test_flags() -> None:
    parsed = seccomp._parse(profile())
    assert parsed is not None and parsed.flags is None  # absent: the default, decided at build
    parsed = seccomp._parse(profile(flags=[]))
    assert parsed is not None and parsed.flags == []
    parsed = seccomp._parse(profile(flags=["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_TSYNC"]))
    assert parsed is not None and parsed.flags == ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_TSYNC"]
    with pytest.raises(InvalidArgument) as e:
        seccomp._parse(profile(flags=["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]))
    assert str(e.value) == 'seccomp: unknown flag "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"'


def test_listener_metadata_needs_listener_path() -> None:
    with pytest.raises(InvalidArgument, match="listenerMetadata is set without listenerPath"):
        seccomp._parse(profile(listenerMetadata="x"))
    # listenerPath without any SCMP_ACT_NOTIFY is ignored (runtime-spec)
    assert seccomp._parse(profile(listenerPath="/run/agent.sock")) is not None


def test_supported_lists() -> None:
    assert list(seccomp.SUPPORTED_ACTIONS) == sorted(seccomp.SUPPORTED_ACTIONS)
    assert "SCMP_ACT_KILL_PROCESS" in seccomp.SUPPORTED_ACTIONS
    assert list(seccomp.SUPPORTED_OPERATORS) == [
        "SCMP_CMP_EQ",
        "SCMP_CMP_GE",
        "SCMP_CMP_GT",
        "SCMP_CMP_LE",
        "SCMP_CMP_LT",
        "SCMP_CMP_MASKED_EQ",
        "SCMP_CMP_NE",
    ]
    assert list(seccomp.SUPPORTED_ARCHES) == sorted(seccomp.SUPPORTED_ARCHES)
    assert {"SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"} <= set(
        seccomp.SUPPORTED_ARCHES
    )
    assert list(seccomp.KNOWN_FLAGS) == [
        "SECCOMP_FILTER_FLAG_TSYNC",
        "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
        "SECCOMP_FILTER_FLAG_LOG",
    ]


# --- with libseccomp (builds the filter, never loads it) ---------------------------


@needs_libseccomp
def test_validate_a_realistic_profile() -> None:
    names = [
        "accept", "access", "arch_prctl", "bind", "brk", "capget", "chdir", "clone", "close", "connect",
        "dup", "dup2", "dup3", "epoll_create1", "epoll_ctl", "epoll_wait", "execve", "exit", "exit_group",
        "fcntl", "fstat", "futex", "getcwd", "getdents64", "getpid", "getuid", "ioctl", "lseek", "mmap",
        "mprotect", "munmap", "openat", "read", "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "socketcall",
        "ipc", "set_thread_area", "totally_unknown_syscall",
    ]  # fmt: skip
    config = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": errno.EPERM,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{"names": [n], "action": "SCMP_ACT_ALLOW"} for n in names]  # > 32 entries: optimize
        + [
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSYS},
            {
                "names": ["personality"],
                "action": "SCMP_ACT_ALLOW",
                "args": [
                    {"index": 0, "value": 0, "op": "SCMP_CMP_EQ"},
                    {"index": 0, "value": 8, "op": "SCMP_CMP_EQ"},
                    {"index": 0, "value": 0xFFFFFFFF, "op": "SCMP_CMP_EQ"},
                ],
            },
        ],
    }
    seccomp.validate_seccomp(config)


@needs_libseccomp
def test_validate_skips_unknown_syscall_names() -> None:
    seccomp.validate_seccomp(profile(syscalls=[{"names": ["foo_bar", "mkdir"], "action": "SCMP_ACT_ERRNO"}]))


@needs_libseccomp
@pytest.mark.skipif(os.uname().machine != "x86_64", reason="x86 family")
def test_validate_foreign_architectures() -> None:
    seccomp.validate_seccomp(profile(architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]))
    seccomp.validate_seccomp(profile(architectures=["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]))  # same byte order
    with pytest.raises(InvalidArgument) as e:
        seccomp.validate_seccomp(profile(architectures=["SCMP_ARCH_S390X"]))  # big endian
    assert str(e.value) == 'seccomp: architecture "SCMP_ARCH_S390X" can\'t be mixed with the native one (byte order)'


@needs_libseccomp
def test_validate_flags() -> None:
    for flag in seccomp.supported_flags():
        seccomp.validate_seccomp(profile(flags=[flag]))
    seccomp.validate_seccomp(profile(flags=[]))


@needs_libseccomp
def test_libseccomp_version() -> None:
    version = seccomp.libseccomp_version()
    assert len(version.split(".")) == 3 and all(p.isdigit() for p in version.split("."))
    assert set(seccomp.supported_flags()) <= set(seccomp.KNOWN_FLAGS)


def test_import_is_light() -> None:
    code = (
        "import sys; before = set(sys.modules)\n"
        "import berth.runtime.linux.seccomp, berth.runtime.linux.capabilities, berth.runtime.features\n"
        "heavy = {'ctypes', 'asyncio', 'logging', 're', 'pathlib', 'typing', 'json', 'subprocess'}\n"
        "print(sorted(heavy & (set(sys.modules) - before)))\n"
    )
    src = seccomp.__file__
    for _ in range(4):  # seccomp.py -> linux -> runtime -> berth -> src
        src = os.path.dirname(src)
    env = dict(os.environ, PYTHONPATH=src)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
