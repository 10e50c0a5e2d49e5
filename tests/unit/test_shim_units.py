"""berth-shim's pieces that need no container: the json-file log, framing, flags."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from berth.errors import InvalidArgument
from berth.shim.logfile import PARTIAL_MAX, JsonFileLog
from berth.shim.main import parse, parse_size
from berth.shim.protocol import frame, parse_header, rfc3339nano, short_path


def _entries(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_lines_are_split_and_partial_lines_held(tmp_path: Path) -> None:
    log = JsonFileLog(str(tmp_path / "c.log"))
    log.write(1, b"one\ntw")
    log.write(2, b"err\n")
    assert [e["log"] for e in _entries(tmp_path / "c.log")] == ["one\n", "err\n"]
    log.write(1, b"o\nthree")
    log.flush(1)  # the stream ended: the held part goes out as a partial message
    entries = _entries(tmp_path / "c.log")
    assert [(e["stream"], e["log"]) for e in entries] == [
        ("stdout", "one\n"), ("stderr", "err\n"), ("stdout", "two\n"), ("stdout", "three")]
    log.close()


def test_non_utf8_and_control_characters_stay_valid_json(tmp_path: Path) -> None:
    log = JsonFileLog(str(tmp_path / "c.log"))
    log.write(1, b"\xff\x00\x1b[1m\"quoted\" \xc3\xa9\n")
    log.close()
    assert _entries(tmp_path / "c.log")[0]["log"] == "\ufffd\x00\x1b[1m\"quoted\" \u00e9\n"


def test_16k_partial_messages(tmp_path: Path) -> None:
    log = JsonFileLog(str(tmp_path / "c.log"))
    log.write(1, b"x" * (PARTIAL_MAX + 10))  # no newline, but the buffer limit is reached
    assert [len(e["log"]) for e in _entries(tmp_path / "c.log")] == [PARTIAL_MAX]
    log.write(1, b"y\n")
    log.close()
    assert [e["log"] for e in _entries(tmp_path / "c.log")][1] == "x" * 10 + "y\n"


def test_rotation_keeps_max_files_and_max_size(tmp_path: Path) -> None:
    path = tmp_path / "c.log"
    log = JsonFileLog(str(path), max_size=1000, max_files=3)
    for i in range(200):
        log.write(1, f"line {i}\n".encode())
    log.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["c.log", "c.log.1", "c.log.2"]
    assert all((tmp_path / n).stat().st_size <= 1000 for n in names)
    lines = [e["log"] for n in ("c.log.2", "c.log.1", "c.log") for e in _entries(tmp_path / n)]
    assert lines[-1] == "line 199\n"
    first = int(lines[0].split()[1])
    assert lines == [f"line {i}\n" for i in range(first, 200)]


def test_rotation_with_one_file_truncates(tmp_path: Path) -> None:
    path = tmp_path / "c.log"
    log = JsonFileLog(str(path), max_size=500)
    for i in range(100):
        log.write(2, f"{i}\n".encode())
    log.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.log"]
    assert _entries(path)[-1]["log"] == "99\n" and path.stat().st_size <= 500


def test_log_appends_to_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "c.log"
    path.write_text('{"log":"old\\n","stream":"stdout","time":"2020-01-01T00:00:00.000000000Z"}\n')
    log = JsonFileLog(str(path), max_size=10_000)
    assert log.size == path.stat().st_size
    log.write(1, b"new\n")
    log.close()
    assert [e["log"] for e in _entries(path)] == ["old\n", "new\n"]


def test_frames_and_times() -> None:
    assert frame(1, b"hello\n") == b"\x01\x00\x00\x00\x00\x00\x00\x06hello\n"
    assert parse_header(frame(2, b"x" * 300)[:8]) == (2, 300)
    assert rfc3339nano(1_700_000_000_123_456_789) == "2023-11-14T22:13:20.123456789Z"
    assert rfc3339nano(1_700_000_000_000_000_000) == "2023-11-14T22:13:20.000000000Z"


def test_short_socket_path(tmp_path: Path) -> None:
    assert short_path("/run/berth/shims/x/shim.sock") == ("/run/berth/shims/x/shim.sock", -1)
    deep = tmp_path / ("d" * 100)
    deep.mkdir()
    path, fd = short_path(str(deep / "shim.sock"))
    try:
        assert path == f"/proc/self/fd/{fd}/shim.sock" and len(path) < 108
        assert os.path.samefile(os.path.dirname(path), deep)
    finally:
        os.close(fd)


def test_flags() -> None:
    opts = parse(["--id", "c1", "--bundle", "b", "--state-dir=/run/s", "--runtime", "/bin/true", "--tty",
                  "--log-path", "l.log", "--log-max-size", "10m", "--log-max-file", "3", "--ready-fd", "5"])
    assert (opts.id, opts.state_dir, opts.runtime, opts.tty, opts.stdin) == ("c1", "/run/s", "/bin/true", True, False)
    assert (opts.log_max_size, opts.log_max_file, opts.ready_fd) == (10 << 20, 3, 5)
    assert opts.bundle == os.path.abspath("b") and opts.log_path == os.path.abspath("l.log")
    assert parse_size("0") == 0 and parse_size("16k") == 16384 and parse_size("1.5MiB") == 3 << 19
    with pytest.raises(InvalidArgument, match="--runtime"):
        parse(["--id", "c1", "--bundle", "b", "--state-dir", "s"])
    with pytest.raises(InvalidArgument, match="unknown argument"):
        parse(["--id", "c1", "--bogus"])
    with pytest.raises(InvalidArgument, match="container id"):
        parse(["--id", "../x", "--bundle", "b", "--state-dir", "s", "--runtime", "/bin/true"])
