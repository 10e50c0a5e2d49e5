"""A small parser with runc's (urfave/cli) conventions, cheaper to import than argparse.

``--flag v``, ``--flag=v``, ``-f v``, bool flags as ``--flag`` or ``--flag=false``, repeatable
flags, and flags after positional arguments (runc accepts ``kill ID --all``): as urfave/cli
v1 does for runc 1.1, known flags move in front of the positionals, each taking the
argument after it along, then parsing stops at the first positional, as Go's flag package
does. So ``kill ID 9 --all`` signals ID, while in ``kill ID --all 9`` the id is "9", as in
runc. For commands whose trailing arguments are a command line (``exec``), parsing stops
at the first positional after the container id, or at ``--``.
"""

from __future__ import annotations

from berth.errors import InvalidArgument


class Flag:
    __slots__ = ("names", "takes_value", "repeat", "default")

    def __init__(self, *names: str, value: bool = False, repeat: bool = False, default: object = None) -> None:
        self.names = names
        self.takes_value = value
        self.repeat = repeat
        self.default = ([] if repeat else (None if value else False)) if default is None else default

    @property
    def key(self) -> str:
        return self.names[0].replace("-", "_")


class Parsed:
    def __init__(self, values: dict[str, object], positionals: list[str]) -> None:
        self.values = values
        self.args = positionals

    def __getattr__(self, name: str) -> object:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None


_TRUE = ("true", "1", "t", "yes")
_FALSE = ("false", "0", "f", "no")


def parse(argv: list[str], flags: list[Flag], stop_after: int | None = None, command: str = "") -> Parsed:
    """Parse ``argv``; after ``stop_after`` positionals, everything left is positional."""
    by_name = {}
    for flag in flags:
        for name in flag.names:
            by_name[name] = flag
    values: dict[str, object] = {f.key: (list(f.default) if f.repeat else f.default) for f in flags}
    positionals: list[str] = []
    reordered = stop_after is None and not _ends_with_value_flag(argv, by_name)
    if reordered:
        argv = _reorder(argv, by_name)
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if (stop_after is not None and len(positionals) > stop_after) or (reordered and positionals):
            positionals.append(arg)
            continue
        if arg == "--":
            positionals.extend(argv[i:])
            break
        if not arg.startswith("-") or arg == "-":
            positionals.append(arg)
            continue
        name, eq, inline = arg.lstrip("-").partition("=")
        flag = by_name.get(name)
        if flag is None:
            if stop_after is not None and len(positionals) > stop_after - 1 and positionals:
                positionals.append(arg)
                continue
            where = f" for {command}" if command else ""
            raise InvalidArgument(f"flag provided but not defined{where}: -{name}")
        if flag.takes_value:
            if eq:
                value: object = inline
            elif i < len(argv):
                value = argv[i]
                i += 1
            else:
                raise InvalidArgument(f"flag needs an argument: -{name}")
        elif eq:
            low = inline.lower()
            if low not in _TRUE + _FALSE:
                raise InvalidArgument(f"invalid boolean value {inline!r} for -{name}")
            value = low in _TRUE
        else:
            value = True
        if flag.repeat:
            values[flag.key].append(value)  # type: ignore[union-attr]
        else:
            values[flag.key] = value
    return Parsed(values, positionals)


def _is_known_flag(arg: str, by_name: dict[str, Flag]) -> bool:
    return arg.startswith("-") and arg not in ("-", "--") and arg.lstrip("-").partition("=")[0] in by_name


def _ends_with_value_flag(argv: list[str], by_name: dict[str, Flag]) -> bool:
    """``create ID --bundle``: left in place for a clear "flag needs an argument"."""
    flag = by_name.get(argv[-1].lstrip("-")) if argv and argv[-1].startswith("-") else None
    return flag is not None and flag.takes_value


def _reorder(argv: list[str], by_name: dict[str, Flag]) -> list[str]:
    """urfave/cli v1's reorderArgs: known flags first, each with the next argument unless
    that is a known flag too; ``--`` and what follows it stay last."""
    moved: list[str] = []
    rest: list[str] = []
    may_take_value = False
    for i, arg in enumerate(argv):
        is_flag = _is_known_flag(arg, by_name)
        if may_take_value and not is_flag:
            may_take_value = False
            moved.append(arg)
        elif arg == "--":
            rest = ["--", *rest, *argv[i + 1:]]
            break
        elif is_flag:
            moved.append(arg)
            may_take_value = "=" not in arg
        else:
            rest.append(arg)
    return moved + rest


def parse_duration(text: str) -> float:
    """Go's time.ParseDuration for the common units (ns, us, ms, s, m, h); seconds as float."""
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    total, number, i = 0.0, "", 0
    raw = text.strip()
    if not raw:
        raise InvalidArgument(f"invalid duration {text!r}")
    while i < len(raw):
        ch = raw[i]
        if ch.isdigit() or ch == ".":
            number += ch
            i += 1
            continue
        unit = raw[i:i + 2] if raw[i:i + 2] in units else ch
        if unit not in units or not number:
            raise InvalidArgument(f"invalid duration {text!r}")
        total += float(number) * units[unit]
        number = ""
        i += len(unit)
    if number:
        if total == 0 and float(number) == 0:
            return 0.0
        raise InvalidArgument(f"missing unit in duration {text!r}")
    return total
