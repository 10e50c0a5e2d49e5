"""Dockerfile instructions applied to an image config, as ``docker import --change`` does.

    config = apply_changes(config, ["CMD [\\"/bin/sh\\"]", "ENV A=1 B=2", "EXPOSE 80/tcp"])

Supported: CMD, ENTRYPOINT (JSON array or shell form, which becomes ``/bin/sh -c``),
ENV (``K=V ...`` or ``K V``), LABEL, EXPOSE, VOLUME, WORKDIR, USER, STOPSIGNAL, ONBUILD.
Anything else is InvalidArgument. The ``config`` dict is the image config's ``config``
object (Docker's capitalised keys); a changed copy is returned.
"""

from __future__ import annotations

import copy
import json
import posixpath
import shlex
from collections.abc import Sequence
from typing import Any

from berth.errors import InvalidArgument

INSTRUCTIONS = ("CMD", "ENTRYPOINT", "ENV", "LABEL", "EXPOSE", "VOLUME", "WORKDIR", "USER", "STOPSIGNAL", "ONBUILD")


def apply_changes(config: dict[str, Any], changes: Sequence[str]) -> dict[str, Any]:
    out = copy.deepcopy(config)
    for change in changes:
        instruction, _, rest = change.strip().partition(" ")
        instruction = instruction.upper()
        rest = rest.strip()
        if instruction not in INSTRUCTIONS:
            raise InvalidArgument(f"{instruction or change!r} is not a valid change command "
                                  f"(one of {', '.join(INSTRUCTIONS)})")
        if not rest:
            raise InvalidArgument(f"{instruction} needs an argument")
        _APPLY[instruction](out, rest)
    return out


def _command(value: str) -> list[str]:
    if value.startswith("["):
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        if isinstance(parsed, list) and all(isinstance(p, str) for p in parsed):
            return parsed
    return ["/bin/sh", "-c", value]


def _pairs(value: str, what: str) -> list[tuple[str, str]]:
    try:
        words = shlex.split(value)
    except ValueError as e:
        raise InvalidArgument(f"{what} {value!r}: {e}") from None
    if words and "=" not in words[0]:  # legacy form: ENV KEY value with spaces
        if len(words) < 2:
            raise InvalidArgument(f"{what} {value!r}: expected KEY=VALUE or KEY VALUE")
        return [(words[0], value.split(None, 1)[1])]
    pairs = []
    for word in words:
        key, eq, val = word.partition("=")
        if not eq or not key:
            raise InvalidArgument(f"{what} {value!r}: expected KEY=VALUE")
        pairs.append((key, val))
    return pairs


def _env(config: dict[str, Any], value: str) -> None:
    env = list(config.get("Env") or [])
    for key, val in _pairs(value, "ENV"):
        env = [e for e in env if e.split("=", 1)[0] != key] + [f"{key}={val}"]
    config["Env"] = env


def _label(config: dict[str, Any], value: str) -> None:
    labels = dict(config.get("Labels") or {})
    labels.update(_pairs(value, "LABEL"))
    config["Labels"] = labels


def _expose(config: dict[str, Any], value: str) -> None:
    ports = dict(config.get("ExposedPorts") or {})
    for port in value.split():
        number, _, proto = port.partition("/")
        if not number.isdigit() or not 0 < int(number) < 65536 or proto not in ("", "tcp", "udp", "sctp"):
            raise InvalidArgument(f"EXPOSE: invalid port {port!r}")
        ports[f"{int(number)}/{proto or 'tcp'}"] = {}
    config["ExposedPorts"] = ports


def _volume(config: dict[str, Any], value: str) -> None:
    paths = _command(value) if value.startswith("[") else value.split()
    if paths[:2] == ["/bin/sh", "-c"]:
        raise InvalidArgument(f"VOLUME: invalid JSON array {value!r}")
    volumes = dict(config.get("Volumes") or {})
    volumes.update({p: {} for p in paths})
    config["Volumes"] = volumes


def _workdir(config: dict[str, Any], value: str) -> None:
    config["WorkingDir"] = posixpath.normpath(posixpath.join(config.get("WorkingDir") or "/", value))


def _set(key: str) -> Any:
    def apply(config: dict[str, Any], value: str) -> None:
        config[key] = value
    return apply


def _onbuild(config: dict[str, Any], value: str) -> None:
    config["OnBuild"] = list(config.get("OnBuild") or []) + [value]


_APPLY = {
    "CMD": lambda c, v: c.__setitem__("Cmd", _command(v)),
    "ENTRYPOINT": lambda c, v: c.__setitem__("Entrypoint", _command(v)),
    "ENV": _env,
    "LABEL": _label,
    "EXPOSE": _expose,
    "VOLUME": _volume,
    "WORKDIR": _workdir,
    "USER": _set("User"),
    "STOPSIGNAL": _set("StopSignal"),
    "ONBUILD": _onbuild,
}
