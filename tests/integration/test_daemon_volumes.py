"""berthd's volumes, driven by the real docker CLI (and the raw API for status codes):
named and anonymous volumes, copy-up, -v/--mount/--volumes-from, rm -v, prune, df.

One berthd for the module (``berthd`` fixture: temporary roots, its own cgroup parent, the
busybox image); every test names its volumes and containers after itself and removes
them, so the tests do not see each other's.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.daemon import Berthd, berthd, busybox_tar  # noqa: F401 - fixture

pytestmark = pytest.mark.integration

ANONYMOUS = "com.docker.volume.anonymous"
BERTH = os.path.join(os.path.dirname(sys.executable), "berth")


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    return proc.stdout


def volume(d: Berthd, name: str) -> dict:
    return json.loads(ok(d.docker("volume", "inspect", name)))[0]


def names(d: Berthd, *filters: str) -> list[str]:
    args = [a for f in filters for a in ("--filter", f)]
    return ok(d.docker("volume", "ls", "-q", *args)).split()


def mounts(d: Berthd, container: str) -> dict[str, dict]:
    return {m["Destination"]: m for m in json.loads(ok(d.docker("inspect", "-f", "{{json .Mounts}}", container)))}


def is_mount(path: str) -> bool:
    """From mountinfo: a bind mount within one filesystem is a mount too."""
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


def uniq(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def test_volume_create_ls_inspect_rm(berthd: Berthd) -> None:
    name = uniq("vol")
    assert ok(berthd.docker("volume", "create", "--label", "team=blue", "--label", "tier", name)).strip() == name
    vol = volume(berthd, name)
    assert (vol["Name"], vol["Driver"], vol["Scope"], vol["Labels"]) == (name, "local", "local",
                                                                         {"team": "blue", "tier": ""})
    assert vol["Mountpoint"] == str(berthd.data_root / "volumes" / name / "_data")
    assert os.path.isdir(vol["Mountpoint"]) and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", vol["CreatedAt"])
    # creating an existing name answers the existing volume
    ok(berthd.docker("volume", "create", "--label", "other=1", name))
    assert volume(berthd, name)["Labels"] == {"team": "blue", "tier": ""}
    assert name in names(berthd, "label=team=blue") and name not in names(berthd, "label=team=red")
    assert name in names(berthd, f"name={name}", "driver=local", "dangling=true")
    table = ok(berthd.docker("volume", "ls", "--filter", f"name={name}"))
    assert table.splitlines()[0].split() == ["DRIVER", "VOLUME", "NAME"] and f"local     {name}" in table
    assert ok(berthd.docker("volume", "rm", name)).strip() == name
    proc = berthd.docker("volume", "inspect", name)
    assert proc.returncode == 1 and f"get {name}: no such volume" in proc.stderr
    assert berthd.docker("volume", "rm", name).returncode == 1
    assert berthd.docker("volume", "rm", "-f", name).returncode == 0
    assert not os.path.exists(berthd.data_root / "volumes" / name)
    # bad input: a clear error, nothing made
    for args, message in ((["bad/name"], "includes invalid characters"),
                          (["-d", "flocker", uniq("p")], 'plugin "flocker" not found'),
                          (["-o", "bogus=1", uniq("o")], 'invalid option: "bogus"'),
                          (["-o", "type=tmpfs", uniq("o")], 'missing required option: "device"')):
        proc = berthd.docker("volume", "create", *args)
        assert proc.returncode == 1 and message in proc.stderr, proc.stderr
    status, body = berthd.api.post("/volumes/create", {"Name": 5})
    assert status == 400 and "cannot unmarshal number" in body["message"]


def test_anonymous_volume_create_and_events(berthd: Berthd) -> None:
    status, vol = berthd.api.post("/volumes/create", {})
    assert status == 201 and re.fullmatch(r"[0-9a-f]{64}", vol["Name"]) and vol["Labels"] == {ANONYMOUS: ""}
    status, _ = berthd.api.delete(f"/volumes/{vol['Name']}")
    assert status == 204
    now = time.time()
    status, raw = berthd.api.request("GET", "/events", raw=True, since=f"{now - 60:.9f}", until=f"{now:.9f}",
                                     filters=json.dumps({"type": ["volume"]}))
    seen = [(e["Action"], e["Actor"]["ID"]) for e in map(json.loads, raw.decode().splitlines())]
    assert ("create", vol["Name"]) in seen and ("destroy", vol["Name"]) in seen


def test_named_volume_persists_across_containers(berthd: Berthd) -> None:
    name = uniq("data")
    ok(berthd.docker("run", "--rm", "-v", f"{name}:/data", berthd.image, "sh", "-c",
                     "echo persisted > /data/file; mkdir /data/dir"))
    assert volume(berthd, name)["Driver"] == "local"  # created on demand
    assert ok(berthd.docker("run", "--rm", "-v", f"{name}:/other:ro", berthd.image, "cat", "/other/file")) == \
        "persisted\n"
    with open(os.path.join(volume(berthd, name)["Mountpoint"], "file")) as f:
        assert f.read() == "persisted\n"
    ok(berthd.docker("volume", "rm", name))


def test_copy_up_of_image_content(berthd: Berthd) -> None:
    etc, home, nocopy = uniq("etcvol"), uniq("homevol"), uniq("nocopy")
    ok(berthd.docker("run", "--rm", "-v", f"{etc}:/etc", "-v", f"{home}:/home", berthd.image, "true"))
    etc_dir = volume(berthd, etc)["Mountpoint"]
    home_dir = volume(berthd, home)["Mountpoint"]
    assert "root:x:0:0" in Path(etc_dir, "passwd").read_text()
    st = os.lstat(os.path.join(home_dir, "app"))  # owner and mode kept
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1000, 1000, 0o755)
    out = ok(berthd.docker("run", "--rm", "-v", f"{etc}:/x", berthd.image, "sh", "-c", "grep -c root /x/passwd"))
    assert int(out) >= 1
    # no copy into a volume that is not empty, nor with nocopy, nor into a bind
    Path(etc_dir, "passwd").write_text("changed\n")
    ok(berthd.docker("run", "--rm", "-v", f"{etc}:/etc", berthd.image, "true"))
    assert Path(etc_dir, "passwd").read_text() == "changed\n"
    ok(berthd.docker("run", "--rm", "-v", f"{nocopy}:/home:nocopy", berthd.image, "true"))
    assert os.listdir(volume(berthd, nocopy)["Mountpoint"]) == []
    host = berthd.base / uniq("bind")
    host.mkdir()
    ok(berthd.docker("run", "--rm", "-v", f"{host}:/home", berthd.image, "true"))
    assert os.listdir(host) == []
    ok(berthd.docker("volume", "rm", etc, home, nocopy))


def test_symlinks_and_modes_copied(berthd: Berthd) -> None:
    name, tmp = uniq("binvol"), uniq("tmpvol")
    out = ok(berthd.docker("run", "--rm", "-v", f"{name}:/bin", "-v", f"{tmp}:/tmp", berthd.image,
                           "sh", "-c", "readlink /bin/sh; stat -c %a /tmp"))
    assert out.split() == ["busybox", "1777"]
    assert os.readlink(os.path.join(volume(berthd, name)["Mountpoint"], "ls")) == "busybox"
    ok(berthd.docker("volume", "rm", name, tmp))


def test_anonymous_volumes_and_rm_v(berthd: Berthd) -> None:
    c1, c2 = uniq("anon"), uniq("anon")
    ok(berthd.docker("create", "--name", c1, "-v", "/data", "--mount", "type=volume,target=/more", berthd.image,
                     "true"))
    points = mounts(berthd, c1)
    anon = points["/data"]["Name"]
    assert re.fullmatch(r"[0-9a-f]{64}", anon) and points["/data"]["Type"] == "volume"
    assert (points["/data"]["Mode"], points["/more"]["Mode"]) == ("", "z")
    assert volume(berthd, anon)["Labels"] == {ANONYMOUS: ""}
    assert anon in names(berthd, "dangling=false")
    ok(berthd.docker("rm", "-v", c1))
    assert anon not in names(berthd) and points["/more"]["Name"] not in names(berthd)
    # without -v the volume stays, and prune (anonymous only by default) takes it
    named = uniq("keepme")
    ok(berthd.docker("create", "--name", c2, "-v", "/data", "-v", f"{named}:/named", berthd.image, "true"))
    anon2 = mounts(berthd, c2)["/data"]["Name"]
    ok(berthd.docker("rm", c2))
    assert anon2 in names(berthd, "dangling=true")
    deleted = ok(berthd.docker("volume", "prune", "-f"))
    assert anon2 in deleted and named not in deleted and named in names(berthd)
    berthd.api.version = "v1.41"  # before 1.42, prune takes named volumes too (as dockerd)
    try:
        status, body = berthd.api.post("/volumes/prune", filters=json.dumps({"label": [f"nope={named}"]}))
        assert status == 200 and body["VolumesDeleted"] is None
        status, body = berthd.api.post("/volumes/prune")
        assert status == 200 and named in body["VolumesDeleted"]
    finally:
        berthd.api.version = "v1.43"


def test_run_rm_removes_anonymous_volumes(berthd: Berthd) -> None:
    named = uniq("stays")
    before = set(names(berthd))
    ok(berthd.docker("run", "--rm", "-v", "/scratch", "-v", f"{named}:/n", berthd.image, "true"))
    assert set(names(berthd)) - before == {named}
    ok(berthd.docker("volume", "rm", named))


def test_image_volume_gets_anonymous_volume(berthd: Berthd) -> None:
    image = "berthtest/withvolume:latest"
    status, _ = berthd.api.request("POST", "/images/create", busybox_tar(), raw=True,
                                   headers={"Content-Type": "application/x-tar"}, fromSrc="-",
                                   repo="berthtest/withvolume", tag="latest", changes="VOLUME /home")
    assert status == 200
    name = uniq("imgvol")
    ok(berthd.docker("create", "--name", name, image, "true"))
    point = mounts(berthd, name)["/home"]
    assert point["Type"] == "volume" and re.fullmatch(r"[0-9a-f]{64}", point["Name"])
    ok(berthd.docker("start", "-a", name))
    assert os.path.isdir(os.path.join(point["Source"], "app"))  # copy-up of the image's /home
    # a bind at the same path replaces the image's volume
    other = uniq("imgvol")
    ok(berthd.docker("create", "--name", other, "-v", f"{berthd.base}:/home", image, "true"))
    assert mounts(berthd, other)["/home"]["Type"] == "bind"
    ok(berthd.docker("rm", "-v", name, other))
    assert point["Name"] not in names(berthd)


def test_volumes_from(berthd: Berthd) -> None:
    src, vol = uniq("src"), uniq("shared")
    host = berthd.base / uniq("host")
    host.mkdir()
    ok(berthd.docker("run", "--name", src, "-v", f"{vol}:/shared", "-v", "/anon", "-v", f"{host}:/host",
                     berthd.image, "sh", "-c", "echo a > /shared/a; echo b > /anon/b; echo c > /host/c"))
    out = ok(berthd.docker("run", "--rm", "--volumes-from", src, berthd.image, "sh", "-c",
                           "cat /shared/a /anon/b /host/c; echo more > /shared/more"))
    assert out.split() == ["a", "b", "c"]
    out = ok(berthd.docker("run", "--rm", "--volumes-from", f"{src}:ro", berthd.image, "sh", "-c",
                           "cat /shared/more; touch /shared/x 2>/dev/null || echo read-only"))
    assert out.split() == ["more", "read-only"]
    # (a 404 from create makes the docker CLI pull the image, as with dockerd: --pull never)
    proc = berthd.docker("run", "--rm", "--pull", "never", "--volumes-from", "no-such-container", berthd.image,
                         "true")
    assert proc.returncode == 125 and "No such container: no-such-container" in proc.stderr
    ok(berthd.docker("rm", "-v", src))
    ok(berthd.docker("volume", "rm", vol))


def test_mount_tmpfs_bind_readonly_and_propagation(berthd: Berthd) -> None:
    host = berthd.base / uniq("ro")
    host.mkdir()
    (host / "f").write_text("host\n")
    name = uniq("mnt")
    out = ok(berthd.docker(
        "run", "--name", name, "--mount", "type=tmpfs,target=/t,tmpfs-size=1m,tmpfs-mode=1770",
        "--mount", f"type=bind,source={host},target=/b,readonly", "--mount",
        f"type=bind,src={host},dst=/p,bind-propagation=rslave", berthd.image, "sh", "-c",
        "grep ' /t ' /proc/mounts; stat -c %a /t; cat /b/f; touch /b/x 2>/dev/null || echo ro; echo rw > /t/x"))
    lines = out.splitlines()
    assert "tmpfs" in lines[0] and "size=1024k" in lines[0] and lines[1:] == ["1770", "host", "ro"]
    points = mounts(berthd, name)
    assert points["/t"] == {"Type": "tmpfs", "Source": "", "Destination": "/t", "Mode": "", "RW": True,
                            "Propagation": ""}
    assert points["/b"] == {"Type": "bind", "Source": str(host), "Destination": "/b", "Mode": "", "RW": False,
                            "Propagation": "rprivate"}
    assert points["/p"]["Propagation"] == "rslave"
    ok(berthd.docker("rm", name))
    proc = berthd.docker("run", "--rm", "--mount", f"type=bind,source={host}/nope,target=/x", berthd.image, "true")
    assert proc.returncode == 125 and "bind source path does not exist" in proc.stderr
    proc = berthd.docker("run", "--rm", "-v", f"{host}:/x", "--mount", "type=tmpfs,target=/x", berthd.image, "true")
    assert proc.returncode == 125 and "Duplicate mount point: /x" in proc.stderr


def test_driver_options_tmpfs_volume(berthd: Berthd) -> None:
    name = uniq("tmpfsvol")
    ok(berthd.docker("volume", "create", "-o", "type=tmpfs", "-o", "device=tmpfs", "-o", "o=size=2m", name))
    assert volume(berthd, name)["Options"] == {"type": "tmpfs", "device": "tmpfs", "o": "size=2m"}
    out = ok(berthd.docker("run", "--rm", "-v", f"{name}:/v", berthd.image, "sh", "-c",
                           "grep ' /v ' /proc/mounts; echo x > /v/f; ls /v"))
    assert "tmpfs" in out and "size=2048k" in out and "f" in out.split()
    assert not is_mount(volume(berthd, name)["Mountpoint"])  # unmounted after the last container
    ok(berthd.docker("volume", "rm", name))


def test_driver_options_bind_volume_keeps_host_files(berthd: Berthd) -> None:
    host = berthd.base / uniq("hostdir")
    host.mkdir()
    (host / "mine").write_text("host data\n")
    name = uniq("bindvol")
    ok(berthd.docker("volume", "create", "-o", "type=none", "-o", "o=bind", "-o", f"device={host}", name))
    out = ok(berthd.docker("run", "--rm", "-v", f"{name}:/b", berthd.image, "sh", "-c",
                           "cat /b/mine; echo new > /b/new"))
    assert out == "host data\n" and (host / "new").read_text() == "new\n"
    assert not is_mount(volume(berthd, name)["Mountpoint"])
    ok(berthd.docker("volume", "rm", name))
    assert sorted(os.listdir(host)) == ["mine", "new"]  # removing the volume never touches the host's files


def test_parallel_starts_copy_up_once(berthd: Berthd) -> None:
    name = uniq("par")
    with ThreadPoolExecutor(4) as pool:
        procs = list(pool.map(lambda _: berthd.docker("run", "--rm", "-v", f"{name}:/etc", berthd.image, "sh", "-c",
                                                      "grep -c root /etc/passwd"), range(4)))
    assert [p.returncode for p in procs] == [0] * 4, [p.stderr for p in procs]
    assert all(int(p.stdout) >= 1 for p in procs)
    ok(berthd.docker("volume", "rm", name))


def test_in_use_volume_is_not_removed(berthd: Berthd) -> None:
    name, ctr, scope = uniq("busy"), uniq("user"), uniq("scope")
    cid = ok(berthd.docker("create", "--name", ctr, "--mount",
                           f"type=volume,source={name},target=/v,volume-label=scope={scope}", berthd.image,
                           "true")).strip()
    assert volume(berthd, name)["Labels"] == {"scope": scope}  # made on demand, with --mount's labels
    status, body = berthd.api.delete(f"/volumes/{name}", force=1)
    assert status == 409 and body["message"] == f"remove {name}: volume is in use - [{cid}]"
    proc = berthd.docker("volume", "rm", name)
    assert proc.returncode == 1 and f"remove {name}: volume is in use - [{cid}]" in proc.stderr
    assert name not in ok(berthd.docker("volume", "prune", "-af", "--filter", f"label=scope={scope}"))
    assert ok(berthd.docker("ps", "-a", "-q", "--no-trunc", "--filter", f"volume={name}")).split() == [cid]
    # as docker-compose down -v does: the containers first, then the named volume
    ok(berthd.docker("rm", ctr))
    status, _ = berthd.api.delete(f"/volumes/{name}")
    assert status == 204 and name not in names(berthd)


def test_system_df_shows_volumes(berthd: Berthd) -> None:
    name, ctr = uniq("dfvol"), uniq("df")
    ok(berthd.docker("run", "--name", ctr, "-v", f"{name}:/v", berthd.image, "sh", "-c",
                     "head -c 3000 /dev/zero > /v/f"))
    status, df = berthd.api.get("/system/df")
    assert status == 200
    entry = next(v for v in df["Volumes"] if v["Name"] == name)
    assert entry["UsageData"] == {"Size": 3000, "RefCount": 1}
    out = ok(berthd.docker("system", "df", "-v"))
    assert "Local Volumes space usage:" in out
    row = next(line for line in out.splitlines() if line.startswith(name))
    assert row.split()[1:] == ["1", "3kB"]
    ok(berthd.docker("rm", ctr))
    ok(berthd.docker("volume", "rm", name))


def test_berth_cli_volumes(berthd: Berthd) -> None:
    """Berth's own CLI: volume create/ls/inspect/rm/prune, -v, --mount, --volumes-from, rm -v."""
    def berth(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([BERTH, "-H", f"unix://{berthd.socket}", *args], capture_output=True, text=True,
                              timeout=60, stdin=subprocess.DEVNULL)

    name, src = uniq("bv"), uniq("bsrc")
    assert ok(berth("volume", "create", "--label", "via=berth", name)).strip() == name
    assert ok(berth("volume", "ls", "-q", "--filter", "label=via=berth")).split() == [name]
    assert ok(berth("volume", "inspect", "-f", "{{.Driver}} {{.Labels.via}}", name)).strip() == "local berth"
    ok(berth("create", "--name", src, "-v", f"{name}:/d", "-v", "/anon", berthd.image, "true"))
    anon = mounts(berthd, src)["/anon"]["Name"]
    out = ok(berth("run", "--rm", "--volumes-from", f"{src}:ro", "--mount", "type=tmpfs,dst=/t,tmpfs-size=1m",
                   berthd.image, "sh", "-c", "grep -c ' /t tmpfs' /proc/mounts; touch /d/x 2>/dev/null || echo ro"))
    assert out.split() == ["1", "ro"]
    proc = berth("volume", "rm", name)
    assert proc.returncode == 1 and "volume is in use" in proc.stderr
    ok(berth("rm", "-v", src))
    assert anon not in names(berthd)
    assert name in ok(berth("volume", "prune", "-a", "-f", "--filter", "label=via=berth"))
    assert name not in names(berthd)


def test_volumes_survive_a_daemon_crash(berthd: Berthd) -> None:
    """Records and references come back after SIGKILL; what a crash left half-made is removed."""
    name, ctr = uniq("durable"), uniq("holder")
    ok(berthd.docker("run", "--name", ctr, "-v", f"{name}:/d", berthd.image, "sh", "-c", "echo kept > /d/f"))
    orphan = berthd.data_root / "volumes" / uniq("orphan") / "_data"
    orphan.mkdir(parents=True)
    berthd.kill()
    berthd.start()
    assert not orphan.parent.exists()
    assert name in names(berthd, "dangling=false")
    proc = berthd.docker("volume", "rm", name)
    assert proc.returncode == 1 and "volume is in use" in proc.stderr
    assert ok(berthd.docker("run", "--rm", "-v", f"{name}:/d", berthd.image, "cat", "/d/f")) == "kept\n"
    ok(berthd.docker("rm", ctr))
    ok(berthd.docker("volume", "rm", name))
