"""Unit tests of berth.runtime.linux.capabilities and berth.runtime.features, no root."""

from __future__ import annotations

import json

import pytest

from berth.errors import InvalidArgument
from berth.runtime import features
from berth.runtime.linux import capabilities, seccomp
from berth.runtime.linux.capabilities import CAP_NUMBERS, CAPABILITIES

# --- capability names ---------------------------------------------------------------


@pytest.mark.parametrize(
    "name, number",
    [
        ("CAP_CHOWN", 0),
        ("CAP_KILL", 5),
        ("CAP_SETPCAP", 8),
        ("CAP_NET_BIND_SERVICE", 10),
        ("CAP_NET_RAW", 13),
        ("CAP_SYS_ADMIN", 21),
        ("CAP_MKNOD", 27),
        ("CAP_AUDIT_WRITE", 29),
        ("CAP_SETFCAP", 31),
        ("CAP_AUDIT_READ", 37),
        ("CAP_PERFMON", 38),
        ("CAP_BPF", 39),
        ("CAP_CHECKPOINT_RESTORE", 40),
    ],
)
def test_capability_numbers(name: str, number: int) -> None:
    assert CAP_NUMBERS[name] == number
    assert CAPABILITIES[number] == name


def test_all_known_capabilities() -> None:
    assert len(CAPABILITIES) == 41 == len(set(CAPABILITIES))
    assert all(name.startswith("CAP_") for name in CAPABILITIES)
    assert capabilities.known_capabilities() == list(CAPABILITIES)


def test_last_cap_is_the_kernels() -> None:
    with open("/proc/sys/kernel/cap_last_cap") as f:
        assert capabilities.last_cap() == int(f.read())


def test_caps_mask_ignores_unknown_names() -> None:
    assert capabilities.caps_mask(None) == 0
    assert capabilities.caps_mask([]) == 0
    assert capabilities.caps_mask(["CAP_CHOWN", "CAP_KILL"]) == 0b100001
    assert capabilities.caps_mask(["CAP_CHOWN", "CAP_FOO", "CHOWN", "cap_kill"]) == 1
    assert capabilities.caps_mask(["CAP_SYS_ADMIN"]) == 1 << 21


def test_unavailable_capabilities_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(capabilities, "_last_cap", 37)  # an older kernel
    assert capabilities.caps_mask(["CAP_AUDIT_READ", "CAP_BPF"]) == 1 << 37
    assert capabilities.ignored_caps({"bounding": ["CAP_BPF", "CAP_AUDIT_READ"]}) == ["CAP_BPF"]


# --- validate_caps ---------------------------------------------------------------------


def test_validate_none_and_empty() -> None:
    warnings: list[str] = []
    capabilities.validate_caps(None, warn=warnings.append)
    capabilities.validate_caps({}, warn=warnings.append)
    capabilities.validate_caps({"bounding": None, "effective": []}, warn=warnings.append)
    assert warnings == []


def test_validate_a_docker_default_set() -> None:
    default = [
        "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
        "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
        "CAP_AUDIT_WRITE",
    ]  # fmt: skip
    warnings: list[str] = []
    capabilities.validate_caps({"bounding": default, "effective": default, "permitted": default}, warn=warnings.append)
    assert warnings == []


def test_unknown_capabilities_are_warned_about_and_ignored() -> None:
    # runc: "ignoring unknown or unavailable capabilities"; names need the CAP_ prefix
    warnings: list[str] = []
    capabilities.validate_caps(
        {"bounding": ["CAP_CHOWN", "CAP_FOO", "CHOWN"], "ambient": ["CAP_FOO"]}, warn=warnings.append
    )
    assert warnings == ["ignoring unknown or unavailable capabilities: [CAP_FOO CHOWN]"]
    assert capabilities.ignored_caps({"bounding": ["CAP_CHOWN", "CAP_FOO", "CHOWN"]}) == ["CAP_FOO", "CHOWN"]


def test_unknown_capabilities_warn_on_stderr_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    capabilities.validate_caps({"effective": ["CAP_FOO"]})
    assert capsys.readouterr().err == "berth: warning: ignoring unknown or unavailable capabilities: [CAP_FOO]\n"


@pytest.mark.parametrize(
    "caps, message",
    [
        (["CAP_CHOWN"], "capabilities: process.capabilities must be an object"),
        ({"bounding": "CAP_CHOWN"}, "capabilities: bounding must be a list of names"),
        ({"ambient": [21]}, "capabilities: ambient has 21, not a capability name"),
    ],
)
def test_malformed_capabilities(caps: object, message: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        capabilities.validate_caps(caps)  # type: ignore[arg-type]
    assert str(e.value) == message


def test_effective_must_be_in_permitted() -> None:
    with pytest.raises(InvalidArgument) as e:
        capabilities.validate_caps({"effective": ["CAP_CHOWN", "CAP_KILL"], "permitted": ["CAP_CHOWN"]})
    assert str(e.value) == 'capabilities: effective capability "CAP_KILL" is not in the permitted set'
    # unknown names are ignored, not errors, also here
    capabilities.validate_caps({"effective": ["CAP_FOO"], "permitted": []}, warn=lambda m: None)


def test_apply_caps_none_changes_nothing() -> None:
    capabilities.apply_caps(None)  # no syscalls at all: works without root


# --- features ----------------------------------------------------------------------------


def test_features_keys_in_runc_order() -> None:
    doc = features.features_json()
    assert list(doc) == [
        "ociVersionMin",
        "ociVersionMax",
        "hooks",
        "mountOptions",
        "linux",
        "annotations",
        "potentiallyUnsafeConfigAnnotations",
    ]
    assert list(doc["linux"]) == [
        "namespaces",
        "capabilities",
        "cgroup",
        "seccomp",
        "apparmor",
        "selinux",
        "intelRdt",
        "mountExtensions",
    ]
    assert list(doc["linux"]["cgroup"]) == ["v1", "v2", "systemd", "systemdUser"]


def test_features_values() -> None:
    doc = features.features_json()
    assert doc["ociVersionMin"] == "1.0.0"
    assert doc["ociVersionMax"] == "1.1.0"
    assert doc["hooks"] == ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"]
    assert doc["mountOptions"] == sorted(doc["mountOptions"])
    assert "tmpcopyup" not in doc["mountOptions"]  # accepted, but not implemented
    basic = {"bind", "rbind", "ro", "rw", "nosuid", "nodev", "noexec", "relatime", "strictatime", "noatime"}
    propagation = {"private", "rprivate", "shared", "rshared", "slave", "rslave", "unbindable", "runbindable"}
    assert basic | propagation | {"nodiratime"} <= set(doc["mountOptions"])
    linux = doc["linux"]
    assert linux["namespaces"] == ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"]
    assert linux["capabilities"] == list(CAPABILITIES)
    assert linux["cgroup"] == {"v1": True, "v2": True, "systemd": False, "systemdUser": False}
    assert linux["apparmor"] == {"enabled": False}
    assert linux["selinux"] == {"enabled": False}
    assert linux["intelRdt"] == {"enabled": False}
    assert linux["mountExtensions"] == {"idmap": {"enabled": False}}
    assert doc["potentiallyUnsafeConfigAnnotations"] == []
    json.dumps(doc)  # serialisable as is


def test_features_seccomp() -> None:
    doc = features.features_json()
    sc = doc["linux"]["seccomp"]
    assert list(sc) == ["enabled", "actions", "operators", "archs", "knownFlags", "supportedFlags"]
    assert sc["enabled"] is True
    assert sc["actions"] == list(seccomp.SUPPORTED_ACTIONS) == sorted(sc["actions"])
    assert sc["operators"] == list(seccomp.SUPPORTED_OPERATORS)
    assert sc["archs"] == list(seccomp.SUPPORTED_ARCHES)
    assert sc["knownFlags"] == [
        "SECCOMP_FILTER_FLAG_TSYNC",
        "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
        "SECCOMP_FILTER_FLAG_LOG",
    ]
    assert set(sc["supportedFlags"]) <= set(sc["knownFlags"])
    assert doc["annotations"] == {"io.github.seccomp.libseccomp.version": seccomp.libseccomp_version()}


def test_features_without_libseccomp(monkeypatch: pytest.MonkeyPatch) -> None:
    from berth.errors import Unavailable

    def missing() -> str:
        raise Unavailable("seccomp: libseccomp.so.2 is not installed")

    monkeypatch.setattr(seccomp, "libseccomp_version", missing)
    doc = features.features_json()
    assert doc["linux"]["seccomp"] == {"enabled": False}
    assert doc["annotations"] == {}


@pytest.mark.parametrize(
    "release, expected",
    [
        ("6.18.44-fc-v657", True),
        ("5.12.0", True),
        ("5.15.0-91-generic", True),
        ("5.11.22", False),
        ("4.19.0-26-amd64", False),
        ("5.4", False),
        ("10.0", True),
    ],
)
def test_kernel_version_check(release: str, expected: bool) -> None:
    assert features._kernel_at_least(5, 12, release) is expected


def test_mount_options_are_the_implemented_ones() -> None:
    from berth.runtime.linux import mountopts

    implemented = set(mountopts.FLAG_OPTIONS) | set(mountopts.PROPAGATION_OPTIONS)
    if features._kernel_at_least(5, 12):
        implemented |= set(mountopts.RECURSIVE_OPTIONS)
    assert features.mount_options() == sorted(implemented)


def test_rro_follows_the_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(features, "_kernel_at_least", lambda major, minor, release=None: True)
    options = features.features_json()["mountOptions"]
    assert {"rro", "rrw", "rnosuid", "rnodev", "rnoexec"} <= set(options)
    assert options == sorted(options)
    monkeypatch.setattr(features, "_kernel_at_least", lambda major, minor, release=None: False)
    options = features.features_json()["mountOptions"]
    assert not {"rro", "rrw", "rnosuid"} & set(options)
    assert {"ro", "rw", "bind", "rbind"} <= set(options)
