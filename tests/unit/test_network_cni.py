"""berth.network.cni: the CNI 1.0.0 execution protocol, driven against recording plugins.

The plugins here are small Python programs that log their environment and stdin and
answer as the spec says (chained results, error JSON); tests/integration/
test_network_real.py runs the real ones.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from berth.errors import InvalidArgument, NotFound, Unavailable
from berth.network.cni import CNI, NetworkConfigList, PluginError

PLUGIN = r'''#!{python}
import json, os, sys, time
conf = json.load(sys.stdin) if os.environ.get("CNI_COMMAND") != "VERSION" else {{}}
cmd = os.environ["CNI_COMMAND"]
if cmd == "VERSION":
    print(json.dumps({{"cniVersion": "1.0.0", "supportedVersions": ["0.4.0", "1.0.0"]}}))
    sys.exit(0)
env = {{k: v for k, v in os.environ.items() if k.startswith("CNI_")}}
with open(conf["log"], "a") as f:
    f.write(json.dumps({{"type": conf["type"], "env": env, "conf": conf}}) + "\n")
fail = conf.get("fail", {{}})
if fail.get("command") == cmd:
    if fail.get("crash"):
        sys.stderr.write("panic: something\nsecond line of the panic\n")
        sys.exit(2)
    if fail.get("sleep"):
        time.sleep(fail["sleep"])
    print(json.dumps({{"cniVersion": conf["cniVersion"], "code": fail.get("code", 999),
                      "msg": fail.get("msg", "it failed"), "details": fail.get("details", "")}}))
    sys.exit(1)
if cmd == "ADD":
    result = conf.get("prevResult") or {{"cniVersion": conf["cniVersion"], "interfaces": [], "ips": []}}
    result["interfaces"].append({{"name": os.environ["CNI_IFNAME"] if conf.get("sandbox") else conf["type"],
                                 "mac": "02:00:00:00:00:0%d" % len(result["interfaces"]),
                                 **({{"sandbox": os.environ["CNI_NETNS"]}} if conf.get("sandbox") else {{}})}})
    if conf.get("ip"):
        result["ips"].append({{"address": conf["ip"], "gateway": conf.get("gw"),
                              "interface": len(result["interfaces"]) - 1}})
    print(json.dumps(result))
'''


@pytest.fixture
def env(tmp_path: Path) -> dict[str, Any]:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name in ("fake-a", "fake-b", "fake-c"):
        path = bindir / name
        path.write_text(PLUGIN.format(python=sys.executable))
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    netns = tmp_path / "netns-file"  # any existing path: the fake plugins never open it
    netns.write_text("")
    log = tmp_path / "log.jsonl"
    return {"bin": str(bindir), "netns": str(netns), "log": str(log), "state": str(tmp_path / "state")}


def conflist(env: dict[str, Any], **extra: dict[str, Any]) -> NetworkConfigList:
    plugins = [
        {"type": "fake-a", "log": env["log"], "ip": "10.213.9.2/24", "gw": "10.213.9.1", "sandbox": True,
         "capabilities": {"ips": True}},
        {"type": "fake-b", "log": env["log"], "capabilities": {"portMappings": True, "bandwidth": False}},
        {"type": "fake-c", "log": env["log"]},
    ]
    for p in plugins:
        p.update(extra.get(p["type"], {}))
    return NetworkConfigList({"cniVersion": "1.0.0", "name": "testnet", "plugins": plugins})


def calls(env: dict[str, Any]) -> list[dict[str, Any]]:
    if not os.path.exists(env["log"]):
        return []
    with open(env["log"]) as f:
        lines = [json.loads(line) for line in f]
    os.unlink(env["log"])
    return lines


PORTS = [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]


def test_add_chains_results_and_caches(env: dict[str, Any]) -> None:
    cni = CNI(env["state"], plugin_dirs=[env["bin"]])
    result = cni.add(conflist(env), "c0ffee", env["netns"], "eth0", args={"K8S_POD_NAME": "x"},
                     capability_args={"portMappings": PORTS, "bandwidth": {"rate": 1}, "ips": ["10.213.9.2"]})
    log = calls(env)
    assert [c["type"] for c in log] == ["fake-a", "fake-b", "fake-c"]
    for c in log:
        assert c["env"] == {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c0ffee", "CNI_NETNS": env["netns"],
                            "CNI_IFNAME": "eth0", "CNI_PATH": env["bin"],
                            "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=x"}
        assert c["conf"]["name"] == "testnet" and c["conf"]["cniVersion"] == "1.0.0"
    assert "prevResult" not in log[0]["conf"]
    assert log[1]["conf"]["prevResult"]["interfaces"][0]["name"] == "eth0"
    assert len(log[2]["conf"]["prevResult"]["interfaces"]) == 2
    # runtimeConfig: only the capabilities each plugin declares (and enables)
    assert log[0]["conf"]["runtimeConfig"] == {"ips": ["10.213.9.2"]}
    assert log[1]["conf"]["runtimeConfig"] == {"portMappings": PORTS}
    assert "runtimeConfig" not in log[2]["conf"]
    # the result is the last plugin's, with typed views
    assert [i["name"] for i in result.interfaces] == ["eth0", "fake-b", "fake-c"]
    assert [(str(ip.address), str(ip.gateway), ip.interface) for ip in result.ips] == [
        ("10.213.9.2/24", "10.213.9.1", "eth0")]
    assert result.mac("eth0") == "02:00:00:00:00:00"
    cached = cni.cached("testnet", "c0ffee", "eth0")
    assert cached is not None and cached.result.raw == result.raw
    assert cached.capability_args["portMappings"] == PORTS and cached.netns == env["netns"]
    assert [a.container_id for a in cni.attachments()] == ["c0ffee"]
    assert cni.attachments(container_id="other") == []
    assert not [n for n in os.listdir(os.path.join(env["state"], "results")) if n.startswith(".")]


def test_del_runs_in_reverse_with_cached_prev_result_and_args(env: dict[str, Any]) -> None:
    cni = CNI(env["state"], plugin_dirs=[env["bin"]])
    conf = conflist(env)
    result = cni.add(conf, "c0ffee", env["netns"], capability_args={"portMappings": PORTS})
    calls(env)
    cni.delete(conf, "c0ffee", env["netns"])
    log = calls(env)
    assert [c["type"] for c in log] == ["fake-c", "fake-b", "fake-a"]
    for c in log:
        assert c["env"]["CNI_COMMAND"] == "DEL"
        assert c["conf"]["prevResult"] == result.raw
    assert log[1]["conf"]["runtimeConfig"] == {"portMappings": PORTS}  # portmap needs them to clean up
    assert cni.cached("testnet", "c0ffee", "eth0") is None
    # again, without a cache and with the namespace gone: still runs, no prevResult, CNI_NETNS=""
    os.unlink(env["netns"])
    cni.delete(conf, "c0ffee", env["netns"])
    log = calls(env)
    assert [c["type"] for c in log] == ["fake-c", "fake-b", "fake-a"]
    assert all("prevResult" not in c["conf"] and c["env"]["CNI_NETNS"] == "" for c in log)


def test_failed_add_is_undone_and_reported_in_one_line(env: dict[str, Any]) -> None:
    cni = CNI(env["state"], plugin_dirs=[env["bin"]])
    conf = conflist(env, **{"fake-b": {"fail": {"command": "ADD", "code": 7, "msg": "invalid config",
                                               "details": "field x:\nmust be set"}}})
    with pytest.raises(PluginError) as info:
        cni.add(conf, "c0ffee", env["netns"], capability_args={"portMappings": PORTS})
    assert str(info.value) == ("cni plugin fake-b ADD on network testnet failed: invalid config: field x: "
                               "must be set (code 7)")
    assert info.value.code == 7 and "\n" not in str(info.value)
    log = calls(env)
    assert [(c["type"], c["env"]["CNI_COMMAND"]) for c in log] == [
        ("fake-a", "ADD"), ("fake-b", "ADD"),
        ("fake-c", "DEL"), ("fake-b", "DEL"), ("fake-a", "DEL")]
    assert log[2]["conf"]["prevResult"]["interfaces"][0]["name"] == "eth0"  # what fake-a made
    assert cni.attachments() == []


def test_failed_del_runs_every_plugin_and_keeps_the_cache(env: dict[str, Any]) -> None:
    cni = CNI(env["state"], plugin_dirs=[env["bin"]])
    cni.add(conflist(env), "c0ffee", env["netns"])
    calls(env)
    conf = conflist(env, **{"fake-b": {"fail": {"command": "DEL", "msg": "iptables is locked"}}})
    with pytest.raises(PluginError, match="fake-b DEL .*iptables is locked"):
        cni.delete(conf, "c0ffee", env["netns"])
    assert [c["type"] for c in calls(env)] == ["fake-c", "fake-b", "fake-a"]
    assert cni.cached("testnet", "c0ffee", "eth0") is not None  # DEL can be retried
    cni.delete(conflist(env), "c0ffee", env["netns"])
    assert cni.attachments() == []


def test_check_uses_the_cached_result(env: dict[str, Any]) -> None:
    cni = CNI(env["state"], plugin_dirs=[env["bin"]])
    conf = conflist(env)
    with pytest.raises(NotFound, match="not attached"):
        cni.check(conf, "c0ffee", env["netns"])
    result = cni.add(conf, "c0ffee", env["netns"])
    calls(env)
    cni.check(conf, "c0ffee", env["netns"])
    log = calls(env)
    assert [(c["type"], c["env"]["CNI_COMMAND"]) for c in log] == [
        ("fake-a", "CHECK"), ("fake-b", "CHECK"), ("fake-c", "CHECK")]
    assert all(c["conf"]["prevResult"] == result.raw for c in log)
    raw = dict(conf.raw, disableCheck=True)
    cni.check(NetworkConfigList(raw), "c0ffee", env["netns"])
    assert calls(env) == []


def test_crash_without_json_reports_stderr(env: dict[str, Any]) -> None:
    cni = CNI(env["state"], plugin_dirs=[env["bin"]])
    conf = conflist(env, **{"fake-c": {"fail": {"command": "ADD", "crash": True}}})
    expected = r"fake-c ADD on network testnet failed: second line of the panic \(code 999\)"
    with pytest.raises(PluginError, match=expected):
        cni.add(conf, "c0ffee", env["netns"])


def test_timeout(env: dict[str, Any]) -> None:
    cni = CNI(env["state"], plugin_dirs=[env["bin"]], timeout=0.5)
    conf = conflist(env, **{"fake-a": {"fail": {"command": "ADD", "sleep": 5}}})
    with pytest.raises(Unavailable, match="cni plugin fake-a ADD on network testnet timed out after 0.5s"):
        cni.add(conf, "c0ffee", env["netns"])


def test_errors_before_running_anything(env: dict[str, Any]) -> None:
    cni = CNI(env["state"], plugin_dirs=[env["bin"], "/nonexistent"])
    raw = conflist(env).raw
    with pytest.raises(NotFound, match=r"cni plugin 'bridge' not found in .*/bin:/nonexistent"):
        cni.add(NetworkConfigList(dict(raw, plugins=[{"type": "bridge"}])), "c0ffee", env["netns"])
    with pytest.raises(NotFound, match="network namespace /nope not found"):
        cni.add(conflist(env), "c0ffee", "/nope")
    with pytest.raises(InvalidArgument, match="invalid container id"):
        cni.add(conflist(env), "../x", env["netns"])
    with pytest.raises(InvalidArgument, match="invalid interface name"):
        cni.add(conflist(env), "c0ffee", env["netns"], "a-very-long-ifname0")
    with pytest.raises(InvalidArgument, match="CNI_ARGS"):
        cni.add(conflist(env), "c0ffee", env["netns"], args={"A": "x;y"})
    for bad in ({}, {"name": "bad name", "plugins": [{"type": "x"}]}, {"name": "n", "plugins": []},
                {"name": "n", "plugins": [{"type": "../x"}]},
                {"name": "n", "cniVersion": "1", "plugins": [{"type": "x"}]}):
        with pytest.raises(InvalidArgument):
            NetworkConfigList(bad)
    with pytest.raises(InvalidArgument, match="not JSON"):
        NetworkConfigList.from_json("{")
    assert calls(env) == []


def test_version_and_conflist_files(env: dict[str, Any], tmp_path: Path) -> None:
    cni = CNI(env["state"], plugin_dirs=[env["bin"]])
    assert cni.version("fake-a")["supportedVersions"] == ["0.4.0", "1.0.0"]
    conf = conflist(env)
    conf.save(str(tmp_path / "testnet.conflist"))
    assert NetworkConfigList.load(str(tmp_path / "testnet.conflist")).raw == conf.raw
    with pytest.raises(NotFound):
        NetworkConfigList.load(str(tmp_path / "nope.conflist"))


def test_delete_cached_after_a_restart(env: dict[str, Any]) -> None:
    CNI(env["state"], plugin_dirs=[env["bin"]]).add(conflist(env), "c0ffee", env["netns"], "eth1")
    calls(env)
    fresh = CNI(env["state"], plugin_dirs=[env["bin"]])  # a new berthd finds what the old one made
    (att,) = fresh.attachments()
    assert (att.network, att.container_id, att.ifname) == ("testnet", "c0ffee", "eth1")
    fresh.delete_cached(att)
    assert [c["env"]["CNI_COMMAND"] for c in calls(env)] == ["DEL"] * 3
    assert fresh.attachments() == []
