"""The networks service's checks and views without root: records made by hand, no bridge,
no CNI call (the integration tests in test_daemon_networks.py do the real thing)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from berth.daemon.db import MetadataDB
from berth.daemon.events import EventBus
from berth.daemon.services import networks
from berth.errors import InvalidArgument
from berth.network import conflist


@pytest.fixture
def svc(tmp_path):  # noqa: ANN001, ANN201
    config = SimpleNamespace(exec_root=str(tmp_path / "run"), bridge="", bip="")
    daemon = SimpleNamespace(config=config, db=MetadataDB(str(tmp_path / "metadata.db")), events=EventBus(),
                             services={})
    service = networks.NetworksService(daemon)
    for name, driver, subnet, user in (("bridge", "bridge", "172.30.0.0/16", False),
                                       ("host", "host", None, False), ("none", "null", None, False),
                                       ("mynet", "bridge", "10.213.5.0/24", True),
                                       ("auto", "bridge", "172.31.0.0/16", False)):
        specs = [conflist.SubnetSpec.parse(subnet)] if subnet else []
        rec = service._doc("abcde"[len(service._records)] * 64, name, driver, specs, {}, {}, False)
        rec.update(BerthBridge=f"br{len(service._records)}", BerthUserSubnet=user)
        service._records[rec["Id"]] = rec
    return service


def test_default_bridge_name_depends_on_the_exec_root() -> None:
    assert networks.default_bridge_name("/run/berth") == "berth0"
    other = networks.default_bridge_name("/tmp/x/run")
    assert other.startswith("berth-") and len(other) <= 15 and other == networks.default_bridge_name("/tmp/x/run")


def test_plan_names_the_primary_network_and_refuses_bad_endpoints(svc) -> None:  # noqa: ANN001
    settings, warnings = svc.plan({}, {"NetworkMode": "mynet"}, {"EndpointsConfig": {"mynet": {
        "Aliases": ["web"], "IPAMConfig": {"IPv4Address": "10.213.5.9"}}}})
    ep = settings["Networks"]["mynet"]
    assert ep["Aliases"] == ["web"] and ep["IPAMConfig"] == {"IPv4Address": "10.213.5.9"} and not warnings
    settings, _ = svc.plan({}, {"NetworkMode": "bridge"}, {"EndpointsConfig": {"default": {}}})
    assert list(settings["Networks"]) == ["bridge"]
    with pytest.raises(InvalidArgument, match="network nosuch not found"):
        svc.plan({}, {"NetworkMode": "nosuch"}, None)
    with pytest.raises(InvalidArgument, match="supported on user defined networks only"):
        svc.plan({}, {"NetworkMode": "bridge"}, {"EndpointsConfig": {"bridge": {"IPAMConfig": {"IPv4Address":
                                                                                                "172.30.0.5"}}}})
    with pytest.raises(InvalidArgument, match="with user configured subnets"):
        svc.plan({}, {"NetworkMode": "auto"}, {"EndpointsConfig": {"auto": {"IPAMConfig": {"IPv4Address":
                                                                                            "172.31.0.5"}}}})
    with pytest.raises(InvalidArgument, match="does not belong to any of this network's subnets"):
        svc.plan({}, {"NetworkMode": "mynet"}, {"EndpointsConfig": {"mynet": {"IPAMConfig": {"IPv4Address":
                                                                                              "10.9.9.9"}}}})
    with pytest.raises(InvalidArgument, match="invalid hostPort"):
        svc.plan({}, {"NetworkMode": "bridge", "PortBindings": {"80/tcp": [{"HostPort": "x"}]}}, None)
    _settings, warnings = svc.plan({}, {"NetworkMode": "host", "PortBindings": {"80/tcp": [{}]}}, None)
    assert warnings == ["Published ports are discarded when using host network mode"]


def test_find_by_name_id_and_prefix(svc) -> None:  # noqa: ANN001
    rec = svc.find("mynet")
    assert svc.find(rec["Id"]) is rec and svc.find(rec["Id"][:60]) is rec


def test_conflist_leaves_out_plugins_with_nothing_to_do(svc) -> None:  # noqa: ANN001
    rec = svc.find("mynet")
    assert [p["type"] for p in svc._conflist(rec).plugins] == ["bridge", "portmap", "firewall"]
    assert [p["type"] for p in svc._conflist(rec, publish=False).plugins] == ["bridge", "firewall"]


def test_summary_ports_as_docker_ps_lists_them(svc) -> None:  # noqa: ANN001
    rec = {"Config": {"ExposedPorts": {"80/tcp": {}, "53/udp": {}}},
           "NetworkSettings": {"Ports": {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]}}}
    assert svc.summary_ports(rec) == [{"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
                                      {"PrivatePort": 53, "Type": "udp"}]
