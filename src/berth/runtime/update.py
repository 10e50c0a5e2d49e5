"""``update``: change a running container's cgroup resources, from JSON or per-field flags."""

from __future__ import annotations

from berth._sys import jsonfast as json

from berth.errors import FailedPrecondition, InvalidArgument
from berth.runtime.container import Container
from berth.spec import status as st

# flag -> (section, key, parser)
_SIZE_SUFFIX = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    raw = text.strip().lower().rstrip("b")
    if raw in ("-1",):
        return -1
    mult = 1
    if raw and raw[-1] in _SIZE_SUFFIX:
        mult, raw = _SIZE_SUFFIX[raw[-1]], raw[:-1]
    try:
        return int(float(raw) * mult)
    except ValueError:
        raise InvalidArgument(f"invalid size: {text!r}") from None


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InvalidArgument(f"invalid number: {text!r}") from None


FLAGS = {
    "blkio-weight": ("blockIO", "weight", _int),
    "cpu-period": ("cpu", "period", _int),
    "cpu-quota": ("cpu", "quota", _int),
    "cpu-rt-period": ("cpu", "realtimePeriod", _int),
    "cpu-rt-runtime": ("cpu", "realtimeRuntime", _int),
    "cpu-share": ("cpu", "shares", _int),
    "cpuset-cpus": ("cpu", "cpus", str),
    "cpuset-mems": ("cpu", "mems", str),
    "memory": ("memory", "limit", parse_size),
    "memory-reservation": ("memory", "reservation", parse_size),
    "memory-swap": ("memory", "swap", parse_size),
    "kernel-memory": ("memory", "kernel", parse_size),
    "kernel-memory-tcp": ("memory", "kernelTCP", parse_size),
    "pids-limit": ("pids", "limit", _int),
}


def resources_from_flags(values: dict[str, str]) -> dict:
    resources: dict = {}
    for flag, raw in values.items():
        section, key, parse = FLAGS[flag]
        resources.setdefault(section, {})[key] = parse(raw)
    return resources


def load_resources(source: str, stdin_text: str | None = None) -> dict:
    try:
        if source == "-":
            text = stdin_text if stdin_text is not None else __import__("sys").stdin.read()
        else:
            with open(source) as f:
                text = f.read()
        data = json.loads(text)
    except OSError as exc:
        raise InvalidArgument(f"open {source}: {exc.strerror}") from None
    except ValueError as exc:
        raise InvalidArgument(f"invalid resources JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidArgument("resources must be a JSON object")
    return data


def _merge(base: dict, change: dict) -> dict:
    out = dict(base)
    for key, value in change.items():
        out[key] = _merge(out.get(key) or {}, value) if isinstance(value, dict) else value
    return out


def update(container: Container, resources: dict) -> None:
    status = container.status()
    if status == st.STOPPED:
        raise FailedPrecondition(f"cannot update a stopped container {container.id}")
    config = container.config
    linux = config.setdefault("linux", {})
    merged = _merge(linux.get("resources") or {}, resources)
    container.cgroup().set(resources)
    linux["resources"] = merged
    container.save()
