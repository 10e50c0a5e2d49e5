"""config.json, feature group by feature group, against real containers.

Most tests run busybox ``sh -c '...'`` in the foreground (``run``) and assert on what
it prints about itself. Every test passes against runc too (``BERTH_TEST_RUNTIME``),
unless it is skipped for runc with the documented difference as the reason.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import pty
import secrets
import select
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from berth.runtime.spec_cmd import default_spec
from tests.support import cleanup
from tests.support.bundle import CGROUP_PARENT

pytestmark = pytest.mark.integration

DEFAULT_NAMESPACES = ("pid", "network", "ipc", "uts", "mount")
NS_PROC_NAMES = {"pid": "pid", "network": "net", "ipc": "ipc", "uts": "uts", "mount": "mnt", "cgroup": "cgroup"}
MiB = 1024 * 1024
_ids = itertools.count(1)


# --- helpers ------------------------------------------------------------------

def mounts(*extra: dict) -> list[dict]:
    """The default mounts (runc spec's) followed by ``extra``."""
    return copy.deepcopy(default_spec()["mounts"]) + list(extra)


def namespaces(*kinds: str, **paths: str) -> list[dict]:
    out = [{"type": k} for k in kinds]
    out += [{"type": k, "path": p} for k, p in paths.items()]
    return out


def run_sh(runtime, bundle, script: str, *run_args: str, timeout: float = 30, **overrides):  # noqa: ANN001, ANN201
    """``run`` busybox ``sh -c script`` in the foreground; the CompletedProcess."""
    b = bundle(["/bin/sh", "-c", script], **overrides)
    return runtime.run("run", "--bundle", b.path, *run_args, f"cfg-{next(_ids)}", timeout=timeout)


def sh_ok(runtime, bundle, script: str, *run_args: str, **overrides) -> str:  # noqa: ANN001
    """Like run_sh, but the container must exit 0; its stdout."""
    res = run_sh(runtime, bundle, script, *run_args, **overrides)
    assert res.returncode == 0, f"exit {res.returncode}\n--- stdout\n{res.stdout}--- stderr\n{res.stderr}"
    return res.stdout


def lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def status_fields(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def mountinfo(text: str) -> dict[str, dict]:
    """mount point -> {fstype, opts (per-mount), super (superblock opts), optional} (last wins)."""
    out = {}
    for line in text.splitlines():
        fields = line.split(" ")
        if len(fields) < 7 or "-" not in fields[6:]:
            continue
        sep = fields.index("-", 6)
        out[fields[4]] = {
            "opts": set(fields[5].split(",")),
            "optional": fields[6:sep],
            "fstype": fields[sep + 1],
            "super": set(fields[sep + 3].split(",")) if len(fields) > sep + 3 else set(),
        }
    return out


def own_cgroups() -> dict[str, str]:
    """controller -> this process's cgroup in that v1 hierarchy."""
    out = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            for ctrl in ctrls.split(","):
                out[ctrl] = path
    return out


def v1_mounted(controller: str) -> bool:
    return os.path.isdir(f"/sys/fs/cgroup/{controller}") and os.path.exists(f"/sys/fs/cgroup/{controller}/tasks")


needs_v1 = pytest.mark.skipif(not v1_mounted("memory"), reason="these checks read cgroup v1 files")


@pytest.fixture
def world_dir() -> Iterator[Path]:
    """A directory any uid can traverse (tmp_path's parents are 0700): for user namespaces."""
    path = Path(tempfile.mkdtemp(prefix="berth-cfg-"))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        cleanup.unmount_under([str(path)])
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def netns() -> Iterator[str]:
    """A named network namespace (``ip netns add``); its path. Deleted afterwards."""
    if shutil.which("ip") is None:
        pytest.skip("iproute2 (ip) is not installed")
    name = f"berth-test-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        yield f"/run/netns/{name}"
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)


# --- namespaces ---------------------------------------------------------------

def test_pid_namespace_init_is_pid_1(runtime, bundle):
    out = sh_ok(runtime, bundle, "echo $$; cut -d' ' -f1 /proc/self/stat; ls /proc | grep -c '^[0-9][0-9]*$'")
    pid, self_pid, count = lines(out)
    assert pid == "1"
    assert int(self_pid) > 1
    assert int(count) <= 4  # sh, cut/ls/grep: nothing of the host


@pytest.mark.parametrize("kinds", [DEFAULT_NAMESPACES + ("cgroup",), ("pid", "mount")], ids=["all", "pid+mount"])
def test_namespaces_new_or_shared_with_host(runtime, bundle, kinds):
    names = " ".join(NS_PROC_NAMES.values())
    out = sh_ok(runtime, bundle, f"for n in {names}; do echo $n $(readlink /proc/self/ns/$n); done",
                linux={"namespaces": namespaces(*kinds)}, hostname=None)
    seen = dict(line.split(" ", 1) for line in lines(out))
    for kind, name in NS_PROC_NAMES.items():
        host = os.readlink(f"/proc/self/ns/{name}")
        if kind in kinds:
            assert seen[name] != host, kind
        else:
            assert seen[name] == host, kind


def test_uts_hostname(runtime, bundle):
    out = sh_ok(runtime, bundle, "hostname; uname -n; readlink /proc/self/ns/uts", hostname="box")
    name, uname, link = lines(out)
    assert (name, uname) == ("box", "box")
    assert link != os.readlink("/proc/self/ns/uts")
    assert os.uname().nodename != "box"


def test_uts_domainname(runtime, bundle):
    if runtime.is_runc:
        pytest.skip("runc 1.1 ignores the domainname field (runc supports it from 1.2); berth sets it")
    out = sh_ok(runtime, bundle, "cat /proc/sys/kernel/domainname", hostname="box", domainname="example.test")
    assert lines(out) == ["example.test"]


def test_hostname_needs_uts_namespace(runtime, bundle):
    res = run_sh(runtime, bundle, "hostname", hostname="box",
                 linux={"namespaces": namespaces("pid", "mount", "network", "ipc")})
    assert res.returncode != 0
    assert "UTS" in res.stderr or "uts" in res.stderr


def test_ipc_namespace_has_no_host_segments(runtime, bundle):
    out = sh_ok(runtime, bundle, "cat /proc/sysvipc/shm | wc -l; readlink /proc/self/ns/ipc")
    count, link = lines(out)
    assert count == "1"  # the header only
    assert link != os.readlink("/proc/self/ns/ipc")


def test_network_namespace_has_only_lo_and_it_is_up(runtime, bundle):
    out = sh_ok(runtime, bundle, "tail -n +3 /proc/net/dev | cut -d: -f1; echo flags $(cat /sys/class/net/lo/flags)")
    *ifaces, flags = lines(out)
    assert ifaces == ["lo"]
    assert int(flags.split()[1], 16) & 0x1  # IFF_UP: runc brings lo up in a new netns


def test_mount_namespace_mounts_stay_inside(runtime, bundle, tmp_path):
    b = bundle(["/bin/sleep", "30"])
    runtime.run("run", "--detach", "--bundle", b.path, "mnt", check=True)
    pid = runtime.state("mnt")["pid"]
    inside = mountinfo(Path(f"/proc/{pid}/mountinfo").read_text())
    assert inside["/proc"]["fstype"] == "proc" and inside["/dev"]["fstype"] == "tmpfs"
    assert os.readlink(f"/proc/{pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
    assert cleanup.mounts_under([str(tmp_path)]) == []  # nothing of the container's rootfs leaks to the host


def test_cgroup_namespace_root_is_the_container_cgroup(runtime, bundle):
    out = sh_ok(runtime, bundle, "cat /proc/self/cgroup",
                linux={"namespaces": namespaces(*DEFAULT_NAMESPACES, "cgroup")})
    paths = [line.split(":", 2)[2] for line in lines(out)]
    assert paths and all(p == "/" for p in paths), out


def test_without_cgroup_namespace_the_cgroup_path_shows(runtime, bundle):
    b = bundle(["/bin/cat", "/proc/self/cgroup"])
    res = runtime.run("run", "--bundle", b.path, "nocgns", check=True)
    pids = [line.split(":", 2)[2] for line in lines(res.stdout) if line.split(":")[1] == "pids"]
    if not pids:
        pytest.skip("no v1 pids hierarchy")
    assert pids[0].endswith(b.cgroups_path)


def test_user_namespace_maps_ids(runtime, bundle, world_dir):
    shared = world_dir / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    maps = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    b = bundle(
        ["/bin/sh", "-c", "id -u; id -g; cat /proc/self/uid_map; touch /shared/by-root; "
                          "stat -c %u /bin/busybox; readlink /proc/self/ns/user"],
        dir=world_dir / "bundle",
        linux={"namespaces": namespaces(*DEFAULT_NAMESPACES, "user"), "uidMappings": maps, "gidMappings": maps},
        mounts=mounts({"destination": "/shared", "type": "bind", "source": str(shared), "options": ["rbind"]}),
    )
    os.mkdir(os.path.join(b.rootfs, "shared"))  # the container's root cannot mkdir in the host's rootfs
    res = runtime.run("run", "--bundle", b.path, "userns", timeout=30)
    assert res.returncode == 0, res.stderr
    uid, gid, uid_map, busybox_owner, link = lines(res.stdout)
    assert (uid, gid) == ("0", "0")
    assert uid_map.split() == ["0", "100000", "65536"]
    assert busybox_owner == "65534"  # host root is not mapped: the overflow uid
    assert link != os.readlink("/proc/self/ns/user")
    st = os.stat(shared / "by-root")
    assert (st.st_uid, st.st_gid) == (100000, 100000)


def test_join_network_namespace_by_path(runtime, bundle, netns):
    out = sh_ok(runtime, bundle, "readlink /proc/self/ns/net; tail -n +3 /proc/net/dev | cut -d: -f1",
                linux={"namespaces": namespaces("pid", "ipc", "uts", "mount", network=netns)})
    link, *ifaces = lines(out)
    assert link == f"net:[{os.stat(netns).st_ino}]"
    assert ifaces == ["lo"]


def test_join_missing_namespace_path_fails(runtime, bundle, tmp_path):
    res = run_sh(runtime, bundle, "true",
                 linux={"namespaces": namespaces("pid", "ipc", "uts", "mount", network=str(tmp_path / "nope"))})
    assert res.returncode != 0
    assert runtime.container_ids() == []


# --- mounts -------------------------------------------------------------------

@pytest.fixture
def host_tree(tmp_path: Path) -> Path:
    """tmp/src with a file, and a tmpfs submount at tmp/src/sub with its own file."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "top.txt").write_text("top\n")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(src / "sub")], check=True)
    (src / "sub" / "inner.txt").write_text("inner\n")
    return src


@pytest.mark.parametrize("kind,sees_submount", [("bind", False), ("rbind", True)])
def test_bind_and_rbind(runtime, bundle, host_tree, kind, sees_submount):
    out = sh_ok(runtime, bundle, "cat /data/top.txt; cat /data/sub/inner.txt 2>/dev/null || echo no-inner; "
                                 "echo new > /data/written",
                mounts=mounts({"destination": "/data", "type": "bind", "source": str(host_tree), "options": [kind]}))
    assert lines(out) == ["top", "inner" if sees_submount else "no-inner"]
    assert (host_tree / "written").read_text() == "new\n"


@pytest.mark.parametrize("options,sub_readonly", [(["rbind", "ro"], False), (["rbind", "rro"], True)],
                         ids=["ro", "rro"])
def test_readonly_and_recursive_readonly_binds(runtime, bundle, host_tree, options, sub_readonly):
    script = ("touch /data/x 2>&1 || true; touch /data/sub/y 2>&1 && echo sub-writable || true")
    out = sh_ok(runtime, bundle, script,
                mounts=mounts({"destination": "/data", "type": "bind", "source": str(host_tree), "options": options}))
    assert "Read-only file system" in lines(out)[0]
    if sub_readonly:
        assert "Read-only file system" in lines(out)[1]
    else:
        assert lines(out)[1] == "sub-writable"
    assert not (host_tree / "x").exists()


@pytest.mark.parametrize("noexec", [True, False])
def test_tmpfs_nosuid_nodev_noexec(runtime, bundle, noexec):
    options = ["nosuid", "nodev", "noexec"] if noexec else ["nosuid", "nodev"]
    script = ("cp /bin/busybox /scratch/busybox; /scratch/busybox echo ran 2>&1 || echo exit=$?; "
              "grep ' /scratch ' /proc/self/mountinfo")
    out = sh_ok(runtime, bundle, script,
                mounts=mounts({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs", "options": options}))
    first, info = lines(out)[0], "\n".join(lines(out)[1:])
    opts = mountinfo(info)["/scratch"]["opts"]
    assert {"nosuid", "nodev"} <= opts
    if noexec:
        assert "noexec" in opts
        assert "Permission denied" in out and "exit=126" in out, out
    else:
        assert "noexec" not in opts
        assert first == "ran"


def test_tmpfs_size_and_mode(runtime, bundle):
    out = sh_ok(runtime, bundle, "stat -c %a /scratch; df -k /scratch | tail -n 1",
                mounts=mounts({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
                               "options": ["nosuid", "size=1m", "mode=1770"]}))
    mode, df = lines(out)
    assert mode == "1770"
    assert df.split()[1] == "1024"


def test_standard_filesystems_are_mounted(runtime, bundle):
    info = mountinfo(sh_ok(runtime, bundle, "cat /proc/self/mountinfo"))
    expected = {"/proc": "proc", "/dev": "tmpfs", "/dev/pts": "devpts", "/dev/shm": "tmpfs",
                "/dev/mqueue": "mqueue", "/sys": "sysfs"}
    for point, fstype in expected.items():
        assert info[point]["fstype"] == fstype, point
    assert "ro" in info["/sys"]["opts"]
    assert {"nosuid", "noexec", "nodev"} <= info["/dev/mqueue"]["opts"]
    assert {"ptmxmode=666", "mode=620", "gid=5"} <= info["/dev/pts"]["super"]
    assert "size=65536k" in info["/dev/shm"]["super"]


@needs_v1
def test_cgroup_mount_shows_controllers_and_limits(runtime, bundle):
    out = sh_ok(runtime, bundle, "ls /sys/fs/cgroup; echo limit $(cat /sys/fs/cgroup/memory/memory.limit_in_bytes); "
                                 "touch /sys/fs/cgroup/memory/x 2>&1 || true",
                linux={"resources": {"memory": {"limit": 64 * MiB}}})
    listed = set(lines(out))
    host = {c for c in ("cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids") if v1_mounted(c)}
    assert host <= listed
    assert f"limit {64 * MiB}" in listed
    assert any("Read-only file system" in line for line in listed)


@pytest.mark.parametrize("option,shared", [("rshared", True), ("rprivate", False)])
def test_mount_propagation_option(runtime, bundle, host_tree, option, shared):
    info = mountinfo(sh_ok(runtime, bundle, "cat /proc/self/mountinfo", mounts=mounts(
        {"destination": "/data", "type": "bind", "source": str(host_tree), "options": ["rbind", option]})))
    optional = " ".join(info["/data"]["optional"])
    assert ("shared:" in optional) == shared, optional


@pytest.mark.parametrize("propagation,shared", [("shared", True), ("private", False)])
def test_rootfs_propagation(runtime, bundle, propagation, shared):
    if shared and runtime.is_runc:
        pytest.skip("runc 1.1 applies rootfsPropagation only before binding the rootfs, which stays private; "
                    "berth (like runc 1.2) applies it to / after pivot_root")
    info = mountinfo(sh_ok(runtime, bundle, "cat /proc/self/mountinfo",
                           linux={"rootfsPropagation": propagation}))
    optional = " ".join(info["/"]["optional"])
    assert ("shared:" in optional) == shared, optional


@pytest.mark.parametrize("readonly", [True, False])
def test_root_readonly(runtime, bundle, readonly):
    out = sh_ok(runtime, bundle, "touch /x 2>&1 && echo wrote || true", root={"readonly": readonly})
    if readonly:
        assert "Read-only file system" in out
    else:
        assert lines(out) == ["wrote"]


def test_no_pivot(runtime, bundle):
    out = sh_ok(runtime, bundle, "ls /; hostname; readlink /proc/1/root", "--no-pivot", hostname="nopivot")
    listed = lines(out)
    assert {"bin", "etc", "proc", "dev"} <= set(listed)
    assert "nopivot" in listed
    assert listed[-1] == "/"


# --- /dev ---------------------------------------------------------------------

def test_default_devices(runtime, bundle):
    devs = ("null", "zero", "full", "random", "urandom", "tty")
    out = sh_ok(runtime, bundle, "for d in " + " ".join(devs) + "; do stat -c '%n %F %t:%T %a' /dev/$d; done")
    got = {line.split()[0]: line for line in lines(out)}
    numbers = {"null": "1:3", "zero": "1:5", "full": "1:7", "random": "1:8", "urandom": "1:9", "tty": "5:0"}
    for dev, mm in numbers.items():
        line = got[f"/dev/{dev}"]
        assert "character special file" in line, line
        assert line.split()[-2] == mm, line
        assert line.split()[-1] == "666", line


def test_default_dev_symlinks(runtime, bundle):
    links = ("fd", "stdin", "stdout", "stderr", "ptmx")
    out = sh_ok(runtime, bundle, "for l in " + " ".join(links) + "; do echo $l $(readlink /dev/$l); done; "
                                 "echo hi | cat /dev/stdin; ls /dev/pts")
    got = dict(line.split(" ", 1) for line in lines(out) if " " in line)
    assert got == {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
                   "stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx"}
    assert "hi" in lines(out)
    assert "ptmx" in lines(out)


def test_linux_devices_entry(runtime, bundle):
    devices = [
        {"path": "/dev/mynull", "type": "c", "major": 1, "minor": 3, "fileMode": 0o600, "uid": 1000, "gid": 1000},
        {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 0o666, "uid": 0, "gid": 0},
    ]
    out = sh_ok(runtime, bundle,
                "stat -c '%F %t:%T %a %u:%g' /dev/mynull /dev/fuse; echo x > /dev/mynull && echo written",
                process={"user": {"uid": 1000, "gid": 1000}}, linux={"devices": devices})
    assert lines(out) == ["character special file 1:3 600 1000:1000", "character special file a:e5 666 0:0",
                          "written"]


@pytest.mark.parametrize("allow", [False, True])
def test_device_cgroup(runtime, bundle, tmp_path, allow):
    """A device node the container sees but the device cgroup does not allow (nor the defaults)."""
    devdir = tmp_path / "devdir"
    devdir.mkdir()
    os.mknod(devdir / "kmsg", stat.S_IFCHR | 0o666, os.makedev(1, 11))
    rules = [{"allow": False, "access": "rwm"}]
    if allow:
        rules.append({"allow": True, "type": "c", "major": 1, "minor": 11, "access": "w"})
    out = sh_ok(runtime, bundle, "{ echo '<7>berth test: device cgroup' > /hostdev/kmsg; } 2>&1 && echo written; true",
                mounts=mounts({"destination": "/hostdev", "type": "bind", "source": str(devdir), "options": ["bind"]}),
                linux={"resources": {"devices": rules}})
    if allow:
        assert lines(out) == ["written"]
    else:
        assert "written" not in out
        assert "Operation not permitted" in out


# --- masked and read-only paths ------------------------------------------------

def test_masked_paths(runtime, bundle):
    files = [p for p in ("/proc/kcore", "/proc/keys", "/proc/timer_list") if os.path.exists(p)]
    script = "; ".join(f"echo {p} $(wc -c < {p})" for p in files) + "; echo /secret $(ls -A /secret | wc -l)"
    b = bundle(["/bin/sh", "-c", script])
    secret = Path(b.rootfs) / "secret"
    secret.mkdir()
    (secret / "file").write_text("hidden\n")
    b.config["linux"]["maskedPaths"].append("/secret")
    b.save()
    res = runtime.run("run", "--bundle", b.path, "masked")
    assert res.returncode == 0, res.stderr
    assert lines(res.stdout) == [f"{p} 0" for p in files] + ["/secret 0"]
    assert files  # at least one masked /proc file to check


def test_readonly_paths(runtime, bundle):
    out = sh_ok(runtime, bundle, "{ echo 1 > /proc/sys/kernel/shm_rmid_forced; } 2>&1 || true; "
                                 "grep ' /proc/sys ' /proc/self/mountinfo")
    assert "Read-only file system" in out
    info = mountinfo("\n".join(line for line in out.splitlines() if " /proc/sys " in line))
    assert "ro" in info["/proc/sys"]["opts"]


def test_sysctl(runtime, bundle):
    out = sh_ok(runtime, bundle, "cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shm_rmid_forced",
                linux={"sysctl": {"net.ipv4.ip_forward": "1", "kernel.shm_rmid_forced": "1"}})
    assert lines(out) == ["1", "1"]


# --- process --------------------------------------------------------------------

def test_args_env_cwd(runtime, bundle):
    b = bundle(["/bin/sh", "-c", 'echo "$0|$1|$FOO|$HOME"; pwd', "zero", "one"],
               process={"env": ["PATH=/bin", "FOO=bar baz"], "cwd": "/home/app"})
    res = runtime.run("run", "--bundle", b.path, "args", check=True)
    assert lines(res.stdout) == ["zero|one|bar baz|/root", "/home/app"]


def test_missing_cwd_is_created(runtime, bundle):
    out = sh_ok(runtime, bundle, "pwd", process={"cwd": "/does/not/exist"})
    assert lines(out) == ["/does/not/exist"]


def test_user_and_groups(runtime, bundle):
    out = sh_ok(runtime, bundle, "id -u; id -g; id -G; echo $HOME",
                process={"user": {"uid": 1000, "gid": 1000, "additionalGids": [5, 65534]}})
    uid, gid, groups, home = lines(out)
    assert (uid, gid) == ("1000", "1000")
    assert set(groups.split()) == {"1000", "5", "65534"}
    assert home == "/home/app"


@pytest.mark.parametrize("umask,file_mode,dir_mode", [(None, "644", "755"), (0o027, "640", "750")])
def test_umask(runtime, bundle, umask, file_mode, dir_mode):
    user = {"uid": 0, "gid": 0}
    if umask is not None:
        user["umask"] = umask
    out = sh_ok(runtime, bundle, "touch /tmp/f; mkdir /tmp/d; stat -c %a /tmp/f /tmp/d",
                process={"user": user}, root={"readonly": False})
    assert lines(out) == [file_mode, dir_mode]


def _capset(*names: str) -> dict:
    return {"bounding": list(names), "effective": list(names), "permitted": list(names),
            "inheritable": [], "ambient": []}


@pytest.mark.parametrize("caps", [("CAP_CHOWN", "CAP_KILL"), ("CAP_KILL",)], ids=["chown", "no-chown"])
def test_capabilities(runtime, bundle, caps):
    bits = {"CAP_CHOWN": 0, "CAP_KILL": 5}
    mask = sum(1 << bits[c] for c in caps)
    out = sh_ok(runtime, bundle, "grep ^Cap /proc/self/status; touch /tmp/f; "
                                 "chown 1000 /tmp/f 2>&1 && echo chowned || true",
                process={"capabilities": _capset(*caps)}, root={"readonly": False})
    fields = status_fields(out)
    assert int(fields["CapEff"], 16) == mask
    assert int(fields["CapPrm"], 16) == mask
    assert int(fields["CapBnd"], 16) == mask
    assert int(fields["CapInh"], 16) == 0
    assert int(fields["CapAmb"], 16) == 0
    if "CAP_CHOWN" in caps:
        assert "chowned" in out
    else:
        assert "Operation not permitted" in out


def test_ambient_capabilities_for_non_root(runtime, bundle):
    caps = ["CAP_KILL", "CAP_NET_BIND_SERVICE"]
    mask = (1 << 5) | (1 << 10)
    out = sh_ok(runtime, bundle, "grep ^Cap /proc/self/status",
                process={"user": {"uid": 1000, "gid": 1000},
                         "capabilities": {"bounding": caps, "effective": caps, "permitted": caps,
                                          "inheritable": caps, "ambient": caps}})
    fields = status_fields(out)
    assert int(fields["CapEff"], 16) == mask
    assert int(fields["CapAmb"], 16) == mask


def test_rlimits(runtime, bundle):
    out = sh_ok(runtime, bundle, "ulimit -n; ulimit -H -n; grep 'Max core' /proc/self/limits",
                process={"rlimits": [{"type": "RLIMIT_NOFILE", "soft": 256, "hard": 512},
                                     {"type": "RLIMIT_CORE", "soft": 0, "hard": 0}]})
    soft, hard, core = lines(out)
    assert (soft, hard) == ("256", "512")
    assert core.split()[4:6] == ["0", "0"]


@pytest.mark.parametrize("nnp", [True, False])
def test_no_new_privileges(runtime, bundle, nnp):
    out = sh_ok(runtime, bundle, "grep NoNewPrivs /proc/self/status", process={"noNewPrivileges": nnp})
    assert status_fields(out)["NoNewPrivs"] == ("1" if nnp else "0")


def test_oom_score_adj(runtime, bundle):
    out = sh_ok(runtime, bundle, "cat /proc/self/oom_score_adj", process={"oomScoreAdj": 500})
    assert lines(out) == ["500"]


def _read_pty(master: int, pid: int, timeout: float = 30) -> tuple[int, str]:
    """Read the pty master until EOF/EIO, then reap ``pid``: (exit code, output)."""
    out = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while True:
            ready, _, _ = select.select([master], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                os.kill(pid, signal.SIGKILL)
                break
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the other side is closed
                break
            if not data:
                break
            out += data
    finally:
        os.close(master)
        _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out.decode(errors="replace")


def test_terminal_foreground(runtime, bundle):
    b = bundle(["/bin/sh", "-c", "tty; [ -t 0 ] && [ -t 1 ] && echo is-a-tty; ls -l /dev/console | cut -c1"],
               process={"terminal": True})
    argv = runtime.argv("run", "--bundle", b.path, "tty-fg")
    pid, master = pty.fork()
    if pid == 0:  # the child: the runtime, with a pty as its stdio and controlling terminal
        try:
            os.execv(argv[0], argv)
        finally:
            os._exit(127)
    code, out = _read_pty(master, pid)
    assert code == 0, out
    assert lines(out) == ["/dev/pts/0", "is-a-tty", "c"]


def test_terminal_console_socket(runtime, bundle, tmp_path):
    b = bundle(["/bin/sh", "-c", "tty; [ -t 0 ] && echo is-a-tty; sleep 0.2; echo done"],
               process={"terminal": True})
    path = str(tmp_path / "console.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(path)
        server.listen(1)
        server.settimeout(10)
        res = runtime.run("create", "--bundle", b.path, "--console-socket", path, "tty-sock")
        assert res.returncode == 0, res.stderr
        conn, _ = server.accept()
        with conn:
            _msg, fds, _flags, _addr = socket.recv_fds(conn, 4096, 1)
    assert len(fds) == 1
    master = fds[0]
    try:
        assert os.isatty(master)
        runtime.run("start", "tty-sock", check=True)
        out = bytearray()
        deadline = time.monotonic() + 20
        while b"done" not in out and time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:
                    break
                if not data:
                    break
                out += data
    finally:
        os.close(master)
    assert lines(out.decode()) == ["/dev/pts/0", "is-a-tty", "done"]


# --- seccomp --------------------------------------------------------------------

@pytest.mark.parametrize("errno_ret,message", [(None, "Operation not permitted"), (28, "No space left on device")])
def test_seccomp_profile(runtime, bundle, errno_ret, message):
    rule = {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}
    if errno_ret is not None:
        rule["errnoRet"] = errno_ret
    profile = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"], "syscalls": [rule]}
    out = sh_ok(runtime, bundle, "mkdir /tmp/d 2>&1 || true; touch /tmp/f && echo touched",
                root={"readonly": False}, linux={"seccomp": profile})
    assert message in lines(out)[0]
    assert lines(out)[1] == "touched"


# --- hooks ----------------------------------------------------------------------

def test_hooks_run_in_order_with_state(runtime, bundle, tmp_path):
    logdir = tmp_path / "hooklog"
    logdir.mkdir()
    host_log = logdir / "log"

    def hook(name: str, log: str) -> dict:
        script = 'printf "%s %s %s\\n" "$0" "$HOOKVAR" "$(cat)" >> ' + log
        return {"path": "/bin/sh", "args": ["sh", "-c", script, name],
                "env": ["HOOKVAR=var-" + name, "PATH=/usr/bin:/bin"]}

    hooks = {phase: [hook(phase, str(host_log))]
             for phase in ("prestart", "createRuntime", "createContainer", "poststart", "poststop")}
    hooks["startContainer"] = [hook("startContainer", "/hooklog/log")]
    b = bundle(["/bin/sh", "-c", "echo process - - >> /hooklog/log"], hooks=hooks,
               mounts=mounts({"destination": "/hooklog", "type": "bind", "source": str(logdir), "options": ["bind"]}))
    res = runtime.run("run", "--bundle", b.path, "hooked")
    assert res.returncode == 0, res.stderr
    entries = [line.split(" ", 2) for line in host_log.read_text().splitlines()]
    order = [e[0] for e in entries]
    assert sorted(order) == sorted(list(hooks) + ["process"])
    for before, after in [("prestart", "createRuntime"), ("createRuntime", "createContainer"),
                          ("createContainer", "startContainer"), ("createContainer", "poststart"),
                          ("startContainer", "process"), ("process", "poststop"), ("poststart", "poststop")]:
        assert order.index(before) < order.index(after), order
    states = {}
    for name, var, state in entries:
        if name == "process":
            continue
        assert var == "var-" + name
        states[name] = json.loads(state)
    for name, state in states.items():
        assert state["id"] == "hooked", name
        assert state["bundle"] == b.path, name
        assert "ociVersion" in state, name
    # runc 1.1 runs poststart hooks at the end of create, before the process starts (fixed in
    # runc 1.2); berth runs them in start, after the exec fifo is opened, as the spec says
    poststart = "created" if runtime.is_runc else "running"
    expected = {"prestart": "creating", "createRuntime": "creating", "createContainer": "creating",
                "startContainer": "created", "poststart": poststart, "poststop": "stopped"}
    assert {n: s["status"] for n, s in states.items()} == expected
    pids = {states[n]["pid"] for n in ("prestart", "createRuntime", "poststart")}
    assert len(pids) == 1 and pids.pop() > 1  # the host's pid of the container's process
    # hooks that run in the container's namespaces see it from inside its pid namespace
    assert states["createContainer"]["pid"] == states["startContainer"]["pid"] == 1


def test_failing_prestart_hook_fails_create(runtime, bundle):
    hooks = {"prestart": [{"path": "/bin/sh", "args": ["sh", "-c", "echo hook-broke; exit 3"]}]}
    res = run_sh(runtime, bundle, "echo should-not-run", hooks=hooks)
    assert res.returncode != 0
    assert "should-not-run" not in res.stdout
    assert runtime.container_ids() == []


# --- cgroups ----------------------------------------------------------------------

def _cgfile(controller: str, name: str) -> str:
    return f"echo {controller}/{name} $(cat /sys/fs/cgroup/{controller}/{name})"


@needs_v1
def test_cgroup_resources(runtime, bundle):
    resources = {
        "memory": {"limit": 64 * MiB},
        "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0"},
        "pids": {"limit": 64},
    }
    checks = [("memory", "memory.limit_in_bytes", str(64 * MiB)), ("cpu", "cpu.shares", "512"),
              ("cpu", "cpu.cfs_quota_us", "50000"), ("cpu", "cpu.cfs_period_us", "100000"),
              ("cpuset", "cpuset.cpus", "0"), ("pids", "pids.max", "64")]
    if os.path.exists("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes"):
        resources["memory"]["swap"] = 96 * MiB
        checks.append(("memory", "memory.memsw.limit_in_bytes", str(96 * MiB)))
    weight_file = next((f for f in ("blkio.weight", "blkio.bfq.weight")
                        if os.path.exists(f"/sys/fs/cgroup/blkio/{f}")), None)
    if weight_file:
        resources["blockIO"] = {"weight": 300}
        checks.append(("blkio", weight_file, "300"))
    out = sh_ok(runtime, bundle, "; ".join(_cgfile(c, n) for c, n, _ in checks),
                linux={"resources": resources})
    got = dict(line.split(" ", 1) for line in lines(out))
    assert got == {f"{c}/{n}": v for c, n, v in checks}


@needs_v1
def test_pids_limit_stops_a_fork_bomb(runtime, bundle):
    script = ('sh -c "for i in \\$(seq 40); do sleep 30 & echo started; done" 2>&1; kill -9 -1; '
              "read max < /sys/fs/cgroup/pids/pids.max; echo max=$max")
    out = sh_ok(runtime, bundle, script, linux={"resources": {"pids": {"limit": 10}}})
    assert "max=10" in out
    assert 0 < out.count("started") < 10
    assert "fork" in out or "Resource temporarily unavailable" in out


@needs_v1
def test_relative_cgroups_path(runtime, bundle):
    """A relative cgroupsPath is below the runtime's own cgroup in each v1 hierarchy."""
    rel = f"{CGROUP_PARENT.strip('/')}/relative-{secrets.token_hex(3)}"
    own = own_cgroups()
    try:
        out = sh_ok(runtime, bundle, "cat /proc/self/cgroup", linux={"cgroupsPath": rel})
        seen = {}
        for line in lines(out):
            _, ctrls, path = line.split(":", 2)
            for ctrl in ctrls.split(","):
                seen[ctrl] = path
        for ctrl in ("memory", "pids", "cpu"):
            if ctrl in own and ctrl in seen:
                assert seen[ctrl] == os.path.join(own[ctrl], rel), ctrl
    finally:
        for parent in {os.path.join(p, CGROUP_PARENT.strip("/")) for p in own.values()}:
            if parent != CGROUP_PARENT:
                cleanup.remove_cgroup_parent(parent)


# --- what the container cannot reach of the runtime ----------------------------

@pytest.mark.parametrize("preserve", [0, 1])
def test_runtime_fds_are_not_inherited(runtime, bundle, tmp_path, preserve):
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    b = bundle(["/bin/sh", "-c", "ls /proc/self/fd | tr '\\n' ' '; echo; cat <&3 2>/dev/null || echo closed"])
    argv = ["/bin/sh", "-c", 'exec 3<"$0" 7<"$0"; exec "$@"', str(secret),
            *runtime.argv("run", "--bundle", b.path, "--preserve-fds", str(preserve), "fds")]
    res = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    fds, content = lines(res.stdout)
    if preserve:
        assert fds.split() == ["0", "1", "2", "3", "4"]  # 3 is kept, 4 is ls's own
        assert content == "s3cret"
    else:
        assert fds.split() == ["0", "1", "2", "3"]  # 3 is ls's own
        assert content == "closed"


def test_runtime_cwd_and_exe_are_not_reachable(runtime, bundle, tmp_path):
    host_cwd = tmp_path / "hostcwd"
    host_cwd.mkdir()
    (host_cwd / "host-file").write_text("x")
    b = bundle(["/bin/sh", "-c", "readlink /proc/1/cwd; readlink /proc/1/exe; ls /proc/1/cwd; ls /proc/1/fd; true"],
               process={"cwd": "/home/app"})
    res = runtime.run("run", "--bundle", b.path, "reach", cwd=host_cwd)
    assert res.returncode == 0, res.stderr
    cwd, exe, *rest = lines(res.stdout)
    assert cwd == "/home/app"
    assert exe == "/bin/busybox"
    assert "host-file" not in rest
    assert rest[-3:] == ["0", "1", "2"]


def test_foreground_stdio_are_pipes(runtime, bundle):
    out = sh_ok(runtime, bundle, "for fd in 0 1 2; do [ -p /dev/fd/$fd ] && echo pipe; done; "
                                 "echo one; echo two > /dev/stdout; echo three")
    assert lines(out) == ["pipe", "pipe", "pipe", "one", "two", "three"]


def test_detached_stdio_is_chowned_to_the_process_user(runtime, bundle, tmp_path):
    """runc's fixStdioPermissions: a non-root process can reopen its stdio (/dev/stdout)."""
    out_path = tmp_path / "out"
    fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    b = bundle(["/bin/sh", "-c", "echo reopened >> /dev/stdout 2>&1"], process={"user": {"uid": 1000, "gid": 1000}})
    try:
        res = subprocess.run(runtime.argv("run", "--detach", "--bundle", b.path, "chowned"), stdin=subprocess.DEVNULL,
                             stdout=fd, stderr=fd, timeout=30)
    finally:
        os.close(fd)
    assert res.returncode == 0, out_path.read_text()
    deadline = time.monotonic() + 10
    while runtime.state("chowned")["status"] != "stopped" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert os.stat(out_path).st_uid == 1000
    assert lines(out_path.read_text()) == ["reopened"]


def test_foreground_stdio_reopened_by_non_root(runtime, bundle):
    out = sh_ok(runtime, bundle, "echo one; echo two > /dev/stdout; echo three",
                process={"user": {"uid": 1000, "gid": 1000}})
    assert lines(out) == ["one", "two", "three"]


def test_foreground_stdio_copy(runtime, bundle):
    """stdin reaches the container, a large output comes back whole, the exit code too."""
    b = bundle(["/bin/sh", "-c", "read line; echo got $line; yes | head -n 100000 | wc -l; yes x | head -n 50000; "
                                 "echo err >&2; exit 3"])
    res = runtime.run("run", "--bundle", b.path, "copy", input="hello\nrest\n")
    assert res.returncode == 3, res.stderr
    out = res.stdout.splitlines()
    assert out[:2] == ["got hello", "100000"]
    assert out[2:] == ["x"] * 50000
    assert res.stderr == "err\n"


def test_signal_dispositions_are_default(runtime, bundle):
    """Python ignores SIGPIPE and SIGXFSZ; the container's process must not inherit that."""
    out = sh_ok(runtime, bundle, "grep SigIgn /proc/self/status")
    ignored = int(status_fields(out)["SigIgn"], 16)
    assert not ignored & (1 << (signal.SIGPIPE - 1)), hex(ignored)
    assert not ignored & (1 << (signal.SIGXFSZ - 1)), hex(ignored)


@pytest.mark.integration
def test_session_keyring_of_its_own(bundle, runtime) -> None:
    """runc gives each container a session keyring "_ses.<id>"; --no-new-keyring keeps the caller's."""
    b = bundle(["cat", "/proc/keys"], linux={"maskedPaths": []})
    res = runtime.run("run", "--bundle", b.path, "keyring-own", check=True)
    assert "_ses.keyring-own" in res.stdout
    b.new_cgroup()
    b.save()
    res = runtime.run("run", "--no-new-keyring", "--bundle", b.path, "keyring-shared", check=True)
    assert "_ses.keyring-shared" not in res.stdout
