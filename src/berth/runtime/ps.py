"""``ps``: the processes of a container, as runc prints them (ps output filtered to its pids)."""

from __future__ import annotations

import subprocess

from berth.errors import FailedPrecondition, InvalidArgument
from berth.runtime.container import Container
from berth.spec import status as st


def container_pids(container: Container) -> list[int]:
    if container.status() == st.STOPPED:
        return []
    if not container.record.get("cgroup"):
        raise FailedPrecondition("container has no cgroup")
    return sorted(container.cgroup().pids())


def ps_table(pids: list[int], ps_args: list[str]) -> str:
    """Run ``ps`` with the given args (default -ef) and keep the header and our pids' lines."""
    result = subprocess.run(["ps", *(ps_args or ["-ef"])], capture_output=True, text=True)
    if result.returncode != 0:
        raise InvalidArgument(f"ps: {result.stderr.strip()}")
    lines = result.stdout.splitlines()
    if not lines:
        return ""
    header = lines[0]
    columns = header.split()
    if "PID" not in columns:
        raise InvalidArgument("couldn't find PID field in ps output")
    index = columns.index("PID")
    wanted = set(pids)
    kept = [header]
    for line in lines[1:]:
        fields = line.split()
        if len(fields) > index and fields[index].isdigit() and int(fields[index]) in wanted:
            kept.append(line)
    return "\n".join(kept) + "\n"
