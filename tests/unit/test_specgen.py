"""berth.daemon.specgen: Docker's create options and image config to an OCI spec; plus the
daemon's log reader and the attach detach-keys (no root needed)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from berth.daemon import specgen
from berth.daemon.api._streams import _DetachMatcher, parse_detach_keys
from berth.daemon.logs import LogReader
from berth.daemon.seccomp_default import PROFILE
from berth.errors import InvalidArgument

IMAGE = {"Cmd": ["sh"], "Env": ["PATH=/bin", "A=image"], "WorkingDir": "/srv", "Labels": {"a": "1"},
         "ExposedPorts": {"80/tcp": {}}, "StopSignal": "SIGQUIT"}


@pytest.fixture
def rootfs(tmp_path: Path) -> str:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001:app:/home/app:/bin/sh\n")
    (etc / "group").write_text("root:x:0:\nwheel:x:10:root,app\napp:x:1001:\nextra:x:2000:app\n")
    return str(tmp_path)


def test_merge_takes_the_image_command_unless_the_user_gives_one() -> None:
    config = specgen.merge_config(IMAGE, {"Image": "x"})
    assert config["Cmd"] == ["sh"] and config["Entrypoint"] is None
    assert config["Env"] == ["PATH=/bin", "A=image"] and config["WorkingDir"] == "/srv"
    assert config["StopSignal"] == "SIGQUIT" and config["Labels"] == {"a": "1"}
    user = specgen.merge_config(IMAGE, {"Cmd": ["echo", "hi"], "Env": ["A=user", "B=2"], "Labels": {"b": "2"}})
    assert user["Cmd"] == ["echo", "hi"]
    assert user["Env"] == ["PATH=/bin", "A=user", "B=2"]
    assert user["Labels"] == {"a": "1", "b": "2"}
    entry = specgen.merge_config(IMAGE, {"Entrypoint": ["top"]})
    assert entry["Entrypoint"] == ["top"] and entry["Cmd"] is None  # an entrypoint drops the image's CMD
    assert specgen.command_of(specgen.merge_config(IMAGE, {"Entrypoint": [""], "Cmd": ["ls"]})) == ["ls"]
    with pytest.raises(InvalidArgument, match="No command specified"):
        specgen.merge_config({}, {})


def test_host_config_checks() -> None:
    hc = specgen.check_host_config({"NetworkMode": "default"})
    assert hc["NetworkMode"] == "bridge" and hc["RestartPolicy"] == {"Name": "no", "MaximumRetryCount": 0}
    assert specgen.check_host_config({"RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 2}})[
        "RestartPolicy"]["MaximumRetryCount"] == 2
    for bad in ({"RestartPolicy": {"Name": "sometimes"}}, {"AutoRemove": True, "RestartPolicy": {"Name": "always"}},
                {"Memory": 1024}, {"CapAdd": ["NOT_A_CAP"]}, {"SecurityOpt": ["seccomp={bad"]},
                {"Binds": ["/a:relative"]}, {"Tmpfs": {"rel": ""}}):
        with pytest.raises(InvalidArgument):
            specgen.check_host_config(bad)


def test_capabilities() -> None:
    assert specgen.capabilities({}) == specgen.DEFAULT_CAPS and len(specgen.DEFAULT_CAPS) == 14
    caps = specgen.capabilities({"CapAdd": ["SYS_ADMIN"], "CapDrop": ["NET_RAW", "cap_chown"]})
    assert "CAP_SYS_ADMIN" in caps and "CAP_NET_RAW" not in caps and "CAP_CHOWN" not in caps
    assert specgen.capabilities({"CapDrop": ["ALL"], "CapAdd": ["KILL"]}) == ["CAP_KILL"]
    assert set(specgen.capabilities({"CapAdd": ["ALL"]})) == set(specgen.privileged_caps())


def test_users(rootfs: str) -> None:
    root = specgen.resolve_user(rootfs, "")
    assert (root.uid, root.gid, root.home, root.additional_gids) == (0, 0, "/root", [0, 10])
    app = specgen.resolve_user(rootfs, "app")
    assert (app.uid, app.gid, app.home) == (1000, 1001, "/home/app")
    assert app.additional_gids == [1001, 10, 2000]
    assert (specgen.resolve_user(rootfs, "1000:wheel").gid, specgen.resolve_user(rootfs, "5:6").uid) == (10, 5)
    assert specgen.resolve_user(rootfs, "app", ["extra", "3000"]).additional_gids[-1] == 3000
    with pytest.raises(InvalidArgument, match="unable to find user nobody2"):
        specgen.resolve_user(rootfs, "nobody2")


def test_default_seccomp_follows_capabilities() -> None:
    plain = specgen.oci_seccomp(PROFILE, specgen.DEFAULT_CAPS, "amd64")
    names = {n for rule in plain["syscalls"] if rule["action"] == "SCMP_ACT_ALLOW" and "args" not in rule
             for n in rule["names"]}
    assert plain["defaultAction"] == "SCMP_ACT_ERRNO" and plain["defaultErrnoRet"] == 1
    assert plain["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    assert {"read", "execve", "arch_prctl", "chroot"} <= names
    assert not {"mount", "unshare", "reboot", "kcmp", "s390_runtime_instr"} & names
    assert any(r["names"] == ["clone"] and r["args"][0]["op"] == "SCMP_CMP_MASKED_EQ" for r in plain["syscalls"])
    admin = specgen.oci_seccomp(PROFILE, [*specgen.DEFAULT_CAPS, "CAP_SYS_ADMIN"], "amd64")
    admin_names = {n for rule in admin["syscalls"] for n in rule["names"] if rule["action"] == "SCMP_ACT_ALLOW"}
    assert {"mount", "unshare", "clone3"} <= admin_names
    assert not any(r["names"] == ["clone3"] and r["action"] == "SCMP_ACT_ERRNO" for r in admin["syscalls"])


def test_generate(rootfs: str) -> None:
    config = specgen.merge_config(IMAGE, {"Cmd": ["echo", "x"], "Tty": True, "User": "app"})
    hc = specgen.check_host_config({"ReadonlyRootfs": True, "Memory": 64 << 20, "NanoCpus": 500_000_000,
                                    "PidsLimit": 50, "Tmpfs": {"/run": "size=1m,exec"},
                                    "Binds": [f"{rootfs}:/data:ro"]})
    spec = specgen.generate(specgen.SpecInput("c" * 64, config, hc, rootfs, "/berth",
                                              {"/etc/hosts": "/h/hosts"}))
    process = spec["process"]
    assert process["args"] == ["echo", "x"] and process["terminal"] and process["cwd"] == "/srv"
    assert process["user"] == {"uid": 1000, "gid": 1001, "additionalGids": [1001, 10, 2000]}
    assert "HOSTNAME=" + "c" * 12 in process["env"] and "PATH=/bin" in process["env"]
    assert "TERM=xterm" in process["env"] and "HOME=/home/app" in process["env"]
    assert process["capabilities"]["effective"] == [] and len(process["capabilities"]["bounding"]) == 14
    assert spec["hostname"] == "c" * 12 and spec["root"] == {"path": "rootfs", "readonly": True}
    linux = spec["linux"]
    assert linux["cgroupsPath"] == "/berth/" + "c" * 64
    assert {n["type"] for n in linux["namespaces"]} == {"pid", "ipc", "uts", "mount", "network"}
    assert linux["resources"]["memory"]["limit"] == 64 << 20
    assert linux["resources"]["cpu"] == {"period": 100000, "quota": 50000}
    assert linux["resources"]["pids"] == {"limit": 50}
    assert "/proc/kcore" in linux["maskedPaths"] and "/proc/sys" in linux["readonlyPaths"]
    assert linux["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO"
    mounts = {m["destination"]: m for m in spec["mounts"]}
    assert {"/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup"} <= set(mounts)
    assert mounts["/data"]["options"][:2] == ["rbind", "ro"] and mounts["/etc/hosts"]["source"] == "/h/hosts"
    assert "exec" not in mounts["/run"]["options"] and "noexec" not in mounts["/run"]["options"]
    json.dumps(spec)


def test_generate_privileged_host_network_init(rootfs: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(specgen, "find_init", lambda: "/usr/bin/tini-static")
    monkeypatch.setattr(specgen, "host_devices", lambda: [])
    config = specgen.merge_config({}, {"Cmd": ["true"]})
    hc = {"Privileged": True, "NetworkMode": "host", "Init": True, "SecurityOpt": ["no-new-privileges"]}
    spec = specgen.generate(specgen.SpecInput("d" * 64, config, hc, rootfs))
    assert spec["process"]["args"] == ["/sbin/docker-init", "--", "true"]
    assert spec["process"]["noNewPrivileges"] is True
    assert "network" not in {n["type"] for n in spec["linux"]["namespaces"]}
    assert "seccomp" not in spec["linux"] and "maskedPaths" not in spec["linux"]
    assert any(m["destination"] == "/sbin/docker-init" for m in spec["mounts"])
    unconfined = specgen.generate(specgen.SpecInput("d" * 64, config, {"SecurityOpt": ["seccomp=unconfined"]},
                                                    rootfs))
    assert "seccomp" not in unconfined["linux"]


def test_exec_process(rootfs: str) -> None:
    config = specgen.merge_config({}, {"Cmd": ["sleep", "1"], "Env": ["A=1"]})
    spec = specgen.generate(specgen.SpecInput("e" * 64, config, {}, rootfs))
    process = specgen.exec_process(spec, {"Cmd": ["id"], "Env": ["A=2"], "User": "app", "WorkingDir": "/tmp",
                                          "Tty": True}, rootfs)
    assert process["args"] == ["id"] and process["cwd"] == "/tmp" and process["terminal"]
    assert process["user"]["uid"] == 1000 and "A=2" in process["env"] and "A=1" not in process["env"]
    assert "HOME=/home/app" in process["env"] and process["capabilities"]["effective"] == []


def test_detach_keys() -> None:
    assert parse_detach_keys("") == b"\x10\x11"
    assert parse_detach_keys("ctrl-a,x,ctrl-@,ctrl-[") == b"\x01x\x00\x1b"
    with pytest.raises(InvalidArgument):
        parse_detach_keys("ctrl-1")
    matcher = _DetachMatcher(b"\x10\x11")
    assert matcher.feed(b"ab\x10") == (b"ab", False)
    assert matcher.feed(b"c") == (b"\x10c", False)
    assert matcher.feed(b"\x10") == (b"", False)
    assert matcher.feed(b"\x11rest") == (b"", True)


def _line(text: str, stream: str, t: str) -> str:
    return json.dumps({"log": text, "stream": stream, "time": t}) + "\n"


def test_log_reader(tmp_path: Path) -> None:
    log = tmp_path / "c-json.log"
    (tmp_path / "c-json.log.1").write_text(_line("old\n", "stdout", "2024-01-01T00:00:01.000000000Z"))
    log.write_text(_line("a\n", "stdout", "2024-01-01T00:00:02.000000000Z")
                   + _line("b\n", "stderr", "2024-01-01T00:00:03.500000000Z")
                   + _line("c\n", "stdout", "2024-01-01T00:00:04.000000000Z"))

    def read(**kwargs: object) -> list:
        async def collect() -> list:
            return [item async for item in LogReader(str(log), **kwargs).entries()]  # type: ignore[arg-type]
        return asyncio.run(collect())

    assert read() == [(1, b"old\n"), (1, b"a\n"), (2, b"b\n"), (1, b"c\n")]
    assert read(tail=2) == [(2, b"b\n"), (1, b"c\n")]
    assert read(stderr=False, tail=2) == [(1, b"a\n"), (1, b"c\n")]
    assert read(since=1704067203_000000000) == [(2, b"b\n"), (1, b"c\n")]
    assert read(until=1704067203_000000000) == [(1, b"old\n"), (1, b"a\n")]
    assert read(tail=1, timestamps=True) == [(1, b"2024-01-01T00:00:04.000000000Z c\n")]


def test_log_reader_follows_until_done(tmp_path: Path) -> None:
    log = tmp_path / "f-json.log"
    log.write_text(_line("first\n", "stdout", "2024-01-01T00:00:01.000000000Z"))
    done = False

    async def scenario() -> list:
        nonlocal done
        got = []

        async def writer() -> None:
            nonlocal done
            await asyncio.sleep(0.1)
            with open(log, "a") as f:
                f.write(_line("second\n", "stdout", "2024-01-01T00:00:02.000000000Z"))
            await asyncio.sleep(0.1)
            log.rename(str(log) + ".1")  # rotation while following
            log.write_text(_line("third\n", "stdout", "2024-01-01T00:00:03.000000000Z"))
            await asyncio.sleep(0.1)
            done = True

        task = asyncio.ensure_future(writer())
        async for item in LogReader(str(log)).entries(follow=True, done=lambda: done):
            got.append(item[1])
        await task
        return got

    assert asyncio.run(asyncio.wait_for(scenario(), 5)) == [b"first\n", b"second\n", b"third\n"]
