"""``spec``: Berth's starter config is runc's, key for key and byte for byte (but ociVersion)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from berth.runtime.spec_cmd import default_spec

RUNC = shutil.which("runc") or "/usr/sbin/runc"
needs_runc = pytest.mark.skipif(shutil.which("runc") is None, reason="runc not installed (apt-get install runc)")


def runc_spec(tmp_path, *flags: str) -> str:
    d = tmp_path / ("runc-spec" + "".join(flags).replace("-", "_"))
    d.mkdir()
    subprocess.run([RUNC, "spec", *flags], cwd=d, check=True, capture_output=True)
    return (d / "config.json").read_text()


def ours(text: str) -> str:
    """runc's text with its ociVersion swapped for ours."""
    theirs = json.loads(text)["ociVersion"]
    return text.replace(f'"ociVersion": "{theirs}"', f'"ociVersion": "{default_spec()["ociVersion"]}"', 1)


def without_version(text: str) -> str:
    return re.sub(r'"ociVersion": "[^"]*"', '"ociVersion": ""', text, count=1)


@needs_runc
@pytest.mark.parametrize("rootless", [False, True], ids=["root", "rootless"])
def test_default_spec_equals_runc_spec(tmp_path, rootless):
    text = runc_spec(tmp_path, *(["--rootless"] if rootless else []))
    theirs = json.loads(text)
    theirs["ociVersion"] = default_spec()["ociVersion"]
    assert default_spec(rootless=rootless) == theirs
    # same text too: key order, tab indent, no trailing newline
    assert json.dumps(default_spec(rootless=rootless), indent="\t") == ours(text)


@needs_runc
@pytest.mark.parametrize("rootless", [False, True], ids=["root", "rootless"])
def test_spec_command_writes_runc_spec(runtime, tmp_path, rootless):
    bundle = tmp_path / "b"
    bundle.mkdir()
    flags = ["--rootless"] if rootless else []
    res = runtime.run("spec", "--bundle", str(bundle), *flags)
    assert res.returncode == 0, res.stderr
    expected = runc_spec(tmp_path, *flags)
    got = (bundle / "config.json").read_text()
    assert without_version(got) == without_version(expected)

    again = runtime.run("spec", "--bundle", str(bundle))
    assert again.returncode == 1
    assert "File config.json exists. Remove it first" in again.stderr
