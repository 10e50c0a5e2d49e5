"""``events``: container statistics once (--stats) or as a stream, plus OOM notifications."""

from __future__ import annotations

from berth._sys import jsonfast as json
import sys
import time

from berth.runtime.container import Container
from berth.spec import status as st


def stats_event(container: Container) -> dict:
    return {"type": "stats", "id": container.id, "data": container.cgroup().stats()}


def stream(container: Container, interval: float, out=sys.stdout) -> int:  # noqa: ANN001
    """Print a stats event every interval and an oom event when the OOM count grows; ends when the container stops."""
    cgroup = container.cgroup()
    ooms = cgroup.oom_kill_count()
    while container.status() != st.STOPPED:
        out.write(json.dumps(stats_event(container), separators=(",", ":")) + "\n")
        now = cgroup.oom_kill_count()
        if now > ooms:
            out.write(json.dumps({"type": "oom", "id": container.id}, separators=(",", ":")) + "\n")
            ooms = now
        out.flush()
        time.sleep(interval)
    return 0
