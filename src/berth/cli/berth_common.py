"""What every ``berth`` command shares: its argument parser (Docker's flag errors, exit
125), and small helpers for lists of flags."""

from __future__ import annotations

import argparse
import os
import sys

TYPE_CHECKING = False  # not typing's: importing typing would cost every berth command ~4 ms
if TYPE_CHECKING:
    from typing import NoReturn


class UsageError(Exception):
    """Bad flags or arguments: printed as docker prints them, exit 125."""

    exit_code = 125


class ExitCode(Exception):
    """Leave with a status, no message (the container's exit code)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class Parser(argparse.ArgumentParser):
    def __init__(self, command: str, usage: str, description: str, **kw: object) -> None:
        super().__init__(prog=f"berth {command}", usage=f"berth {command} {usage}".rstrip(),
                         description=description, **kw)  # type: ignore[arg-type]
        self.command = command

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments: "):
            flags = message.split(": ", 1)[1].split()
            message = f"unknown flag: {flags[0]}" if flags[0].startswith("-") else f"unexpected argument: {flags[0]}"
        raise UsageError(f"{message}\nSee 'berth {self.command} --help'.")


def parser(command: str, usage: str, description: str, *, add_help: bool = True) -> Parser:
    return Parser(command, usage, description, add_help=add_help)


def parse_filters(items: list[str] | None) -> dict[str, list[str]] | None:
    """``--filter key=value`` (repeated) as the API's filters object."""
    if not items:
        return None
    out: dict[str, list[str]] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq:
            raise UsageError(f"bad format of filter (expected name=value): {item}")
        out.setdefault(key.strip().lower() if key.strip().lower() in ("dangling", "status") else key.strip(),
                       []).append(value)
    return out


def is_tty(stream: object) -> bool:
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, ValueError):
        return False


def short(ident: str) -> str:
    return ident.split(":", 1)[-1][:12]


def warn(message: str) -> None:
    sys.stderr.write(message.rstrip("\n") + "\n")


def env_or(name: str, default: str) -> str:
    return os.environ.get(name) or default
