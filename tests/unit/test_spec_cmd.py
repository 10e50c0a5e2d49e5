"""``default_spec``/``write_spec`` without runc: shape, file format, refusal to overwrite."""

from __future__ import annotations

import json
import os

import pytest

from berth.errors import AlreadyExists, NotFound
from berth.runtime.spec_cmd import default_spec, write_spec


def test_default_spec_is_fresh_and_versioned():
    a = default_spec()
    a["process"]["args"].append("x")
    b = default_spec()
    assert b["process"]["args"] == ["sh"]
    assert b["ociVersion"] == "1.1.0"
    assert list(b) == ["ociVersion", "process", "root", "hostname", "mounts", "linux"]


def test_rootless_spec():
    spec = default_spec(rootless=True)
    linux = spec["linux"]
    assert list(linux)[:2] == ["uidMappings", "gidMappings"]
    assert linux["uidMappings"] == [{"containerID": 0, "hostID": os.geteuid(), "size": 1}]
    assert [ns["type"] for ns in linux["namespaces"]] == ["pid", "ipc", "uts", "mount", "user"]
    assert "resources" not in linux
    sys_mount = next(m for m in spec["mounts"] if m["destination"] == "/sys")
    assert sys_mount["type"] == "none" and sys_mount["options"][0] == "rbind"
    pts = next(m for m in spec["mounts"] if m["destination"] == "/dev/pts")
    assert "gid=5" not in pts["options"]


def test_write_spec(tmp_path):
    write_spec(str(tmp_path), rootless=False)
    text = (tmp_path / "config.json").read_text()
    assert text.startswith('{\n\t"ociVersion": "1.1.0",') and text.endswith("}")
    assert json.loads(text) == default_spec()
    with pytest.raises(AlreadyExists, match=r"^File config\.json exists\. Remove it first$"):
        write_spec(str(tmp_path), rootless=True)
    assert json.loads((tmp_path / "config.json").read_text()) == default_spec()


def test_write_spec_missing_bundle(tmp_path):
    with pytest.raises(NotFound):
        write_spec(str(tmp_path / "nope"), rootless=False)
