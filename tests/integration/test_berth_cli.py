"""``berth``, the command line, against a berthd with temporary roots: image commands
(pull with progress bars on a pty, plain lines otherwise; images, tag, rmi, save, load,
import, history), then containers (run --rm, exit codes, -it on a pty, -d, ps, logs,
exec, stop, rm) once berthd serves them. The default image ``busybox`` is made offline
in the daemon's data root, as setup does for /var/lib/berth.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import Berthd

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

BERTH = os.path.join(os.path.dirname(sys.executable), "berth")


@pytest.fixture(scope="module")
def berthd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Berthd]:
    from berth.daemon.default_image import ensure

    d = Berthd(tmp_path_factory.mktemp("berth-cli"))
    try:
        ensure(str(d.data_root))
        d.start()
        yield d
    finally:
        d.cleanup()


def berth(d: Berthd, *args: str, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DOCKER_CONFIG=str(d.base / "docker-config"))
    env.pop("BERTH_HOST", None)
    return subprocess.run([BERTH, "-H", f"unix://{d.socket}", *args], input=input, capture_output=True, text=True,
                          timeout=timeout, env=env, stdin=None if input is not None else subprocess.DEVNULL)


def ok(d: Berthd, *args: str, **kw: Any) -> str:
    proc = berth(d, *args, **kw)
    assert proc.returncode == 0, f"berth {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def on_pty(d: Berthd, *args: str, keys: list[bytes] = (), timeout: float = 30) -> tuple[bytes, int]:
    """Run berth on a pseudo-terminal (132x40), typing ``keys`` when the output goes quiet."""
    import fcntl
    import struct
    import termios

    pid, fd = pty.fork()
    if pid == 0:  # the child: exec berth with the pty as its terminal
        try:
            os.execv(BERTH, [BERTH, "-H", f"unix://{d.socket}", *args])
        finally:
            os._exit(127)
    out = b""
    pending = list(keys)
    try:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 132, 0, 0))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.4)
            if ready:
                try:
                    data = os.read(fd, 65536)
                except OSError:
                    break
                if not data:
                    break
                out += data
            elif pending:
                os.write(fd, pending.pop(0))
        else:
            os.kill(pid, 9)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return out, os.waitstatus_to_exitcode(status)


# --- images ----------------------------------------------------------------------------------


def test_pull_draws_progress_bars_on_a_terminal(berthd: Berthd, registry: Any) -> None:
    ref = f"{registry.host}/berth/busybox:v1"
    out, code = on_pty(berthd, "pull", ref)
    text = out.decode(errors="replace")
    assert code == 0, text
    assert "\x1b[2K" in text  # lines redrawn in place
    assert re.search(r"(Downloading|Extracting) +\[=+>\s*\] +[\d.]+[kM]?B/[\d.]+[kM]?B", text), text
    assert "Pull complete" in text and f"Status: Downloaded newer image for {ref}" in text
    assert text.rstrip().endswith(ref)


def test_pull_plain_lines_when_not_a_terminal(berthd: Berthd, registry: Any) -> None:
    ref = f"{registry.host}/berth/busybox:plain"
    out = ok(berthd, "pull", ref)
    assert "\x1b[" not in out and "[=" not in out
    assert out.startswith("plain: Pulling from berth/busybox\n")
    assert "Digest: sha256:" in out and out.rstrip().endswith(ref)
    again = ok(berthd, "pull", ref)
    assert f"Status: Image is up to date for {ref}" in again
    missing = berth(berthd, "pull", f"{registry.host}/berth/busybox:nope")
    assert missing.returncode == 1
    assert missing.stderr.startswith("Error response from daemon: manifest for ")


def test_images_tag_rmi(berthd: Berthd, registry: Any) -> None:
    listing = ok(berthd, "images")
    assert listing.splitlines()[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    assert re.search(r"^busybox +latest +[0-9a-f]{12} ", listing, re.M), listing
    busybox_id = ok(berthd, "inspect", "--format", "{{.Id}}", "busybox").strip()
    assert busybox_id in [f"sha256:{i}" for i in ok(berthd, "images", "-q", "--no-trunc").split()] or \
        busybox_id[7:19] in ok(berthd, "images", "-q").split()
    ok(berthd, "tag", "busybox", "berthtest/cli:one")
    assert ok(berthd, "image", "inspect", "-f", "{{.Id}}", "berthtest/cli:one").strip() == busybox_id
    assert ok(berthd, "rmi", "berthtest/cli:one").strip() == "Untagged: berthtest/cli:one"
    gone = berth(berthd, "rmi", "berthtest/cli:one")
    assert gone.returncode == 1
    assert gone.stderr == "Error response from daemon: No such image: berthtest/cli:one\n"
    assert ok(berthd, "images", "--format", "{{.Repository}}:{{.Tag}}", "busybox").split() == ["busybox:latest"]


def test_save_load_import_history(berthd: Berthd, tmp_path: Path) -> None:
    ok(berthd, "tag", "busybox", "berthtest/saved:1")
    before = ok(berthd, "inspect", "-f", "{{.Id}}", "berthtest/saved:1").strip()
    archive = tmp_path / "saved.tar"
    ok(berthd, "save", "-o", str(archive), "berthtest/saved:1")
    assert archive.stat().st_size > 1_000_000
    ok(berthd, "rmi", "berthtest/saved:1")
    assert "Loaded image: berthtest/saved:1" in ok(berthd, "load", "-i", str(archive))
    assert ok(berthd, "inspect", "-f", "{{.Id}}", "berthtest/saved:1").strip() == before

    from tests.integration.test_daemon_images import _rootfs_tar

    rootfs = tmp_path / "rootfs.tar"
    rootfs.write_bytes(_rootfs_tar())
    image_id = ok(berthd, "import", "-c", "CMD [\"/bin/true\"]", "-m", "cli import", str(rootfs),
                  "berthtest/imported:cli").strip()
    assert image_id.startswith("sha256:")
    assert json.loads(ok(berthd, "inspect", "-f", "{{json .Config.Cmd}}", "berthtest/imported:cli")) == ["/bin/true"]
    history = ok(berthd, "history", "berthtest/imported:cli")
    assert history.splitlines()[0].split()[:2] == ["IMAGE", "CREATED"]
    assert "cli import" in history


def test_push_and_login(berthd: Berthd, registry: Any, token_registry: Any) -> None:
    target = f"{registry.host}/cli/busybox:1"
    ok(berthd, "tag", "busybox", target)
    out = ok(berthd, "push", target)
    assert f"The push refers to repository [{registry.host}/cli/busybox]" in out
    digest = re.search(r"^1: digest: (sha256:[0-9a-f]{64}) size: \d+$", out, re.M)
    assert digest, out
    from tests.support.images import run

    assert json.loads(run("skopeo", "inspect", "--tls-verify=false", f"docker://{target}"))["Digest"] == digest[1]

    private = f"{token_registry.host}/berth/private:v1"
    assert berth(berthd, "pull", private).returncode == 1
    denied = berth(berthd, "login", "-u", token_registry.USER, "--password-stdin", token_registry.host, input="no\n")
    assert denied.returncode == 1 and denied.stderr.startswith("Error response from daemon: ")
    assert "Login Succeeded" in ok(berthd, "login", "-u", token_registry.USER, "--password-stdin",
                                   token_registry.host, input=token_registry.PASSWORD + "\n")
    assert f"Status: Downloaded newer image for {private}" in ok(berthd, "pull", private)


def test_usage_errors_are_one_line(berthd: Berthd) -> None:
    bad_flag = berth(berthd, "images", "--bogus")
    assert bad_flag.returncode == 125
    assert bad_flag.stderr.startswith("berth: unknown flag: --bogus\n")
    unknown = berth(berthd, "frobnicate")
    assert unknown.returncode == 125 and "is not a berth command" in unknown.stderr
    nowhere = subprocess.run([BERTH, "-H", "unix:///nonexistent/berth.sock", "images"], capture_output=True, text=True,
                             timeout=30)
    assert nowhere.returncode == 1
    assert nowhere.stderr.startswith("Cannot connect to the Berth daemon at unix:///nonexistent/berth.sock")
    assert "Traceback" not in nowhere.stderr


# --- containers ------------------------------------------------------------------------------------


@pytest.fixture
def containers(berthd: Berthd) -> Berthd:
    status, body = berthd.api.get("/containers/json")
    if status != 200:
        pytest.skip(f"berthd does not serve containers yet ({status}: {body})")
    return berthd


def test_run_rm_echo_hello(containers: Berthd) -> None:
    proc = berth(containers, "run", "--rm", "busybox", "echo", "hello")
    assert (proc.returncode, proc.stdout) == (0, "hello\n"), proc.stderr
    assert berth(containers, "run", "--rm", "busybox", "sh", "-c", "exit 7").returncode == 7
    missing = berth(containers, "run", "--rm", "busybox", "/no/such/program")
    assert missing.returncode == 127 and missing.stderr.startswith("Error response from daemon: ")
    assert berth(containers, "run", "--rm", "--bogus", "busybox").returncode == 125
    piped = berth(containers, "run", "--rm", "-i", "busybox", "cat", input="through stdin\n")
    assert piped.stdout == "through stdin\n"
    assert ok(containers, "ps", "-a", "-q") == ""  # --rm left nothing


def test_run_it_on_a_terminal(containers: Berthd) -> None:
    out, code = on_pty(containers, "run", "-it", "--rm", "busybox", "sh",
                       keys=[b"stty size; echo $((6*7))\r", b"exit 3\r"])
    text = out.decode(errors="replace")
    assert code == 3, text
    assert "40 132" in text and "42" in text


def test_detached_ps_logs_exec_stop_rm(containers: Berthd) -> None:
    cid = ok(containers, "run", "-d", "--name", "cli-bg", "busybox", "sh", "-c",
             "echo started; trap 'exit 0' TERM; while true; do sleep 0.1; done").strip()
    try:
        assert re.fullmatch(r"[0-9a-f]{64}", cid)
        rows = ok(containers, "ps", "--format", "{{.ID}} {{.Names}} {{.Image}} {{.Status}}").splitlines()
        assert any(r.startswith(f"{cid[:12]} cli-bg busybox Up") for r in rows), rows
        table = ok(containers, "ps")
        assert table.splitlines()[0].split()[:3] == ["CONTAINER", "ID", "IMAGE"]
        deadline = time.monotonic() + 10
        while "started" not in ok(containers, "logs", "cli-bg") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ok(containers, "logs", "cli-bg") == "started\n"
        assert ok(containers, "exec", "cli-bg", "echo", "from exec") == "from exec\n"
        assert berth(containers, "exec", "cli-bg", "sh", "-c", "exit 4").returncode == 4
        assert ok(containers, "inspect", "-f", "{{.State.Running}}", "cli-bg").strip() == "true"
        assert ok(containers, "stop", "-t", "5", "cli-bg").strip() == "cli-bg"
        assert ok(containers, "wait", "cli-bg").strip() == "0"
    finally:
        berth(containers, "rm", "-f", "cli-bg")
    assert "cli-bg" not in ok(containers, "ps", "-a", "--format", "{{.Names}}")
