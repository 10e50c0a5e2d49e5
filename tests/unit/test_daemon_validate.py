"""berth.daemon.api._validate: the field types of request bodies, as Go's decoder checks them."""

from __future__ import annotations

import pytest

from berth.daemon.api._validate import check_create, check_exec, check_exec_start, check_update
from berth.daemon.http import HTTPError

PREFIX = "invalid JSON: json: cannot unmarshal"


def error(check, body) -> str:  # noqa: ANN001
    with pytest.raises(HTTPError) as info:
        check(body)
    assert info.value.status == 400
    return info.value.message


def test_valid_bodies_pass() -> None:
    check_create({"Image": "busybox", "Cmd": "sh", "Entrypoint": ["a", "b"], "Env": None, "Labels": {"a": "b"},
                  "ExposedPorts": {"80/tcp": {}}, "StopTimeout": 3, "Healthcheck": {"Test": ["NONE"]},
                  "HostConfig": {"Memory": 10 << 20, "MemorySwappiness": None, "Binds": ["/a:/b:ro"],
                                 "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]},
                                 "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 2},
                                 "Ulimits": [{"Name": "nofile", "Soft": 10, "Hard": 20}], "Init": None,
                                 "Mounts": [{"Type": "tmpfs", "Target": "/t", "TmpfsOptions": {"SizeBytes": 1}}]},
                  "NetworkingConfig": {"EndpointsConfig": {"bridge": {"Aliases": ["x"]}}},
                  "SomethingNew": {"any": ["thing"]}})
    check_update({"CpuShares": 512, "RestartPolicy": {"Name": "always"}})
    check_exec({"Cmd": ["sh", "-c", "true"], "Tty": True, "Env": ["A=1"], "ConsoleSize": [24, 80]})
    check_exec_start({"Detach": False, "Tty": True})


def test_messages_name_the_field_and_the_go_type() -> None:
    assert error(check_create, {"Cmd": 5}) == \
        f"{PREFIX} number into Go struct field ContainerConfigWrapper.Cmd of type string"
    assert error(check_create, {"HostConfig": {"Memory": "lots"}}) == \
        f"{PREFIX} string into Go struct field ContainerConfigWrapper.HostConfig.Memory of type int64"
    assert error(check_create, {"HostConfig": {"Memory": 1.5}}) == \
        f"{PREFIX} number 1.5 into Go struct field ContainerConfigWrapper.HostConfig.Memory of type int64"
    assert error(check_create, {"Env": "A=1"}) == \
        f"{PREFIX} string into Go struct field ContainerConfigWrapper.Env of type []string"
    assert error(check_create, {"HostConfig": []}) == \
        f"{PREFIX} array into Go struct field ContainerConfigWrapper.HostConfig of type container.HostConfig"
    assert error(check_create, {"Labels": ["a"]}) == \
        f"{PREFIX} array into Go struct field ContainerConfigWrapper.Labels of type map[string]string"
    assert "RestartPolicy.MaximumRetryCount of type int" in \
        error(check_create, {"HostConfig": {"RestartPolicy": {"MaximumRetryCount": "3"}}})
    assert "uint16" in error(check_create, {"HostConfig": {"BlkioWeight": -1}})
    assert "bool" in error(check_create, {"Tty": 1})
    assert "of type int64" in error(check_create, {"HostConfig": {"CpuShares": True}})  # a bool is no number
    assert "UpdateConfig.Memory" in error(check_update, {"Memory": "1g"})
    assert "ExecConfig.Cmd" in error(check_exec, {"Cmd": [1]})
    assert "ExecStartCheck.Tty" in error(check_exec_start, {"Tty": "yes"})


def test_field_names_match_case_insensitively() -> None:
    body = {"Cmd": ["cat"], "detachKeys": "ctrl-p", "attachstdin": True, "Tty": False}
    check_exec(body)
    assert body == {"Cmd": ["cat"], "DetachKeys": "ctrl-p", "AttachStdin": True, "Tty": False}
    body = {"image": "busybox", "hostconfig": {"memory": 8 << 20}, "Labels": {"lower": "kept"}}
    check_create(body)
    assert body == {"Image": "busybox", "HostConfig": {"Memory": 8 << 20}, "Labels": {"lower": "kept"}}
    body = {"Image": "a", "image": "b"}  # an exact match wins
    check_create(body)
    assert body == {"Image": "a", "image": "b"}
