"""The pieces of ``berth`` and of the images service that need no daemon: Go-template
formatting, tables, sizes and durations, run flags to a create body, the progress
display, the attach stream's demultiplexer, detach keys, and Docker's pull messages."""

from __future__ import annotations

import base64
import io
import json
import struct

import pytest

from berth.cli.berth_common import UsageError
from berth.cli.berth_create import build_config, parse_mount, ram_bytes, run_parser, split_args
from berth.cli.berth_format import Template, go_str, human_duration, human_size, render_rows, table
from berth.cli.berth_progress import display, progress_string
from berth.cli.berth_stream import Demux, parse_detach_keys
from berth.daemon.services.images import _display, _PullProgress, _unix, decode_auth, progress_bar


# --- templates and tables -------------------------------------------------------------------


@pytest.mark.parametrize("template, expected", [
    ("{{.State.Running}}", "true"),
    ("{{.State.Pid}}", "42"),
    ("{{json .Config.Cmd}}", '["sh","-c","x"]'),
    ("{{index .Config.Labels \"a.b\"}}", "c"),
    ("{{join .Config.Cmd \" \"}}", "sh -c x"),
    ("{{len .Config.Cmd}}", "3"),
    ("{{.Missing}}", "<no value>"),
    ("{{.Config.Labels}}", "map[a.b:c x:y]"),
    ("{{if .State.Running}}up{{else}}down{{end}}", "up"),
    ("{{range .Config.Cmd}}[{{.}}]{{end}}", "[sh][-c][x]"),
    ("{{.Name | upper}}", "/BOX"),
    ("{{printf \"%s:%d\" .Name .State.Pid}}", "/box:42"),
    ("a {{- \" b \" -}} c", "a b c"),
    ("{{if eq .State.Pid 42}}yes{{end}}", "yes"),
])
def test_template(template: str, expected: str) -> None:
    data = {"Name": "/box", "State": {"Running": True, "Pid": 42},
            "Config": {"Cmd": ["sh", "-c", "x"], "Labels": {"a.b": "c", "x": "y"}}}
    assert Template(template).render(data) == expected


def test_go_values() -> None:
    assert go_str(None) == "<no value>"
    assert go_str(False) == "false"
    assert go_str([1, "a", None]) == "[1 a <nil>]"


def test_table_is_tabwriter_like() -> None:
    out = table([["CONTAINER ID", "NAMES"], ["abc", "x"]])
    assert out == "CONTAINER ID   NAMES\nabc            x\n"
    assert table([["A", "B"], ["1", "2"]]) == "A         B\n1         2\n"  # columns at least 10 wide


def test_render_rows_table_and_plain() -> None:
    rows = [{"ID": "abc", "Names": "one", "Label": lambda k: {"k": "v"}.get(k, "")}]
    assert render_rows("table {{.ID}}\t{{.Names}}", rows, {"ID": "CONTAINER ID", "Names": "NAMES"}) == \
        "CONTAINER ID   NAMES\nabc            one\n"
    assert render_rows("{{.ID}}={{.Label \"k\"}}", rows, {}) == "abc=v\n"


def test_sizes_and_durations() -> None:
    assert human_size(2_140_160) == "2.14MB"
    assert human_size(999) == "999B"
    assert human_duration(0.3) == "Less than a second"
    assert human_duration(90) == "About a minute"
    assert human_duration(3 * 3600) == "3 hours"
    assert ram_bytes("512m") == 512 * 1024 * 1024
    assert ram_bytes("1g") == 1 << 30
    with pytest.raises(UsageError):
        ram_bytes("lots")


# --- run flags -----------------------------------------------------------------------------------


def test_split_args_stops_at_the_image() -> None:
    p = run_parser()
    assert split_args(p, ["-it", "--rm", "-e", "A=1", "busybox", "sh", "-c", "echo -n x"]) == (
        ["-it", "--rm", "-e", "A=1"], "busybox", ["sh", "-c", "echo -n x"])
    assert split_args(p, ["--name=x", "-p80:80", "img", "--rm"]) == (["--name=x", "-p80:80"], "img", ["--rm"])
    assert split_args(p, ["-d", "--", "img"]) == (["-d"], "img", [])
    with pytest.raises(UsageError):
        split_args(p, ["--rm"])


def test_build_config() -> None:
    p = run_parser()
    options, image, command = split_args(p, [
        "-it", "--rm", "--name", "web", "-e", "A=1", "-w", "/srv", "-u", "1000:1000", "-v", "/h:/c:ro", "-v", "/anon",
        "--tmpfs", "/run:size=1m", "-p", "127.0.0.1:8080:80/udp", "--entrypoint", "", "--restart", "on-failure:3",
        "--init", "-m", "64m", "--cpus", "1.5", "--pids-limit", "20", "--read-only", "--cap-add", "NET_ADMIN",
        "--cap-drop", "ALL", "--security-opt", "seccomp=unconfined", "--runtime", "runc", "-l", "k=v",
        "--stop-signal", "SIGINT", "busybox", "echo", "hi"])
    args = p.parse_args(options)
    c = build_config(args, image, command)
    host = c["HostConfig"]
    assert (c["Image"], c["Cmd"], c["Entrypoint"]) == ("busybox", ["echo", "hi"], [""])
    assert c["Tty"] and c["OpenStdin"] and c["AttachStdin"] and c["StdinOnce"]
    assert (c["Env"], c["WorkingDir"], c["User"], c["Labels"], c["StopSignal"]) == (
        ["A=1"], "/srv", "1000:1000", {"k": "v"}, "SIGINT")
    assert host["Binds"] == ["/h:/c:ro"] and c["Volumes"] == {"/anon": {}}
    assert host["Tmpfs"] == {"/run": "size=1m"}
    assert host["PortBindings"] == {"80/udp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}]}
    assert c["ExposedPorts"] == {"80/udp": {}}
    assert host["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    assert host["AutoRemove"] and host["Init"] and host["ReadonlyRootfs"]
    assert (host["Memory"], host["NanoCpus"], host["PidsLimit"]) == (64 << 20, 1_500_000_000, 20)
    assert (host["CapAdd"], host["CapDrop"], host["SecurityOpt"], host["Runtime"]) == (
        ["NET_ADMIN"], ["ALL"], ["seccomp=unconfined"], "runc")
    with pytest.raises(UsageError):
        build_config(p.parse_args(["--restart", "sometimes"]), "x", [])


# --- streams ---------------------------------------------------------------------------------------


def test_volume_flags() -> None:
    p = run_parser()
    options, image, command = split_args(p, [
        "-v", "./rel:/r", "-v", "named:/n:ro", "-v", "/anon", "--volumes-from", "data:ro",
        "--mount", "type=volume,src=v,dst=/v,volume-nocopy,volume-label=a=b,volume-opt=type=tmpfs",
        "--mount", "type=bind,source=/h,target=/b,readonly,bind-propagation=rshared",
        "--mount", "type=tmpfs,destination=/t,tmpfs-size=1m,tmpfs-mode=1770", "busybox"])
    c = build_config(p.parse_args(options), image, command)
    host = c["HostConfig"]
    assert host["Binds"][0].endswith("/rel:/r") and host["Binds"][0].startswith("/")
    assert host["Binds"][1] == "named:/n:ro" and c["Volumes"] == {"/anon": {}}
    assert host["VolumesFrom"] == ["data:ro"]
    vol, bind, tmpfs = host["Mounts"]
    assert vol == {"Type": "volume", "Source": "v", "Target": "/v", "VolumeOptions": {
        "NoCopy": True, "Labels": {"a": "b"}, "DriverConfig": {"Options": {"type": "tmpfs"}}}}
    assert bind == {"Type": "bind", "Source": "/h", "Target": "/b", "ReadOnly": True,
                    "BindOptions": {"Propagation": "rshared"}}
    assert tmpfs == {"Type": "tmpfs", "Target": "/t", "TmpfsOptions": {"SizeBytes": 1 << 20, "Mode": 0o1770}}
    for bad in ("type=bind,src=/h", "type=tmpfs,dst=/t,bind-propagation=shared", "dst=/x,bogus=1",
                "dst=/x,readonly=maybe", "dst=/x,novalue"):
        with pytest.raises(UsageError):
            parse_mount(bad)


def test_demux() -> None:
    out, err = [], []
    d = Demux(out.append, err.append)
    frame = lambda kind, data: bytes([kind, 0, 0, 0]) + struct.pack(">I", len(data)) + data  # noqa: E731
    raw = frame(1, b"hello ") + frame(2, b"oops") + frame(1, b"world")
    for i in range(len(raw)):  # byte by byte: frames split anywhere
        d.feed(raw[i:i + 1])
    assert b"".join(out) == b"hello world" and err == [b"oops"]


def test_detach_keys() -> None:
    assert parse_detach_keys("") == b"\x10\x11"
    assert parse_detach_keys("ctrl-a,x") == b"\x01x"
    with pytest.raises(UsageError):
        parse_detach_keys("ctrl-é")


def test_progress_display_plain_and_terminal() -> None:
    messages = [
        {"status": "Pulling from library/busybox", "id": "latest"},
        {"status": "Pulling fs layer", "progressDetail": {}, "id": "abc"},
        {"status": "Downloading", "progressDetail": {"current": 500, "total": 1000}, "id": "abc"},
        {"status": "Pull complete", "progressDetail": {}, "id": "abc"},
        {"status": "Digest: sha256:00"},
        {"progressDetail": {}, "aux": {"Tag": "x"}},
    ]
    plain = io.StringIO()
    assert display(messages, plain, terminal=False) == [{"Tag": "x"}]
    assert plain.getvalue() == ("latest: Pulling from library/busybox\nabc: Pulling fs layer\nabc: Pull complete\n"
                                "Digest: sha256:00\n")
    tty = io.StringIO()
    display(messages, tty, terminal=True)
    assert "\x1b[2K\rabc: Downloading [=========================>" in tty.getvalue()
    assert progress_string({"current": 500, "total": 1000}, 80) == "    500B/1kB"  # no bar on narrow terminals
    with pytest.raises(Exception, match="boom"):
        display([{"errorDetail": {"message": "boom"}, "error": "boom"}], io.StringIO(), terminal=False)


# --- the images service's helpers ------------------------------------------------------------------


def test_progress_bar_is_dockers() -> None:
    assert progress_bar(1_200_000, 2_365_000) == "[" + "=" * 25 + ">" + " " * 25 + "]    1.2MB/2.365MB"
    assert progress_bar(5, 5) == "[" + "=" * 50 + ">]       5B/5B"


def test_pull_progress_messages() -> None:
    seen: list[dict] = []
    progress = _PullProgress("latest", "library/busybox")
    progress.report = seen.append
    progress("abc", "Waiting", 0, 10)
    progress("abc", "Downloading", 10, 10)
    progress("abc", "Extracting", 10, 10)
    progress("abc", "Pull complete", 10, 10)
    progress("def", "Already exists", 5, 5)
    statuses = [(m.get("id"), m["status"]) for m in seen]
    assert statuses == [("latest", "Pulling from library/busybox"), ("abc", "Pulling fs layer"), ("abc", "Waiting"),
                        ("abc", "Downloading"), ("abc", "Verifying Checksum"), ("abc", "Download complete"),
                        ("abc", "Extracting"), ("abc", "Pull complete"), ("def", "Already exists")]
    assert seen[3]["progressDetail"] == {"current": 10, "total": 10}


def test_registry_auth_header() -> None:
    doc = {"username": "u", "password": "p", "serveraddress": "h:5000"}
    header = base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")
    assert decode_auth(header) == doc
    assert decode_auth("e30=") is None  # {}: anonymous
    assert decode_auth("") is None and decode_auth("!!!") is None


def test_names_and_times() -> None:
    assert _display("busybox") == "busybox:latest"
    assert _display("3f57d9401f8d") == "3f57d9401f8d"
    assert _unix("2024-01-01T00:00:00Z") == 1704067200
    assert _unix("2024-01-01T00:00:00.123456789Z") == 1704067200
    assert _unix(None) == 0


def test_multi_container_commands_run_in_parallel_and_print_in_order(capsys: pytest.CaptureFixture[str]) -> None:
    """rm, stop, kill, pause, unpause act on all containers at once (as docker's CLI does) and
    still print names and errors in the order given."""
    import threading
    import time

    from berth.cli.berth_client import APIError
    from berth.cli.berth_containers import _each

    lock = threading.Lock()
    running = peak = 0

    def action(name: str) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05 if name == "a" else 0.01)  # the first one finishes last
        with lock:
            running -= 1
        if name == "b":
            raise APIError(404, "No such container: b")

    assert _each(None, ["a", "b", "c"], action, parallel=True) == 1  # type: ignore[arg-type]
    out, err = capsys.readouterr()
    assert out == "a\nc\n"
    assert err == "Error response from daemon: No such container: b\n"
    assert peak == 3
    running = peak = 0
    assert _each(None, ["a", "c"], action) == 0  # type: ignore[arg-type]
    assert capsys.readouterr().out == "a\nc\n" and peak == 1


@pytest.mark.parametrize("text", ["", "/containers/abc/json", "a b+c&d=e/f?g#h%", "é€😀", "name:tag@sha256:x",
                                  "{\"label\":[\"a=b\"]}", "~-._!$'()*,;:@"])
def test_client_quotes_as_urllib(text: str) -> None:
    """The client percent-encodes as urllib.parse does (it does not import it: ~2 ms a command)."""
    import urllib.parse

    from berth.cli.berth_client import quote, urlencode

    assert quote(text) == urllib.parse.quote(text, safe="/:@!$&'()*+,;=-._~")
    assert urlencode([("k y", text), ("filters", text)]) == urllib.parse.urlencode([("k y", text), ("filters", text)])
