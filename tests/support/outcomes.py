"""What a user of the runtime sees after a command: its error line, and what it left behind.

    error_message(stderr) -> str         the one error line, unwrapped: runc's logrus line
                                         ``time=... level=error msg="..."`` or berth's
                                         ``berth-runtime: ...``, both give the bare message
    assert_failed(res, *words)           non-zero exit, one line on stderr, no traceback,
                                         every word in the message; returns the message
    Leftovers(runtime, bundle, id)       nothing of a failed create may remain: no state dir,
                                         no cgroup dir, no mount mentioning the bundle and no
                                         process (by marker env, root or cgroup); ``env`` is
                                         the environment to run the runtime with
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import time

from tests.support import cleanup

_LOGRUS = re.compile(r'^time="[^"]*" level=(\w+) msg="((?:[^"\\]|\\.)*)"')
MARK_VAR = "BERTH_TEST_MARK"


def error_message(stderr: str) -> str:
    """The message of the (last) error line on stderr, without the runtime's decoration."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    if not lines:
        return ""
    line = lines[-1]
    m = _LOGRUS.match(line)
    if m:
        try:
            return json.loads(f'"{m.group(2)}"').strip()  # Go's %q escapes are JSON's for ASCII
        except ValueError:
            return m.group(2)
    for prefix in ("berth-runtime: ", "runc: "):
        if line.startswith(prefix):
            return line[len(prefix):].strip()
    return line.strip()


def assert_failed(res: subprocess.CompletedProcess[str], *words: str) -> str:
    """A clear failure: non-zero exit, one line on stderr, no traceback, all ``words`` in it."""
    assert res.returncode != 0, f"expected a failure, got exit 0\nstdout: {res.stdout}\nstderr: {res.stderr}"
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{res.stderr}"
    message = error_message(res.stderr)
    for word in words:
        assert word in message, f"{word!r} not in the error message {message!r}"
    return message


class Leftovers:
    """Checks that a failed command left nothing of container ``container_id`` behind.

    Run the runtime with ``env=leftovers.env`` and give hooks ``leftovers.hook_env`` so
    that every process they start carries a marker that ``processes()`` can find.
    """

    def __init__(self, runtime, bundle, container_id: str) -> None:  # noqa: ANN001
        self.runtime = runtime
        self.bundle = bundle
        self.id = container_id
        self.mark = secrets.token_hex(8)
        self.env = dict(os.environ, **{MARK_VAR: self.mark})
        self.hook_env = [f"{MARK_VAR}={self.mark}", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"]

    def state_dir(self) -> list[str]:
        path = os.path.join(self.runtime.root, self.id)
        return [path] if os.path.lexists(path) else []

    def cgroup_dirs(self) -> list[str]:
        rel = (self.bundle.cgroups_path or "").strip("/")
        if not rel:
            return []
        return [d for d in (os.path.join(mp, rel) for mp in cleanup.cgroup_mountpoints()) if os.path.isdir(d)]

    def mounts(self) -> list[str]:
        with open("/proc/self/mountinfo") as f:
            return [line for line in f if self.bundle.path in line]

    def processes(self) -> list[str]:
        """Live processes that carry the marker, have their root in the bundle or sit in its cgroup."""
        found = []
        needle = f"{MARK_VAR}={self.mark}".encode()
        cgroup = self.bundle.cgroups_path or "\0"
        me = os.getpid()
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == me or cleanup.gone(int(entry)):
                continue
            why = []
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if needle in f.read():
                        why.append("marker")
                if os.readlink(f"/proc/{entry}/root").startswith(self.bundle.path):
                    why.append("root")
                with open(f"/proc/{entry}/cgroup") as f:
                    if any(line.split(":", 2)[-1].strip() == cgroup for line in f):
                        why.append("cgroup")
                if why:
                    with open(f"/proc/{entry}/cmdline", "rb") as f:
                        cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
                    found.append(f"{entry} ({'+'.join(why)}): {cmd}")
            except OSError:
                continue
        return found

    def check(self, wait: float = 3.0) -> None:
        """Assert that nothing is left (processes get ``wait`` seconds to finish dying)."""
        deadline = time.monotonic() + wait
        while self.processes() and time.monotonic() < deadline:
            time.sleep(0.05)
        left = {
            "state dir": self.state_dir(),
            "cgroup dirs": self.cgroup_dirs(),
            "mounts": self.mounts(),
            "processes": self.processes(),
        }
        assert not any(left.values()), f"left behind: { {k: v for k, v in left.items() if v} }"
